"""`pulse status`, `pulse release`, `pulse takeover` over the control socket of real daemons."""

from __future__ import annotations

import json
import stat
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from pyrhfos_lab.testbed import Testbed, wait_until

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
    assert any("-> active" in e["message"] for e in a["events"]), a["events"]
    assert all(e["level"] in ("info", "warning", "error") and e["time"] > 0 for e in a["events"])
    text = bed.ask("a", "status").stdout
    assert "recent:" in text
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


FETCH = """
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
"""


def test_metrics_endpoint_parses_with_prometheus_parser(lab: Any, tmp_path: Path) -> None:
    import dataclasses

    from prometheus_client.parser import text_string_to_metric_families

    bed = Testbed(lab, tmp_path, keepalive=0.2, deadtime=1.0)
    # Scraped from another host: metrics_address = 0.0.0.0, as the README says.
    bed.save_config(dataclasses.replace(bed.cfg, metrics_port=9539, metrics_address=IPv4Address("0.0.0.0")))
    bed.start("a")
    bed.start("b")
    assert bed.wait_holders({"a"}, 15) == {"a"}
    assert wait_until(lambda: "metrics on http://0.0.0.0:9539" in bed.log("a"), 10), bed.log("a")
    time.sleep(1.0)  # a few probe rounds for the histogram

    def scrape(ip: str) -> dict[str, Any]:
        text = bed.client.run_python(FETCH, f"http://{ip}:9539/metrics").stdout
        return {f.name: f for f in text_string_to_metric_families(text)}

    a, b = scrape("192.0.2.100"), scrape("192.0.2.200")
    active = {s.labels["state"]: s.value for s in a["pulse_state"].samples}
    assert active["active"] == 1.0 and active["standby"] == 0.0
    assert {s.labels["state"]: s.value for s in b["pulse_state"].samples}["standby"] == 1.0
    assert next(s.value for s in a["pulse_service_held"].samples) == 1.0
    assert a["pulse_partner_alive"].samples[0].value == 1.0
    assert any(
        s.name == "pulse_probe_latency_seconds_count" and s.value > 0
        for s in a["pulse_probe_latency_seconds"].samples
    )
    sent = {s.labels["direction"]: s.value for s in a["pulse_beats"].samples if s.name == "pulse_beats_total"}
    assert sent["sent"] > 0 and sent["received"] > 0


# On the node itself: 300 idle connections held open, pulse's thread count read meanwhile, one scrape.
IDLE = """
import json, socket, sys, time, urllib.request
def threads():
    with open(f"/proc/{sys.argv[1]}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("Threads:")))
before = threads()
idle = [socket.create_connection(("127.0.0.1", 9539)) for _ in range(300)]
time.sleep(1.0)
during = threads()
text = urllib.request.urlopen("http://127.0.0.1:9539/metrics", timeout=5).read().decode()
print(json.dumps({"before": before, "during": during, "scraped": "pulse_state" in text}))
"""


def test_metrics_listen_on_loopback_by_default_and_idle_clients_take_no_thread(
    lab: Any, tmp_path: Path
) -> None:
    """Issue 13 item 12: metrics_address defaults to 127.0.0.1; 300 idle connections made 300 threads."""
    import dataclasses

    bed = Testbed(lab, tmp_path, keepalive=0.5, deadtime=3.0)
    bed.save_config(dataclasses.replace(bed.cfg, metrics_port=9539))
    bed.start("a")
    assert wait_until(lambda: "metrics on http://127.0.0.1:9539" in bed.log("a"), 10), bed.log("a")
    remote = bed.client.run_python(FETCH, "http://192.0.2.100:9539/metrics", check=False)
    assert remote.returncode != 0 and "Connection refused" in remote.stderr, remote.stdout
    res = bed.a.run_python(IDLE, str(bed.pulses["a"].pid), timeout=30)
    got = json.loads(res.stdout)
    assert got["scraped"], res.stdout
    assert got["during"] <= got["before"], f"idle connections took threads in pulse: {got}"
