#!/usr/bin/env bash
# Local stand-ins for the Azure services flowcraft-host uses, on loopback:
#   queue  - Azurite 3.35.0 queue service (scripts/azure-local/queue-server.mjs)      127.0.0.1:10001
#   cosmos - @vercel/cosmosdb-server 1.0.1 + our fixes (scripts/azure-local/cosmos-server.mjs) 127.0.0.1:8081
#   redis  - redis-server (Debian package)                                             127.0.0.1:6379
#
# Usage: scripts/azure-local.sh start | stop | status | env | smoke | restart <queue|cosmos|redis>
#   start    install what is missing, start what is not running, wait until every service answers
#   stop     stop what `start` started (by pid file)
#   status   one line per service; exit 1 unless all are up
#   env      `export` lines for clients:  eval "$(scripts/azure-local.sh env)"
#   smoke    end-to-end checks of the running services (scripts/azure-local/smoke.mjs, redis-cli ping)
#   restart  stop and start one service (its in-memory data is lost, except Redis's with
#            FLOWCRAFT_REDIS_PERSIST=1), for fault-injection tests
#
# Environment: FLOWCRAFT_LOCAL_DIR (state dir: logs, pid files; default <repo>/target/azure-local),
# FLOWCRAFT_QUEUE_PORT, FLOWCRAFT_COSMOS_PORT, FLOWCRAFT_REDIS_PORT, FLOWCRAFT_COSMOS_SCHEME (http|https,
# default http), FLOWCRAFT_START_TIMEOUT (seconds per service, default 30), FLOWCRAFT_REDIS_PERSIST=1 (Redis
# keeps every acknowledged write in an append-only file in the state dir, fsynced per write, as a
# production Redis with AOF persistence does, so a restart or a kill -9 loses nothing).
# See scripts/azure-local/README.md.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pkg_dir="$repo/scripts/azure-local"
state_dir="${FLOWCRAFT_LOCAL_DIR:-$repo/target/azure-local}"
host=127.0.0.1
queue_port="${FLOWCRAFT_QUEUE_PORT:-10001}"
cosmos_port="${FLOWCRAFT_COSMOS_PORT:-8081}"
redis_port="${FLOWCRAFT_REDIS_PORT:-6379}"
cosmos_scheme="${FLOWCRAFT_COSMOS_SCHEME:-http}"
start_timeout="${FLOWCRAFT_START_TIMEOUT:-30}"
services=(queue cosmos redis)

# Well-known, publicly documented emulator credentials (not secrets).
azurite_account=devstoreaccount1
azurite_key='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
cosmos_key='C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=='

log() { echo "azure-local: $*" >&2; }
die() { log "error: $*"; exit 1; }

case "$cosmos_scheme" in http | https) ;; *) die "FLOWCRAFT_COSMOS_SCHEME must be http or https" ;; esac

port_of() {
    case "$1" in
        queue) echo "$queue_port" ;;
        cosmos) echo "$cosmos_port" ;;
        redis) echo "$redis_port" ;;
        *) die "unknown service '$1' (queue|cosmos|redis)" ;;
    esac
}
pid_file() { echo "$state_dir/$1.pid"; }
log_file() { echo "$state_dir/$1.log"; }

# ---------------------------------------------------------------------------------------------------
# Installation

npm_installed() {
    node -e '
        const dir = process.argv[1] + "/node_modules/";
        const want = { "azurite": "3.35.0", "@vercel/cosmosdb-server": "1.0.1" };
        for (const [name, version] of Object.entries(want)) {
            try {
                if (require(dir + name + "/package.json").version !== version) process.exit(1);
            } catch { process.exit(1); }
        }' "$pkg_dir" 2>/dev/null
}

install_npm_packages() {
    command -v node >/dev/null || die "node is not installed (Node.js >= 20 is required)"
    command -v npm >/dev/null || die "npm is not installed"
    npm_installed && return 0
    log "installing azurite and @vercel/cosmosdb-server into scripts/azure-local/node_modules"
    local npm_log="$state_dir/npm-install.log"
    if ! (cd "$pkg_dir" && npm ci --no-audit --no-fund --loglevel=error) >"$npm_log" 2>&1; then
        cat "$npm_log" >&2
        die "npm ci failed in $pkg_dir (log: $npm_log)"
    fi
    npm_installed || die "npm ci finished but the pinned packages are not in $pkg_dir/node_modules"
}

