#!/usr/bin/env bash
# Creates (or updates) the Python virtualenv for the Python SDK and its
# examples, at ${CARGO_TARGET_DIR:-<repo>/target}/python-venv, with sdk-py
# installed editable (so the flowcraft-node-py command uses the checkout) and
# pytest. Prints the venv's path.
#
# Usage: sdk-py/scripts/dev-env.sh   (from any directory; safe to re-run)
#   venv="$(sdk-py/scripts/dev-env.sh)"
#   "$venv/bin/pytest" sdk-py/tests
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${CARGO_TARGET_DIR:-$repo_root/target}/python-venv"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv" >&2
fi
# An editable install follows source edits by itself; reinstall only when the
# packaging changed. pip's output goes to stderr: stdout is the venv path alone.
stamp="$venv/.sdk-py-installed"
packaging="$(cat "$repo_root/sdk-py/pyproject.toml" "$repo_root/sdk-py/hatch_build.py")"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$packaging" ]]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --editable "$repo_root/sdk-py[test]" >&2
    printf '%s' "$packaging" >"$stamp"
fi
echo "$venv"
