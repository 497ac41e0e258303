"""``py-word-count``: counts the words of its input and routes by the count."""

from typing import Any

from flowcraft_node import Context, InvalidInputError, Output, node

PARAMS_SCHEMA = {
    "type": "object",
    "properties": {"longAtLeast": {"type": "integer", "minimum": 1, "default": 5}},
    "additionalProperties": False,
}


@node("py-word-count", params_schema=PARAMS_SCHEMA)
def word_count(ctx: Context, text: Any, params: dict[str, Any]) -> Output:
    """Counts the words of a text; action "long" from params.longAtLeast words, else "short"."""
    if not isinstance(text, str):
        raise InvalidInputError(f"py-word-count counts the words of a string, not {type(text).__name__}")
    long_at_least = params.get("longAtLeast", 5)
    if type(long_at_least) is not int or long_at_least < 1:
        raise InvalidInputError(f"py-word-count: params.longAtLeast must be a positive integer, not {long_at_least!r}")
    words = len(text.split())
    return Output(output={"text": text, "words": words}, action="long" if words >= long_at_least else "short")
