"""Per-service probe bookkeeping: when a run of failed probes becomes a service failure."""

from __future__ import annotations

import logging
from ipaddress import IPv4Address
from typing import cast

import pytest

from pyrhfos.config.model import DeviceAddress, Failover
from pyrhfos.core.machine import Timers
from pyrhfos.daemon.services import PROBE_FAILURES, Service, ServiceSet, lease_seconds, renew_every
from pyrhfos.net.probe import ProbeResult
from pyrhfos.net.vip import VipManager

OK = ProbeResult(True, "ok", 0.001)
BAD = ProbeResult(False, "connection refused", 0.001)


def test_failure_needs_consecutive_failed_probes_and_is_reported_once() -> None:
    s = Service(Failover("web"))
    for i in range(PROBE_FAILURES - 1):
        assert not s.record(BAD, float(i))
    assert not s.record(OK, 10.0), "a success breaks the run"
    results = [s.record(BAD, 11.0 + i) for i in range(PROBE_FAILURES + 3)]
    assert results.count(True) == 1 and results[PROBE_FAILURES - 1]
    assert s.probe_ok is False and s.probe_reason == "connection refused"
    assert not s.record(OK, 20.0) and s.probe_ok is True


def test_failures_during_start_grace_do_not_count() -> None:
    s = Service(Failover("web"))
    s.reset_probe(0.0, grace=3.0)
    assert not any(s.record(BAD, t) for t in (0.5, 1.0, 2.0, 2.9))
    assert [s.record(BAD, t) for t in (3.0, 3.5, 4.0)] == [False, False, True]


def test_lease_is_whole_seconds_at_least_one() -> None:
    assert lease_seconds(0.3) == 1
    assert lease_seconds(3.0) == 4
    assert lease_seconds(18.5) == 25


@pytest.mark.parametrize("deadtime", [0.05, 0.3, 1.0, 2.5, 3.0, 10.0, 18.5, 60.0])
def test_the_lease_outlives_deadtime_and_the_longest_gap_between_renewals(deadtime: float) -> None:
    """Issue 14, item 5: frozen 2.5 s at deadtime 3, the old lease (3 s, renewed every 1.5 s) lapsed."""
    longest_gap = renew_every(deadtime) + Timers(deadtime / 3, deadtime).beat_interval
    assert lease_seconds(deadtime) > deadtime + longest_gap


def test_announce_before_frames_are_built_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """At start the VIPs are up before scapy has built their frames: one line, not one per VIP."""
    failovers = [
        Failover(f"svc{i}", address=DeviceAddress(IPv4Address(f"192.0.2.{20 + i}"), f"eth0:{i}"))
        for i in range(1, 8)
    ]
    services = ServiceSet(
        failovers, vips=cast(VipManager, object()), deadtime=3.0, command_timeout=5.0, now=lambda: 0.0
    )
    for s in services:
        s.held = True
    with caplog.at_level(logging.INFO, logger="pulse"):
        assert services.announce() == 0
    lines = [r.getMessage() for r in caplog.records if "not ready yet" in r.getMessage()]
    assert lines == [
        "gratuitous ARP for 7 VIP(s) (192.0.2.21, 192.0.2.22, 192.0.2.23, 192.0.2.24, 192.0.2.25, ...): "
        "frames not ready yet; sent once they are"
    ]
