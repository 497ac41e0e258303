"""What a node returns.

The convention, checked by :func:`to_result`:

- ``None``: the node has no output (stored as ``null``), no action, no dynamic nodes;
- an :class:`Output`: its output (``None`` again meaning none), routing
  action and dynamic nodes;
- anything else (a dict, a list, a string, a number, ``True``...): that value
  is the output. A returned dict is always output, never read as ``Output``
  fields.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import jsontext
from .errors import FatalError

DynamicNode = Mapping[str, Any]
"""A Flowcraft node definition added at runtime:
``{"id", "uses", "params"?, "inputs"?, "config"?}``."""


@dataclass(frozen=True)
class Output:
    """A result with a routing action or dynamic nodes (return a plain value
    when the output is all there is)."""

    output: Any = None
    """The output value; ``None`` means "no output"."""
    action: str | None = None
    """Routing action: edges whose ``action`` equals it are taken."""
    dynamic_nodes: list[DynamicNode] = field(default_factory=list)
    """Nodes to add to this run; they become successors of this node."""


@dataclass(frozen=True)
class RawResult:
    """A successful execution in JSON-text form (the WIT ``node-result``)."""

    output: str | None
    action: str | None
    dynamic_nodes: list[str]


def to_result(uses: str, returned: Any) -> RawResult:
    """Encode what node type ``uses`` returned; a value that breaks the
    convention or is not JSON raises :class:`FatalError` naming the node type."""
    result = returned if isinstance(returned, Output) else Output(output=returned)
    if result.action is not None and not isinstance(result.action, str):
        raise FatalError(f"node `{uses}`: the action must be a string, not {type(result.action).__name__}")
    return RawResult(
        output=None if result.output is None else _encode(uses, "the output", result.output),
        action=result.action,
        dynamic_nodes=[_dynamic_node(uses, index, node) for index, node in enumerate(result.dynamic_nodes)],
    )


def _dynamic_node(uses: str, index: int, node: Any) -> str:
    what = f"dynamic node #{index}"
    if not (isinstance(node, Mapping) and isinstance(node.get("id"), str) and isinstance(node.get("uses"), str)):
        raise FatalError(f"node `{uses}`: {what} must be a dict with string `id` and `uses`, got {reprlib.repr(node)}")
    return _encode(uses, what, dict(node))


def _encode(uses: str, what: str, value: Any) -> str:
    try:
        return jsontext.encode(value)
    except (TypeError, ValueError) as error:
        raise FatalError(f"node `{uses}`: {what} cannot be encoded as JSON: {error}") from None
