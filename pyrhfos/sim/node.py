"""One simulated node: the project's own Daemon, BeatLink and ServiceSet on a virtual loop, with the
kernel's address table, the network and the start/stop commands and probes simulated around them.

Power on, SIGTERM, power loss, SIGSTOP/SIGCONT and the control socket's requests are what a node takes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any, Protocol

from ..config import digest
from ..config.model import Config
from ..core import events as c
from ..core.vocab import Role
from ..daemon.beatlink import BeatLink
from ..daemon.services import Service, ServiceSet
from ..daemon.shell import Daemon, Options, replay_guard
from ..daemon.startup import Membership
from ..net.probe import ProbeResult
from ..net.vip import VipManager
from .clock import Scheduler, VirtualLoop
from .kernel import Kernel
from .network import Network

SIM_KEY = b"simulated heartbeat key, 32 bytes"  # the sim never reads the real key file
PROBE_LATENCY = 0.001


class World(Protocol):
    """What a node needs of the world around it (world.World; named here so node imports no world)."""

    scheduler: Scheduler
    kernel: Kernel
    network: Network

    def note(self, role: Role, message: str) -> None: ...
    def command_seconds(self, role: Role, service: str, key: str) -> float: ...
    def service_running(self, role: Role, service: str, running: bool) -> None: ...
    def probe(self, s: Service, prober: Role) -> ProbeResult: ...
    def state_changed(self, role: Role, change: c.StateChanged) -> None: ...


class SimVips(VipManager):
    """The VipManager calls ServiceSet makes, answered by the simulated kernel table."""

    def __init__(self, node: Node) -> None:  # no netlink socket, no thread
        self.node = node

    def close(self) -> None:
        pass

    def interface_exists(self, interface: str) -> bool:
        return True

    def interface_mac(self, interface: str) -> str:
        return "02:00:00:00:00:01" if self.node.role is Role.PRIMARY else "02:00:00:00:00:02"

    def add_all(
        self, vips: Sequence[tuple[IPv4Address, str, int | None]], lifetime: int | None
    ) -> list[tuple[IPv4Address, int, bool]]:
        done = []
        for ip, _, prefix in vips:
            added = self.node.world.kernel.add(self.node.name, IPv4Address(ip), lifetime)
            done.append((IPv4Address(ip), prefix or 32, added))
        return done

    def remove_all(self, vips: Sequence[tuple[IPv4Address, str]]) -> list[bool]:
        return [self.node.world.kernel.remove(self.node.name, IPv4Address(ip)) for ip, _ in vips]


class SimServices(ServiceSet):
    """The real ServiceSet (leases, order of release, restarts, probe bookkeeping) with simulated
    commands that take virtual time, probes answered by whoever holds the VIP, and ARP only counted."""

    def __init__(self, node: Node, failovers: Iterable[Any], deadtime: float, command_timeout: float) -> None:
        super().__init__(failovers, SimVips(node), deadtime, command_timeout, node.clock)
        self.node = node

    async def prepare_frames(self) -> None:
        for s in self:
            s.frames = s.frames or [b"simulated gratuitous ARP"]

    def announce(self, services: Iterable[Service] | None = None) -> int:
        chosen = [s for s in self if s.held] if services is None else list(services)
        self.garp_sent += len(chosen)
        return len(chosen)

    async def command(self, s: Service, key: str) -> bool:
        cmd: str | None = getattr(s.f, key)
        world = self.node.world
        if key == "start_cmd":
            world.service_running(self.node.role, s.name, True)
        if cmd:
            took = world.command_seconds(self.node.role, s.name, key)
            await asyncio.sleep(min(took, self.command_timeout))
            if took > self.command_timeout:
                world.note(self.node.role, f"{key} of {s.name} timed out after {self.command_timeout:g}s")
                return False
        if key == "stop_cmd":
            world.service_running(self.node.role, s.name, False)
        return True

    async def probe_all(self) -> list[tuple[Service, ProbeResult]]:
        async def one(s: Service) -> tuple[Service, ProbeResult]:
            result = self.node.world.probe(s, self.node.role)
            await asyncio.sleep(result.latency)
            return s, result

        return list(await asyncio.gather(*(one(s) for s in self)))


class SimDaemon(Daemon):
    """The project's Daemon; every action also goes to the world's record (state changes)."""

    on_action: Callable[[c.Action], None] = staticmethod(lambda action: None)

    def _do(self, action: c.Action) -> None:
        self.on_action(action)
        super()._do(action)


@dataclass
class _Transport:
    """BeatLink's socket: datagrams go to the simulated network."""

    node: Node
    closed: bool = False

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.closed:
            self.node.world.network.send(self.node.role, data, addr)

    def close(self) -> None:
        self.closed = True


