"""Authenticated heartbeats (heartbeat_key) on real nodes; forged beats from the partner's host."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pyrhfos_lab.testbed import Testbed, wait_until

pytestmark = pytest.mark.lab

KEEPALIVE, DEADTIME = 0.2, 1.0

FORGE = """
import socket, sys
from pyrhfos.core.wire import Beat, Flag, encode
from pyrhfos.core.vocab import Role, State
key, target, n = sys.argv[1].encode(), sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for seq in range(1, n + 1):
    # The partner's own address, a plausible beat asking the active node to release.
    beat = Beat(Role.BACKUP, State.STANDBY, 10**9 + seq, b"forged!!", 0, bytes(8), Flag.STOPME)
    s.sendto(encode(beat, key) if key else encode(beat), (target, 539))
"""


def keyed_bed(lab: Any, tmp_path: Path, mode: int = 0o600) -> Testbed:
    bed = Testbed(lab, tmp_path, keepalive=KEEPALIVE, deadtime=DEADTIME)
    key = tmp_path / "beat.key"
    key.write_text("correct horse battery staple\n")
    key.chmod(mode)
    bed.save_config(dataclasses.replace(bed.cfg, heartbeat_key=str(key)))
    return bed


def test_keyed_pair_agrees_and_forged_beats_are_dropped(lab: Any, tmp_path: Path) -> None:
    bed = keyed_bed(lab, tmp_path)
    bed.start("a")
    bed.start("b")
    assert bed.wait_holders({"a"}, 15) == {"a"}, bed.log("a")
    assert wait_until(lambda: "standby" in bed.log("b"), 10)
    assert "not authenticated" not in bed.log("a")
    for key in ("wrong key", ""):
        bed.b.run(sys.executable, "-c", FORGE, key, bed.a.ip, "20")
    time.sleep(3 * DEADTIME)
    log = bed.log("a")
    assert "bad-mac" in log and "unauthenticated" in log, log
    assert "asked this node to release" not in log
    assert bed.holders() == {"a"}


def test_key_file_readable_by_others_stops_startup(lab: Any, tmp_path: Path) -> None:
    bed = keyed_bed(lab, tmp_path, mode=0o644)
    res = bed.run_pulse("a", "-n", "--pidfile", str(tmp_path / "a.pid"))
    assert res.returncode == 2
    assert "must be 0600" in res.stderr and str(bed.config_path) in res.stderr


def test_unkeyed_pair_warns(lab: Any, tmp_path: Path) -> None:
    bed = Testbed(lab, tmp_path, keepalive=KEEPALIVE, deadtime=DEADTIME)
    bed.start("a")
    assert wait_until(lambda: "not authenticated" in bed.log("a"), 10), bed.log("a")
