"""The daemon shell: feeds the pure machine its events, schedules its ticks and carries out its actions
(beats, VIPs, gratuitous ARP, commands, one job at a time); no failover decision is made here.

``Daemon`` is handed its collaborators (the beat link, the services, the clock), so a test drives it
with fakes; ``serve`` builds the real ones and runs a daemon until it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import ConfigError, digest, load
from ..config.model import Config, NetworkMode, ServiceKind
from ..core import events as c
from ..core.machine import Cluster, Timers
from ..core.reload import plan, restart_needed
from ..core.replay import HighWater, ReplayGuard
from ..core.vocab import State
from ..net.state import DEFAULT_DIR, StateDir
from ..net.vip import VipManager
from .beatlink import BeatLink
from .control import ControlServer, answers
from .director import Director
from .monitor import Monitor
from .services import ServiceSet
from .startup import Membership, StartupError, check_host
from .status import RecentEvents, snapshot

if TYPE_CHECKING:
    from .metrics import Metrics

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
    state_dir: str = DEFAULT_DIR  # boot counter and the partner's mark (authenticated pairs only)


@dataclass(frozen=True)
class Reload:
    """SIGHUP or `pulse reload`: re-read lvs.cf (queued with the other side effects so it never
    interleaves); ``answer`` gets (ok, message) when the control socket asked."""

    answer: asyncio.Future[tuple[bool, str]] | None = field(default=None, compare=False)


Job = c.Acquire | c.Release | c.RestartService | Reload


def timers(cfg: Config, opts: Options) -> Timers:
    holddown = max((f.reentry for f in cfg.active_failovers), default=0.0)
    return Timers(cfg.keepalive, cfg.deadtime, holddown=holddown, command_limit=opts.command_timeout)


class Daemon:
    """One pulse: the machine, and the parts that carry out what it decides."""

    def __init__(
        self,
        cfg: Config,
        membership: Membership,
        opts: Options,
        *,
        link: BeatLink,
        services: ServiceSet,
        clock: Callable[[], float],
        check: Callable[[Config], object] = check_host,
    ) -> None:
        self.cfg = cfg
        self.me = membership
        self.opts = opts
        self.link = link
        self.services = services
        self.clock = clock
        self.check = check  # may this host run a reloaded file? (raises StartupError if not)
        self.counters: Counter[str] = link.counters
        self.machine = Cluster(
            membership.role,
            timers(cfg, opts),
            tuple(str(a) for a in membership.partner_paths),
            solo=not cfg.backup_active,
            force_active=opts.force_active,
        )
        self.monitor = Monitor(
            self.machine, services, self.feed, clock, lambda: self.busy, self.counters, self._observe
        )
        self.partner_took_over = asyncio.Event()
        self.metrics: Metrics | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.jobs: asyncio.Queue[Job] = asyncio.Queue()
        self.busy = False  # a job (commands, VIP changes) is under way: probes would lie
        self.done = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None  # set by run(); no timers without it
        self.events = RecentEvents()
        # LVS always (a director cut off from one network must not hold the other's addresses);
        # FOS with monitor_links = 1.
        self.watching_links = watch_links(cfg)
        self.link_task: asyncio.Task[None] | None = None
        self.links: dict[str, bool] = {}  # watched interface -> has link, for pulse status

    # -- life cycle ---------------------------------------------------------

    async def run(self) -> int:
        """Until the machine says Exit: the job worker, the probes, the ARP frames, the first event."""
        self.loop = asyncio.get_running_loop()
        tasks = [
            asyncio.create_task(self._worker()),
            asyncio.create_task(self.monitor.run()),
            asyncio.create_task(self.services.prepare_frames()),
            asyncio.create_task(self.services.run()),
        ]
        if self.watching_links:
            self.restart_link_watch()
        self.feed(c.Start())
        try:
            await self.done.wait()
        finally:
            for task in tasks:
                task.cancel()
            if self.link_task is not None:
                self.link_task.cancel()
            if self.timer is not None:
                self.timer.cancel()
        return 0

    def restart_link_watch(self) -> None:
        """Watch the interfaces of the held addresses (again, after a reload changed them); one no
        longer watched no longer stops this node from serving."""
        if self.link_task is not None:
            self.link_task.cancel()
            self.link_task = None
        wanted = sorted({s.address.interface for s in self.services}) if self.watching_links else []
        for name in [n for n in self.links if n not in wanted]:
            if not self.links.pop(name):
                self.feed(c.LinkChanged(name, True))
        if wanted:
            self.link_task = asyncio.get_running_loop().create_task(self._watch_links(wanted))

    async def _watch_links(self, interfaces: list[str]) -> None:
        from ..net.links import LinkWatcher

        def report(name: str, up: bool) -> None:
            self.links[name] = up
            log.log(logging.INFO if up else logging.WARNING, "link %s %s", name, "up" if up else "DOWN")
            self.feed(c.LinkChanged(name, up))

        try:
            await LinkWatcher(interfaces, report).run()
        except OSError as e:  # netlink refused: say so, failover still works on beats
            log.error("cannot watch links %s: %s", ", ".join(interfaces), e)

    # -- events in ----------------------------------------------------------

    def feed(self, event: c.Event) -> list[c.Action]:
        """Hand one event to the machine, carry out what it asks for; the actions, for a caller
        that waits for an Answer."""
        actions = self.machine.handle(event, self.clock())
        for action in actions:
            self._do(action)
        self._schedule()
        return actions

    def _schedule(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        deadline = self.machine.next_deadline()
        if deadline is not None and self.loop is not None and not self.done.is_set():
            self.timer = self.loop.call_at(deadline, self.feed, c.Tick())

    def on_datagram(self, data: bytes, source: str) -> None:
        event = self.link.intake(data, source, self.clock())
        if event is None:
            return
        self.feed(event)
        if self.machine.partner.state is State.ACTIVE:
            self.partner_took_over.set()

    # -- actions out --------------------------------------------------------

    def _do(self, action: c.Action) -> None:
        match action:
            case c.StateChanged(old=old, new=new, reason=reason):
                log.info("%s -> %s: %s", old.name.lower(), new.name.lower(), reason)
            case c.SendBeat():
                # The machine says when: after a freeze the lapsed lease must stay lapsed.
                if self.machine.renews_lease():
                    self.services.renew_leases()
                self.link.send(action)
            case c.Acquire() | c.Release() | c.RestartService():
                self.jobs.put_nowait(action)
            case c.Announce(reason=reason):
                log.info("re-announcing VIPs: %s", reason)
                self.services.announce()
            case c.Notice(message=message):
                log.info("%s", message)
            case c.Answer():
                pass  # read by the caller of feed (the control socket)
            case c.Exit():
                log.info("stopped")
                self.done.set()

    # -- side effects, one at a time ---------------------------------------

    async def _worker(self) -> None:
        while True:
            job = await self.jobs.get()
            self.busy = True
            try:
                await self._carry_out(job)
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

    async def _carry_out(self, job: Job) -> None:
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
                result = await self.reload()
                if answer is not None and not answer.done():
                    answer.set_result(result)

    async def _services_stopped(self) -> None:
        """Between stop_cmds and VIPs down. On a planned stop the partner is told now, and our
        (serviceless) VIPs stay until it has taken them, so no client packet falls into a gap."""
        self.partner_took_over.clear()
        self.feed(c.ServicesStopped())
        if not self.machine.stopping or not self.machine.partner_alive(self.clock()):
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.partner_took_over.wait(), min(self.cfg.deadtime, 1.0))
            # Its ACTIVE beat leaves just before its VIP and gratuitous ARP: give those a moment.
            await asyncio.sleep(HANDOVER_GRACE)

    def _schedule_announcements(self) -> None:
        if self.loop is None:
            return
        for i in range(1, self.opts.garp_count):
            self.loop.call_later(i * self.opts.garp_interval, self._announce_if_active)

    def _announce_if_active(self) -> None:
        if self.machine.state is State.ACTIVE:
            self.services.announce()

    def _observe(self, name: str, latency: float) -> None:
        if self.metrics is not None:
            self.metrics.probe_latency.labels(name).observe(latency)

    # -- control socket -----------------------------------------------------

    async def control(self, command: str) -> dict[str, Any]:
        """One request from ``pulse status|takeover|release|reload``; the machine decides refusals."""
        if command == "status":
            return {"ok": True, "status": self.status()}
        if command == "reload":
            answer: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
            self.jobs.put_nowait(Reload(answer))
            ok, message = await answer
            return {"ok": True, "message": message} if ok else {"ok": False, "error": message}
        if command == "release":
            request: c.Event = c.ReleaseRequest("administrator asked this node to release (pulse release)")
        else:
            failing = tuple(s.name for s in self.services if s.probe_ok is False)
            why = "administrator asked this node to take over (pulse takeover)"
            request = c.TakeoverRequest(why, failing)
        replies = [a for a in self.feed(request) if isinstance(a, c.Answer)]
        reply = replies[0] if replies else c.Answer(False, "this node is stopping")
        return {"ok": True, "message": reply.message} if reply.ok else {"ok": False, "error": reply.message}

    def status(self) -> dict[str, Any]:
        """Everything `pulse status` shows; the schema is documented in docs/status.md."""
        return snapshot(
            machine=self.machine,
            membership=self.me,
            cfg=self.cfg,
            services=self.services,
            link=self.link,
            counters=self.counters,
            links=self.links,
            events=self.events,
            now=self.clock(),
            wall=time.time(),
        )

    # -- SIGHUP -------------------------------------------------------------

    async def reload(self) -> tuple[bool, str]:
        """Apply a changed lvs.cf without touching what did not change; keep everything on error."""
        path = self.cfg.path
        log.info("reload: re-reading %s", path)
        try:
            new, warnings = load(path)
            for w in warnings:
                log.warning("%s", w)
            why = restart_needed(self.cfg, new)
            if why is not None:
                raise StartupError(why)
            self.check(new)
        except ConfigError as e:
            for d in e.diagnostics:
                log.error("%s", d)
            log.error("reload failed: keeping the running configuration and VIPs")
            return False, f"{e}\nreload failed: keeping the running configuration and VIPs"
        except StartupError as e:
            message = f"{e.render(path)}; reload refused: keeping the running configuration and VIPs"
            log.error("%s", message)
            return False, message
        todo = plan(self.services.failovers, self.services.blocks(new))
        serving = self.machine.state is State.ACTIVE
        await self.services.retire(todo.removed, serving)
        self.cfg = new
        self.link.config_changed(digest(new), new.serial_no or 0)
        self.machine.timers = timers(new, self.opts)
        added = self.services.reconcile(todo, new)  # a director's table follows in the same step
        await self.services.prepare_frames()
        failed = await self.services.acquire(added) if serving and added else []
        self.watching_links = watch_links(new)
        if self.loop is not None:
            self.restart_link_watch()
        message = f"reloaded {path} (serial {new.serial_no or 0}): {todo.summary()}" + (
            f"; start_cmd failed for {', '.join(failed)}" if failed else ""
        )
        log.info("%s", message)
        self._schedule()
        return True, message


# -- the real collaborators ---------------------------------------------------


async def serve(cfg: Config, membership: Membership, opts: Options, key: bytes | None = None) -> int:
    """Run pulse on this host: one instance only, the heartbeat socket, the VIPs, signals, the control
    socket and metrics around a Daemon; everything closed again on the way out."""
    # Another pulse already running here (started with another pid file) must keep its VIPs:
    # find it before clear_stale could take them, by its control socket or heartbeat port.
    if opts.socket and answers(opts.socket):
        log.error("another pulse answers on %s: not starting; its VIPs are left alone", opts.socket)
        return 1
    loop = asyncio.get_running_loop()
    state = StateDir(opts.state_dir) if key is not None else None
    link = beat_link(cfg, membership, key, state, keep=not opts.test_start)
    vips = None if opts.test_start else VipManager()
    services = make_services(cfg, vips, opts, loop.time, membership, key)
    daemon = Daemon(cfg, membership, opts, link=link, services=services, clock=loop.time)
    daemon.loop = loop  # a signal before run() starts still schedules the machine's next tick
    log.addHandler(daemon.events)
    control = None
    try:
        if cfg.backup_active:
            try:
                await link.open(daemon.on_datagram)
            except OSError as e:
                log.error(
                    "cannot listen on heartbeat port %d: %s (another pulse running?); not starting, "
                    "VIPs left alone",
                    cfg.heartbeat_port,
                    e.strerror or e,
                )
                return 1
        services.clear_stale()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.feed, c.Stop(signal.Signals(sig).name))
        loop.add_signal_handler(signal.SIGHUP, daemon.jobs.put_nowait, Reload())
        log.info(
            "starting as %s (%s), keepalive %gs, deadtime %gs, partner %s%s",
            membership.role.name.lower(),
            "solo" if not cfg.backup_active else f"heartbeat port {cfg.heartbeat_port}",
            cfg.keepalive,
            cfg.deadtime,
            ", ".join(map(str, membership.partner_paths)) or "none",
            " [test-start: no VIP, ARP or command will be run]" if opts.test_start else "",
        )
        if cfg.backup_active and key is None:
            log.warning(
                "heartbeats are not authenticated: anyone who can send to port %d can steer failover; "
                "set heartbeat_key in lvs.cf to sign them",
                cfg.heartbeat_port,
            )
        if opts.socket:
            control = ControlServer(opts.socket, daemon.control)
            await control.start()
        if cfg.metrics_port:
            daemon.metrics = start_metrics(daemon, cfg)
        return await daemon.run()
    finally:
        if control is not None:
            await control.close()
        if daemon.metrics is not None:
            daemon.metrics.close()
        link.close()
        if state is not None:
            state.close()
        services.close()
        if vips is not None:
            vips.close()
        log.removeHandler(daemon.events)


def watch_links(cfg: Config) -> bool:
    return cfg.service is ServiceKind.LVS or cfg.monitor_links


def make_services(
    cfg: Config,
    vips: VipManager | None,
    opts: Options,
    clock: Callable[[], float],
    membership: Membership | None = None,
    key: bytes | None = None,
) -> ServiceSet:
    """FOS: the failover services. LVS: a director (its table through libnftables, conntrack through
    pyroute2; both imported only here, so a FOS node needs neither), with conntrackd when
    syncdaemon = 1 (its files in the state directory) and, in direct routing, the table sync (its
    datagrams signed with ``key``, the heartbeat key, when there is one)."""
    if cfg.service is not ServiceKind.LVS:
        return ServiceSet(cfg.active_failovers, vips, cfg.deadtime, opts.command_timeout, clock)
    from ..net.conntrack import ConntrackTracker
    from ..net.nft import NftEngine

    engine = None if opts.test_start else NftEngine()
    tracker = None if opts.test_start else ConntrackTracker()
    sync = None
    if cfg.syncdaemon and membership is not None and not opts.test_start:
        from ..net.conntrackd import SyncConfigError, for_director

        try:
            sync = for_director(cfg, membership.role, opts.state_dir)
        except SyncConfigError as e:  # pulse runs; connections are not synced, and the log says why
            log.error("syncdaemon = 1: connection sync not started: %s", e)
    table_sync = None
    if (
        cfg.syncdaemon
        and cfg.network is NetworkMode.DIRECT
        and membership is not None
        and not opts.test_start
    ):
        from ..net import tablesync
        from ..net.conntrackd import SyncConfigError

        try:  # its own libnftables context: it lists the table in a thread of its own
            table_sync = tablesync.for_director(cfg, membership.role, key, NftEngine().dynamic_elements)
        except SyncConfigError as e:
            log.error("syncdaemon = 1: table sync not started: %s", e)
    return Director(
        cfg,
        vips,
        opts.command_timeout,
        clock,
        engine=engine,
        tracker=tracker,
        sync=sync,
        table_sync=table_sync,
    )


def replay_guard(
    cfg: Config, membership: Membership, *, authenticated: bool, mark: HighWater | None = None
) -> ReplayGuard:
    """The guard of the partner's beats: a slower path's copy counts as liveness within deadtime/4
    of the newest beat (paths differ by milliseconds; a path later than that is as good as dead)."""
    partner = membership.role.partner
    window, liveness = cfg.deadtime / 4, cfg.deadtime
    return ReplayGuard(partner, authenticated=authenticated, window=window, liveness=liveness, mark=mark)


def beat_link(
    cfg: Config, membership: Membership, key: bytes | None, state: StateDir | None, keep: bool = True
) -> BeatLink:
    """The beat link; with a key, its boot counter and the partner's mark from the state directory."""
    boot_id, restored, on_mark = None, None, None
    if state is not None:
        boot_id = state.next_boot(time.time(), keep=keep).to_bytes(8, "big")
        mark = state.load_mark()
        restored = HighWater(*mark) if mark else None
        on_mark = state.save_mark if keep else None
    guard = replay_guard(cfg, membership, authenticated=key is not None, mark=restored)
    return BeatLink(
        membership.role,
        tuple(str(a) for a in membership.partner_paths),
        cfg.heartbeat_port,
        key,
        Counter(),
        digest=digest(cfg),
        serial=cfg.serial_no or 0,
        boot_id=boot_id,
        guard=guard,
        on_mark=on_mark,
        lvs=cfg.service is ServiceKind.LVS,  # a Piranha partner is answered in its mode's magics
    )


def start_metrics(daemon: Daemon, cfg: Config) -> Metrics | None:
    """Prometheus metrics on lvs.cf's metrics_address (127.0.0.1 unless set), or None (logged) on failure."""
    from .metrics import METRICS_ADDRESS, Metrics  # prometheus_client ~1.5 MB RSS: only with metrics_port

    loop = asyncio.get_running_loop()
    assert cfg.metrics_port is not None

    async def status() -> dict[str, Any]:
        return daemon.status()

    # Scrapes arrive on the endpoint's thread: take the status on the loop's own thread.
    metrics = Metrics(lambda: asyncio.run_coroutine_threadsafe(status(), loop).result(5))
    address = METRICS_ADDRESS if cfg.metrics_address is None else str(cfg.metrics_address)
    try:
        metrics.serve(address, cfg.metrics_port)
    except OSError as e:
        log.error("metrics on %s:%d unavailable: %s", address, cfg.metrics_port, e)
        return None
    log.info("metrics on http://%s:%d/metrics", address, cfg.metrics_port)
    return metrics
