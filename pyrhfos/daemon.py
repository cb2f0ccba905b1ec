"""The asyncio daemon: sockets, timers and signals around the pure state machine.

It feeds events to ``cluster.Cluster`` and carries out the actions that come
back (beats, VIPs, gratuitous ARP, commands). No failover decision is made here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import signal
import socket
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from . import cluster as c
from .config.model import Config, Failover, Position
from .heartbeat import (
    Beat,
    DecodeError,
    Flag,
    PiranhaBeat,
    PiranhaMagic,
    decode,
    encode,
    encode_piranha,
    piranha_magic_for,
)
from .node import Role, State

log = logging.getLogger("pulse")


class StartupError(Exception):
    """The daemon cannot start with this configuration on this host."""

    def __init__(self, message: str, pos: Position | None = None) -> None:
        super().__init__(message)
        self.pos = pos

    def render(self, path: str) -> str:
        """``FILE:LINE:COL: message`` when a line is to blame, else ``FILE: message``."""
        where = f"{path}:{self.pos.line}:{self.pos.col}" if self.pos else path
        return f"{where}: {self}"


@dataclass(frozen=True)
class Membership:
    """This node's place in the pair, found by matching its own addresses."""

    role: Role
    partner_paths: tuple[IPv4Address, ...]  # public first, then private


def find_membership(cfg: Config, local: Iterable[IPv4Address]) -> Membership:
    """Match the host's addresses against primary/backup (public and private)."""
    mine = set(local)
    primary = {a for a in (cfg.primary, cfg.primary_private) if a is not None}
    backup = {a for a in (cfg.backup, cfg.backup_private) if a is not None} if cfg.backup_active else set()
    if mine & primary:
        role = Role.PRIMARY
        partner = (cfg.backup, cfg.backup_private) if cfg.backup_active else ()
    elif mine & backup:
        role = Role.BACKUP
        partner = (cfg.primary, cfg.primary_private)
    else:
        wanted = ", ".join(str(a) for a in sorted(primary | backup))
        have = ", ".join(str(a) for a in sorted(mine)) or "none"
        raise StartupError(
            f"this host is neither primary nor backup: lvs.cf names {wanted}; this host has {have}"
        )
    return Membership(role, tuple(a for a in partner if a is not None))


def check_interfaces(cfg: Config) -> None:
    """Every VIP's interface must exist: say so before daemonizing, not in a log."""
    for f in cfg.active_failovers:
        assert f.address is not None
        try:
            socket.if_nametoindex(f.address.interface)
        except OSError:
            raise StartupError(
                f"failover {f.name}: interface {f.address.interface} (for {f.address}) does not exist",
                f.positions.get("address"),
            ) from None


@dataclass(frozen=True)
class Options:
    """Command-line choices that shape the daemon (not the config)."""

    force_active: bool = False
    test_start: bool = False  # -t/--test-start: decide and log, but act on nothing
    garp_count: int = 5
    garp_interval: float = 1.0
    command_timeout: float = 60.0


# Piranha's beats carry only "running", "stopped" or "stop me".
_FROM_PIRANHA = {
    PiranhaMagic.FOS_HEARTBEAT_RUNNING: (State.ACTIVE, False),
    PiranhaMagic.FOS_HEARTBEAT_STOPPED: (State.STANDBY, False),
    PiranhaMagic.FOS_HEARTBEAT_STOPME: (State.STANDBY, True),
}


def lease_seconds(deadtime: float) -> int:
    """Kernel lifetime of a held VIP: it vanishes about deadtime after pulse dies."""
    return max(1, math.ceil(deadtime))


class _BeatProtocol(asyncio.DatagramProtocol):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.daemon.on_datagram(data, addr[0])

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable from a partner that is down: expected, not fatal.
        self.daemon.counters["send-errors"] += 1
        log.debug("heartbeat socket error: %s", exc)


