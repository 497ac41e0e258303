#!/usr/bin/env bash
# Builds every example and test bundle as a WebAssembly component
# (wasm32-wasip2, cargo profile `guest`) and copies them where the host and
# its tests look for them:
#
#   plugins-example/dist/conformance.wasm, orders.wasm
#   plugins-example/dist/testkit/hostile.wasm, greeter-v1.wasm, greeter-v2.wasm, trivial.wasm
#   plugins-example/dist/testkit/twin/hostile-twin.wasm (a second HTTP-capable bundle)
#   plugins-example/dist/testkit/describe/describe-bomb.wasm, describe-spin.wasm (refused at load)
#
# and the JavaScript/TypeScript bundles, with the flowcraft-node SDK (sdk-js/;
# needs Node.js 20+ and npm):
#
#   plugins-example/dist/ts/orders-ts.wasm, conformance-ts.wasm
#   plugins-example/dist/testkit/js/hostile-js.wasm
#
# and the Python bundle, with the flowcraft-node SDK for Python (sdk-py/, in
# a virtualenv under target/; needs Python 3.11+):
#
#   plugins-example/dist/py/greeter-py.wasm
#
# and, last, the trivial bundle in JavaScript and Python (for the language
# benchmark, host/plugins/benches/languages.rs):
#
#   plugins-example/dist/testkit/js/trivial-js.wasm
#   plugins-example/dist/testkit/py/trivial-py.wasm
#
# Usage: scripts/build-plugins.sh   (from any directory; safe to re-run)
# Honours CARGO_TARGET_DIR and CARGO_BUILD_JOBS.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

target=wasm32-wasip2
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
out_dir="$target_dir/$target/guest"
dist="$repo_root/plugins-example/dist"

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi

build() {
    cargo build --profile guest --target "$target" "$@"
}

# Copies a built component to its place in dist/ (via a rename, so a host
# watching the directory never sees a half-written file) after checking that
# it is a component: "\0asm" followed by the component version bytes 0d 00 01 00.
install_component() {
    local crate="$1" destination="$2"
    local source="$out_dir/$crate.wasm"
    local header
    header="$(od -An -tx1 -N8 "$source" | tr -d ' \n')"
    if [[ "$header" != "0061736d0d000100" ]]; then
        echo "error: $source is not a WebAssembly component (header $header)" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$destination")"
    cp "$source" "$destination.tmp"
    mv "$destination.tmp" "$destination"
    printf '  %-55s %8d bytes\n' "${destination#"$repo_root"/}" "$(wc -c <"$destination")"
}

echo "Building bundles for $target (profile guest)..."
build -p conformance -p orders -p hostile -p greeter -p trivial
echo "Built:"
install_component conformance "$dist/conformance.wasm"
install_component orders "$dist/orders.wasm"
install_component hostile "$dist/testkit/hostile.wasm"
install_component trivial "$dist/testkit/trivial.wasm"
install_component greeter "$dist/testkit/greeter-v1.wasm"

# Version 2 of the greeter is the same crate with feature v2; it replaces the
# v1 artifact in the target directory, which was copied above.
build -p greeter --features greeter/v2
install_component greeter "$dist/testkit/greeter-v2.wasm"

# The hostile crate with feature twin is the bundle `hostile-twin` (one node,
# `twin-fetch`), for tests showing that grants do not leak between bundles. It
# goes to a directory of its own so that loading dist/testkit stays unchanged.
build -p hostile --features hostile/twin
install_component hostile "$dist/testkit/twin/hostile-twin.wasm"

# With feature describe-bomb / describe-spin the hostile crate is a bundle
# whose describe() lists 100,000 node types / never returns, for the host's
# load-time limits. Their own directory keeps loading dist/testkit unchanged.
build -p hostile --features hostile/describe-bomb
install_component hostile "$dist/testkit/describe/describe-bomb.wasm"
build -p hostile --features hostile/describe-spin
install_component hostile "$dist/testkit/describe/describe-spin.wasm"

# npm installs a project's packages (from its lock file) when they are missing
# or older than the lock file; installing sdk-js runs its `prepare` script,
# which builds the SDK.
npm_install() {
    local project="$1"
    if [[ ! -f "$project/node_modules/.package-lock.json" \
        || "$project/package-lock.json" -nt "$project/node_modules/.package-lock.json" ]]; then
        (cd "$project" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}

for tool in node npm python3; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool is missing; the JavaScript and Python bundles need Node.js 20+ with npm and Python 3.11+" >&2
        exit 1
    }
done

echo "Building JavaScript bundles (flowcraft-node build)..."
npm_install sdk-js
(cd sdk-js && npm run --silent build)
for project in plugins-example/orders-ts plugins-example/conformance-ts plugins-example/testkit/hostile-js; do
    npm_install "$project"
    (cd "$project" && npm run --silent build)
done

echo "Building Python bundles (flowcraft-node-py build)..."
venv="$(sdk-py/scripts/dev-env.sh)"
(cd plugins-example/greeter-py && "$venv/bin/flowcraft-node-py" build --out ../dist/py/greeter-py.wasm)

echo "Building the trivial bundle in JavaScript and Python (language benchmark)..."
npm_install plugins-example/testkit/trivial-js
(cd plugins-example/testkit/trivial-js && npm run --silent build)
(cd plugins-example/testkit/trivial-py && "$venv/bin/flowcraft-node-py" build --out ../../dist/testkit/py/trivial-py.wasm)
