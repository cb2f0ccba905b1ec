"""Typed, immutable model of an lvs.cf file.

Everything downstream of the reader works on these objects; nothing after
parsing looks at raw strings. Source positions are kept for error messages but
never take part in equality, so ``parse(write(parse(f))) == parse(f)``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from ..core.vocab import Role


@dataclass(frozen=True)
class Position:
    """Where something was written: 1-based line and column."""

    line: int
    col: int


# key name -> where its value was written; excluded from comparison.
Positions = dict[str, Position]


def _positions() -> Positions:
    return {}


class ServiceKind(enum.Enum):
    LVS = "lvs"
    FOS = "fos"


class NetworkMode(enum.Enum):
    NAT = "nat"
    DIRECT = "direct"
    TUNNEL = "tunnel"


class RshCommand(enum.Enum):
    RSH = "rsh"
    SSH = "ssh"


@dataclass(frozen=True)
class DeviceAddress:
    """``IP DEV[:N]``: an address and the (alias) interface that carries it."""

    ip: IPv4Address
    device: str  # as written: "eth0:1" (alias label) or "eth0"

    @property
    def interface(self) -> str:
        """The real interface: ``eth0`` for ``eth0:1``."""
        return self.device.split(":", 1)[0]

    @property
    def label(self) -> str:
        """The label the kernel address carries (``eth0:1``), shown by ifconfig."""
        return self.device

    def __str__(self) -> str:
        return f"{self.ip} {self.device}"


@dataclass(frozen=True)
class Failover:
    """One ``failover NAME { }`` block: a service that moves with its VIP."""

    name: str
    address: DeviceAddress | None = None
    vip_nmask: IPv4Address | None = None
    active: bool = True
    port: int | None = None
    timeout: float = 10.0
    send: str | None = None  # escapes decoded; latin-1 code points
    expect: str | None = None
    use_regex: bool = False
    send_program: str | None = None
    reentry: float = 180.0
    start_cmd: str | None = None
    stop_cmd: str | None = None
    positions: Positions = field(default_factory=_positions, compare=False, repr=False, hash=False)
    # Keys Piranha's GUI writes into failover blocks (lvs.cf docs: "from real files").
    heartbeat: bool | None = None
    expect_program: str | None = None

    @property
    def prefixlen(self) -> int | None:
        """Prefix length from ``vip_nmask``, or None to use the device's network."""
        if self.vip_nmask is None:
            return None
        return IPv4Network(f"0.0.0.0/{self.vip_nmask}").prefixlen


@dataclass(frozen=True)
class Server:
    """``server NAME { }`` inside a virtual server: one real server."""

    name: str
    address: IPv4Address | None = None
    active: bool = True
    weight: int = 1
    port: int | None = None
    positions: Positions = field(default_factory=_positions, compare=False, repr=False, hash=False)
    nmask: IPv4Address | None = None  # written by Piranha's GUI; unused by the daemon


@dataclass(frozen=True)
class Virtual:
    """``virtual NAME { }``: an LVS virtual server (read and validated only)."""

    name: str
    address: DeviceAddress | None = None
    vip_nmask: IPv4Address | None = None
    active: bool = True
    fwmark: int | None = None
    port: int = 80
    persistent: int | None = None
    pmask: IPv4Address = IPv4Address("255.255.255.255")
    send: str | None = None
    expect: str | None = None
    use_regex: bool = False
    send_program: str | None = None
    load_monitor: str = "uptime"
    scheduler: str = "wlc"
    protocol: str = "tcp"
    timeout: float = 10.0
    reentry: float = 180.0
    quiesce_server: bool = False
    sorry_server: IPv4Address | None = None
    servers: tuple[Server, ...] = ()
    positions: Positions = field(default_factory=_positions, compare=False, repr=False, hash=False)
    # Keys real Piranha files carry (GUI / lvsconfig.c); read and written back only.
    expect_program: str | None = None
    client_monitor: str | None = None


@dataclass(frozen=True)
class Config:
    """A whole lvs.cf: global settings, then failover or virtual blocks."""

    primary: IPv4Address | None = None
    serial_no: int | None = None
    primary_private: IPv4Address | None = None
    service: ServiceKind = ServiceKind.LVS
    backup_active: bool = False
    backup: IPv4Address | None = None
    backup_private: IPv4Address | None = None
    heartbeat: bool = True
    heartbeat_port: int = 539
    keepalive: float = 6.0
    deadtime: float = 18.0
    network: NetworkMode = NetworkMode.NAT
    nat_router: DeviceAddress | None = None
    nat_nmask: IPv4Address | None = None
    debug_level: str = "NONE"
    monitor_links: bool = False
    syncdaemon: bool = False
    syncd_iface: str | None = None
    syncd_id: int | None = None
    rsh_command: RshCommand = RshCommand.RSH
    tcp_timeout: int | None = None
    tcpfin_timeout: int | None = None
    udp_timeout: int | None = None
    reservation_conflict_action: str = "nothing"
    hard_shutdown: bool | None = None
    primary_shared: IPv4Address | None = None
    backup_shared: IPv4Address | None = None
    active_cmd: str | None = None
    inactive_cmd: str | None = None
    # pyrhfos extensions (documented in docs/lvs.cf.md)
    heartbeat_key: str | None = None
    metrics_port: int | None = None
    metrics_address: IPv4Address | None = None  # None: 127.0.0.1 (daemon/metrics.METRICS_ADDRESS)
    failovers: tuple[Failover, ...] = ()
    virtuals: tuple[Virtual, ...] = ()
    path: str = field(default="lvs.cf", compare=False)
    positions: Positions = field(default_factory=_positions, compare=False, repr=False, hash=False)
    # Keys Piranha's own parser (lvsconfig.c) accepts; read and written back only.
    ipvsadm: str | None = None
    sync: bool | None = None

    @property
    def active_failovers(self) -> tuple[Failover, ...]:
        return tuple(f for f in self.failovers if f.active)

    def node_addresses(self, role: Role) -> tuple[IPv4Address, ...]:
        """A node's addresses, public first then private; the backup has none without backup_active."""
        if role is Role.PRIMARY:
            pair = (self.primary, self.primary_private)
        elif self.backup_active:
            pair = (self.backup, self.backup_private)
        else:
            return ()
        return tuple(a for a in pair if a is not None and a != IPv4Address(0))

    def role_of(self, local_addresses: Iterable[IPv4Address]) -> Role | None:
        """Which node of this file a host with ``local_addresses`` is, if any."""
        mine = set(local_addresses)
        return next((r for r in Role if mine & set(self.node_addresses(r))), None)
