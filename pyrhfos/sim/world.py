"""The simulated pair: two nodes, the network between them, the kernel table, the services' fates and
the record of what happened (state changes with the daemon's own reasons, VIP holders, notes).

``simulate`` runs a timeline on it; the tests' schedule search drives a World directly.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from ..config.model import Config
from ..core import events as c
from ..core.vocab import Role, State
from ..daemon.services import Service
from ..daemon.shell import Options
from ..net.probe import ProbeResult
from .clock import Scheduler
from .kernel import Kernel
from .network import Network
from .node import PROBE_LATENCY, Node
from .timeline import Step

ORIGIN = 1000.0  # virtual seconds at the simulation's 0 (the machine takes 0 for "never")
DEFAULT_COMMAND_SECONDS = 0.05  # a start_cmd or stop_cmd that is set, unless told otherwise


@dataclass(frozen=True)
class Record:
    """One line of the history; ``kind`` is state, vip, event or note."""

    t: float  # seconds since the start
    kind: str
    node: str | None = None
    old: str | None = None
    new: str | None = None
    reason: str = ""
    service: str | None = None
    ip: str | None = None
    holders: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"t": round(self.t, 6), "kind": self.kind}
        for key in ("node", "old", "new", "service", "ip"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        if self.kind == "vip":
            d["holders"] = list(self.holders)
        elif self.reason:
            d["reason" if self.kind == "state" else "message"] = self.reason
        return d


@dataclass
class World:
    """Everything of one simulation run; ``seed`` fixes every random draw (loss, jitter)."""

    cfg: Config
    seed: int = 0
    command_timeout: float = 60.0
    start_seconds: float = DEFAULT_COMMAND_SECONDS
    stop_seconds: float = DEFAULT_COMMAND_SECONDS
    records: list[Record] = field(default_factory=list)
    failed: set[tuple[Role, str]] = field(default_factory=set)  # services whose probe fails on that node
    running: dict[tuple[Role, str], bool] = field(default_factory=dict)
    overrides: dict[tuple[Role, str, str], float] = field(default_factory=dict)  # (role, service, key)

    def __post_init__(self) -> None:
        logging.getLogger("pulse").addHandler(_QUIET)  # the daemons' log lines are not our output
        self.scheduler = Scheduler(ORIGIN)
        self.scheduler.after_step = self._look
        self.kernel = Kernel(lambda: self.scheduler.now, self._expiry)
        self.network = Network(self.cfg, random.Random(self.seed), lambda: self.scheduler.now, self._deliver)
        opts = Options(command_timeout=self.command_timeout)
        self.nodes = {role: Node(self, role, self.cfg, opts) for role in Role}
        self.vips = [(f.name, f.address.ip) for f in self.cfg.active_failovers if f.address is not None]
        self._holders: dict[str, tuple[str, ...]] = {name: () for name, _ in self.vips}
        self.states: dict[Role, State | None] = {role: None for role in Role}
        self.last_sent: dict[Role, float] = {}
        self.runs: list[tuple[float, Role, str, bool]] = []  # (t, node, service, running from then)

    @property
    def now(self) -> float:
        return self.scheduler.now - ORIGIN

    # -- driving --------------------------------------------------------------

    def at(self, seconds: float, action: Any) -> None:
        """Call ``action()`` at ``seconds`` of simulated time."""
        self.scheduler.call_at(ORIGIN + seconds, action)

    def schedule(self, steps: Iterable[Step], autostart: bool = True) -> None:
        """The timeline's steps; with ``autostart`` a node whose first step is not ``start`` starts at 0."""
        steps = list(steps)
        if autostart:
            for role in Role:
                mine = [s for s in steps if s.role is role]
                if not mine or mine[0].event != "start":
                    self.at(0.0, self.nodes[role].start)
        for step in steps:
            self.at(step.at, lambda step=step: self.apply(step))

    def run(self, until: float) -> list[Record]:
        self.scheduler.run_until(ORIGIN + until)
        return self.records

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()

    def apply(self, step: Step) -> None:
        node, role, arg = self.nodes[step.role], step.role, step.arg
        self.records.append(Record(self.now, "event", step.node, reason=" ".join(step.text().split()[2:])))
        match step.event:
            case "start":
                node.start()
            case "stop":
                node.stop()
            case "crash":
                node.crash()
            case "freeze":
                node.freeze(float(arg or 0))
            case "release" | "takeover":
                node.control(step.event)
            case "link-down" | "link-up":
                self.network.link(role, step.event == "link-up", arg)
            case "partition":
                self.network.partition(role if arg == "one-way" else None, cut=True)
            case "heal":
                self.network.partition(None, cut=False)
            case "service-fail":
                self.failed.add((role, arg or ""))
            case "service-ok":
                self.failed.discard((role, arg or ""))

    # -- what the nodes ask of the world --------------------------------------

    def command_seconds(self, role: Role, service: str, key: str) -> float:
        default = self.start_seconds if key == "start_cmd" else self.stop_seconds
        return self.overrides.get((role, service, key), default)

    def service_running(self, role: Role, service: str, running: bool) -> None:
        if self.running.get((role, service), False) != running:
            self.runs.append((self.now, role, service, running))
        self.running[(role, service)] = running

    def probe(self, s: Service, prober: Role) -> ProbeResult:
        """A probe from ``prober`` through the VIP: a holder it can reach on the public network answers
        (its own copy first), if its service runs and is not failing."""
        reachable = [Role[h.upper()] for h in self.kernel.holders(s.ip)]
        reachable = [r for r in reachable if r is prober or self.network.reaches(prober, r)]
        if not reachable:  # no ARP answer: the connect waits out the probe's timeout
            why = "nobody reachable holds the VIP" if self.kernel.holders(s.ip) else "nobody holds the VIP"
            return ProbeResult(False, f"timed out ({why})", float(s.f.timeout or 10))
        role = prober if prober in reachable else reachable[0]
        if (role, s.name) in self.failed or not self.running.get((role, s.name)):
            return ProbeResult(False, f"connection refused by {role.name.lower()}", PROBE_LATENCY)
        return ProbeResult(True, "answered", PROBE_LATENCY)

    def state_changed(self, role: Role, change: c.StateChanged) -> None:
        self.states[role] = change.new
        self.records.append(
            Record(self.now, "state", role.name.lower(), change.old.name.lower(), change.new.name.lower(),
                   change.reason)
        )  # fmt: skip

    def note(self, role: Role, message: str) -> None:
        self.records.append(Record(self.now, "note", role.name.lower(), reason=message))

    # -- inside ---------------------------------------------------------------

    def _deliver(self, role: Role, when: float, data: bytes, source: str) -> None:
        self.last_sent[role.partner] = self.now  # the sender's newest datagram that gets through
        self.nodes[role].receive(when, data, source)

    def _expiry(self, when: float) -> None:
        self.scheduler.call_at(when + 1e-6, lambda: None)  # wakes _look just after a lease lapses

    def _look(self) -> None:
        for name, ip in self.vips:
            holders = self.kernel.holders(IPv4Address(ip))
            if holders != self._holders[name]:
                self._holders[name] = holders
                self.records.append(Record(self.now, "vip", service=name, ip=str(ip), holders=holders))

    def holders(self) -> dict[str, tuple[str, ...]]:
        return dict(self._holders)

    def both_running(self, service: str) -> list[tuple[float, float]]:
        """When ``service`` ran on both nodes at once (from a start_cmd to the end of its stop_cmd)."""
        on: dict[Role, bool] = {}
        spans, since = [], None
        for t, role, name, running in self.runs:
            if name != service:
                continue
            on[role] = running
            both = all(on.get(r, False) for r in Role)
            if both and since is None:
                since = t
            elif not both and since is not None:
                spans.append((since, t))
                since = None
        return spans + ([(since, self.now)] if since is not None else [])


class _Quiet(logging.Handler):
    """Keeps the daemons' warnings off stderr (logging's last resort) while the world runs."""

    def emit(self, record: logging.LogRecord) -> None:
        pass


_QUIET = _Quiet()


def simulate(cfg: Config, steps: list[Step], until: float | None = None, **options: Any) -> list[Record]:
    """Run ``steps`` on a fresh World; by default until 3 × deadtime (at least 10 s) after the last."""
    world = World(cfg, **options)
    world.schedule(steps)
    last = steps[-1].at if steps else 0.0
    end = until if until is not None else last + max(10.0, 3 * cfg.deadtime)
    try:
        return world.run(end)
    finally:
        world.close()
