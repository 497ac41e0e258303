"""Write Flowcraft workflow nodes in Python and ship them as a WebAssembly
component *bundle* that flowcraft-host loads, sandboxes and hot-swaps.

A node is a plain function decorated with :func:`node`: it gets the run's
:class:`Context`, its decoded JSON input and its params, and returns its
output (or an :class:`Output` with a routing action and dynamic nodes) or
raises :class:`RetryableError`, :class:`FatalError` or
:class:`InvalidInputError`. A :class:`Bundle` lists the node types one
component exports; ``flowcraft-node-py build`` turns it into a ``.wasm``
implementing ``flowcraft:node@0.1.0``, and :class:`testing.TestHost` runs the
nodes in plain CPython for unit tests.

Modules: :mod:`~flowcraft_node.bundle` (declaring nodes and bundles),
:mod:`~flowcraft_node.context` (the run handle), :mod:`~flowcraft_node.output`
(what nodes return), :mod:`~flowcraft_node.errors` (why they fail),
:mod:`~flowcraft_node.dispatch` (request to node and back),
:mod:`~flowcraft_node.testing` (the in-memory host), :mod:`~flowcraft_node.build`
and :mod:`~flowcraft_node.cli` (the build command).
"""

from .bundle import Bundle, NodeType, node
from .context import Context, RunInfo
from .errors import ContextWriteError, ErrorKind, FatalError, InvalidInputError, NodeError, RetryableError
from .host import Level
from .output import DynamicNode, Output

__all__ = [
    "Bundle",
    "Context",
    "ContextWriteError",
    "DynamicNode",
    "ErrorKind",
    "FatalError",
    "InvalidInputError",
    "Level",
    "NodeError",
    "NodeType",
    "Output",
    "RetryableError",
    "RunInfo",
    "node",
]
