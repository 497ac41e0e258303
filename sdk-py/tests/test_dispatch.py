"""Dispatch through TestHost: decoding, unknown node types and the mapping of
raised exceptions to the WIT node-error variants."""

from typing import Any

import pytest

from flowcraft_node import Bundle, Context, ErrorKind, FatalError, InvalidInputError, NodeError, RetryableError, node
from flowcraft_node.testing import TestHost


def test_input_params_and_run_info_reach_the_node(bundle: Bundle) -> None:
    result = TestHost().execute(bundle, "describe-call", input={"a": [1, 2.5, None]}, params={"p": "q"}, attempt=3)
    assert result.output == {
        "input": {"a": [1, 2.5, None]},
        "params": {"p": "q"},
        "run": {
            "uses": "describe-call",
            "run_id": "test-run",
            "node_id": "describe-call",
            "blueprint_id": "test-blueprint",
            "attempt": 3,
        },
    }


def test_no_input_is_none_and_absent_params_are_an_empty_dict(bundle: Bundle) -> None:
    result = TestHost().execute(bundle, "describe-call")
    assert result.output["input"] is None
    assert result.output["params"] == {}


def test_json_null_input_also_reads_as_none(bundle: Bundle) -> None:
    result = TestHost().execute_json(bundle, "describe-call", input="null")
    assert result.output["input"] is None


@pytest.mark.parametrize(
    ("error_class", "kind"),
    [(RetryableError, "retryable"), (FatalError, "fatal"), (InvalidInputError, "invalid")],
)
def test_node_errors_keep_their_kind_and_message(bundle: Bundle, error_class: type[NodeError], kind: str) -> None:
    with pytest.raises(error_class) as raised:
        TestHost().execute(bundle, "raise", params={"kind": kind, "message": "payment gateway timed out"})
    assert raised.value.message == "payment gateway timed out"


def test_error_kinds_are_the_wit_variant_names() -> None:
    assert RetryableError("x").kind == ErrorKind.RETRYABLE == "retryable"
    assert FatalError("x").kind == "fatal"
    assert InvalidInputError("x").kind == "invalid-input"


def test_any_other_exception_is_retryable_naming_type_text_and_place(bundle: Bundle) -> None:
    with pytest.raises(RetryableError) as raised:
        TestHost().execute(bundle, "raise", params={"kind": "other"})
    message = raised.value.message
    assert message.startswith("node `raise` raised KeyError: 'missing-thing' (at conftest.py:")
    assert message.endswith(" in raise_error)")
    assert isinstance(raised.value.__cause__, KeyError)


def test_unknown_uses_is_invalid_input_naming_it_and_the_known_types(bundle: Bundle) -> None:
    with pytest.raises(InvalidInputError) as raised:
        TestHost().execute(bundle, "nope")
    assert raised.value.message == (
        "sample 1.2.3 has no node type `nope` (it implements: echo, describe-call, route, raise, silent)"
    )


def test_input_that_is_not_json_is_invalid_input_naming_the_node_type(bundle: Bundle) -> None:
    with pytest.raises(InvalidInputError, match=r"^node `echo`: the input is not JSON: "):
        TestHost().execute_json(bundle, "echo", input="{not json")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_json_constants_are_refused(bundle: Bundle, constant: str) -> None:
    with pytest.raises(InvalidInputError, match=f"{constant} is not JSON"):
        TestHost().execute_json(bundle, "echo", input=f"[{constant}]")


def test_params_that_are_not_json_are_invalid_input(bundle: Bundle) -> None:
    with pytest.raises(InvalidInputError, match=r"^node `echo`: the params are not JSON: "):
        TestHost().execute_json(bundle, "echo", input="1", params="{'single': 'quotes'}")


@pytest.mark.parametrize(("params", "kind"), [([1, 2], "list"), ("text", "str"), (7, "int")])
def test_params_must_be_an_object(bundle: Bundle, params: object, kind: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        TestHost().execute(bundle, "echo", params=params)
    assert raised.value.message == f"node `echo`: the params must be a JSON object, not {kind}"


def test_all_node_errors_share_a_base_class(bundle: Bundle) -> None:
    with pytest.raises(NodeError):
        TestHost().execute(bundle, "raise", params={"kind": "fatal", "message": "m"})


@node("lazy-import")
def lazy_import(ctx: Context, value: Any, params: dict[str, Any]) -> None:
    import no_such_module_for_flowcraft_tests  # type: ignore[import-not-found]  # noqa: F401


def test_the_place_named_is_the_innermost_frame_with_a_source_file() -> None:
    with pytest.raises(RetryableError) as raised:
        TestHost().execute(Bundle([lazy_import]), "lazy-import")
    assert raised.value.message.startswith("node `lazy-import` raised ModuleNotFoundError: No module named ")
    assert raised.value.message.endswith(" in lazy_import)")
    assert "(at test_dispatch.py:" in raised.value.message
