"""The ``flowcraft-node-py`` command (also ``python -m flowcraft_node``).

``flowcraft-node-py build [--project DIR] [--out FILE]`` builds the bundle
project in ``DIR`` (default: the current directory) into a component.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import BuildError, build


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        report = build(args.project, args.out)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"built {report.bundle.label()} ({', '.join(report.bundle.uses())}): "
        f"{report.path} ({report.size / 1_000_000:.1f} MB in {report.seconds:.1f} s)"
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowcraft-node-py", description="Build Flowcraft node bundles written in Python."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_command = commands.add_parser(
        "build", help="build the bundle project into a WebAssembly component for flowcraft-host"
    )
    build_command.add_argument(
        "--project", type=Path, default=Path("."), help="the bundle project directory (default: .)"
    )
    build_command.add_argument(
        "--out", type=Path, default=None, help="the component file to write (default: PROJECT/dist/<name>.wasm)"
    )
    return parser
