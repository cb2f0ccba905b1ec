"""Faults that turn other failover daemons into split brain, injected into real namespaces.

Each test ends with the one property that matters: exactly one node holds the VIP and
the client reaches it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from pyrhfos_lab.testbed import VIP, Testbed, wait_until

pytestmark = pytest.mark.lab

KEEPALIVE, DEADTIME = 0.2, 1.0
SETTLE = 15.0


def pair(lab: Any, tmp_path: Path, **kw: Any) -> Testbed:
    bed = Testbed(lab, tmp_path, keepalive=KEEPALIVE, deadtime=DEADTIME, **kw)
    bed.start("a")
    bed.start("b")
    assert bed.wait_holders({"a"}, SETTLE) == {"a"}, bed.log("a")
    assert wait_until(lambda: "standby" in bed.log("b"), SETTLE)
    assert wait_until(lambda: bed.fetch() == "a", SETTLE)
    return bed


def samples(proc: Any) -> list[dict[str, Any]]:
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def test_sigkill_of_pulse_on_active_vip_leaves_by_itself(lab: Any, tmp_path: Path) -> None:
    bed = pair(lab, tmp_path)
    bed.kill("a")  # link and service stay up: only the daemon dies
    assert wait_until(lambda: bed.holders() == {"b"}, SETTLE), (bed.holders(), bed.log("b"))
    assert wait_until(lambda: bed.fetch() == "b", SETTLE)
    time.sleep(2 * DEADTIME)
    assert bed.holders() == {"b"} and bed.fetch() == "b"


def test_frozen_active_releases_on_thaw_without_serving(lab: Any, tmp_path: Path) -> None:
    bed = pair(lab, tmp_path)
    bed.signal("a", signal.SIGSTOP)
    try:
        assert wait_until(lambda: bed.holds_vip("b"), SETTLE), bed.log("b")
        assert wait_until(lambda: not bed.holds_vip("a"), SETTLE), "the kernel let a's VIP lease lapse"
        prober = bed.start_prober(0.01, 0.05)
        time.sleep(0.5)
        thaw = time.time()
    finally:
        bed.signal("a", signal.SIGCONT)
    assert wait_until(lambda: "frozen" in bed.log("a"), SETTLE), bed.log("a")
    time.sleep(3 * DEADTIME)
    got = [s for s in samples(prober) if s["t"] >= thaw]
    assert got and not [s for s in got if s["who"] == "a"], "a served after the thaw"
    assert bed.holders() == {"b"}


def nft(bed: Testbed, name: str, *rules: str) -> None:
    bed.nodes[name].run("nft", *rules)


@pytest.mark.skipif(shutil.which("nft") is None, reason="nftables (nft) not installed")
def test_heartbeat_partition_heals_to_one_holder_announced(lab: Any, tmp_path: Path) -> None:
    bed = pair(lab, tmp_path)
    nft(bed, "a", "add table inet part")
    nft(bed, "a", "add chain inet part in { type filter hook input priority 0 ; }")
    nft(bed, "a", "add chain inet part out { type filter hook output priority 0 ; }")
    nft(bed, "a", "add rule inet part in udp dport 539 drop")
    nft(bed, "a", "add rule inet part out udp dport 539 drop")
    assert wait_until(lambda: bed.holders() == {"a", "b"}, SETTLE), "both serve while they cannot hear"
    assert wait_until(lambda: bed.client.neigh_mac(VIP) == bed.b.mac, SETTLE)
    nft(bed, "a", "delete table inet part")
    healed = time.monotonic()
    assert wait_until(lambda: bed.holders() == {"a"}, SETTLE)
    settle = time.monotonic() - healed
    assert wait_until(lambda: bed.client.neigh_mac(VIP) == bed.a.mac, 5), "the keeper re-announced"
    assert bed.fetch() == "a"
    sys.stderr.write(f"partition healed to one holder in {settle:.2f}s (keepalive {KEEPALIVE}s)\n")


def test_start_cmd_failure_leaves_no_vip_without_service(lab: Any, tmp_path: Path) -> None:
    bed = Testbed(lab, tmp_path, keepalive=KEEPALIVE, deadtime=DEADTIME)
    start, stop = bed.service_commands()
    failing = replace_service(bed, start_cmd=f'[ "$PYRHFOS_NODE" != a ] && {start}')
    bed.save_config(failing)
    bed.start("a")
    bed.start("b")
    assert wait_until(lambda: bed.holders() == {"b"}, SETTLE), bed.log("a") + bed.log("b")
    assert "start failed" in bed.log("a")
    time.sleep(3 * DEADTIME)
    assert bed.holders() == {"b"} and bed.fetch() == "b"


def test_hanging_stop_cmd_is_killed_and_release_completes(lab: Any, tmp_path: Path) -> None:
    bed = Testbed(lab, tmp_path, keepalive=KEEPALIVE, deadtime=DEADTIME)
    bed.save_config(replace_service(bed, stop_cmd="sleep 313 & sleep 313"))
    bed.start("a", "--command-timeout", "1")
    bed.start("b")
    assert bed.wait_holders({"a"}, SETTLE) == {"a"}
    assert bed.stop("a", timeout=SETTLE) == 0, bed.log("a")
    assert "timed out" in bed.log("a") and "killed" in bed.log("a")
    assert not bed.holds_vip("a")
    assert wait_until(lambda: bed.holders() == {"b"}, SETTLE)
    orphans = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "313"]]
    assert orphans == [], "the stop_cmd's whole tree was killed"


def test_both_started_at_once_ten_times_one_holder(lab: Any, tmp_path: Path) -> None:
    bed = Testbed(lab, tmp_path, keepalive=KEEPALIVE, deadtime=DEADTIME)
    for _ in range(10):
        bed.start("a", wait=False)
        bed.start("b", wait=False)
        assert bed.wait_holders({"a"}, SETTLE) == {"a"}, bed.log("b")
        time.sleep(DEADTIME)
        assert bed.holders() == {"a"}
        assert bed.stop("b") == 0 and bed.stop("a") == 0
        assert bed.holders() == set()


def replace_service(bed: Testbed, **changes: Any) -> Any:
    return dataclasses.replace(bed.cfg, failovers=(dataclasses.replace(bed.cfg.failovers[0], **changes),))


def test_either_heartbeat_path_alone_keeps_the_pair_together(lab: Any, tmp_path: Path) -> None:
    bed = pair(lab, tmp_path, private=True)
    for ifname in ("eth1", "eth0"):
        bed.a.link_down(ifname)
        time.sleep(3 * DEADTIME)
        assert bed.holders() == {"a"}, f"cutting {ifname} alone caused a failover"
        assert "-> active" not in bed.log("b")
        bed.a.link_up(ifname)
        time.sleep(DEADTIME)
    bed.a.link_down("eth0")
    bed.a.link_down("eth1")
    assert wait_until(lambda: bed.holds_vip("b"), SETTLE), "both paths cut: the backup takes over"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nft") is None, reason="nftables (nft) not installed")
def test_thirty_percent_beat_loss_for_two_minutes_causes_no_failover(lab: Any, tmp_path: Path) -> None:
    keepalive = 0.1  # deadtime = 3 x keepalive: the tightest setting the issue asks to survive
    bed = Testbed(lab, tmp_path, keepalive=keepalive, deadtime=3 * keepalive)
    bed.start("a")
    bed.start("b")
    assert bed.wait_holders({"a"}, SETTLE) == {"a"}, bed.log("a")
    assert wait_until(lambda: "standby" in bed.log("b"), SETTLE)
    for name in ("a", "b"):
        nft(bed, name, "add table inet loss")
        nft(bed, name, "add chain inet loss in { type filter hook input priority 0 ; }")
        nft(bed, name, "add rule inet loss in udp dport 539 numgen random mod 100 < 30 drop")
    time.sleep(120)
    for name in ("a", "b"):
        nft(bed, name, "delete table inet loss")
    assert bed.holders() == {"a"}
    assert "-> active" not in bed.log("b"), bed.log("b")
    assert bed.log("a").count("-> active") == 1
