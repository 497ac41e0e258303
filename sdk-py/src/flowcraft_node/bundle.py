"""Declaring node types and the bundle that exports them.

A node type is a function ``fn(ctx, input, params)`` decorated with
:func:`node`; a :class:`Bundle` lists the node types one component exports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from . import jsontext
from .context import Context

NodeFunction = Callable[[Context, Any, dict[str, Any]], Any]
"""``fn(ctx, input, params)``: ``input`` is the decoded JSON input (``None``
when the node has none), ``params`` the decoded params object (``{}`` when
absent). It returns what :mod:`flowcraft_node.output` describes."""


@dataclass(frozen=True)
class NodeType:
    """One node type of a bundle. Calling it calls the function, so a node
    stays a plain function in tests."""

    uses: str
    """The key blueprints name the node type by."""
    description: str
    """One line for humans: what the node does."""
    params_schema: Any
    """Optional JSON Schema of the node's ``params`` (``None`` when there is none)."""
    function: NodeFunction

    def __call__(self, ctx: Context, input: Any, params: dict[str, Any]) -> Any:
        return self.function(ctx, input, params)


def node(uses: str, *, description: str | None = None, params_schema: Any = None) -> Callable[[NodeFunction], NodeType]:
    """Declare the decorated function as node type ``uses``.

    ``description`` defaults to the first line of the function's docstring;
    ``params_schema`` is a JSON Schema (a dict) for the node's ``params``,
    shown by the host and its tools (the SDK does not validate params with it).
    """
    if not isinstance(uses, str) or not uses:
        raise ValueError(f"@node: `uses` must be a non-empty string, got {uses!r}")
    if params_schema is not None:
        _check_schema(uses, params_schema)

    def declare(function: NodeFunction) -> NodeType:
        summary = description if description is not None else _first_line(function)
        return NodeType(uses, summary, params_schema, function)

    return declare


def _check_schema(uses: str, params_schema: Any) -> None:
    try:
        jsontext.encode(params_schema)
    except (TypeError, ValueError) as error:
        raise ValueError(f"@node({uses!r}): params_schema is not JSON: {error}") from None


def _first_line(function: NodeFunction) -> str:
    lines = (function.__doc__ or "").strip().splitlines()
    return lines[0].strip() if lines else ""


@dataclass(frozen=True)
class Bundle:
    """The node types one component exports, with the bundle's identity.

    ``name`` and ``version`` default to the project's ``[project]`` name and
    version, which ``flowcraft-node-py build`` bakes in; set them here to
    override those. ``uses`` keys must be unique.
    """

    nodes: tuple[NodeType, ...]
    name: str | None = None
    version: str | None = None

    def __init__(self, nodes: Iterable[NodeType], *, name: str | None = None, version: str | None = None) -> None:
        listed = tuple(nodes)
        _check_nodes(listed)
        object.__setattr__(self, "nodes", listed)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "version", version)

    def node(self, uses: str) -> NodeType | None:
        """The node type registered under ``uses``."""
        return next((candidate for candidate in self.nodes if candidate.uses == uses), None)

    def uses(self) -> list[str]:
        """The ``uses`` keys of the node types, in declaration order."""
        return [candidate.uses for candidate in self.nodes]

    def with_defaults(self, name: str, version: str) -> Bundle:
        """This bundle with ``name`` and ``version`` filled in where unset."""
        return replace(self, name=self.name or name, version=self.version or version)

    def label(self) -> str:
        """``name version`` for messages, or ``this bundle`` when unnamed."""
        return " ".join(part for part in (self.name, self.version) if part) or "this bundle"


def _check_nodes(nodes: tuple[Any, ...]) -> None:
    seen: set[str] = set()
    for candidate in nodes:
        if not isinstance(candidate, NodeType):
            raise TypeError(f"Bundle: {candidate!r} is not a node type; decorate the function with @node(...)")
        if candidate.uses in seen:
            raise ValueError(f"Bundle: two node types share the `uses` key `{candidate.uses}`")
        seen.add(candidate.uses)
