#!/usr/bin/env bash
# Installs the programs the test suite runs besides the Rust toolchain and the
# local Azure stand-ins (scripts/azure-local.sh installs those): openssl (the
# Entra ID test makes a throwaway certificate authority), curl (the serve
# tests run the README's curl lines) and prometheus (a real Prometheus server
# scrapes a worker). Only what is missing is installed, with apt-get; no
# service is started by the packages.
set -euo pipefail

# command → Debian package
declare -A packages=([openssl]=openssl [curl]=curl [prometheus]=prometheus)

missing=()
for tool in "${!packages[@]}"; do
    command -v "$tool" >/dev/null || missing+=("${packages[$tool]}")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

command -v apt-get >/dev/null || {
    echo "test-tools: missing ${missing[*]} and apt-get is not available; install them by hand" >&2
    exit 1
}
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "test-tools: installing ${missing[*]} (apt-get)" >&2
# Keep packages from starting system services (prometheus would take port
# 9090): a policy-rc.d that denies service starts, unless one exists.
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    added_policy=1
fi
rc=0
{
    "${sudo[@]}" apt-get update -q &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${missing[@]}" ca-certificates
} >&2 || rc=$?
[ -n "$added_policy" ] && "${sudo[@]}" rm -f "$policy"
exit "$rc"
