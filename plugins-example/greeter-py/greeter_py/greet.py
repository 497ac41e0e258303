"""``py-greet``: greets its input, the configured ``defaultName`` or the world."""

from typing import Any

from flowcraft_node import Context, InvalidInputError, node

PARAMS_SCHEMA = {
    "type": "object",
    "properties": {"greeting": {"type": "string", "default": "Hello"}},
    "additionalProperties": False,
}


@node("py-greet", params_schema=PARAMS_SCHEMA)
def greet(ctx: Context, name: Any, params: dict[str, Any]) -> str:
    """Greets its input (a name), else the configured defaultName, else the world."""
    if name is None:
        name = ctx.config("defaultName") or "world"
    if not isinstance(name, str):
        raise InvalidInputError(f"py-greet greets a name (a string), not {type(name).__name__}")
    greeting = f"{params.get('greeting', 'Hello')}, {name}!"
    ctx.set("lastGreeting", greeting)
    ctx.set("greetCount", ctx.get("greetCount", 0) + 1)
    ctx.log("info", "greeted", name=name, attempt=ctx.run.attempt)
    return greeting
