"""The greeter-py nodes, run as the host runs them, with the in-memory TestHost."""

import json
from pathlib import Path

import pytest
from flowcraft_node import FatalError, InvalidInputError, RetryableError
from flowcraft_node.testing import TestHost

from greeter_py import bundle

BLUEPRINT = Path(__file__).parent.parent / "blueprints" / "greeting-py.json"


def test_greet_greets_its_input_and_records_it() -> None:
    host = TestHost(context={"greetCount": 2})
    result = host.execute(bundle, "py-greet", input="Ada", params={"greeting": "Welcome"}, attempt=2)
    assert result.output == "Welcome, Ada!"
    assert host.get("lastGreeting") == "Welcome, Ada!"
    assert host.get("greetCount") == 3
    assert [(log.level.value, log.message, log.fields) for log in host.logs] == [
        ("info", "greeted", {"name": "Ada", "attempt": 2})
    ]


def test_greet_without_input_uses_the_configured_default_name_else_the_world() -> None:
    assert TestHost(config={"defaultName": "Grace"}).execute(bundle, "py-greet").output == "Hello, Grace!"
    assert TestHost().execute(bundle, "py-greet").output == "Hello, world!"


def test_greet_refuses_input_that_is_not_a_name() -> None:
    with pytest.raises(InvalidInputError, match="py-greet greets a name \\(a string\\), not dict"):
        TestHost().execute(bundle, "py-greet", input={"name": "Ada"})


@pytest.mark.parametrize(("text", "action"), [("one two three", "long"), ("one two", "short"), ("", "short")])
def test_word_count_routes_by_the_threshold(text: str, action: str) -> None:
    result = TestHost().execute(bundle, "py-word-count", input=text, params={"longAtLeast": 3})
    assert result.output == {"text": text, "words": len(text.split())}
    assert result.action == action


def test_word_count_defaults_to_five_words_for_long() -> None:
    assert TestHost().execute(bundle, "py-word-count", input="a b c d").action == "short"
    assert TestHost().execute(bundle, "py-word-count", input="a b c d e").action == "long"


@pytest.mark.parametrize("threshold", [0, "3", True, 2.5])
def test_word_count_refuses_a_bad_threshold(threshold: object) -> None:
    with pytest.raises(InvalidInputError, match=r"params\.longAtLeast must be a positive integer"):
        TestHost().execute(bundle, "py-word-count", input="text", params={"longAtLeast": threshold})


@pytest.mark.parametrize(("mode", "error"), [("retryable", RetryableError), ("fatal", FatalError)])
def test_fail_raises_the_error_asked_for(mode: str, error: type) -> None:
    with pytest.raises(error, match=f"^py-fail: failing as asked \\({mode}, attempt 1\\)$"):
        TestHost().execute(bundle, "py-fail", params={"mode": mode})


def test_fail_succeeds_from_the_attempt_asked_for() -> None:
    params = {"succeedOnAttempt": 2}
    with pytest.raises(RetryableError):
        TestHost().execute(bundle, "py-fail", input="x", params=params, attempt=1)
    assert TestHost().execute(bundle, "py-fail", input="x", params=params, attempt=2).output == {
        "attempt": 2,
        "input": "x",
    }


def test_fail_refuses_an_unknown_mode() -> None:
    with pytest.raises(InvalidInputError, match=r"params\.mode must be one of retryable, fatal, not 'sometimes'"):
        TestHost().execute(bundle, "py-fail", params={"mode": "sometimes"})


def test_the_blueprint_uses_only_this_bundle_and_the_actions_it_routes_by() -> None:
    blueprint = json.loads(BLUEPRINT.read_text())
    assert {node["uses"] for node in blueprint["nodes"]} <= set(bundle.uses())
    actions = {edge["action"] for edge in blueprint["edges"] if "action" in edge}
    assert actions == {"long", "short"}


def test_the_blueprint_s_long_path_with_its_params() -> None:
    blueprint = json.loads(BLUEPRINT.read_text())
    nodes = {node["id"]: node for node in blueprint["nodes"]}
    host = TestHost(context={"name": "Ada Lovelace"})
    greeting = host.execute(bundle, "py-greet", input=host.get("name"), params=nodes["greet"]["params"]).output
    counted = host.execute(bundle, "py-word-count", input=greeting, params=nodes["count"]["params"])
    assert counted.action == "long"
    (then,) = [edge["target"] for edge in blueprint["edges"] if edge.get("action") == counted.action]
    last = nodes[then]
    with pytest.raises(RetryableError):
        host.execute(bundle, last["uses"], input=counted.output, params=last["params"], attempt=1)
    assert last["config"]["maxRetries"] >= 2
    finished = host.execute(bundle, last["uses"], input=counted.output, params=last["params"], attempt=2)
    assert finished.output == {"attempt": 2, "input": {"text": "Hello, Ada Lovelace!", "words": 3}}
