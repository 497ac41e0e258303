#!/usr/bin/env bash
# Installs the programs the test suite runs besides the Rust toolchain and the
# local Azure stand-ins (scripts/azure-local.sh installs those): openssl (the
# Entra ID test makes a throwaway certificate authority), curl (the serve
# tests run the README's curl lines), prometheus (a real Prometheus server
# scrapes a worker), chromium with the browser test's npm packages
# (host/api/tests/browser: the dashboard in headless Chromium) and
# docker-registry (a real OCI registry for the bundle push and pull tests,
# started by each test on a port of its own). Only what is
# missing is installed, with apt-get and npm; no service is started by the
# packages.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# command → Debian package
declare -A packages=([openssl]=openssl [curl]=curl [prometheus]=prometheus [chromium]=chromium
    [docker-registry]=docker-registry)

install_packages() {
    local missing=() tool
    for tool in "${!packages[@]}"; do
        command -v "$tool" >/dev/null || missing+=("${packages[$tool]}")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null || {
        echo "test-tools: missing ${missing[*]} and apt-get is not available; install them by hand" >&2
        return 1
    }
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "test-tools: installing ${missing[*]} (apt-get)" >&2
    # Keep packages from starting system services (prometheus would take
    # port 9090): a policy-rc.d that denies service starts, unless one exists.
    local policy=/usr/sbin/policy-rc.d added_policy="" rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        added_policy=1
    fi
    {
        "${sudo[@]}" apt-get update -q &&
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                "${missing[@]}" ca-certificates
    } >&2 || rc=$?
    [ -n "$added_policy" ] && "${sudo[@]}" rm -f "$policy"
    return "$rc"
}

# The browser test drives Debian's chromium through playwright-core, which
# downloads no browser of its own.
install_browser_test() {
    local dir=host/api/tests/browser
    [ -d "$dir/node_modules/playwright-core" ] && return 0
    echo "test-tools: installing the browser test's packages (npm ci in $dir)" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >&2
}

install_packages
install_browser_test
