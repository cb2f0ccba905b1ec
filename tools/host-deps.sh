#!/bin/sh
# Install the Debian packages pyrhfos's tests and demo need, only when missing.
# Idempotent: a second run installs nothing and does not touch apt.
set -eu
need=""
command -v ip >/dev/null 2>&1 || need="$need iproute2"
command -v ifconfig >/dev/null 2>&1 || need="$need net-tools"
command -v nft >/dev/null 2>&1 || need="$need nftables"
command -v make >/dev/null 2>&1 || need="$need make"
# The init scripts and these tools are checked by shellcheck in the tests.
command -v shellcheck >/dev/null 2>&1 || need="$need shellcheck"
# The GUI tests drive Debian's Chromium through Playwright (never a downloaded browser).
[ -x /usr/bin/chromium ] || need="$need chromium"
if ! command -v python3 >/dev/null 2>&1; then
    need="$need python3 python3-venv python3-pip"
elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need="$need python3-venv python3-pip"
fi
# pulse sync is tested against a real sshd that the test starts inside a lab namespace.
command -v ssh >/dev/null 2>&1 || need="$need openssh-client"
# ... and with tcsh as the partner's login shell (pulse sync hands it nothing but "sh -s").
command -v tcsh >/dev/null 2>&1 || need="$need tcsh"
if [ ! -x /usr/sbin/sshd ]; then
    need="$need openssh-server"
    # Debian's own switch: the packaged sshd never runs on this host (unit and init script honour it).
    touch /etc/ssh/sshd_not_to_be_run 2>/dev/null || { mkdir -p /etc/ssh && touch /etc/ssh/sshd_not_to_be_run; }
fi
# LVS mode: libnftables' JSON API from Python (Debian's binding; the Makefile links it into the venv),
# and conntrack/conntrackd for connection counts, flushes and the directors' connection sync.
[ -d /usr/lib/python3/dist-packages/nftables ] || need="$need python3-nftables"
[ -x /usr/sbin/conntrack ] || need="$need conntrack"
[ -x /usr/sbin/conntrackd ] || need="$need conntrackd"
for extra in "$@"; do
    command -v "$extra" >/dev/null 2>&1 || need="$need $extra"
done
if [ -n "$need" ]; then
    echo "host-deps: installing$need"
    # No service may start during the install (policy-rc.d exit 101); ours only if none is there.
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need
fi
