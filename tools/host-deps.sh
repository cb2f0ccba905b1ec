#!/bin/sh
# Install the Debian packages pyrhfos's tests and demo need, only when missing.
# Idempotent: a second run installs nothing and does not touch apt.
set -eu
need=""
command -v ip >/dev/null 2>&1 || need="$need iproute2"
command -v ifconfig >/dev/null 2>&1 || need="$need net-tools"
command -v nft >/dev/null 2>&1 || need="$need nftables"
command -v make >/dev/null 2>&1 || need="$need make"
# The GUI tests drive Debian's Chromium through Playwright (never a downloaded browser).
[ -x /usr/bin/chromium ] || need="$need chromium"
if ! command -v python3 >/dev/null 2>&1; then
    need="$need python3 python3-venv python3-pip"
elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need="$need python3-venv python3-pip"
fi
for extra in "$@"; do
    command -v "$extra" >/dev/null 2>&1 || need="$need $extra"
done
if [ -n "$need" ]; then
    echo "host-deps: installing$need"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need
fi
