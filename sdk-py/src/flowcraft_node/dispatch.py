"""From a request to a node and back: the one code path by which both the
component (:mod:`flowcraft_node._component`) and the test host
(:mod:`flowcraft_node.testing`) run a node.

It decodes the JSON input and params, calls the node type the request names,
encodes what it returns (see :mod:`flowcraft_node.output`) and turns what it
raises into a :class:`~flowcraft_node.errors.NodeError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from . import jsontext
from .bundle import Bundle, NodeType
from .context import Context, RunInfo
from .errors import InvalidInputError, NodeError, RetryableError
from .host import HostPort
from .output import RawResult, to_result


@dataclass(frozen=True)
class Request:
    """One attempt of one node, as the host sends it (the WIT ``request``)."""

    uses: str
    run_id: str
    node_id: str
    blueprint_id: str
    attempt: int
    input: str | None
    """The input as JSON text; ``None`` when the node has no input."""
    params: str
    """The params object as JSON text."""


def execute(bundle: Bundle, host: HostPort, request: Request) -> RawResult:
    """Run the node type ``request.uses`` of ``bundle`` against ``host``.

    Raises :class:`NodeError`: ``invalid-input`` for an unknown node type or
    undecodable input or params, the node's own :class:`NodeError`, or
    ``retryable`` for any other exception the node raised.
    """
    node = _find(bundle, request.uses)
    ctx = Context(host, _run_info(request))
    value = _decode_input(request)
    params = _decode_params(request)
    return to_result(request.uses, _call(node, ctx, value, params))


def _find(bundle: Bundle, uses: str) -> NodeType:
    node = bundle.node(uses)
    if node is None:
        known = ", ".join(bundle.uses()) or "none"
        raise InvalidInputError(f"{bundle.label()} has no node type `{uses}` (it implements: {known})")
    return node


def _run_info(request: Request) -> RunInfo:
    return RunInfo(request.uses, request.run_id, request.node_id, request.blueprint_id, request.attempt)


def _decode_input(request: Request) -> Any:
    if request.input is None:
        return None
    try:
        return jsontext.decode(request.input)
    except ValueError as error:
        raise InvalidInputError(f"node `{request.uses}`: the input is not JSON: {error}") from None


def _decode_params(request: Request) -> dict[str, Any]:
    try:
        params = jsontext.decode(request.params)
    except ValueError as error:
        raise InvalidInputError(f"node `{request.uses}`: the params are not JSON: {error}") from None
    if not isinstance(params, dict):
        raise InvalidInputError(f"node `{request.uses}`: the params must be a JSON object, not {type(params).__name__}")
    return params


def _call(node: NodeType, ctx: Context, value: Any, params: dict[str, Any]) -> Any:
    try:
        return node(ctx, value, params)
    except NodeError:
        raise
    except Exception as error:
        raise RetryableError(f"node `{node.uses}` raised {_describe_exception(error)}") from error


def _describe_exception(error: BaseException) -> str:
    """``Type: text (at file.py:line in function)``, naming the innermost frame
    with a source file (not ``<frozen importlib...>``)."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    place = None
    frame = error.__traceback__
    while frame is not None:
        code = frame.tb_frame.f_code
        if not code.co_filename.startswith("<"):
            place = f"{PurePath(code.co_filename).name}:{frame.tb_lineno} in {code.co_name}"
        frame = frame.tb_next
    return text if place is None else f"{text} (at {place})"
