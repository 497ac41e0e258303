#!/usr/bin/env bash
# The benchmark in one command: flowcraft-host against the TypeScript reference worker (npm flowcraft
# 2.10.1 with upstream-equivalent Azure wiring) on private local services. Builds what it needs (the
# release binary, the plugin bundles, the TS side's npm packages), starts fresh stand-ins on ports of
# its own (so services that tests use on the default ports are left alone), runs bench/driver/main.mjs
# and stops the stand-ins again. Prints one table; writes JSON and markdown to bench/results/.
#
# Usage: bench/run.sh [--quick] [--seconds N] [--in-flight N] [--workloads a,b] [--skip a,b] [--only a,b] [--out DIR]
#   --quick  a smoke run of a few minutes (short windows, 20 runs in flight); results go to target/bench/
#   --skip/--only  sections: one, three, mixed, idle, latency, embedded (e.g. --only latency)
# Environment: BENCH_QUEUE_PORT (default 20001), BENCH_COSMOS_PORT (28081), BENCH_REDIS_PORT (20379),
# CARGO_TARGET_DIR, BENCH_WORKER_LOG (worker log filter, default warn; logs in target/bench/logs/).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"

echo "bench: building flowcraft-host (release), the plugin bundles and the TS reference..." >&2
cargo build --release -p flowcraft-host
scripts/build-plugins.sh >/dev/null
(cd bench/ts-reference && npm ci --no-audit --no-fund --loglevel=error)

export FLOWCRAFT_QUEUE_PORT="${BENCH_QUEUE_PORT:-20001}"
export FLOWCRAFT_COSMOS_PORT="${BENCH_COSMOS_PORT:-28081}"
export FLOWCRAFT_REDIS_PORT="${BENCH_REDIS_PORT:-20379}"
export FLOWCRAFT_LOCAL_DIR="$target_dir/bench/services"
# Fresh, empty services for every benchmark; stopped however the benchmark ends.
scripts/azure-local.sh stop
trap 'scripts/azure-local.sh stop' EXIT
scripts/azure-local.sh start
eval "$(scripts/azure-local.sh env)"

BENCH_SERVICES_DIR="$FLOWCRAFT_LOCAL_DIR" BENCH_SCRATCH_DIR="$target_dir/bench" \
    BENCH_HOST_BINARY="$target_dir/release/flowcraft-host" node bench/driver/main.mjs "$@"