install_redis() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
    command -v apt-get >/dev/null || die "redis-server is not installed and apt-get is not available"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "redis-server is not installed; installing it needs root (or sudo)"
        sudo=(sudo)
    fi
    log "installing redis-server (apt-get)"
    # Keep the package from starting a system-wide redis on 6379 (it would take our port): a policy-rc.d
    # that denies service starts, unless the machine already has one (Docker images do).
    local policy=/usr/sbin/policy-rc.d added_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        added_policy=1
    fi
    local apt_log="$state_dir/apt-install.log" rc=0
    {
        "${sudo[@]}" apt-get update &&
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server
    } >"$apt_log" 2>&1 || rc=$?
    [ -n "$added_policy" ] && "${sudo[@]}" rm -f "$policy"
    if [ "$rc" -ne 0 ]; then
        tail -n 30 "$apt_log" >&2
        die "apt-get install redis-server failed (log: $apt_log)"
    fi
    command -v redis-server >/dev/null || die "redis-server still not on PATH after apt-get install"
}

# ---------------------------------------------------------------------------------------------------
# Processes

# Is this pid a live process? (A zombie is not: pid 1 of a container may be slow to reap it.)
proc_alive() {
    kill -0 "$1" 2>/dev/null || return 1
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    stat="${stat##*) }"
    [ "${stat%% *}" != Z ]
}

# Prints the pid of a running service started by this script, or fails.
running_pid() {
    local svc="$1" file pid
    file="$(pid_file "$svc")"
    [ -s "$file" ] || return 1
    pid="$(tr -dc '0-9' <"$file")"
    [ -n "$pid" ] && proc_alive "$pid" || return 1
    # Guard against a recycled pid: the process must be the one we started.
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    case "$svc" in
        queue) [[ "$cmdline" == *queue-server.mjs* ]] || return 1 ;;
        cosmos) [[ "$cmdline" == *cosmos-server.mjs* ]] || return 1 ;;
        redis) [[ "$cmdline" == *redis-server* ]] || return 1 ;;
    esac
    echo "$pid"
}

# Is the process of the pid file alive? (Unlike running_pid, no check of the command line, which is
# still `bash`/`setsid` for a moment after launch.)
pid_alive() {
    local file pid
    file="$(pid_file "$1")"
    [ -s "$file" ] || return 1
    pid="$(tr -dc '0-9' <"$file")"
    [ -n "$pid" ] && proc_alive "$pid"
}

# Does the service answer on its port?
probe() {
    local svc="$1" port
    port="$(port_of "$svc")"
    case "$svc" in
        queue) http_ok "http://$host:$port/_flowcraft/stats" ;;
        cosmos) http_ok "$cosmos_scheme://$host:$port/" ;;
        redis) [ "$(redis-cli -h "$host" -p "$port" ping 2>/dev/null)" = "PONG" ] ;;
    esac
}

http_ok() {
    if command -v curl >/dev/null; then
        curl -fsS -k -o /dev/null --max-time 2 "$1" 2>/dev/null
    else
        NODE_TLS_REJECT_UNAUTHORIZED=0 node -e '
            fetch(process.argv[1], { signal: AbortSignal.timeout(2000) })
                .then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1));' "$1" 2>/dev/null
    fi
}

port_busy() {
    (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null
}

launch() {
    local svc="$1" port log
    # Detach the node services from the caller's session (killing the caller's process group must not
    # take them down). A simple command run in the background is forked and exec'd directly, and the
    # child is not a process-group leader, so setsid execs in place: $! is the service's pid.
    local detach=()
    command -v setsid >/dev/null && detach=(setsid)
    port="$(port_of "$svc")"
    log="$(log_file "$svc")"
    if port_busy "$port"; then
        die "$svc: port $host:$port is already in use by another process (set FLOWCRAFT_$(echo "$svc" | tr a-z A-Z)_PORT)"
    fi
    : >"$log"
    case "$svc" in
        queue)
            "${detach[@]}" node "$pkg_dir/queue-server.mjs" --host "$host" --port "$port" --keep-alive-timeout 120 \
                </dev/null >>"$log" 2>&1 &
            echo $! >"$(pid_file queue)"
            ;;
        cosmos)
            local tls=()
            [ "$cosmos_scheme" = https ] && tls=(--https)
            "${detach[@]}" node "$pkg_dir/cosmos-server.mjs" --host "$host" --port "$port" --keep-alive-timeout 120 \
                "${tls[@]}" </dev/null >>"$log" 2>&1 &
            echo $! >"$(pid_file cosmos)"
            ;;
        redis)
            rm -f "$(pid_file redis)"
            local persistence=(--appendonly no)
            [ "${FLOWCRAFT_REDIS_PERSIST:-0}" = 1 ] && persistence=(--appendonly yes --appendfsync always)
            redis-server --bind "$host" --port "$port" --save '' "${persistence[@]}" --daemonize yes \
                --pidfile "$(pid_file redis)" --logfile "$log" --dir "$state_dir" >>"$log" 2>&1 ||
                die "redis: redis-server failed to start; log: $log"
            ;;
    esac
}

