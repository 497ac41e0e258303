"""``py-fail``: fails as its params say, to show retries and fatal failures."""

from typing import Any

from flowcraft_node import Context, FatalError, InvalidInputError, RetryableError, node

PARAMS_SCHEMA = {
    "type": "object",
    "properties": {
        "mode": {"enum": ["retryable", "fatal"], "default": "retryable"},
        "succeedOnAttempt": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": False,
}
ERRORS = {"retryable": RetryableError, "fatal": FatalError}


@node("py-fail", params_schema=PARAMS_SCHEMA)
def fail(ctx: Context, value: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Fails with a retryable or fatal error, or succeeds from params.succeedOnAttempt on."""
    mode = params.get("mode", "retryable")
    if mode not in ERRORS:
        raise InvalidInputError(f"py-fail: params.mode must be one of {', '.join(ERRORS)}, not {mode!r}")
    attempt = ctx.run.attempt
    succeed_on = params.get("succeedOnAttempt")
    if succeed_on is not None and attempt >= succeed_on:
        return {"attempt": attempt, "input": value}
    raise ERRORS[mode](f"py-fail: failing as asked ({mode}, attempt {attempt})")
