"""What nodes return: None, a plain value, or Output, and what is refused."""

import math

import pytest

from flowcraft_node import Bundle, FatalError, Output
from flowcraft_node.output import to_result
from flowcraft_node.testing import TestHost


def test_none_is_no_output(bundle: Bundle) -> None:
    result = TestHost().execute(bundle, "silent")
    assert (result.output, result.action, result.dynamic_nodes) == (None, None, [])


@pytest.mark.parametrize("value", [0, "", False, [], "héllo ✓ 😀", 2**70, -1.5e-300, {"nested": {"a": [None]}}])
def test_a_plain_value_is_the_output(bundle: Bundle, value: object) -> None:
    assert TestHost().execute(bundle, "echo", input=value).output == value


def test_a_returned_dict_is_output_even_with_output_like_keys(bundle: Bundle) -> None:
    value = {"output": 1, "action": "go", "dynamic_nodes": []}
    result = TestHost().execute(bundle, "echo", input=value)
    assert result.output == value
    assert result.action is None


def test_output_carries_an_action(bundle: Bundle) -> None:
    result = TestHost().execute(bundle, "route", input=42, params={"action": "large"})
    assert (result.output, result.action) == (42, "large")


def test_output_without_a_value_still_routes(bundle: Bundle) -> None:
    result = TestHost().execute(bundle, "route", params={"action": "skip"})
    assert (result.output, result.action) == (None, "skip")


def test_dynamic_nodes_are_passed_as_node_definitions(bundle: Bundle) -> None:
    spawn = [
        {"id": "audit", "uses": "audit-log", "params": {"level": 2}},
        {"id": "late", "uses": "echo", "inputs": "x", "config": {"maxRetries": 2}},
    ]
    result = TestHost().execute(bundle, "route", input=1, params={"spawn": spawn})
    assert result.dynamic_nodes == spawn


@pytest.mark.parametrize("spawn", [[{"uses": "echo"}], [{"id": 7, "uses": "echo"}], ["echo"], [{"id": "a"}]], ids=str)
def test_a_dynamic_node_needs_string_id_and_uses(bundle: Bundle, spawn: list) -> None:
    with pytest.raises(FatalError, match=r"^node `route`: dynamic node #0 must be a dict with string `id` and `uses`"):
        TestHost().execute(bundle, "route", params={"spawn": spawn})


def test_an_action_must_be_a_string() -> None:
    with pytest.raises(FatalError, match="the action must be a string, not int"):
        to_result("n", Output(output=1, action=3))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "reason"),
    [({1, 2}, "not JSON serializable"), (math.nan, "Out of range float"), ("\ud800", "lone surrogate")],
)
def test_output_that_is_not_json_is_fatal(value: object, reason: str) -> None:
    with pytest.raises(FatalError, match=r"^node `n`: the output cannot be encoded as JSON: .*" + reason):
        to_result("n", value)


def test_output_is_compact_utf8_json_text() -> None:
    raw = to_result("n", Output(output={"k": ["é", 1]}, dynamic_nodes=[{"id": "a", "uses": "b"}]))
    assert raw.output == '{"k":["é",1]}'
    assert raw.dynamic_nodes == ['{"id":"a","uses":"b"}']
