"""The LVS director on fakes: the order of table and addresses, what a probe result or a reload does to
the table, the least-connection re-weighting. No network: the engine, tracker and VIPs are recordings."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from typing import Any

import pytest
from rig import Clock, RecordingEngine, RecordingVips

from pyrhfos.config import loads
from pyrhfos.config.model import Config
from pyrhfos.core.reload import plan
from pyrhfos.core.ruleset import pin_set
from pyrhfos.daemon.director import NAT_ROUTER, Director, held_blocks, planned_commands
from pyrhfos.net.probe import ProbeResult

LVS = """
serial_no = 1
primary = 192.0.2.2
service = lvs
backup_active = 1
backup = 192.0.2.3
heartbeat = 1
heartbeat_port = 539
keepalive = 1
deadtime = 3
network = {network}
nat_router = 198.51.100.1 eth1:1
virtual http {{
    active = 1
    address = 192.0.2.100 eth0:1
    port = 80
    scheduler = {scheduler}
    protocol = tcp
    timeout = 1
    reentry = 5
    quiesce_server = {quiesce}
    load_monitor = none
    server rs1 {{
        address = 198.51.100.11
        active = 1
        weight = 1
    }}
    server rs2 {{
        address = 198.51.100.12
        active = 1
        weight = 1
    }}
}}
virtual https {{
    active = 1
    address = 192.0.2.100 eth0:1
    port = 443
    scheduler = rr
    protocol = tcp
    timeout = 1
    load_monitor = none
    server rs1 {{
        address = 198.51.100.11
        active = 1
        weight = 1
    }}
}}
"""


def config(network: str = "nat", scheduler: str = "rr", quiesce: int = 0) -> Config:
    cfg, _ = loads(LVS.format(network=network, scheduler=scheduler, quiesce=quiesce), "lvs.cf")
    return cfg


@dataclass
class World:
    """Everything the director did, in order."""

    log: list[str] = field(default_factory=list)
    flushed: list[tuple[IPv4Address, int]] = field(default_factory=list)
    counts: dict[tuple[IPv4Address, int], tuple[int, int]] = field(default_factory=dict)
    engine: RecordingEngine = field(init=False)

    def __post_init__(self) -> None:
        self.engine = RecordingEngine(self.log)

    @property
    def tables(self) -> list[list[dict[str, Any]]]:
        return self.engine.tables


class FakeTracker:
    def __init__(self, world: World) -> None:
        self.w = world

    def counts(
        self, vip: Any, vport: Any, proto: str, backends: Any
    ) -> dict[tuple[IPv4Address, int], tuple[int, int]]:
        return {b: self.w.counts.get(b, (0, 0)) for b in backends}

    def flush(self, address: IPv4Address, port: int, proto: str) -> int:
        self.w.flushed.append((address, port))
        return 1

    def enable_forwarding(self) -> bool:
        return False

    def set_timeouts(self, tcp: int | None, tcpfin: int | None, udp: int | None) -> list[str]:
        return []


def director(cfg: Config, world: World, results: dict[str, bool] | None = None) -> Director:
    async def prober(v: Any, host: str, port: int) -> ProbeResult:
        ok = (results or {}).get(host, True)
        return ProbeResult(ok, "ok" if ok else "connection refused", 0.001)

    d = Director(
        cfg,
        RecordingVips(world.log),
        1.0,
        Clock(),
        engine=world.engine,
        tracker=FakeTracker(world),
        prober=prober,
    )  # type: ignore[arg-type]
    d.announce = lambda services=None: 0  # type: ignore[method-assign]  # no ARP frames on fakes
    return d


def mentions(commands: list[dict[str, Any]], text: str) -> bool:
    return text in json.dumps(commands)


def probe_all(d: Director, results: dict[str, bool]) -> None:
    """One probe of every real server, fed to the nanny as the probe tasks would."""
    for m in d.nanny.members:
        from pyrhfos.core.nanny import ServerProbed

        ok = results.get(str(m.address), True)
        for action in d.nanny.handle(
            ServerProbed(m.virtual, m.server, ok, "ok" if ok else "refused"), d.now()
        ):
            d._act(action)


def test_held_addresses_are_each_vip_once_and_nat_router_only_in_nat_mode() -> None:
    nat = [(f.name, str(f.address)) for f in held_blocks(config("nat"))]
    assert nat == [("vip 192.0.2.100", "192.0.2.100 eth0:1"), (NAT_ROUTER, "198.51.100.1 eth1:1")]
    assert [f.name for f in held_blocks(config("direct"))] == ["vip 192.0.2.100"]


def test_takeover_loads_the_table_before_the_addresses_and_release_removes_it_after() -> None:
    w = World()
    d = director(config(), w)
    probe_all(d, {})
    asyncio.run(d.acquire())
    assert w.log == ["table", "up 192.0.2.100", "up 198.51.100.1"]
    w.log.clear()
    asyncio.run(d.release())
    assert w.log == ["down 192.0.2.100", "down 198.51.100.1", "no table"]
    assert not d.programmed


def test_servers_take_no_traffic_before_their_first_good_probe() -> None:
    w = World()
    d = director(config(), w)
    asyncio.run(d.acquire())
    assert not mentions(w.tables[-1], "198.51.100.11")
    probe_all(d, {})
    assert mentions(w.tables[-1], "198.51.100.11") and mentions(w.tables[-1], "198.51.100.12")


def test_a_failed_probe_reloads_the_table_without_the_server_and_flushes_it() -> None:
    w = World()
    d = director(config(quiesce=0), w)
    probe_all(d, {})
    asyncio.run(d.acquire())

    async def fail_rs2() -> None:
        d._loop = asyncio.get_running_loop()
        probe_all(d, {"198.51.100.12": False})
        await asyncio.sleep(0.05)  # the flush runs in a thread, the table after this turn

    before = len(w.tables)
    asyncio.run(fail_rs2())
    assert len(w.tables) == before + 1  # one transaction, not one per event
    assert not mentions(w.tables[-1], "198.51.100.12")
    assert w.flushed == [(IPv4Address("198.51.100.12"), 80)]


def test_quiesced_server_stays_in_the_table_with_no_share_and_is_not_flushed() -> None:
    w = World()
    d = director(config(quiesce=1), w)
    probe_all(d, {})
    asyncio.run(d.acquire())
    probe_all(d, {"198.51.100.12": False})
    assert d.shares["http"] == {"rs1": 1, "rs2": 0}
    assert mentions(w.tables[-1], "198.51.100.12")  # its flows still know where to go (direct: pins)
    assert w.flushed == []


def test_a_standby_director_probes_but_loads_no_table() -> None:
    w = World()
    d = director(config(), w)
    probe_all(d, {"198.51.100.12": False})
    assert w.tables == [] and w.flushed == []
    assert {m.server: h for m, h in d.nanny.in_effect("http")} == {"rs1": 1}


def test_reload_adding_a_server_is_one_transaction_and_keeps_known_health() -> None:
    w = World()
    cfg = config()
    d = director(cfg, w)
    probe_all(d, {})
    asyncio.run(d.acquire())
    http = cfg.virtuals[0]
    rs3 = replace(http.servers[0], name="rs3", address=IPv4Address("198.51.100.13"))
    new = replace(cfg, virtuals=(replace(http, servers=(*http.servers, rs3)), cfg.virtuals[1]))
    before = len(w.tables)
    d.reconcile(plan(d.failovers, d.blocks(new)), new)
    assert len(w.tables) == before + 1
    assert {m.server for m, _ in d.nanny.in_effect("http")} == {"rs1", "rs2"}  # rs3 not probed yet
    probe_all(d, {})
    assert mentions(w.tables[-1], "198.51.100.13")


def test_least_connection_virtual_is_reweighted_from_live_counts() -> None:
    w = World()
    d = director(config(scheduler="wlc"), w)
    probe_all(d, {})
    asyncio.run(d.acquire())
    w.counts = {(IPv4Address("198.51.100.11"), 80): (50, 0), (IPv4Address("198.51.100.12"), 80): (0, 0)}
    before = len(w.tables)
    counts = asyncio.run(d.count_connections())
    assert counts is not None
    d.reweight(counts)
    assert len(w.tables) == before + 1
    assert d.shares["http"]["rs2"] > d.shares["http"]["rs1"]
    d.reweight(counts)  # same counts: same shares, no new transaction
    assert len(w.tables) == before + 1


def test_direct_routing_counts_connections_from_the_pin_sets() -> None:
    w = World()
    d = director(config(network="direct"), w)
    probe_all(d, {})
    asyncio.run(d.acquire())
    w.engine.sizes = {pin_set("http", "rs1"): 7}
    counts = asyncio.run(d.count_connections())
    assert counts is not None and counts[("http", "rs1")] == (7, 0) and counts[("http", "rs2")] == (0, 0)


@pytest.mark.parametrize("network", ["nat", "direct"])
def test_planned_table_has_every_active_server(network: str) -> None:
    text = json.dumps(planned_commands(config(network)))
    assert "198.51.100.11" in text and "198.51.100.12" in text
