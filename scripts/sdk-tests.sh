#!/usr/bin/env bash
# Runs the unit tests of the node SDKs for JavaScript (sdk-js, node --test)
# and Python (sdk-py, pytest) and of the example bundles written with them,
# without a host. Expects scripts/build-plugins.sh to have run (it installs
# the npm packages and the Python virtualenv). Part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "JavaScript SDK and bundles:"
for project in sdk-js plugins-example/orders-ts plugins-example/conformance-ts; do
    echo "  $project"
    (cd "$project" && npm test --silent)
done

echo "Python SDK and bundles:"
venv="$(sdk-py/scripts/dev-env.sh)"
(cd sdk-py && "$venv/bin/pytest" -q)
(cd plugins-example/greeter-py && "$venv/bin/pytest" -q)
