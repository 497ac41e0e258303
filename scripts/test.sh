#!/usr/bin/env bash
# Runs the whole test suite: builds the example and test bundles (the
# conformance suite and the plugin runtime tests load the real .wasm files),
# starts the local Azure stand-ins (Azurite, the Cosmos stand-in, Redis; the
# Azure tests talk to them), then runs every test of the workspace. Used by CI
# (.ci/run) and the README.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/build-plugins.sh
scripts/azure-local.sh start
eval "$(scripts/azure-local.sh env)"
cargo test --workspace --no-fail-fast
