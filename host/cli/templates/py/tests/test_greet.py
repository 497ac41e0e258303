import pytest
from flowcraft_node import InvalidInputError
from flowcraft_node.testing import TestHost

from {{module}} import bundle


def test_greet_greets_and_counts() -> None:
    host = TestHost(context={"greetings": 2})
    result = host.execute(bundle, "greet", input="Ada")
    assert result.output == "Hello, Ada!"
    assert host.get("greetings") == 3


def test_an_empty_name_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError):
        TestHost().execute(bundle, "greet", input=" ")
