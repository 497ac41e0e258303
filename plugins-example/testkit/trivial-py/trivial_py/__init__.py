"""The trivial bundle in Python: one node that does as little as possible.

Unlike the Rust node, the SDK decodes the input JSON and encodes the output
again, so a benchmark measures the host plus that round trip.
"""

from typing import Any

from flowcraft_node import Bundle, Context, node


@node("noop")
def noop(ctx: Context, value: Any, params: dict[str, Any]) -> Any:
    """Outputs its input unchanged."""
    return value


bundle = Bundle([noop])
