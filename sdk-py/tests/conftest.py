"""Shared nodes for the SDK's tests: one per return convention and failure kind."""

from typing import Any

import pytest

from flowcraft_node import Bundle, Context, FatalError, InvalidInputError, Output, RetryableError, node


@node("echo", description="Returns its input")
def echo(ctx: Context, value: Any, params: dict[str, Any]) -> Any:
    return value


@node("describe-call")
def describe_call(ctx: Context, value: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Returns what it was called with."""
    return {"input": value, "params": params, "run": vars(ctx.run)}


@node("route")
def route(ctx: Context, value: Any, params: dict[str, Any]) -> Output:
    return Output(output=value, action=params.get("action"), dynamic_nodes=params.get("spawn", []))


@node("raise")
def raise_error(ctx: Context, value: Any, params: dict[str, Any]) -> None:
    errors = {"retryable": RetryableError, "fatal": FatalError, "invalid": InvalidInputError}
    if params["kind"] == "other":
        raise KeyError("missing-thing")
    raise errors[params["kind"]](params["message"])


@node("silent")
def silent(ctx: Context, value: Any, params: dict[str, Any]) -> None:
    ctx.set("touched", True)


@pytest.fixture
def bundle() -> Bundle:
    return Bundle([echo, describe_call, route, raise_error, silent], name="sample", version="1.2.3")
