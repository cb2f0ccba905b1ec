"""The asyncio daemon: sockets, timers and signals around the pure state machine.

It feeds events to ``cluster.Cluster`` and carries out the actions that come
back (beats, VIPs, gratuitous ARP, commands). No failover decision is made here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError, digest, load
from ..config.model import Config
from ..core import events as c
from ..core.machine import Cluster, Timers
from ..core.vocab import State
from ..core.wire import (
    Beat,
    DecodeError,
    Flag,
    PiranhaBeat,
    PiranhaMagic,
    ReplayGuard,
    decode,
    encode,
    encode_piranha,
    piranha_magic_for,
)
from ..net.host import local_ipv4_addresses
from ..net.vip import VipManager
from .control import ControlServer, answers
from .metrics import Metrics
from .services import ServiceSet
from .startup import Membership, StartupError, check_interfaces, find_membership
from .status import RecentEvents

log = logging.getLogger("pulse")
HANDOVER_GRACE = 0.02  # seconds from the partner's ACTIVE beat to its VIP and ARP being out


@dataclass(frozen=True)
class Options:
    """Command-line choices that shape the daemon (not the config)."""

    force_active: bool = False
    test_start: bool = False  # -t/--test-start: decide and log, but act on nothing
    garp_count: int = 5
    garp_interval: float = 1.0
    command_timeout: float = 60.0  # start_cmd/stop_cmd/send_program: killed with their tree after this
    socket: str | None = None  # control socket path (pulse status/takeover/release)


# Piranha's beats carry only "running", "stopped" or "stop me".
_FROM_PIRANHA = {
    PiranhaMagic.FOS_HEARTBEAT_RUNNING: (State.ACTIVE, False),
    PiranhaMagic.FOS_HEARTBEAT_STOPPED: (State.STANDBY, False),
    PiranhaMagic.FOS_HEARTBEAT_STOPME: (State.STANDBY, True),
}


class _BeatProtocol(asyncio.DatagramProtocol):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.daemon.on_datagram(data, addr[0])

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable from a partner that is down: expected, not fatal.
        self.daemon.counters["send-errors"] += 1
        log.debug("heartbeat socket error: %s", exc)


@dataclass(frozen=True)
class Reload:
    """SIGHUP or `pulse reload`: re-read lvs.cf (queued with the other side effects so it never
    interleaves); ``answer`` gets (ok, message) when the control socket asked."""

    answer: asyncio.Future[tuple[bool, str]] | None = field(default=None, compare=False)


Job = c.Acquire | c.Release | c.RestartService | Reload


class Daemon:
    """One pulse process: owns the socket, the timers and the side effects."""

    def __init__(self, cfg: Config, membership: Membership, opts: Options, key: bytes | None = None) -> None:
        self.cfg = cfg
        self.me = membership
        self.opts = opts
        self.key = key
        # One guard per path: the same beat (same seq) arrives on the public and the private path.
        self.guards = {str(a): ReplayGuard(partner=membership.role.partner) for a in membership.partner_paths}
        self.digest = digest(cfg)
        self.boot_id = secrets.token_bytes(8)
        self.seq = 0
        self.counters: Counter[str] = Counter()
        self.machine = Cluster(
            membership.role,
            self._timers(cfg),
            tuple(str(a) for a in membership.partner_paths),
            solo=not cfg.backup_active,
            force_active=opts.force_active,
        )
        self.partner_piranha: bool | None = None  # None until the partner is heard
        self.piranha_little_endian = True
        self.config_match: bool | None = None  # last logged comparison of the partner's lvs.cf
        self.partner_digest: bytes | None = None
        self.partner_took_over = asyncio.Event()
        self.metrics: Any = None  # pyrhfos.metrics.Metrics when metrics_port is set
        self.transport: asyncio.DatagramTransport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.jobs: asyncio.Queue[Job] = asyncio.Queue()
        self.busy = False  # a job (commands, VIP changes) is under way: probes would lie
        self.done = asyncio.Event()
        self.services: ServiceSet | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.events = RecentEvents()

    @staticmethod
    def _timers(cfg: Config) -> Timers:
        holddown = max((f.reentry for f in cfg.active_failovers), default=0.0)
        return Timers(cfg.keepalive, cfg.deadtime, holddown=holddown)

    def _service_set(self, cfg: Config, vips: VipManager | None) -> ServiceSet:
        return ServiceSet(cfg.active_failovers, vips, cfg.deadtime, self.opts.command_timeout, self.now)

    # -- life cycle ---------------------------------------------------------

    async def run(self) -> int:
        log.addHandler(self.events)
        try:
            return await self._run()
        finally:
            log.removeHandler(self.events)

    async def _run(self) -> int:
        self.loop = asyncio.get_running_loop()
        # Another pulse already running here (started with another pid file) must keep its VIPs:
        # find it before clear_stale could take them, by its control socket or heartbeat port.
        if self.opts.socket and answers(self.opts.socket):
            log.error("another pulse answers on %s: not starting; its VIPs are left alone", self.opts.socket)
            return 1
        if self.cfg.backup_active:
            try:
                self.transport, _ = await self.loop.create_datagram_endpoint(
                    lambda: _BeatProtocol(self),
                    local_addr=("0.0.0.0", self.cfg.heartbeat_port),
                    family=socket.AF_INET,
                )
            except OSError as e:
                log.error(
                    "cannot listen on heartbeat port %d: %s (another pulse running?); not starting, "
                    "VIPs left alone",
                    self.cfg.heartbeat_port,
                    e.strerror or e,
                )
                return 1
        vips = None
        if not self.opts.test_start:
            vips = VipManager()
        self.services = self._service_set(self.cfg, vips)
        self.services.clear_stale()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.feed, c.Stop(signal.Signals(sig).name))
        self.loop.add_signal_handler(signal.SIGHUP, self.jobs.put_nowait, Reload())
        log.info(
            "starting as %s (%s), keepalive %gs, deadtime %gs, partner %s%s",
            self.me.role.name.lower(),
            "solo" if not self.cfg.backup_active else f"heartbeat port {self.cfg.heartbeat_port}",
            self.cfg.keepalive,
            self.cfg.deadtime,
            ", ".join(map(str, self.me.partner_paths)) or "none",
            " [test-start: no VIP, ARP or command will be run]" if self.opts.test_start else "",
        )
        if self.cfg.backup_active and self.key is None:
            log.warning("heartbeats are not authenticated: set heartbeat_key in lvs.cf to sign them")
        control = None
        if self.opts.socket:
            control = ControlServer(self.opts.socket, self._control)
            await control.start()
        if self.cfg.metrics_port:
            self._start_metrics()
        tasks = [
            asyncio.create_task(self._worker()),
            asyncio.create_task(self._monitor()),
            asyncio.create_task(self.services.prepare_frames()),
        ]
        self.feed(c.Start())
        try:
            await self.done.wait()
        finally:
            for task in tasks:
                task.cancel()
            if control is not None:
                await control.close()
            if self.metrics is not None:
                self.metrics.close()
            if self.timer is not None:
                self.timer.cancel()
            if self.transport is not None:
                self.transport.close()
            self.services.close()
            if vips is not None:
                vips.close()
        return 0

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
            beat = decode(data, self.key)
        except DecodeError as e:
            self._drop(e.reason, f"bad heartbeat from {source}: {e.reason}")
            return
        if isinstance(beat, Beat) and not self.guards[source].accept(beat):
            reason = self.guards[source].reason or "replay"
            self._drop(reason, f"heartbeat from {source} rejected: {reason}")
            return
        if isinstance(beat, PiranhaBeat):
            event = self._from_piranha(beat, source)
            if event is None:
                return
        else:
            event = self._from_native(beat, source)
        self.counters["beats-received"] += 1
        self.feed(event)
        if self.machine.partner.state is State.ACTIVE:
            self.partner_took_over.set()

    def _drop(self, reason: str, message: str) -> None:
        self.counters[f"dropped-{reason}"] += 1
        # One warning per reason; the counters tell the rest.
        if self.counters[f"dropped-{reason}"] == 1:
            log.warning("%s (dropped; further ones are only counted)", message)

    def _from_native(self, beat: Beat, source: str) -> c.BeatReceived:
        if self.partner_piranha is not False:
            log.info("partner %s speaks pyrhfos heartbeats", source)
        self.partner_piranha = False
        self.partner_digest = beat.digest
        match = beat.digest == self.digest
        if match != self.config_match:  # one line per change, not per beat
            if not match:
                log.warning(
                    "config mismatch: partner's lvs.cf (serial %d) differs from ours (serial %d); "
                    "copy the same file to both nodes (pulse sync)",
                    beat.serial,
                    self.cfg.serial_no or 0,
                )
            elif self.config_match is False:
                log.info("config match: partner's lvs.cf (serial %d) is now the same as ours", beat.serial)
            self.config_match = match
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
        assert self.services is not None
        match action:
            case c.StateChanged(old=old, new=new, reason=reason):
                log.info("%s -> %s: %s", old.name.lower(), new.name.lower(), reason)
            case c.SendBeat():
                self._send_beat(action)
            case c.Acquire() | c.Release() | c.RestartService():
                self.jobs.put_nowait(action)
            case c.Announce(reason=reason):
                log.info("re-announcing VIPs: %s", reason)
                self.services.announce()
            case c.Notice(message=message):
                log.info("%s", message)
            case c.Exit():
                log.info("stopped")
                self.done.set()

    def _send_beat(self, a: c.SendBeat) -> None:
        assert self.services is not None
        # Only a node that means to keep its VIPs renews them: after a freeze the lapsed
        # lease must stay lapsed while the node releases.
        if self.machine.state is State.ACTIVE:
            self.services.renew_leases()
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
            data = encode(beat, self.key)
        for path in self.me.partner_paths:
            try:
                self.transport.sendto(data, (str(path), self.cfg.heartbeat_port))
                self.counters["beats-sent"] += 1
            except OSError as e:  # no route while a link is down: keep beating
                self.counters["send-errors"] += 1
                log.debug("beat to %s failed: %s", path, e)

    # -- side effects, one at a time ---------------------------------------

    async def _worker(self) -> None:
        assert self.services is not None and self.loop is not None
        while True:
            job = await self.jobs.get()
            self.busy = True
            try:
                match job:
                    case c.Acquire():
                        failed = await self.services.acquire()
                        self._schedule_announcements()
                        why = f"start_cmd failed for {', '.join(failed)}" if failed else ""
                        self.feed(c.AcquireDone(not failed, why))
                    case c.Release():
                        await self.services.release(stopped=self._services_stopped)
                        self.feed(c.ReleaseDone())
                    case c.RestartService(name=name, reason=reason):
                        await self.services.restart(name, reason)
                    case Reload(answer=answer):
                        result = await self._reload()
                        if answer is not None and not answer.done():
                            answer.set_result(result)
            except Exception:  # a bug in one job must not stop failover handling
                log.exception("error while carrying out %s", type(job).__name__)
                if isinstance(job, Reload) and job.answer is not None and not job.answer.done():
                    job.answer.set_result((False, "internal error; see the log"))
                if isinstance(job, c.Acquire):
                    self.feed(c.AcquireDone(False, "internal error"))
                elif isinstance(job, c.Release):
                    self.feed(c.ReleaseDone())
            finally:
                self.busy = False

    async def _services_stopped(self) -> None:
        """Between stop_cmds and VIPs down. On a planned stop the partner is told now, and our
        (serviceless) VIPs stay until it has taken them, so no client packet falls into a gap."""
        self.partner_took_over.clear()
        self.feed(c.ServicesStopped())
        if not self.machine.stopping or not self.machine.partner_alive(self.now()):
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.partner_took_over.wait(), min(self.cfg.deadtime, 1.0))
            # Its ACTIVE beat leaves just before its VIP and gratuitous ARP: give those a moment.
            await asyncio.sleep(HANDOVER_GRACE)

    def _schedule_announcements(self) -> None:
        assert self.loop is not None
        for i in range(1, self.opts.garp_count):
            self.loop.call_later(i * self.opts.garp_interval, self._announce_if_active)

    def _announce_if_active(self) -> None:
        if self.machine.state is State.ACTIVE and self.services is not None:
            self.services.announce()

    # -- service probes -----------------------------------------------------

    def _probe_mode(self) -> str | None:
        """ "local" on the active node, "partner" on a standby whose partner serves, else None."""
        m = self.machine
        if self.busy:
            return None
        if m.state is State.ACTIVE:
            return "local"
        if m.state is State.STANDBY and m.partner_alive(self.now()) and m.partner.state is State.ACTIVE:
            return "partner"
        return None

    async def _monitor(self) -> None:
        """Probe every service each keepalive, as nanny did; report failures to the machine.

        PROBE_FAILURES failures in a row make a failed service; after the first, the
        confirming probes come every min(keepalive / 4, 0.1 s).
        """
        assert self.services is not None
        mode: str | None = None
        while True:
            started = self.now()
            new_mode = self._probe_mode()
            if new_mode != mode:
                mode = new_mode
                # A new holder needs time to start its service before a probe means anything.
                for s in self.services:
                    s.reset_probe(started, self.cfg.deadtime)
            if mode is not None:
                try:
                    await self._probe_round(mode)
                except Exception:  # a probe bug must not end monitoring for good
                    self.counters["probe-errors"] += 1
                    if self.counters["probe-errors"] == 1:
                        log.exception("service probe round failed (further failures are only counted)")
            # A failed probe is confirmed sooner than the next keepalive: a dead service
            # is then known in about one keepalive, while one lost SYN still fails nothing.
            suspect = any(s.failures and s.probe_ok is not False for s in self.services)
            period = min(self.cfg.keepalive / 4, 0.1) if suspect else self.cfg.keepalive
            await asyncio.sleep(max(0.0, started + period - self.now()))

    async def _probe_round(self, mode: str) -> None:
        assert self.services is not None
        results = await self.services.probe_all()
        # The world may have moved while we probed: only report what still applies.
        if self._probe_mode() != mode:
            return
        for s, result in results:
            if self.metrics is not None:
                self.metrics.probe_latency.labels(s.name).observe(result.latency)
            if s.record(result, self.now()):
                log.warning("service %s failed: %s", s.name, result.reason)
                if mode == "local":
                    self.feed(c.LocalServiceFailed(s.name, result.reason))
                else:
                    self.feed(c.PartnerServiceFailed(s.name, result.reason))

    def _start_metrics(self) -> None:
        loop = self.loop
        assert loop is not None and self.cfg.metrics_port is not None

        async def snapshot() -> dict[str, Any]:
            return self.status()

        # Scrapes arrive on prometheus_client's thread: take the status on the loop's own thread.
        self.metrics = Metrics(lambda: asyncio.run_coroutine_threadsafe(snapshot(), loop).result(5))
        address = str(self.cfg.node_addresses(self.me.role)[0])
        try:
            self.metrics.serve(address, self.cfg.metrics_port)
        except OSError as e:
            log.error("metrics on %s:%d unavailable: %s", address, self.cfg.metrics_port, e)
            self.metrics = None
            return
        log.info("metrics on http://%s:%d/metrics", address, self.cfg.metrics_port)

    # -- control socket -----------------------------------------------------

    async def _control(self, command: str) -> dict[str, Any]:
        m, now = self.machine, self.now()
        if command == "status":
            return {"ok": True, "status": self.status()}
        if command == "reload":
            assert self.loop is not None
            answer: asyncio.Future[tuple[bool, str]] = self.loop.create_future()
            self.jobs.put_nowait(Reload(answer))
            ok, message = await answer
            return {"ok": True, "message": message} if ok else {"ok": False, "error": message}
        if command == "release":
            if m.state is not State.ACTIVE:
                return {"ok": False, "error": f"this node is {m.state.name.lower()}, not active"}
            if not m.partner_alive(now) or m.partner.state is not State.STANDBY:
                return {"ok": False, "error": "refused: no standby partner to take the services over"}
            if m.partner.hold:
                return {"ok": False, "error": "refused: the partner is in hold-down after a failure"}
            self.feed(c.ReleaseRequest("administrator asked this node to release (pulse release)"))
            return {"ok": True, "message": "releasing: the partner takes the services over"}
        if m.state is not State.STANDBY:
            return {"ok": False, "error": f"this node is {m.state.name.lower()}, not standby"}
        if not m.partner_alive(now):
            return {"ok": False, "error": "refused: the partner is not heard; this node takes over by itself"}
        failing = [s.name for s in self.services or () if s.probe_ok is False]
        if failing:
            return {"ok": False, "error": f"refused: services failing here: {', '.join(failing)}"}
        self.feed(c.TakeoverRequest("administrator asked this node to take over (pulse takeover)"))
        return {"ok": True, "message": "taking over: the partner is asked to release"}

    def status(self) -> dict[str, Any]:
        """Everything `pulse status` shows; the schema is documented in docs/status.md."""
        m, now, wall = self.machine, self.now(), time.time()

        def stamp(t: float | None) -> float | None:
            return None if t is None else wall - (now - t)

        p = m.partner
        if not self.me.partner_paths:
            protocol = None
        else:
            protocol = {None: None, True: "piranha", False: "pyrhfos"}[self.partner_piranha]
        return {
            "schema": 1,
            "node": {
                "role": m.role.name.lower(),
                "state": m.state.name.lower(),
                "since": stamp(m.since),
                "reason": m.reason,
                "pid": os.getpid(),
                "config": self.cfg.path,
                "serial": self.cfg.serial_no,
                "hold_down": max(0.0, m.hold_until - now),
            },
            "partner": {
                "addresses": [str(a) for a in self.me.partner_paths],
                "paths": {
                    path: {"last_beat_age": None if path not in p.last_heard else now - p.last_heard[path]}
                    for path in p.paths
                },
                "state": None if p.state is None else p.state.name.lower(),
                "alive": m.partner_alive(now),
                "hold_down": p.hold,
                "protocol": protocol,
                "config_match": None if self.partner_digest is None else self.partner_digest == self.digest,
            },
            "services": [
                {
                    "name": s.name,
                    "vip": str(s.ip),
                    "label": s.address.label,
                    "port": s.f.port,
                    "held": s.held,
                    "probe": {None: "unknown", True: "ok", False: "failed"}[s.probe_ok],
                    "probe_reason": s.probe_reason,
                    "probe_latency": s.probe_latency,
                    "last_change": stamp(s.changed_at) if s.changed_at else None,
                }
                for s in self.services or ()
            ],
            "counters": {
                **self.counters,
                "activations": m.activations,
                "garp-sent": self.services.garp_sent if self.services else 0,
            },
            "events": [{"time": t, "level": lv, "message": msg} for t, lv, msg in self.events.records],
        }

    # -- SIGHUP -------------------------------------------------------------

    async def _reload(self) -> tuple[bool, str]:
        """Apply a changed lvs.cf without touching what did not change; keep everything on error."""
        assert self.services is not None
        path = self.cfg.path
        log.info("reload: re-reading %s", path)
        try:
            new, warnings = load(path)
            for w in warnings:
                log.warning("%s", w)
            if new.service is not self.cfg.service:
                raise StartupError(f"service = {new.service.value} needs a restart of pulse")
            fixed = (
                "primary",
                "primary_private",
                "backup",
                "backup_private",
                "backup_active",
                "heartbeat_port",
                "heartbeat_key",  # read once at start (its mode is checked there)
            )
            moved = [k for k in fixed if getattr(new, k) != getattr(self.cfg, k)]
            if moved:
                raise StartupError(f"changing {', '.join(moved)} needs a restart of pulse")
            find_membership(new, local_ipv4_addresses())
            check_interfaces(new)
        except ConfigError as e:
            for d in e.diagnostics:
                log.error("%s", d)
            log.error("reload failed: keeping the running configuration and VIPs")
            return False, f"{e}\nreload failed: keeping the running configuration and VIPs"
        except StartupError as e:
            message = f"{e.render(path)}; reload refused: keeping the running configuration and VIPs"
            log.error("%s", message)
            return False, message
        old = self.services.services
        wanted = {f.name: f for f in new.active_failovers}
        removed = [s for name, s in old.items() if wanted.get(name) != s.f]
        kept = {name: s for name, s in old.items() if wanted.get(name) == s.f}
        fresh = self._service_set(new, self.services.vips)
        fresh.services = {name: kept.get(name, fresh.services[name]) for name in fresh.services}
        fresh.last_renew = self.services.last_renew
        fresh.garp_sent = self.services.garp_sent
        added = [s for name, s in fresh.services.items() if name not in kept]
        serving = self.machine.state is State.ACTIVE
        if serving and removed:
            await self.services.release(removed)
        for s in removed:
            if s.garp is not None:
                s.garp.close()
        self.services = fresh
        self.cfg = new
        self.digest = digest(new)
        self.machine.timers = self._timers(new)
        await fresh.prepare_frames()
        failed = await fresh.acquire(added) if serving and added else []
        message = (
            f"reloaded {path} (serial {new.serial_no or 0}): {len(added)} service(s) added, "
            f"{len(removed)} removed or changed, {len(kept)} unchanged"
            + (f"; start_cmd failed for {', '.join(failed)}" if failed else "")
        )
        log.info("%s", message)
        self._schedule()
        return True, message
