"""`pulse status`, `pulse release`, `pulse takeover` over the control socket of real daemons."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from pyrhfos.testbed import Testbed, wait_until

pytestmark = pytest.mark.lab

DEADTIME = 20.0  # long: only the control socket can explain a quick switchover


def status(bed: Testbed, name: str) -> dict[str, Any]:
    res = bed.ask(name, "status", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_status_release_takeover(lab: Any, tmp_path: Path) -> None:
    bed = Testbed(lab, tmp_path, keepalive=0.5, deadtime=DEADTIME)
    bed.start("a")
    bed.start("b")
    assert bed.wait_holders({"a"}, 15) == {"a"}
    assert wait_until(lambda: status(bed, "b")["partner"]["state"] == "active", 15)
    a, b = status(bed, "a"), status(bed, "b")
    assert (a["node"]["role"], a["node"]["state"]) == ("primary", "active")
    assert (b["node"]["role"], b["node"]["state"]) == ("backup", "standby")
    assert a["partner"]["state"] == "standby" and b["partner"]["state"] == "active"
    assert a["partner"]["config_match"] is True and b["partner"]["alive"] is True
    assert a["services"][0]["held"] and not b["services"][0]["held"]
    assert a["services"][0]["label"] == "eth0:1"
    assert b["partner"]["paths"]["192.0.2.100"]["last_beat_age"] < 2
    assert a["counters"]["beats-sent"] > 0 and b["counters"]["beats-received"] > 0
    text = bed.ask("a", "status").stdout
    assert "ACTIVE since" in text and "partner:" in text and "192.0.2.11 on eth0:1" in text
    assert stat.S_IMODE(bed.socket_path("a").stat().st_mode) == 0o600

    refused = bed.ask("b", "release")
    assert refused.returncode == 1 and "not active" in refused.stderr

    t0 = time.monotonic()
    done = bed.ask("a", "release")
    assert done.returncode == 0, done.stderr
    assert wait_until(lambda: bed.holders() == {"b"}, DEADTIME / 4), bed.log("b")
    assert time.monotonic() - t0 < DEADTIME / 4
    assert wait_until(lambda: bed.fetch() == "b", 5)

    back = bed.ask("a", "takeover")
    assert back.returncode == 0, back.stderr
    assert wait_until(lambda: bed.holders() == {"a"}, DEADTIME / 4), bed.log("a")

    bed.stop("b")
    alone = bed.ask("a", "release")
    assert alone.returncode == 1 and "no standby partner" in alone.stderr
    assert bed.holders() == {"a"}


def test_status_without_daemon_exits_3(lab: Any, tmp_path: Path) -> None:
    bed = Testbed(lab, tmp_path)
    res = bed.ask("a", "status")
    assert res.returncode == 3 and "no pulse answers" in res.stderr
