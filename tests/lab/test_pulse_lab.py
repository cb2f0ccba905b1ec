"""pulse on two real nodes: real namespaces, veths, a bridge, UDP beats, ARP and VIPs.

Timers are short (keepalive 0.2 s, deadtime 1 s) so the suite stays fast; the
waits below are generous upper bounds on behaviour, never performance figures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pyrhfos_lab.testbed import LABEL, VIP, Testbed, wait_until

pytestmark = pytest.mark.lab

KEEPALIVE, DEADTIME = 0.2, 1.0
SETTLE = 15.0  # upper bound for anything that should happen within a few deadtimes


def started_pair(bed: Testbed) -> Testbed:
    bed.start("a")
    bed.start("b")
    assert bed.wait_holders({"a"}, SETTLE) == {"a"}, bed.log("a")
    assert wait_until(lambda: "standby" in bed.log("b"), SETTLE)
    return bed


def test_vip_only_on_primary_with_alias_label(bed: Testbed) -> None:
    started_pair(bed)
    assert bed.vip_label("a") == LABEL
    assert "eth0:1" in bed.a.ifconfig() and VIP in bed.a.ifconfig()
    assert VIP not in bed.b.ifconfig() and "eth0:1" not in bed.b.ifconfig()
    assert wait_until(lambda: bed.fetch() == "a", 5)
    assert wait_until(lambda: bed.commands_run("a") == ["start"], 5)
    assert bed.commands_run("b") == []


def test_a_second_pulse_on_the_active_node_leaves_its_vip_alone(bed: Testbed) -> None:
    """Started with another pid file it is not refused by the pid file; it must still not clear
    the running pulse's VIP as "left by an earlier run" before it finds out it cannot run."""
    started_pair(bed)
    for socket_path, why in (
        (bed.socket_path("a"), "another pulse answers"),
        (bed.workdir / "2.sock", "port"),
    ):
        second = bed.run_pulse(
            "a", "-n", "--pidfile", str(bed.workdir / "2.pid"), "--socket", str(socket_path)
        )
        assert second.returncode == 1 and why in second.stderr, second.stderr
        assert "earlier run" not in second.stderr
        assert bed.holders() == {"a"}
        assert bed.ask("a", "status").returncode == 0, "the running pulse keeps its control socket"
    assert "had vanished" not in bed.log("a")


def test_link_down_backup_takes_over_and_client_follows_by_arp(bed: Testbed) -> None:
    started_pair(bed)
    assert wait_until(lambda: bed.fetch() == "a", 5)
    assert bed.client.neigh_mac(VIP) == bed.a.mac
    bed.a.link_down()
    assert wait_until(lambda: bed.holds_vip("b"), SETTLE), bed.log("b")
    # Gratuitous ARP, not an expired cache entry, moves the client: check at once.
    assert wait_until(lambda: bed.client.neigh_mac(VIP) == bed.b.mac, 2.0)
    assert wait_until(lambda: bed.fetch() == "b", 5)
    assert "no heartbeat from partner" in bed.log("b")


def test_returning_primary_stays_standby_and_forceactive_takes_back(bed: Testbed) -> None:
    started_pair(bed)
    bed.kill("a")
    bed.a.link_down()
    assert wait_until(lambda: bed.holds_vip("b"), SETTLE)
    # The dead node's leftover VIP is removed when pulse starts again.
    bed.a.link_up()
    bed.start("a")
    assert wait_until(lambda: "partner is already active" in bed.log("a"), SETTLE), bed.log("a")
    time.sleep(3 * DEADTIME)
    assert bed.holders() == {"b"}, "a returning primary must not move the VIP back"
    assert bed.fetch() == "b"
    bed.stop("a")
    bed.start("a", "--forceactive")
    assert bed.wait_holders({"a"}, SETTLE) == {"a"}, bed.log("a")
    assert wait_until(lambda: bed.fetch() == "a", 5)


def test_sigterm_on_active_hands_over_without_waiting_deadtime(lab: Any, tmp_path: Path) -> None:
    deadtime = 20.0  # so long that only the last beat can explain a quick takeover
    bed = Testbed(lab, tmp_path, keepalive=1.0, deadtime=deadtime)
    started_pair(bed)
    t0 = time.monotonic()
    assert bed.stop("a") == 0
    assert wait_until(lambda: bed.holds_vip("b"), deadtime / 2), bed.log("b")
    assert time.monotonic() - t0 < deadtime / 2
    assert not bed.holds_vip("a")
    assert "partner stopped cleanly" in bed.log("b")
    assert bed.commands_run("a") == ["start", "stop"]
    assert wait_until(lambda: bed.fetch() == "b", 5)


def test_both_started_at_once_one_holder(bed: Testbed) -> None:
    bed.start("a")
    bed.start("b")
    time.sleep(3 * DEADTIME)
    assert bed.holders() == {"a"}
    assert bed.commands_run("b") == []


