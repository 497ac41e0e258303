"""The backend a :class:`~flowcraft_node.Context` talks to: the component's
host imports inside WebAssembly, an in-memory store in tests.

:class:`HostPort` has one method per function of the WIT ``host`` interface;
JSON values cross it as text, exactly as on the component boundary.
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol


class Level(Enum):
    """Severity of a log record (the WIT ``log-level``)."""

    TRACE = "trace"
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class HostPort(Protocol):
    """The WIT ``host`` interface, JSON values as text."""

    def context_get(self, key: str) -> str | None:
        """The JSON text stored under ``key``, or ``None`` when absent."""
        ...

    def context_set(self, key: str, value: str) -> str | None:
        """Store the JSON text ``value``; ``None`` on success, else the host's reason for refusing."""
        ...

    def context_has(self, key: str) -> bool:
        """Whether ``key`` exists."""
        ...

    def context_delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""
        ...

    def context_keys(self) -> list[str]:
        """All keys of the run's context."""
        ...

    def log(self, level: Level, message: str, fields: str) -> None:
        """Emit a record; ``fields`` is a JSON object as text."""
        ...

    def now_ms(self) -> int:
        """Wall-clock milliseconds since the Unix epoch."""
        ...

    def config_get(self, name: str) -> str | None:
        """A configuration value granted to the bundle, or ``None``."""
        ...
