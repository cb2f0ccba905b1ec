"""The simulated network between the two nodes: one path per address pair (public, private), each way with
its delay, jitter (so reordering), loss and duplicates; partitions (both ways or one); links going down.

It carries the very bytes BeatLink sends; the receiver's intake decodes and guards them as it would.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config.model import Config
from ..core.vocab import Role

PATHS = ("public", "private")


@dataclass
class Direction:
    """One way along one path."""

    delay: float = 0.001  # seconds
    jitter: float = 0.0  # up to this much more, uniformly
    loss: float = 0.0  # probability a datagram is lost
    duplicate: float = 0.0  # probability a datagram arrives twice (the copy up to jitter later)
    cut: bool = False  # partitioned
    lose: set[int] = field(default_factory=set)  # these datagrams (1 = the first sent this way) are lost
    count: int = 0  # datagrams sent this way


@dataclass
class Endpoint:
    """Where one path's datagrams for a node go: its address on that path."""

    role: Role
    path: str
    address: str


@dataclass
class Network:
    """Both paths, both directions; ``deliver`` hands a datagram to the receiving node at a time."""

    cfg: Config
    rng: random.Random
    clock: Callable[[], float]
    deliver: Callable[[Role, float, bytes, str], None]  # receiver, arrival time, data, source address
    directions: dict[tuple[str, Role], Direction] = field(default_factory=dict)  # (path, sender)
    down: dict[Role, set[str]] = field(default_factory=dict)  # role -> paths whose link is down
    endpoints: dict[str, Endpoint] = field(default_factory=dict)  # address -> endpoint
    sent: int = 0
    lost: int = 0

    def __post_init__(self) -> None:
        for role in Role:
            self.down.setdefault(role, set())
            for path, address in zip(PATHS, self.cfg.node_addresses(role), strict=False):
                self.endpoints[str(address)] = Endpoint(role, path, str(address))
                self.directions.setdefault((path, role), Direction())

    def address(self, role: Role, path: str) -> str | None:
        for e in self.endpoints.values():
            if e.role is role and e.path == path:
                return e.address
        return None

    def way(self, path: str, sender: Role) -> Direction:
        return self.directions.setdefault((path, sender), Direction())

    def paths(self) -> list[str]:
        return [p for p in PATHS if self.address(Role.PRIMARY, p) and self.address(Role.BACKUP, p)]

    def partition(self, sender: Role | None = None, cut: bool = True) -> None:
        """Cut (or heal) every path: both ways, or only what ``sender`` sends."""
        for path in PATHS:
            for role in Role:
                if sender is None or role is sender:
                    self.way(path, role).cut = cut

    def link(self, role: Role, up: bool, path: str | None = None) -> None:
        chosen = set(PATHS if path is None else (path,))
        self.down[role] = self.down[role] - chosen if up else self.down[role] | chosen

    def reaches(self, sender: Role, receiver: Role) -> bool:
        """Can a connection from ``sender`` reach ``receiver`` on the public network (where VIPs live),
        both ways, now? (Probes: their loss is a timeout, not modelled per packet.)"""
        up = "public" not in self.down[sender] and "public" not in self.down[receiver]
        return up and not self.way("public", sender).cut and not self.way("public", receiver).cut

    def send(self, sender: Role, data: bytes, addr: tuple[str, int]) -> None:
        """One datagram from ``sender`` to ``addr``; raises OSError as a socket does with no link."""
        target = self.endpoints.get(addr[0])
        if target is None or target.role is sender:
            return  # nobody there
        path = target.path
        if path in self.down[sender]:
            raise OSError(101, "Network is unreachable")
        self.sent += 1
        way = self.way(path, sender)
        way.count += 1
        # Drawn for every datagram, lost or not, so one seed gives one history whatever the cuts.
        lost, extra = self.rng.random() < way.loss, self.rng.random() * way.jitter
        twice, later = self.rng.random() < way.duplicate, self.rng.random() * way.jitter
        source = self.address(sender, path)
        if way.cut or lost or way.count in way.lose or path in self.down[target.role] or source is None:
            self.lost += 1
            return
        self.deliver(target.role, self.clock() + way.delay + extra, data, source)
        if twice:
            self.deliver(target.role, self.clock() + way.delay + extra + later, data, source)
