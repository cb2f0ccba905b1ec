"""Service failover, local restarts and SIGHUP reload, on real namespaces with a real service.

The service is the lab's tiny HTTP server, started by start_cmd and killed by the test
(by the pid its start_cmd recorded) while the node, its link and pulse stay up.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from pyrhfos.config.model import DeviceAddress
from pyrhfos_lab.testbed import LAB_PYTHON, VIP, Testbed, wait_until

pytestmark = pytest.mark.lab

KEEPALIVE, DEADTIME = 0.2, 1.0
SETTLE = 15.0


@pytest.fixture
def make_bed(lab: Any, tmp_path: Path) -> Iterator[Any]:
    beds: list[Testbed] = []

    def make(**service: Any) -> Testbed:
        bed = Testbed(
            lab,
            tmp_path,
            keepalive=KEEPALIVE,
            deadtime=DEADTIME,
            managed_service=True,
            service_settings={"reentry": 30.0, **service},
        )
        beds.append(bed)
        return bed

    try:
        yield make
    finally:
        for bed in beds:
            for name in ("a", "b"):
                if bed.log(name):
                    sys.stderr.write(f"--- pulse log of {name} ---\n{bed.log(name)[-5000:]}\n")


def serving_pair(bed: Testbed) -> None:
    bed.start("a")
    bed.start("b")
    assert bed.wait_holders({"a"}, SETTLE) == {"a"}, bed.log("a")
    assert wait_until(lambda: bed.fetch() == "a", SETTLE)
    assert wait_until(lambda: "standby" in bed.log("b"), SETTLE)


PROBES = {
    "expect": {"expect": "HTTP"},
    "expect-any": {"expect": "*"},
    "regex": {"expect": r"^HTTP/1\.[01] 200", "use_regex": True},
    "send_program": {
        "send": None,
        "send_program": f"{LAB_PYTHON} -m pyrhfos_lab.testbed fetch %h 80 1",
        "expect": "^[ab]$",
        "use_regex": True,
    },
}


@pytest.mark.parametrize("kind", sorted(PROBES))
def test_killed_service_moves_to_partner(make_bed: Any, kind: str) -> None:
    bed = make_bed(**PROBES[kind])
    serving_pair(bed)
    assert bed.kill_service("a") is not None
    assert wait_until(lambda: bed.holders() == {"b"}, SETTLE), bed.log("a") + bed.log("b")
    assert wait_until(lambda: bed.fetch() == "b", SETTLE)
    assert not bed.holds_vip("a")
    assert "service web1 failed" in bed.log("a") + bed.log("b")


def test_flapping_service_does_not_ping_pong_within_reentry(make_bed: Any) -> None:
    bed = make_bed()
    serving_pair(bed)
    bed.kill_service("a")
    assert wait_until(lambda: bed.holders() == {"b"}, SETTLE)
    assert wait_until(lambda: bed.fetch() == "b", SETTLE)
    # b's service fails too, while a is in hold-down (reentry 30 s): b restarts it, no move back.
    bed.kill_service("b")
    assert wait_until(lambda: "restarting service web1 locally" in bed.log("b"), SETTLE), bed.log("b")
    assert wait_until(lambda: bed.fetch() == "b", SETTLE)
    assert bed.holders() == {"b"}
    assert bed.log("a").count("-> active") == 1, "a took the services once, at start"


def test_active_with_dead_partner_restarts_its_service(make_bed: Any) -> None:
    bed = make_bed()
    bed.start("a")
    assert bed.wait_holders({"a"}, SETTLE) == {"a"}
    assert wait_until(lambda: bed.fetch() == "a", SETTLE)
    old = bed.kill_service("a")
    assert wait_until(lambda: "restarting service web1 locally" in bed.log("a"), SETTLE), bed.log("a")
    assert wait_until(lambda: bed.fetch() == "a", SETTLE)
    assert bed.kill_service("a") not in (None, old), "a new service process serves"
    assert bed.holders() == {"a"}


def prober_samples(proc: Any) -> list[dict[str, Any]]:
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def test_sighup_with_broken_file_keeps_vip_and_logs_error(make_bed: Any) -> None:
    bed = make_bed()
    serving_pair(bed)
    good = bed.config_path.read_text()
    bed.config_path.write_text(good.replace("keepalive =", "keepalve =", 1))
    bed.signal("a", signal.SIGHUP)
    assert wait_until(lambda: "reload failed" in bed.log("a"), SETTLE), bed.log("a")
    assert f"{bed.config_path}:" in bed.log("a") and "did you mean 'keepalive'" in bed.log("a")
    time.sleep(3 * DEADTIME)
    assert bed.holders() == {"a"} and bed.fetch() == "a"
    assert bed.pulses["a"].poll() is None


def test_sighup_adding_a_service_leaves_the_first_untouched(make_bed: Any) -> None:
    bed = make_bed()
    serving_pair(bed)
    # 1 s per try: a VIP gone for an instant still costs a SYN retry (1 s), a busy host does not.
    prober = bed.start_prober(interval=0.01, limit=1.0)
    time.sleep(0.5)
    second = dataclasses.replace(
        bed.cfg.failovers[0],
        name="web2",
        address=DeviceAddress(IPv4Address("192.0.2.12"), "eth0:2"),
        start_cmd="true",
        stop_cmd="true",
    )
    bed.save_config(dataclasses.replace(bed.cfg, failovers=(*bed.cfg.failovers, second)))
    t0 = time.time()
    for name in ("a", "b"):
        bed.signal(name, signal.SIGHUP)
    assert wait_until(lambda: ("192.0.2.12", 24, "eth0:2") in bed.a.addresses(), SETTLE), bed.log("a")
    time.sleep(1.0)
    samples = prober_samples(prober)
    after = [s for s in samples if s["t"] >= t0]
    assert after and all(s["who"] == "a" for s in after), [s for s in after if s["who"] != "a"][:5]
    assert (VIP, 24, "eth0:1") in bed.a.addresses()
    assert "1 service(s) added, 0 removed or changed, 1 unchanged" in bed.log("a")
    assert f"removed {VIP}" not in bed.log("a") and bed.log("a").count(f"added {VIP}/") == 1
    assert not any(ip == "192.0.2.12" for ip, _, _ in bed.b.addresses())


def test_service_flapping_every_second_is_rate_limited(make_bed: Any) -> None:
    bed = make_bed()
    serving_pair(bed)
    end = time.monotonic() + 12
    while time.monotonic() < end:  # down every second on whichever node serves
        for name in bed.holders():
            bed.kill_service(name)
        time.sleep(1.0)
    activations = bed.log("a").count("-> active") + bed.log("b").count("-> active")
    assert activations <= 2, "one start and at most one failover: hold-down stops the ping-pong"
    assert wait_until(lambda: len(bed.holders()) == 1, SETTLE)
    holder = next(iter(bed.holders()))
    assert wait_until(lambda: bed.fetch() == holder, SETTLE), "the holder restarted its service"
