"""The ``{{name}}`` bundle: flowcraft-host node types written with ``flowcraft_node``."""

from typing import Any

from flowcraft_node import Bundle, Context, InvalidInputError, node


@node("greet")
def greet(ctx: Context, name: Any, params: dict[str, Any]) -> str:
    """Greets its input (a name)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError("greet needs a name (a non-empty string) as its input")
    greetings = ctx.get("greetings", 0) + 1
    ctx.set("greetings", greetings)
    ctx.log("info", "greeting", name=name, greetings=greetings)
    return f"{params.get('greeting', 'Hello')}, {name}!"


bundle = Bundle([greet])