wait_ready() {
    local svc="$1" port log started="$SECONDS"
    port="$(port_of "$svc")"
    log="$(log_file "$svc")"
    while :; do
        if probe "$svc"; then
            return 0
        fi
        # (the daemonized redis writes its pid file a moment after `redis-server` returns)
        if [ "$svc" != redis ] || [ $((SECONDS - started)) -ge 2 ]; then
            if ! pid_alive "$svc"; then
                tail -n 20 "$log" >&2 2>/dev/null || true
                die "$svc exited before answering on $host:$port; log: $log"
            fi
        fi
        if [ $((SECONDS - started)) -ge "$start_timeout" ]; then
            tail -n 20 "$log" >&2 2>/dev/null || true
            die "$svc did not answer on $host:$port within ${start_timeout}s; log: $log"
        fi
        sleep 0.1
    done
}

start_service() {
    local svc="$1" pid
    if pid="$(running_pid "$svc")"; then
        probe "$svc" || wait_ready "$svc"
        log "$svc already running (pid $pid, $host:$(port_of "$svc"))"
        return 0
    fi
    launch "$svc"
}

stop_service() {
    local svc="$1" pid i
    if ! pid="$(running_pid "$svc")"; then
        rm -f "$(pid_file "$svc")"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        proc_alive "$pid" || break
        sleep 0.1
    done
    if proc_alive "$pid"; then
        log "$svc (pid $pid) did not stop on SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$(pid_file "$svc")"
    log "$svc stopped (pid $pid)"
}

# ---------------------------------------------------------------------------------------------------
# Commands

cmd_start() {
    mkdir -p "$state_dir"
    install_npm_packages
    install_redis
    local svc
    for svc in "${services[@]}"; do start_service "$svc"; done
    for svc in "${services[@]}"; do wait_ready "$svc"; done
    log "up: queue $host:$queue_port, cosmos $cosmos_scheme://$host:$cosmos_port, redis $host:$redis_port (state: $state_dir)"
}

cmd_stop() {
    local svc
    for svc in "${services[@]}"; do stop_service "$svc"; done
}

cmd_status() {
    local svc pid ok=0 state
    for svc in "${services[@]}"; do
        if pid="$(running_pid "$svc")"; then
            if probe "$svc"; then state="up (pid $pid)"; else state="NOT ANSWERING (pid $pid)"; ok=1; fi
        else
            state="stopped"
            ok=1
        fi
        printf '%-7s %-16s %s\n' "$svc" "$host:$(port_of "$svc")" "$state"
    done
    printf '%-7s %s\n' state "$state_dir"
    return "$ok"
}

cmd_env() {
    cat <<EOF
export AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=$azurite_account;AccountKey=$azurite_key;QueueEndpoint=http://$host:$queue_port/$azurite_account;'
export COSMOS_DB_CONNECTION_STRING='AccountEndpoint=$cosmos_scheme://$host:$cosmos_port/;AccountKey=$cosmos_key;'
export REDIS_URL='redis://$host:$redis_port'
export AZURE_COSMOS_BINARY_ENCODING_ENABLED=false
EOF
}

cmd_smoke() {
    eval "$(cmd_env)"
    local rc=0
    if [ "$cosmos_scheme" = https ]; then
        # the package's self-signed certificate
        NODE_TLS_REJECT_UNAUTHORIZED=0 NODE_NO_WARNINGS=1 node "$pkg_dir/smoke.mjs" || rc=1
    else
        node "$pkg_dir/smoke.mjs" || rc=1
    fi
    echo "redis stand-in"
    if [ "$(redis-cli -h "$host" -p "$redis_port" ping 2>&1)" = "PONG" ]; then
        echo "  ok   redis-cli ping -> PONG"
    else
        echo "  FAIL redis-cli ping"
        rc=1
    fi
    [ "$rc" -eq 0 ] && echo "smoke: redis ok" || echo "smoke: FAILED"
    return "$rc"
}

cmd_restart() {
    local svc="${1:-}"
    [ -n "$svc" ] || die "usage: $0 restart <queue|cosmos|redis>"
    port_of "$svc" >/dev/null
    mkdir -p "$state_dir"
    stop_service "$svc"
    if [ "$svc" = redis ]; then install_redis; else install_npm_packages; fi
    start_service "$svc"
    wait_ready "$svc"
    log "$svc restarted ($host:$(port_of "$svc"))"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    smoke) cmd_smoke ;;
    restart) cmd_restart "${2:-}" ;;
    *)
        echo "usage: $0 start | stop | status | env | smoke | restart <queue|cosmos|redis>" >&2
        exit 2
        ;;
esac
