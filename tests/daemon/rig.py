"""A Daemon on fakes for the daemon tests: an in-memory transport, a test-start ServiceSet (no VIP, ARP
or command), a clock the test moves. Nothing here touches the network."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pyrhfos.config import digest
from pyrhfos.config.model import Config
from pyrhfos.core.vocab import Role
from pyrhfos.daemon.beatlink import BeatLink
from pyrhfos.daemon.services import ServiceSet
from pyrhfos.daemon.shell import Daemon, Options
from pyrhfos.daemon.startup import Membership

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "etc" / "lvs.cf.example"


@dataclass
class FakeTransport:
    sent: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)
    closed: bool = False

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def close(self) -> None:
        self.closed = True


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    """One daemon on fakes, and the fakes to look at."""

    daemon: Daemon
    transport: FakeTransport
    clock: Clock
    partner: str


def build(
    cfg: Config,
    role: Role = Role.PRIMARY,
    key: bytes | None = None,
    services: ServiceSet | None = None,
    check: Callable[[Config], object] = lambda cfg: None,
) -> Rig:
    partner_ip: IPv4Address | None = cfg.backup if role is Role.PRIMARY else cfg.primary
    assert partner_ip is not None
    clock = Clock()
    transport = FakeTransport()
    paths = (str(partner_ip),)
    serial = cfg.serial_no or 0
    link = BeatLink(role, paths, cfg.heartbeat_port, key, Counter(), digest=digest(cfg), serial=serial)
    link.transport = transport
    if services is None:
        services = ServiceSet(cfg.active_failovers, None, cfg.deadtime, 1.0, clock)
    daemon = Daemon(
        cfg, Membership(role, (partner_ip,)), Options(test_start=True), link=link, services=services,
        clock=clock, check=check,
    )  # fmt: skip
    return Rig(daemon, transport, clock, str(partner_ip))


# -- an LVS director's collaborators, recorded (tests/daemon/test_director*.py) ---------------------


class RecordingEngine:
    """net/nft.NftEngine's calls in order into ``log``: "table" (or "table+seed") and "no table"."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.tables: list[list[dict[str, Any]]] = []
        self.seeds: list[Mapping[str, Sequence[Any]] | None] = []
        self.sizes: dict[str, int] = {}

    def replace(
        self, commands: Sequence[dict[str, Any]], seed: Mapping[str, Sequence[Any]] | None = None
    ) -> int:
        self.log.append("table" if seed is None else "table+seed")
        self.tables.append(list(commands))
        self.seeds.append(seed)
        return 1

    def remove(self) -> bool:
        self.log.append("no table")
        return True

    def set_sizes(self) -> dict[str, int]:
        return dict(self.sizes)


class RecordingVips:
    """net/vip.VipManager's batch calls into ``log``: "up IP", "down IP"."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def add_all(self, vips: Any, lifetime: Any) -> list[tuple[IPv4Address, int, bool]]:
        self.log += [f"up {ip}" for ip, _, _ in vips]
        return [(ip, 24, True) for ip, _, _ in vips]

    def remove_all(self, vips: Any) -> list[bool]:
        self.log += [f"down {ip}" for ip, _ in vips]
        return [True for _ in vips]

    def renew_all(self, vips: Any, lifetime: int) -> list[IPv4Address]:
        return []

    def interface_mac(self, interface: str) -> str:
        return "02:00:00:00:00:01"
