"""The director's sync hook on fakes: conntrackd started with the director on both nodes, its commit
before the table and the VIPs on takeover, its standby commands after they went on release, stopped on
close; pulse status's "sync" section and its line; make_services builds it only for syncdaemon = 1."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from rig import RecordingEngine, RecordingVips

from pyrhfos.config import loads
from pyrhfos.config.model import Config
from pyrhfos.core.vocab import Role
from pyrhfos.daemon.director import Director
from pyrhfos.daemon.shell import Options, make_services
from pyrhfos.daemon.startup import Membership
from pyrhfos.daemon.status import _render_sync, _sync_status
from pyrhfos.net.conntrackd import ConntrackdProcess

LVS = """
primary = 192.0.2.2
primary_private = 198.51.100.2
service = lvs
backup_active = 1
backup = 192.0.2.3
backup_private = 198.51.100.3
heartbeat = 1
keepalive = 1
deadtime = 3
network = nat
nat_router = 198.51.100.1 eth1:1
syncdaemon = 1
syncd_iface = eth1
virtual http {
    active = 1
    address = 192.0.2.100 eth0:1
    port = 80
    scheduler = rr
    protocol = tcp
    load_monitor = none
    server rs1 {
        address = 198.51.100.11
        active = 1
        weight = 1
    }
}
"""


def config(**changes: Any) -> Config:
    cfg, _ = loads(LVS, "lvs.cf")
    return dataclasses.replace(cfg, **changes)


class FakeSync:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def start(self) -> None:
        self.log.append("sync start")

    async def takeover(self) -> None:
        self.log.append("commit")

    async def standby(self) -> None:
        self.log.append("standby")

    def close(self) -> None:
        self.log.append("sync stop")

    def status(self) -> dict[str, Any]:
        return {"daemon": "conntrackd", "running": True, "pid": 42, "restarts": 0, "last_error": None,
                "last_error_time": None, "peer": "198.51.100.3", "port": 3780}  # fmt: skip


def director(log: list[str], sync: FakeSync | None) -> Director:
    fakes: Any = (RecordingVips(log), RecordingEngine(log))  # recordings, not the net/ classes
    d = Director(config(), fakes[0], 1.0, time.monotonic, engine=fakes[1], tracker=None, sync=sync)
    d.announce = lambda services=None: 0  # type: ignore[method-assign]  # no ARP frames on fakes
    return d


def test_commit_before_table_and_vips_standby_after_release_stop_on_close() -> None:
    log: list[str] = []
    d = director(log, FakeSync(log))
    d.clear_stale()
    assert log == ["down 192.0.2.100", "down 198.51.100.1", "no table", "sync start"]
    log.clear()
    asyncio.run(d.acquire())
    assert log == ["commit", "table", "up 192.0.2.100", "up 198.51.100.1"]
    log.clear()
    asyncio.run(d.release())
    assert log == ["down 192.0.2.100", "down 198.51.100.1", "no table", "standby"]
    log.clear()
    d.close()
    assert log == ["sync stop"]


def test_without_sync_the_director_is_unchanged_and_status_has_no_sync_section() -> None:
    log: list[str] = []
    d = director(log, None)
    asyncio.run(d.acquire())
    assert log == ["table", "up 192.0.2.100", "up 198.51.100.1"]
    assert d.sync_status() is None and _sync_status(d) is None and _render_sync(None) == []


def test_status_section_and_its_line() -> None:
    d = director([], FakeSync([]))
    assert _sync_status(d) == FakeSync([]).status()
    (line,) = _render_sync(_sync_status(d))
    assert line.startswith("sync:      conntrackd running, pid 42, to 198.51.100.3 port 3780, restarts 0")
    down = {**FakeSync([]).status(), "running": False, "pid": None, "restarts": 3,
            "last_error": "conntrackd (pid 7) died", "last_error_time": 0.0}  # fmt: skip
    (line,) = _render_sync(down)
    assert "NOT RUNNING" in line and "restarts 3" in line and "last error" in line and "died" in line


def test_make_services_builds_conntrackd_only_for_syncdaemon_and_never_on_test_start(tmp_path: Path) -> None:
    me = Membership(Role.BACKUP, (IPv4Address("192.0.2.2"), IPv4Address("198.51.100.2")))
    opts = Options(state_dir=str(tmp_path))
    d = make_services(config(), None, opts, time.monotonic, me)
    assert isinstance(d, Director) and isinstance(d.sync, ConntrackdProcess)
    assert d.sync.conf_path.parent == tmp_path / "conntrackd"
    assert (str(d.sync.settings.own), str(d.sync.settings.peer)) == ("198.51.100.3", "198.51.100.2")
    assert d.sync.settings.interface == "eth1"
    off = make_services(config(syncdaemon=False), None, opts, time.monotonic, me)
    assert isinstance(off, Director) and off.sync is None
    dry = make_services(config(), None, Options(state_dir=str(tmp_path), test_start=True), time.monotonic, me)
    assert isinstance(dry, Director) and dry.sync is None
    bad = make_services(config(syncd_id=999), None, opts, time.monotonic, me)
    assert isinstance(bad, Director) and bad.sync is None, "pulse runs without sync; the log says why"
