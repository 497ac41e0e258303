"""Hatchling build hook: packs the WIT contract into the wheel and the sdist.

The single source of ``node.wit`` is the repository's ``wit/`` directory next
to ``sdk-py/``. A wheel gets it as ``flowcraft_node/wit/node.wit``; an sdist
as ``wit/node.wit``, where a wheel built from that sdist finds it. An editable
install gets nothing: the package reads the checkout's ``wit/`` in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

DESTINATIONS = {"wheel": "flowcraft_node/wit/node.wit", "sdist": "wit/node.wit"}


class WitHook(BuildHookInterface):
    """Adds ``node.wit`` to the wheel and sdist targets."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return
        build_data["force_include"][str(self._wit_source())] = DESTINATIONS[self.target_name]

    def _wit_source(self) -> Path:
        root = Path(self.root)
        candidates = (root / "wit" / "node.wit", root.parent / "wit" / "node.wit")
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"node.wit not found at {' or '.join(str(path) for path in candidates)}")
