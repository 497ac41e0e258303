"""What a running node sees of its run: the run context (a map of JSON values
shared by the run's nodes), facts about the current attempt, the clock, the
bundle's configuration values and the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import jsontext
from .errors import ContextWriteError
from .host import HostPort, Level


@dataclass(frozen=True)
class RunInfo:
    """Facts about the attempt being executed."""

    uses: str
    """The node type being executed."""
    run_id: str
    """The run this node belongs to."""
    node_id: str
    """The node's id inside its blueprint."""
    blueprint_id: str
    """The blueprint the run executes."""
    attempt: int
    """1 for the first attempt, 2 for the first retry, ..."""


class Context:
    """The node's handle on its run. Every call acts on the run the node
    executes for, never on another run."""

    def __init__(self, host: HostPort, run: RunInfo) -> None:
        self._host = host
        self._run = run

    @property
    def run(self) -> RunInfo:
        """Which node, run and attempt is executing."""
        return self._run

    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key`` (decoded from JSON), or ``default`` when absent."""
        text = self._host.context_get(key)
        return default if text is None else jsontext.decode(text)

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` (encoded as JSON) under ``key``, replacing any previous value.

        Raises :class:`ContextWriteError` (a :class:`FatalError`) when the
        value is not JSON or the host refuses the write.
        """
        try:
            text = jsontext.encode(value)
        except (TypeError, ValueError) as error:
            raise ContextWriteError(key, f"the value cannot be encoded as JSON: {error}") from None
        refusal = self._host.context_set(key, text)
        if refusal is not None:
            raise ContextWriteError(key, f"the host refused the write: {refusal}")

    def has(self, key: str) -> bool:
        """Whether ``key`` exists."""
        return self._host.context_has(key)

    def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it existed."""
        return self._host.context_delete(key)

    def keys(self) -> list[str]:
        """All keys of the run's context."""
        return self._host.context_keys()

    def now_ms(self) -> int:
        """Wall-clock time in milliseconds since the Unix epoch, as the host sees it."""
        return self._host.now_ms()

    def config(self, name: str) -> str | None:
        """A configuration value or secret the host's configuration grants
        this bundle; ``None`` when there is no such grant."""
        return self._host.config_get(name)

    def log(self, level: Level | str, message: str, /, **fields: Any) -> None:
        """Emit a log record; ``level`` is a :class:`Level` or its name
        (``"trace"``, ``"debug"``, ``"info"``, ``"warn"``, ``"error"``) and
        ``fields`` become the record's structured fields. A field that is not
        JSON is logged as its ``repr``."""
        self._host.log(Level(level), message, _fields_text(fields))


def _fields_text(fields: dict[str, Any]) -> str:
    try:
        return jsontext.encode(fields)
    except (TypeError, ValueError):
        return jsontext.encode({name: _loggable(value) for name, value in fields.items()})


def _loggable(value: Any) -> Any:
    try:
        jsontext.encode(value)
    except (TypeError, ValueError):
        return repr(value)
    return value