@dataclass
class Node:
    """One machine of the pair; ``daemon`` is None while pulse is not running on it."""

    world: World
    role: Role
    cfg: Config
    options: Options = field(default_factory=lambda: Options(command_timeout=60.0))
    loop: VirtualLoop | None = None
    daemon: SimDaemon | None = None
    transport: _Transport | None = None
    boots: int = 0
    socket: list[tuple[bytes, str]] = field(default_factory=list)  # datagrams not yet read

    @property
    def name(self) -> str:
        return self.role.name.lower()

    def clock(self) -> float:
        return self.loop.time() if self.loop is not None else self.world.scheduler.now

    @property
    def running(self) -> bool:
        return self.daemon is not None

    # -- what a node takes ----------------------------------------------------

    def start(self) -> None:
        if self.daemon is not None:
            self.world.note(self.role, "start: pulse is already running")
            return
        self.boots += 1
        self.loop = VirtualLoop(self.world.scheduler.now)
        self.world.scheduler.add(self.loop)
        cfg = self.cfg
        paths = tuple(str(a) for a in cfg.node_addresses(self.role.partner))
        key = SIM_KEY if cfg.heartbeat_key else None
        # As shell.beat_link builds it; the boot counter is the node's boot number.
        membership = Membership(self.role, cfg.node_addresses(self.role.partner))
        guard = replay_guard(cfg, membership, authenticated=key is not None)
        link = BeatLink(
            self.role, paths, cfg.heartbeat_port, key, Counter(), digest=digest(cfg),
            serial=cfg.serial_no or 0, boot_id=self.boots.to_bytes(8, "big"), guard=guard,
        )  # fmt: skip
        self.transport = _Transport(self)
        link.transport = self.transport
        services = SimServices(self, cfg.active_failovers, cfg.deadtime, self.options.command_timeout)
        daemon = SimDaemon(
            cfg, Membership(self.role, cfg.node_addresses(self.role.partner)), self.options, link=link,
            services=services, clock=self.clock, check=lambda cfg: None,
        )  # fmt: skip
        daemon.on_action = self._observe
        self.daemon = daemon
        services.clear_stale()
        task = self.loop.create_task(daemon.run())
        task.add_done_callback(lambda _: self._exited(daemon))

    def stop(self, reason: str = "SIGTERM") -> None:
        if self.daemon is None or self.loop is None:
            self.world.note(self.role, "stop: pulse is not running")
            return
        self.loop.call_soon(self.daemon.feed, c.Stop(reason))

    def crash(self) -> None:
        """Power lost: the process, its VIPs and its services are gone at once."""
        if self.daemon is None:
            self.world.note(self.role, "crash: pulse is not running")
            return
        self.world.kernel.drop_node(self.name)
        for s in self.daemon.services:
            self.world.service_running(self.role, s.name, False)
        self._shut()

    def freeze(self, seconds: float) -> None:
        """SIGSTOP now, SIGCONT ``seconds`` later: nothing runs meanwhile; datagrams wait in the socket."""
        if self.loop is None:
            return
        loop, thaw = self.loop, self.world.scheduler.now + seconds
        self.world.scheduler.frozen[loop] = max(thaw, self.world.scheduler.frozen.get(loop, thaw))
        self.world.scheduler.call_at(thaw, lambda: self._read_socket(loop))

    def control(self, command: str) -> None:
        """`pulse release|takeover` on this node; the answer goes to the record."""
        if self.daemon is None or self.loop is None:
            self.world.note(self.role, f"{command}: pulse is not running")
            return
        task = self.loop.create_task(self.daemon.control(command))

        def answered(t: asyncio.Task[dict[str, Any]]) -> None:
            if not t.cancelled() and t.exception() is None:
                reply = t.result()
                self.world.note(self.role, f"{command}: {reply.get('message') or reply.get('error')}")

        task.add_done_callback(answered)

    def receive(self, when: float, data: bytes, source: str) -> None:
        """A datagram reaches the node at ``when``."""
        self.world.scheduler.call_at(when, lambda: self._arrive(data, source))

    def _arrive(self, data: bytes, source: str) -> None:
        if self.daemon is None or self.loop is None or self.transport is None or self.transport.closed:
            return  # no socket: the datagram is lost
        self.socket.append((data, source))
        if len(self.socket) == 1 and not self._frozen():
            self.loop.call_soon(self._read_one)

    def _frozen(self) -> bool:
        return (
            self.loop is not None
            and self.world.scheduler.frozen.get(self.loop, 0.0) > self.world.scheduler.now
        )

    def _read_socket(self, loop: VirtualLoop) -> None:
        """On SIGCONT: asyncio reads the queued datagrams one per loop iteration, the first before the
        overdue timers run (its I/O callbacks go ahead of expired timers)."""
        if loop is self.loop and self.socket and not self._frozen():
            loop.call_soon(self._read_one)

    def _read_one(self) -> None:
        if not self.socket or self.daemon is None or self._frozen():
            return
        data, source = self.socket.pop(0)
        self.daemon.on_datagram(data, source)
        if self.socket and self.loop is not None:
            self.loop.call_soon(self._read_one)

    # -- inside ---------------------------------------------------------------

    def _observe(self, action: c.Action) -> None:
        if isinstance(action, c.StateChanged):
            self.world.state_changed(self.role, action)
        elif isinstance(action, c.RestartService):  # no state change, yet what a flapping service gets
            self.world.note(self.role, f"restart {action.name} locally: {action.reason}")

    def _exited(self, daemon: SimDaemon) -> None:
        if daemon is self.daemon:  # pulse exited by itself (a stop), as serve() closes its link
            self.world.scheduler.call_at(self.world.scheduler.now, self._shut)

    def _shut(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.daemon is not None:
            self.daemon.services.close()
        if self.loop is not None:
            self.world.scheduler.remove(self.loop)
            self.loop.shut()
        self.daemon, self.loop, self.transport = None, None, None
        self.socket.clear()

    def close(self) -> None:
        if self.daemon is not None:
            self._shut()
