"""The component side: the exported WIT ``node`` interface over a
:class:`~flowcraft_node.Bundle`, and the host imports behind its
:class:`~flowcraft_node.Context`.

Only the entry module that ``flowcraft-node-py build`` generates imports this
module: it needs the ``wit_world`` bindings componentize-py generates for the
``bundle`` world of ``flowcraft:node@0.1.0``. Node code never sees them.
"""

from __future__ import annotations

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host as imports
from wit_world.imports import types as wit

from . import dispatch, jsontext
from .bundle import Bundle
from .errors import ErrorKind, NodeError
from .host import Level

_VARIANTS = {
    ErrorKind.RETRYABLE: wit.NodeError_Retryable,
    ErrorKind.FATAL: wit.NodeError_Fatal,
    ErrorKind.INVALID_INPUT: wit.NodeError_InvalidInput,
}


class ComponentHost:
    """The :class:`~flowcraft_node.host.HostPort` that calls the component's imports."""

    def context_get(self, key: str) -> str | None:
        return imports.context_get(key)

    def context_set(self, key: str, value: str) -> str | None:
        try:
            imports.context_set(key, value)
        except Err as refused:
            return str(refused.value)
        return None

    def context_has(self, key: str) -> bool:
        return imports.context_has(key)

    def context_delete(self, key: str) -> bool:
        return imports.context_delete(key)

    def context_keys(self) -> list[str]:
        return imports.context_keys()

    def log(self, level: Level, message: str, fields: str) -> None:
        imports.log(wit.LogLevel[level.name], message, fields)

    def now_ms(self) -> int:
        return imports.now_ms()

    def config_get(self, name: str) -> str | None:
        return imports.config_get(name)


def describe(bundle: Bundle) -> wit.BundleInfo:
    """The ``describe`` export: the bundle's name, version and node types."""
    if bundle.name is None or bundle.version is None:
        raise ValueError("the bundle has no name or version; build it with `flowcraft-node-py build`")
    nodes = [
        wit.NodeInfo(
            uses=node.uses,
            description=node.description,
            params_schema=None if node.params_schema is None else jsontext.encode(node.params_schema),
        )
        for node in bundle.nodes
    ]
    return wit.BundleInfo(name=bundle.name, version=bundle.version, nodes=nodes)


def execute(bundle: Bundle, request: wit.Request) -> wit.NodeResult:
    """The ``execute`` export; a failure is raised as ``Err(node-error)``."""
    ours = dispatch.Request(
        uses=request.uses,
        run_id=request.run_id,
        node_id=request.node_id,
        blueprint_id=request.blueprint_id,
        attempt=request.attempt,
        input=request.input,
        params=request.params,
    )
    try:
        result = dispatch.execute(bundle, ComponentHost(), ours)
    except NodeError as error:
        raise Err(_VARIANTS[error.kind](error.message)) from None
    return wit.NodeResult(output=result.output, action=result.action, dynamic_nodes=result.dynamic_nodes)


def export(bundle: Bundle, name: str, version: str) -> type[exports.Node]:
    """The class componentize-py exports as the ``node`` interface, serving
    ``bundle`` under ``name`` and ``version`` unless the bundle sets its own."""
    if not isinstance(bundle, Bundle):
        raise TypeError(f"expected a flowcraft_node.Bundle, got {type(bundle).__name__}")
    served = bundle.with_defaults(name, version)

    class Node(exports.Node):
        def describe(self) -> wit.BundleInfo:
            return describe(served)

        def execute(self, req: wit.Request) -> wit.NodeResult:
            return execute(served, req)

    return Node
