"""Context operations against TestHost: values, refusals, clock, config, logs."""

import contextlib
import math
from typing import Any

import pytest

from flowcraft_node import Bundle, Context, ContextWriteError, FatalError, Level, node
from flowcraft_node.testing import LogRecord, TestHost


def test_values_round_trip_as_json() -> None:
    host = TestHost(context={"seeded": {"n": 1}})
    ctx = host.context()
    ctx.set("list", (1, "two", None))
    assert ctx.get("list") == [1, "two", None]
    assert ctx.get("seeded") == {"n": 1}
    assert host.get("list") == [1, "two", None]


def test_get_of_an_absent_key_is_the_default() -> None:
    ctx = TestHost().context()
    assert ctx.get("missing") is None
    assert ctx.get("missing", 0) == 0


def test_get_returns_a_copy_not_the_stored_value() -> None:
    host = TestHost().with_value("items", [1])
    host.context().get("items").append(2)
    assert host.get("items") == [1]


def test_has_delete_and_keys() -> None:
    host = TestHost(context={"b": 1, "a": None})
    ctx = host.context()
    assert ctx.has("a") and not ctx.has("c")
    assert ctx.keys() == ["a", "b"]
    assert ctx.delete("a") is True
    assert ctx.delete("a") is False
    assert host.keys() == ["b"]


@pytest.mark.parametrize(("value", "reason"), [(object(), "not JSON serializable"), (math.inf, "Out of range float")])
def test_set_of_a_value_that_is_not_json_names_the_key(value: Any, reason: str) -> None:
    ctx = TestHost().context()
    with pytest.raises(ContextWriteError) as raised:
        ctx.set("bad", value)
    assert raised.value.key == "bad"
    assert raised.value.message.startswith("context key `bad`: the value cannot be encoded as JSON: ")
    assert reason in raised.value.message


@pytest.mark.parametrize("key", ["_outputs.a", "runId", "_awaitingNodeIds", "_batch.x"])
def test_a_refused_write_raises_a_fatal_error_naming_the_key(key: str) -> None:
    ctx = TestHost().context()
    with pytest.raises(ContextWriteError) as raised:
        ctx.set(key, 1)
    assert isinstance(raised.value, FatalError)
    assert raised.value.message.startswith(f"context key `{key}`: the host refused the write: context-set '{key}'")


@node("sneaky")
def sneaky(ctx: Context, value: Any, params: dict[str, Any]) -> str:
    with contextlib.suppress(ContextWriteError):
        ctx.set("_outputs.other", "forged")
    return "finished anyway"


def test_a_refused_write_fails_the_call_even_when_the_node_catches_it() -> None:
    host = TestHost()
    with pytest.raises(FatalError, match=r"context-set '_outputs\.other'"):
        host.execute(Bundle([sneaky]), "sneaky")
    assert host.keys() == []


def test_deleting_an_engine_key_fails_the_call() -> None:
    ctx = TestHost(context={"runId": "r"}).context()
    with pytest.raises(FatalError, match="context-delete 'runId'"):
        ctx.delete("runId")


def test_clock_and_config() -> None:
    host = TestHost(config={"region": "eu"}, now_ms=1_700_000_000_000)
    ctx = host.context()
    assert ctx.now_ms() == 1_700_000_000_000
    assert ctx.config("region") == "eu"
    assert ctx.config("secret") is None
    assert host.with_now_ms(5).with_config("secret", "s").context().now_ms() == 5
    assert ctx.config("secret") == "s"


def test_the_unpinned_clock_is_the_wall_clock() -> None:
    import time

    before = time.time_ns() // 1_000_000
    assert before <= TestHost().context().now_ms() <= time.time_ns() // 1_000_000


def test_logs_keep_level_message_and_fields() -> None:
    host = TestHost()
    ctx = host.context()
    ctx.log("info", "order totalled", totalCents=750, items=[1, 2])
    ctx.log(Level.ERROR, "no fields")
    ctx.log("warn", "odd field", when=object, level="fields may be named level")
    assert host.logs[:2] == [
        LogRecord(Level.INFO, "order totalled", {"totalCents": 750, "items": [1, 2]}),
        LogRecord(Level.ERROR, "no fields", {}),
    ]
    assert host.logs[2].fields == {"when": "<class 'object'>", "level": "fields may be named level"}


@pytest.mark.parametrize("level", ["trace", "debug", "info", "warn", "error"])
def test_every_wit_level_is_accepted_by_name(level: str) -> None:
    host = TestHost()
    host.context().log(level, "m")
    assert host.logs[0].level.value == level


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="'verbose' is not a valid Level"):
        TestHost().context().log("verbose", "m")


def test_seed_values_must_be_json() -> None:
    with pytest.raises(ValueError):
        TestHost(context={"x": math.nan})