class Daemon:
    """One pulse process: owns the socket, the timers and the side effects."""

    def __init__(self, cfg: Config, membership: Membership, opts: Options) -> None:
        self.cfg = cfg
        self.me = membership
        self.opts = opts
        self.digest = cfg.digest()
        self.boot_id = secrets.token_bytes(8)
        self.seq = 0
        self.counters: Counter[str] = Counter()
        self.machine = c.Cluster(
            membership.role,
            c.Timers(cfg.keepalive, cfg.deadtime, holddown=self._holddown(cfg)),
            tuple(str(a) for a in membership.partner_paths),
            solo=not cfg.backup_active,
            force_active=opts.force_active,
        )
        self.partner_piranha: bool | None = None  # None until the partner is heard
        self.piranha_little_endian = True
        self.mismatch_logged: set[bytes] = set()
        self.transport: asyncio.DatagramTransport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.jobs: asyncio.Queue[c.Acquire | c.Release | c.RestartService] = asyncio.Queue()
        self.done = asyncio.Event()
        self.held: set[IPv4Address] = set()
        self.last_renew = 0.0
        self.frames: dict[IPv4Address, list[bytes]] = {}
        self.vips = None  # pyroute2-backed VipManager, opened only when acting for real
        self.loop: asyncio.AbstractEventLoop | None = None

    @staticmethod
    def _holddown(cfg: Config) -> float:
        return max((f.reentry for f in cfg.active_failovers), default=0.0)

    # -- life cycle ---------------------------------------------------------

    async def run(self) -> int:
        self.loop = asyncio.get_running_loop()
        if not self.opts.test_start:
            from .vip import VipManager

            self.vips = VipManager()
            self._clear_stale_vips()
        if self.cfg.backup_active:
            self.transport, _ = await self.loop.create_datagram_endpoint(
                lambda: _BeatProtocol(self),
                local_addr=("0.0.0.0", self.cfg.heartbeat_port),
                family=socket.AF_INET,
                reuse_port=False,
            )
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.feed, c.Stop(signal.Signals(sig).name))
        log.info(
            "starting as %s (%s), keepalive %gs, deadtime %gs, partner %s%s",
            self.me.role.name.lower(),
            "solo" if not self.cfg.backup_active else f"heartbeat port {self.cfg.heartbeat_port}",
            self.cfg.keepalive,
            self.cfg.deadtime,
            ", ".join(map(str, self.me.partner_paths)) or "none",
            " [test-start: no VIP, ARP or command will be run]" if self.opts.test_start else "",
        )
        worker = asyncio.create_task(self._worker())
        frames = None if self.opts.test_start else asyncio.create_task(self._build_frames())
        self.feed(c.Start())
        try:
            await self.done.wait()
        finally:
            worker.cancel()
            if frames is not None:
                frames.cancel()
            if self.timer is not None:
                self.timer.cancel()
            if self.transport is not None:
                self.transport.close()
            if self.vips is not None:
                self.vips.close()
        return 0

    def _clear_stale_vips(self) -> None:
        """A VIP left by a crashed pulse must not answer while the partner serves."""
        assert self.vips is not None
        for f in self.cfg.active_failovers:
            assert f.address is not None
            if self.vips.remove(f.address.ip, f.address.label):
                log.warning("removed %s left on %s by an earlier run", f.address.ip, f.address.label)

    async def _build_frames(self) -> None:
        from .arp import build_frames_in_child

        assert self.vips is not None
        wanted = [
            (self.vips.interface_mac(f.address.interface), f.address.ip)
            for f in self.cfg.active_failovers
            if f.address is not None
        ]
        built = await asyncio.to_thread(build_frames_in_child, wanted)
        self.frames = {ip: frames for (_, ip), frames in built.items()}

    # -- events in ----------------------------------------------------------

    def now(self) -> float:
        assert self.loop is not None
        return self.loop.time()

    def feed(self, event: c.Event) -> None:
        """Hand one event to the machine and carry out what it asks for."""
        for action in self.machine.handle(event, self.now()):
            self._do(action)
        self._schedule()

    def _schedule(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        deadline = self.machine.next_deadline()
        if deadline is not None and self.loop is not None and not self.done.is_set():
            self.timer = self.loop.call_at(deadline, self.feed, c.Tick())

    def on_datagram(self, data: bytes, source: str) -> None:
        # Receive rule order as Piranha: wrong sender first, then the packet.
        if source not in self.machine.partner.paths:
            self._drop("unexpected-source", f"heartbeat from {source}, which is not the partner")
            return
        try:
            beat = decode(data)
        except DecodeError as e:
            self._drop(e.reason, f"bad heartbeat from {source}: {e.reason}")
            return
        self.counters["beats-received"] += 1
        if isinstance(beat, PiranhaBeat):
            event = self._from_piranha(beat, source)
            if event is None:
                return
        else:
            event = self._from_native(beat, source)
        self.feed(event)

    def _drop(self, reason: str, message: str) -> None:
        self.counters[f"dropped-{reason}"] += 1
        # One warning per reason; the counters tell the rest.
        if self.counters[f"dropped-{reason}"] == 1:
            log.warning("%s (dropped; further ones are only counted)", message)

    def _from_native(self, beat: Beat, source: str) -> c.BeatReceived:
        if self.partner_piranha is not False:
            log.info("partner %s speaks pyrhfos heartbeats", source)
        self.partner_piranha = False
        if beat.digest != self.digest and beat.digest not in self.mismatch_logged:
            self.mismatch_logged.add(beat.digest)
            log.warning(
                "config mismatch: partner's lvs.cf (serial %d) differs from ours (serial %d); "
                "copy the same file to both nodes",
                beat.serial,
                self.cfg.serial_no or 0,
            )
        return c.BeatReceived(
            source,
            beat.state,
            leaving=bool(beat.flags & Flag.LEAVING),
            stopme=bool(beat.flags & Flag.STOPME),
            hold=bool(beat.flags & Flag.HOLD),
        )

    def _from_piranha(self, beat: PiranhaBeat, source: str) -> c.BeatReceived | None:
        mapped = _FROM_PIRANHA.get(beat.magic)
        if mapped is None:
            self._drop(
                "piranha-incompatible",
                f"Incompatible heartbeat received from {source} ({beat.magic.name}) -- "
                "other system not using identical services",
            )
            return None
        if self.partner_piranha is not True:
            log.info("partner %s speaks Piranha heartbeats: answering in kind", source)
        self.partner_piranha = True
        self.piranha_little_endian = beat.little_endian
        state, stopme = mapped
        return c.BeatReceived(source, state, stopme=stopme)

    # -- actions out --------------------------------------------------------

    def _do(self, action: c.Action) -> None:
        match action:
            case c.StateChanged(old=old, new=new, reason=reason):
                log.info("%s -> %s: %s", old.name.lower(), new.name.lower(), reason)
            case c.SendBeat():
                self._send_beat(action)
            case c.Acquire() | c.Release() | c.RestartService():
                self.jobs.put_nowait(action)
            case c.Announce(reason=reason):
                log.info("re-announcing VIPs: %s", reason)
                self._announce()
            case c.Notice(message=message):
                log.info("%s", message)
            case c.Exit():
                log.info("stopped")
                self.done.set()

    def _send_beat(self, a: c.SendBeat) -> None:
        if self.machine.state in c.ACTIVE_STATES:
            self._renew_leases()
        if self.transport is None:
            return
        flags = Flag(0)
        if a.leaving:
            flags |= Flag.LEAVING
        if a.stopme:
            flags |= Flag.STOPME
        if a.hold:
            flags |= Flag.HOLD
        self.seq += 1
        beat = Beat(
            self.me.role, a.state, self.seq, self.boot_id, self.cfg.serial_no or 0, self.digest, flags
        )
        if self.partner_piranha:
            data = encode_piranha(piranha_magic_for(beat), self.piranha_little_endian)
        else:
            data = encode(beat)
        for path in self.me.partner_paths:
            try:
                self.transport.sendto(data, (str(path), self.cfg.heartbeat_port))
                self.counters["beats-sent"] += 1
            except OSError as e:  # no route while a link is down: keep beating
                self.counters["send-errors"] += 1
                log.debug("beat to %s failed: %s", path, e)

    # -- side effects, one at a time ---------------------------------------

    async def _worker(self) -> None:
        while True:
            job = await self.jobs.get()
            match job:
                case c.Acquire():
                    ok, why = await self._acquire()
                    self.feed(c.AcquireDone(ok, why))
                case c.Release():
                    await self._release()
                    self.feed(c.ReleaseDone())
                case c.RestartService(name=name, reason=reason):
                    await self._restart(name, reason)

    def _failover(self, name: str) -> Failover | None:
        return next((f for f in self.cfg.active_failovers if f.name == name), None)

    async def _acquire(self) -> tuple[bool, str]:
        services = self.cfg.active_failovers
        for f in services:
            self._vip_up(f)
        self._announce()
        self._schedule_announcements()
        results = await asyncio.gather(*(self._command(f, "start_cmd", f.start_cmd) for f in services))
        failed = [f.name for f, ok in zip(services, results, strict=True) if not ok]
        return (not failed, f"start_cmd failed for {', '.join(failed)}" if failed else "")

    async def _release(self) -> None:
        services = self.cfg.active_failovers
        await asyncio.gather(*(self._command(f, "stop_cmd", f.stop_cmd) for f in services))
        for f in services:
            self._vip_down(f)

    async def _restart(self, name: str, reason: str) -> None:
        f = self._failover(name)
        if f is None:
            return
        log.warning("restarting service %s locally: %s", name, reason)
        await self._command(f, "stop_cmd", f.stop_cmd)
        await self._command(f, "start_cmd", f.start_cmd)

    def _vip_up(self, f: Failover) -> None:
        assert f.address is not None
        if self.vips is None:
            log.info("test-start: would add %s on %s", f.address.ip, f.address.label)
            return
        prefix = f.prefixlen or self.vips.prefixlen_for(f.address.interface, f.address.ip)
        added = self.vips.add(
            f.address.ip, f.address.label, prefix, lifetime=lease_seconds(self.cfg.deadtime)
        )
        self.held.add(f.address.ip)
        self.last_renew = self.now()
        log.info("%s %s/%d on %s", "added" if added else "adopted", f.address.ip, prefix, f.address.label)

    def _vip_down(self, f: Failover) -> None:
        assert f.address is not None
        self.held.discard(f.address.ip)
        if self.vips is None:
            log.info("test-start: would remove %s from %s", f.address.ip, f.address.label)
            return
        if self.vips.remove(f.address.ip, f.address.label):
            log.info("removed %s from %s", f.address.ip, f.address.label)

    def _renew_leases(self) -> None:
        lease = lease_seconds(self.cfg.deadtime)
        # Renewing at a third of the lease is cheap and survives two lost ticks.
        if self.vips is None or not self.held or self.now() - self.last_renew < lease / 3:
            return
        self.last_renew = self.now()
        for f in self.cfg.active_failovers:
            assert f.address is not None
            if f.address.ip in self.held:
                prefix = f.prefixlen or self.vips.prefixlen_for(f.address.interface, f.address.ip)
                self.vips.renew(f.address.ip, f.address.label, prefix, lease)

    def _announce(self) -> None:
        if self.vips is None:
            for f in self.cfg.active_failovers:
                log.info("test-start: would send gratuitous ARP for %s", f.address)
            return
        from .arp import GarpSender

        for f in self.cfg.active_failovers:
            assert f.address is not None
            frames = self.frames.get(f.address.ip)
            if frames is None:
                log.warning("gratuitous ARP for %s not ready yet", f.address.ip)
                continue
            try:
                GarpSender(f.address.interface, frames).send_once()
                self.counters["garp-sent"] += 1
            except OSError as e:
                log.warning("gratuitous ARP for %s failed: %s", f.address.ip, e)

    def _schedule_announcements(self) -> None:
        assert self.loop is not None
        for i in range(1, self.opts.garp_count):
            self.loop.call_later(i * self.opts.garp_interval, self._announce_if_active)

    def _announce_if_active(self) -> None:
        if self.machine.state is State.ACTIVE:
            self._announce()

    async def _command(self, f: Failover, key: str, cmd: str | None) -> bool:
        if not cmd:
            return True
        if self.opts.test_start:
            log.info("test-start: would run %s of %s: %s", key, f.name, cmd)
            return True
        from .commands import run_command

        result = await run_command(cmd, self.opts.command_timeout)
        tail = result.output.strip().splitlines()[-3:]
        if result.timed_out:
            log.error("%s of %s timed out after %gs and was killed: %s", key, f.name, result.duration, cmd)
        elif result.ok:
            log.info("%s of %s ok (%.2fs)", key, f.name, result.duration)
        else:
            log.error("%s of %s exited %s: %s", key, f.name, result.returncode, " | ".join(tail))
        return result.ok


def pidfile_owner(path: str) -> int | None:
    """The pid of a running pulse that owns ``path``, or None when stale or absent."""
    import psutil

    try:
        with open(path) as fh:
            pid = int(fh.read().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        proc = psutil.Process(pid)
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return None
    return pid if "pulse" in cmdline or "pyrhfos" in cmdline else None
