"""LVS metrics: a director's status (its ``virtuals``) as per-virtual and per-real-server families.

In process, no endpoint and no lab: a Director on the shipped LVS example, with no engine (the table
is only logged), probed by hand, its status read by the collector pulse's metrics endpoint uses.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pyrhfos.config import load
from pyrhfos.core.nanny import ServerProbed
from pyrhfos.daemon.director import Director, Probed
from pyrhfos.daemon.metrics import StatusCollector
from pyrhfos.net.probe import ProbeResult

ROOT = Path(__file__).resolve().parents[2]
LVS_EXAMPLE = ROOT / "etc" / "lvs.cf.lvs.example"
FOS_STATUS: dict[str, Any] = {
    "node": {"state": "active"},
    "partner": {"alive": True, "config_match": True, "paths": {}},
    "services": [],
    "counters": {},
}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def director() -> tuple[Director, Clock]:
    cfg, warnings = load(str(LVS_EXAMPLE))
    assert not warnings
    clock = Clock()
    d = Director(cfg, None, 10.0, clock, engine=None, tracker=None)
    d.programmed = True  # as after acquire(): the status shows the shares in the table
    return d, clock


def probe(d: Director, clock: Clock, virtual: str, server: str, ok: bool, latency: float) -> None:
    """One probe ending now, carried out as the director's probe loop does."""
    result = ProbeResult(ok, "ok" if ok else "connection refused", latency)
    d.probed[(virtual, server)] = Probed(result, clock())
    for action in d.nanny.handle(ServerProbed(virtual, server, ok, result.reason), clock()):
        d._act(action)


def scrape(status: dict[str, Any]) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The exposition text, parsed back: family -> label set -> value."""
    registry = CollectorRegistry()
    registry.register(StatusCollector(lambda: status))
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def rs(virtual: str, server: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"virtual": virtual, "server": server, **extra}.items()))


def test_every_real_server_has_health_weight_connections_and_latency() -> None:
    d, clock = director()
    probe(d, clock, "http", "web1", True, 0.004)
    probe(d, clock, "http", "web2", True, 0.006)
    probe(d, clock, "https", "web1", True, 0.003)
    probe(d, clock, "https", "web2", False, 0.001)  # down, quiesce_server = 0: out of the table
    d.counts = {("http", "web1"): (4, 1), ("http", "web2"): (7, 2)}
    d.tables()
    got = scrape({**FOS_STATUS, "virtuals": d.virtual_status(lambda t: t)})

    up = got["pulse_real_server_up"]
    assert up[rs("http", "web1")] == 1.0 and up[rs("http", "web2")] == 1.0
    assert up[rs("https", "web2")] == 0.0
    assert up[rs("dns", "ns1")] == 0.0, "not probed yet: unknown is not up"
    assert up[rs("http", "web3")] == 0.0, "an inactive server is listed, never up"

    weight = got["pulse_real_server_weight"]
    assert weight[rs("http", "web1")] == 1.0 and weight[rs("http", "web2")] == 2.0
    assert weight[rs("https", "web2")] == 0.0 and weight[rs("dns", "ns1")] == 0.0
    assert got["pulse_real_server_configured_weight"][rs("https", "web2")] == 1.0

    conns = got["pulse_real_server_connections"]
    assert conns[rs("http", "web2", state="active")] == 7.0
    assert conns[rs("http", "web2", state="inactive")] == 2.0
    assert conns[rs("dns", "ns2", state="active")] == 0.0

    latency = got["pulse_real_server_probe_latency_seconds"]
    assert latency[rs("http", "web1")] == 0.004 and latency[rs("https", "web2")] == 0.001
    assert rs("dns", "ns1") not in latency, "no probe yet, no latency"
    ok = got["pulse_real_server_probe_ok"]
    assert (ok[rs("https", "web1")], ok[rs("https", "web2")], ok[rs("dns", "ns1")]) == (1.0, 0.0, -1.0)

    servers = len([s for v in d.cfg.virtuals for s in v.servers])
    for family in ("pulse_real_server_up", "pulse_real_server_weight", "pulse_real_server_probe_ok"):
        assert len(got[family]) == servers, family


def test_per_virtual_servers_up_and_the_sorry_server() -> None:
    d, clock = director()
    probe(d, clock, "http", "web1", True, 0.002)
    probe(d, clock, "http", "web2", True, 0.002)
    got = scrape({**FOS_STATUS, "virtuals": d.virtual_status(lambda t: t)})
    v = {dict(k)["virtual"]: x for k, x in got["pulse_virtual_servers_up"].items()}
    assert v == {"http": 2.0, "https": 0.0, "dns": 0.0}
    sorry = {dict(k)["virtual"]: x for k, x in got["pulse_virtual_sorry_server_in_use"].items()}
    assert sorry["http"] == 0.0 and sorry["dns"] == 0.0, "dns has no sorry server"

    clock.t += 1
    probe(d, clock, "http", "web1", False, 0.001)
    probe(d, clock, "http", "web2", False, 0.001)
    got = scrape({**FOS_STATUS, "virtuals": d.virtual_status(lambda t: t)})
    sorry = {dict(k)["virtual"]: x for k, x in got["pulse_virtual_sorry_server_in_use"].items()}
    assert sorry["http"] == 1.0
    assert all(x == 1.0 for x in got["pulse_virtual_active"].values())
    assert d.virtual_status(lambda t: t)[0]["sorry_server"] == str(IPv4Address("198.51.100.250"))


def test_a_fos_status_has_no_lvs_family() -> None:
    for status in (FOS_STATUS, {**FOS_STATUS, "virtuals": []}):
        got = scrape(status)
        assert "pulse_state" in got
        assert not [name for name in got if name.startswith(("pulse_virtual_", "pulse_real_server_"))]
