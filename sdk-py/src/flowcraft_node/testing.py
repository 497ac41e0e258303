"""Unit tests for nodes in plain CPython: :class:`TestHost` stands in for
flowcraft-host, so pytest runs nodes without building WebAssembly.

Run a node the way the host does -- by ``uses`` key, with JSON input and
params, through the same dispatch code as the component -- with
:meth:`TestHost.execute`, or call a node function directly with a
:meth:`TestHost.context`::

    host = TestHost(context={"seen": 1}, config={"defaultName": "Ada"})
    result = host.execute(bundle, "py-greet", input="Grace")
    assert result.output == "Hello, Grace!"
    assert host.get("seen") == 2

Like the real host, it refuses writes to the engine's keys (``_outputs.*``,
``runId``...) and then fails the call as ``fatal`` even if the node caught
the refusal.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import dispatch, jsontext
from .bundle import Bundle
from .context import Context, RunInfo
from .errors import FatalError
from .host import Level

ENGINE_KEYS = frozenset({"id", "runId", "blueprintId", "blueprintVersion", "_catch_error"})
"""Context keys only the engine writes (as flowcraft-host defines them)."""
ENGINE_KEY_PREFIXES = ("_outputs.", "_inputs.", "_actions.", "_dynamicNodes.", "_resume.", "_awaiting", "_batch.")
"""Prefixes of context keys only the engine writes."""


@dataclass(frozen=True)
class LogRecord:
    """One record a node logged."""

    level: Level
    message: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class TestResult:
    """A successful execution, its JSON decoded again."""

    __test__: ClassVar[bool] = False

    output: Any
    """The output; ``None`` when the node returned no output."""
    action: str | None
    dynamic_nodes: list[dict[str, Any]]


@dataclass
class _MemoryHost:
    """The in-memory :class:`~flowcraft_node.host.HostPort`: values kept as JSON text."""

    values: dict[str, str] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)
    logs: list[LogRecord] = field(default_factory=list)
    pinned_now_ms: int | None = None
    fault: str | None = None
    """The first refused write of the current call: it fails the call."""

    def context_get(self, key: str) -> str | None:
        return self.values.get(key)

    def context_set(self, key: str, value: str) -> str | None:
        refusal = _engine_key_refusal("context-set", key) or _json_refusal(key, value)
        if refusal is not None:
            self.fault = self.fault or refusal
            return refusal
        self.values[key] = value
        return None

    def context_has(self, key: str) -> bool:
        return key in self.values

    def context_delete(self, key: str) -> bool:
        refusal = _engine_key_refusal("context-delete", key)
        if refusal is not None:
            self.fault = self.fault or refusal
            raise FatalError(refusal)
        return self.values.pop(key, None) is not None

    def context_keys(self) -> list[str]:
        return sorted(self.values)

    def log(self, level: Level, message: str, fields: str) -> None:
        self.logs.append(LogRecord(level, message, jsontext.decode(fields)))

    def now_ms(self) -> int:
        return self.pinned_now_ms if self.pinned_now_ms is not None else time.time_ns() // 1_000_000

    def config_get(self, name: str) -> str | None:
        return self.config.get(name)


def _engine_key_refusal(operation: str, key: str) -> str | None:
    if key in ENGINE_KEYS or key.startswith(ENGINE_KEY_PREFIXES):
        return f"{operation} '{key}': the key is the engine's; a node may write only keys of its own"
    return None


def _json_refusal(key: str, value: str) -> str | None:
    try:
        jsontext.decode(value)
    except ValueError as error:
        return f"context-set '{key}': the value is not valid JSON ({error})"
    return None


class TestHost:
    """An in-memory host: a run context, configuration values, a clock and a log.

    The builder methods return the host itself, so both
    ``TestHost(context={"a": 1})`` and ``TestHost().with_value("a", 1)`` work.
    """

    __test__ = False

    def __init__(
        self,
        context: Mapping[str, Any] | None = None,
        config: Mapping[str, str] | None = None,
        now_ms: int | None = None,
    ) -> None:
        self._port = _MemoryHost(config=dict(config or {}), pinned_now_ms=now_ms)
        for key, value in (context or {}).items():
            self.with_value(key, value)

    def with_value(self, key: str, value: Any) -> TestHost:
        """Seed the run context with ``value`` (which must be JSON) under ``key``."""
        self._port.values[key] = jsontext.encode(value)
        return self

    def with_config(self, name: str, value: str) -> TestHost:
        """Grant the configuration value ``name``."""
        self._port.config[name] = value
        return self

    def with_now_ms(self, now_ms: int) -> TestHost:
        """Pin the clock to ``now_ms``."""
        self._port.pinned_now_ms = now_ms
        return self

    def context(self, uses: str = "test-node", attempt: int = 1) -> Context:
        """A context for calling a node function directly."""
        return Context(self._port, RunInfo(uses, "test-run", uses, "test-blueprint", attempt))

    def execute(self, bundle: Bundle, uses: str, input: Any = None, params: Any = None, attempt: int = 1) -> TestResult:
        """Run node type ``uses`` of ``bundle`` as the host would: ``input``
        (``None``: no input) and ``params`` (``None``: ``{}``) are encoded as
        JSON, the result decoded again. Raises the :class:`NodeError` the host
        would receive."""
        input_json = None if input is None else jsontext.encode(input)
        params_json = "{}" if params is None else jsontext.encode(params)
        return self.execute_json(bundle, uses, input_json, params_json, attempt)

    def execute_json(
        self, bundle: Bundle, uses: str, input: str | None = None, params: str = "{}", attempt: int = 1
    ) -> TestResult:
        """Like :meth:`execute` with the input and params given as JSON text,
        passed on unchecked (to test what a node does with text that is not JSON)."""
        request = dispatch.Request(uses, "test-run", uses, "test-blueprint", attempt, input, params)
        self._port.fault = None
        try:
            raw = dispatch.execute(bundle, self._port, request)
        finally:
            # A refused write fails the call whatever the node did next, as in the host.
            if self._port.fault is not None:
                raise FatalError(self._port.fault)
        return TestResult(
            output=None if raw.output is None else jsontext.decode(raw.output),
            action=raw.action,
            dynamic_nodes=[jsontext.decode(node) for node in raw.dynamic_nodes],
        )

    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key`` in the run context, or ``default``."""
        text = self._port.values.get(key)
        return default if text is None else jsontext.decode(text)

    def keys(self) -> list[str]:
        """All keys of the run context, sorted."""
        return self._port.context_keys()

    @property
    def logs(self) -> list[LogRecord]:
        """Every record logged so far, oldest first."""
        return list(self._port.logs)