def test_test_start_takes_nothing(bed: Testbed) -> None:
    bed.start("a", "--test-start")
    assert wait_until(lambda: "test-start: would add" in bed.log("a"), SETTLE), bed.log("a")
    assert bed.holders() == set()
    assert bed.commands_run("a") == []
    assert "-> active" in bed.log("a")


def test_startup_error_names_the_addresses_this_host_has(bed: Testbed) -> None:
    res = bed.run_pulse("client", "-n", "--pidfile", str(bed.workdir / "client.pid"))
    assert res.returncode == 2
    assert "neither primary nor backup" in res.stderr and "192.0.2.50" in res.stderr


def piranha(bed: Testbed, role: str, node_name: str, deadtime: float = DEADTIME) -> subprocess.Popen[Any]:
    node = bed.nodes[node_name]
    partner = bed.b.ip if node_name == "a" else bed.a.ip
    script = str(Path(__file__).with_name("piranha_peer.py"))
    argv = [sys.executable, script, role, partner, "539", str(KEEPALIVE), str(deadtime)]
    return node.popen(argv, stdout=subprocess.PIPE)


def peer_lines(proc: subprocess.Popen[Any], until: float) -> list[dict[str, Any]]:
    """Lines the emulated Piranha peer printed within ``until`` seconds (non-blocking tail).

    Raw os.read, not readline: readline would pull several waiting lines into the file object's
    buffer and return one, and select() never reports the rest.
    """
    import selectors

    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    out: list[dict[str, Any]] = []
    pending = b""
    end = time.monotonic() + until
    while time.monotonic() < end:
        if sel.select(timeout=max(0.0, end - time.monotonic())):
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            out += [json.loads(line) for line in lines if line]
    return out


def test_piranha_backup_and_pyrhfos_primary_agree(bed: Testbed) -> None:
    # A patient peer: it must not go active because a is slow to start on a busy host.
    peer = piranha(bed, "backup", "b", deadtime=SETTLE)
    bed.start("a")
    lines = peer_lines(peer, 4 * DEADTIME)
    assert bed.wait_holders({"a"}, SETTLE) == {"a"}, bed.log("a")
    heard = {ln["magic"]: ln["raw"] for ln in lines if ln["event"] == "heard"}
    assert heard.get("RUNNING") == "bebaefbe", "pyrhfos answers a Piranha peer in its byte order"
    final = [ln["active"] for ln in lines if "active" in ln]
    assert final and final[-1] is False, lines
    assert "speaks Piranha heartbeats" in bed.log("a")


def test_piranha_primary_active_keeps_pyrhfos_backup_standby(bed: Testbed) -> None:
    peer = piranha(bed, "primary", "a")
    time.sleep(2 * DEADTIME)  # the lone Piranha primary activates (partner dead)
    bed.start("b")
    lines = peer_lines(peer, 4 * DEADTIME)
    assert bed.holders() == set()
    assert "-> active" not in bed.log("b"), bed.log("b")
    assert not [ln for ln in lines if ln["event"] == "deactivate"], lines
    heard = {ln["magic"] for ln in lines if ln["event"] == "heard"}
    assert heard == {"STOPPED"}, "pyrhfos answers in Piranha's format, as a standby"
    # Piranha's pulse exits on SIGTERM without a word: pyrhfos takes over after deadtime.
    peer.send_signal(signal.SIGTERM)
    assert wait_until(lambda: bed.holds_vip("b"), SETTLE), bed.log("b")


def test_config_mismatch_is_logged_once(bed: Testbed) -> None:
    other = bed.workdir / "lvs-b.cf"
    other.write_text(bed.config_path.read_text().replace("serial_no = 1", "serial_no = 2"))
    bed.start("a")
    bed.start("b", config=other)
    assert bed.wait_holders({"a"}, SETTLE) == {"a"}
    time.sleep(10 * KEEPALIVE)
    for name in ("a", "b"):
        assert bed.log(name).count("config mismatch") == 1, bed.log(name)
    assert "serial 2" in bed.log("a") and "serial 1" in bed.log("b")


def test_daemonizes_with_pid_file_and_releases_on_sigterm(bed: Testbed) -> None:
    import os

    import psutil

    pidfile = bed.workdir / "daemon.pid"
    res = bed.run_pulse("a", "--pidfile", str(pidfile))
    pid = None
    try:
        assert res.returncode == 0, res.stderr
        assert wait_until(pidfile.exists, 10)
        pid = int(pidfile.read_text())
        proc = psutil.Process(pid)
        assert proc.ppid() != os.getpid(), "detached from its starter"
        assert wait_until(lambda: bed.holds_vip("a"), SETTLE)
        os.kill(pid, signal.SIGTERM)
        assert wait_until(lambda: not psutil.pid_exists(pid), SETTLE)
        pid = None
        assert not bed.holds_vip("a") and not pidfile.exists()
    finally:
        # It left the lab's process group when it daemonized: end it by pid, if it is ours.
        if (
            pid is not None
            and psutil.pid_exists(pid)
            and "pyrhfos.cli" in " ".join(psutil.Process(pid).cmdline())
        ):
            os.kill(pid, signal.SIGKILL)
