#!/usr/bin/env bash
# Runs the whole test suite: installs the programs the tests run
# (scripts/test-tools.sh: openssl, curl, prometheus, chromium and the browser
# test's npm packages), builds the example and test bundles (the conformance
# suite and the plugin runtime tests load the real .wasm files), runs the
# JavaScript and Python SDKs' and example bundles' unit tests, starts the
# local Azure stand-ins (Azurite, the Cosmos stand-in, Redis; the Azure tests
# talk to them), then runs every test of the workspace. Used by CI (.ci/run)
# and the README. The fault-injection suite (host/cli/tests/faults) runs at its
# default sizes as part of the workspace; its summary table is printed at the
# end (scripts/fault-suite.sh runs it alone, with a size flag).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/test-tools.sh
scripts/build-plugins.sh
scripts/sdk-tests.sh
scripts/azure-local.sh start
eval "$(scripts/azure-local.sh env)"
rm -rf target/tmp/fault-suite
status=0
cargo test --workspace --no-fail-fast || status=$?
echo
echo "Fault-injection suite:"
node scripts/fault-summary.mjs target/tmp/fault-suite || status=1
exit "$status"
