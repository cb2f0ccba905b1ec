"""The director's table-sync hook (direct routing, syncdaemon = 1) on fakes: started with the director on
both nodes, the partner's elements handed to the engine with the table on takeover, snapshots sent only
while the table is ours, stopped on close; the line in pulse status's "sync" section; make_services
builds it for network = direct with syncdaemon = 1 only."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from rig import RecordingEngine, RecordingVips

from pyrhfos.config import loads
from pyrhfos.config.model import Config, NetworkMode
from pyrhfos.core.vocab import Role
from pyrhfos.daemon.director import Director
from pyrhfos.daemon.shell import Options, make_services
from pyrhfos.daemon.startup import Membership
from pyrhfos.daemon.status import _render_sync, _sync_status
from pyrhfos.net.tablesync import TableSync

LVS = """
primary = 192.0.2.2
service = lvs
backup_active = 1
backup = 192.0.2.3
heartbeat = 1
keepalive = 1
deadtime = 3
network = direct
syncdaemon = 1
virtual http {
    active = 1
    address = 192.0.2.100 eth0:1
    port = 80
    scheduler = rr
    protocol = tcp
    load_monitor = none
    server rs1 {
        address = 192.0.2.11
        active = 1
        weight = 1
    }
}
"""

SEED = {"pin-http": [{"elem": {"val": {"concat": ["192.0.2.50", 40000, 7]}, "expires": 800}}]}


def config(**changes: Any) -> Config:
    cfg, _ = loads(LVS, "lvs.cf")
    return dataclasses.replace(cfg, **changes)


class FakeTableSync:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.active = False

    def start(self) -> None:
        self.log.append("table sync start")

    def set_active(self, active: bool) -> None:
        self.active = active
        self.log.append(f"sending {active}")

    def seed(self) -> dict[str, list[dict[str, Any]]]:
        self.log.append("seed")
        return {k: list(v) for k, v in SEED.items()}

    def close(self) -> None:
        self.log.append("table sync stop")

    def status(self) -> dict[str, Any]:
        return {"peer": "192.0.2.3", "port": 3781, "listening": True, "sending": self.active,
                "elements_sent": 12, "elements_received": 30, "dropped": 1, "cached": 29,
                "last_error": None, "last_error_time": None}  # fmt: skip


def director(log: list[str], table_sync: FakeTableSync | None) -> tuple[Director, RecordingEngine]:
    engine = RecordingEngine(log)
    vips: Any = RecordingVips(log)  # a recording, not net/vip's VipManager
    d = Director(config(), vips, 1.0, time.monotonic, engine=engine, tracker=None, table_sync=table_sync)
    d.announce = lambda services=None: 0  # type: ignore[method-assign]  # no ARP frames on fakes
    return d, engine


def test_seed_with_the_table_before_the_vips_sending_only_while_active() -> None:
    log: list[str] = []
    sync = FakeTableSync(log)
    d, engine = director(log, sync)
    d.clear_stale()
    assert log == ["down 192.0.2.100", "no table", "table sync start"]
    log.clear()
    asyncio.run(d.acquire())
    assert log == ["seed", "sending True", "table+seed", "up 192.0.2.100"]
    assert engine.seeds == [SEED]
    log.clear()
    d.program("reload")  # a later table (reload, health) carries over what is there: no seed
    assert log == ["table"] and engine.seeds[-1] is None
    log.clear()
    asyncio.run(d.release())
    assert log == ["down 192.0.2.100", "sending False", "no table"]
    assert not sync.active
    log.clear()
    d.close()
    assert log == ["table sync stop"]


def test_without_table_sync_the_takeover_is_unchanged() -> None:
    log: list[str] = []
    d, engine = director(log, None)
    asyncio.run(d.acquire())
    assert log == ["table", "up 192.0.2.100"] and engine.seeds == [None]
    assert d.sync_status() is None


def test_status_line_under_the_sync_section() -> None:
    d, _ = director([], FakeTableSync([]))
    status = _sync_status(d)
    assert status is not None and status["daemon"] is None and status["table"]["cached"] == 29
    (line,) = _render_sync(status)
    assert line == (
        "sync:      table to 192.0.2.3 port 3781: receiving, sent 12, received 30, dropped 1, cached 29"
    )
    conntrackd = {"daemon": "conntrackd", "running": True, "pid": 42, "restarts": 0, "last_error": None,
                  "last_error_time": None, "peer": "192.0.2.3", "port": 3780}  # fmt: skip
    failing = {**status["table"], "sending": True, "last_error": "cannot listen", "last_error_time": 0.0}
    first, second = _render_sync({**conntrackd, "table": failing})
    assert first.startswith("sync:      conntrackd running")
    assert second.startswith("           table to 192.0.2.3 port 3781: sending, sent 12")
    assert "last error" in second and "cannot listen" in second


def test_make_services_builds_the_table_sync_for_direct_routing_with_syncdaemon(tmp_path: Path) -> None:
    me = Membership(Role.BACKUP, (IPv4Address("192.0.2.2"),))
    opts = Options(state_dir=str(tmp_path))
    key = b"k" * 32
    d = make_services(config(), None, opts, time.monotonic, me, key)
    assert isinstance(d, Director) and isinstance(d.table_sync, TableSync)
    ts = d.table_sync
    assert (str(ts.own), str(ts.peer), ts.port, ts.key) == ("192.0.2.3", "192.0.2.2", 3781, key)
    for cfg, o in (
        (config(syncdaemon=False), opts),
        (config(network=NetworkMode.NAT), opts),
        (config(), Options(state_dir=str(tmp_path), test_start=True)),
        (config(syncd_id=999), opts),  # refused: pulse runs without sync, the log says why
    ):
        other = make_services(cfg, None, o, time.monotonic, me, key)
        assert isinstance(other, Director) and other.table_sync is None, cfg
