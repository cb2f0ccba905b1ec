"""The LVS director as running things: the VIPs and nat_router it holds, the nftables table it
programs while active, and the real-server probes (Piranha's nanny) it runs on both nodes.

Decisions live in core: which servers are in the table (core/nanny.py), how wide each one's share is
(core/scheduler.py), what the table says (core/ruleset.py). This module times probes and carries out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, Protocol

from ..config.model import Config, Failover, NetworkMode, Virtual
from ..core.nanny import FlushServer, HealthChanged, Member, Nanny, PoolChanged, ServerProbed
from ..core.reload import ReloadPlan
from ..core.ruleset import Backend, VirtualTable, build, pin_set
from ..core.scheduler import shares
from ..net.probe import ProbeResult, probe_server
from ..net.vip import VipManager
from .services import Service, ServiceSet

log = logging.getLogger("pulse")

NAT_ROUTER = "nat_router"
# Least-connection schedulers are re-weighted from live connection counts this often (at most).
REWEIGHT_EVERY = 1.0
ARRIVALS_PER_SERVER = 4  # arrivals assumed per re-weighting interval and server (core/scheduler.shares)
LEAST_CONNECTION = frozenset({"wlc", "lc", "sed", "nq", "lblc", "lblcr"})


class Engine(Protocol):
    """What the director needs of net/nft.NftEngine (a fake in tests)."""

    def replace(
        self, commands: Sequence[dict[str, Any]], seed: Mapping[str, Sequence[Any]] | None = None
    ) -> object: ...
    def remove(self) -> bool: ...
    def set_sizes(self) -> dict[str, int]: ...


class Tracker(Protocol):
    """What the director needs of net/conntrack (blocking netlink calls: run in a thread)."""

    def counts(
        self,
        vip: IPv4Address | None,
        vport: int | None,
        proto: str,
        backends: Iterable[tuple[IPv4Address, int]],
    ) -> dict[tuple[IPv4Address, int], tuple[int, int]]: ...
    def flush(self, address: IPv4Address, port: int, proto: str) -> int: ...
    def enable_forwarding(self) -> bool: ...
    def set_timeouts(self, tcp: int | None, tcpfin: int | None, udp: int | None) -> list[str]: ...


class Sync(Protocol):
    """What the director needs of net/conntrackd.ConntrackdProcess (syncdaemon = 1; a fake in tests)."""

    def start(self) -> None: ...
    async def takeover(self) -> None: ...
    async def standby(self) -> None: ...
    def close(self) -> None: ...
    def status(self) -> dict[str, Any]: ...


class TableSyncer(Protocol):
    """What the director needs of net/tablesync.TableSync (direct routing, syncdaemon = 1)."""

    def start(self) -> None: ...
    def set_active(self, active: bool) -> None: ...
    def seed(self) -> dict[str, list[dict[str, Any]]]: ...
    def close(self) -> None: ...
    def status(self) -> dict[str, Any]: ...


def held_blocks(cfg: Config) -> list[Failover]:
    """The addresses an active director holds, as failover blocks without commands or probes: each
    distinct VIP of the active virtuals (80 and 443 often share one), and nat_router in NAT mode."""
    blocks: dict[tuple[IPv4Address, str], Failover] = {}
    for v in cfg.virtuals:
        if v.active and v.address is not None:
            key = (v.address.ip, v.address.label)
            blocks.setdefault(key, Failover(f"vip {v.address.ip}", address=v.address, vip_nmask=v.vip_nmask))
    if cfg.network is NetworkMode.NAT and cfg.nat_router is not None:
        blocks.setdefault(
            (cfg.nat_router.ip, cfg.nat_router.label),
            Failover(NAT_ROUTER, address=cfg.nat_router, vip_nmask=cfg.nat_nmask),
        )
    return list(blocks.values())


def active_virtuals(cfg: Config) -> list[Virtual]:
    return [v for v in cfg.virtuals if v.active and v.address is not None]


def members(cfg: Config) -> list[Member]:
    """Every active server of every active virtual, as the nanny sees it."""
    return [
        Member(
            v.name,
            s.name,
            s.address,
            s.port if s.port is not None else v.port,
            s.weight,
            v.reentry,
            v.quiesce_server,
        )
        for v in active_virtuals(cfg)
        for s in v.servers
        if s.active and s.address is not None
    ]


def virtual_table(
    v: Virtual, in_effect: Iterable[tuple[Member, int]], active: dict[str, int] | None = None
) -> VirtualTable:
    """One virtual's part of the table: its servers in effect, each with the share its scheduler gives
    (least-connection schedulers from the live ``active`` counts)."""
    chosen = list(in_effect)
    counts = active if v.scheduler in LEAST_CONNECTION else None
    # Shares are for the arrivals until the next re-weighting: sized for one arrival, every new
    # connection of the next second would go to the one least-loaded server (a herd).
    split = shares(v.scheduler, [(m.server, w) for m, w in chosen], counts, ARRIVALS_PER_SERVER * len(chosen))
    return VirtualTable(
        v, tuple(Backend(m.server, m.address, m.port, split.get(m.server, 0)) for m, _ in chosen)
    )


@dataclass
class Probed:
    """The last probe of one real server, for pulse status."""

    result: ProbeResult | None = None
    at: float | None = None


class Director(ServiceSet):
    """An LVS director: the held addresses (a ServiceSet of them), the table, the nanny."""

    def __init__(
        self,
        cfg: Config,
        vips: VipManager | None,
        command_timeout: float,
        now: Callable[[], float],
        *,
        engine: Engine | None,
        tracker: Tracker | None,
        prober: Callable[[Virtual, str, int], Awaitable[ProbeResult]] = probe_server,
        sync: Sync | None = None,
        table_sync: TableSyncer | None = None,
    ) -> None:
        super().__init__(held_blocks(cfg), vips, cfg.deadtime, command_timeout, now)
        self.cfg = cfg
        self.engine = engine  # None: -t/--test-start, the table is only logged
        self.tracker = tracker
        self.prober = prober
        self.sync = sync  # conntrackd (syncdaemon = 1): the partner's connections, committed on takeover
        self.table_sync = table_sync  # direct routing: the partner's pins, loaded with the table on takeover
        self.nanny = Nanny(members(cfg))
        self.programmed = False  # the table is ours to keep up to date (between acquire and release)
        self.probed: dict[tuple[str, str], Probed] = {}
        self.shares: dict[str, dict[str, int]] = {}  # virtual -> server -> share in the table now
        self.counts: dict[tuple[str, str], tuple[int, int]] = {}  # (virtual, server) -> active, inactive
        self.applied = 0  # table transactions, for status and metrics
        self.apply_errors = 0
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._dirty = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def blocks(self, cfg: Config) -> list[Failover]:
        return held_blocks(cfg)

    # -- the table ------------------------------------------------------------

    def tables(self) -> list[VirtualTable]:
        """What the table should say now: each active virtual with its servers in effect."""
        out = []
        for v in active_virtuals(self.cfg):
            in_effect = self.nanny.in_effect(v.name)
            # A UDP flow is never ESTABLISHED: its load is every entry (IPVS counts UDP as inactive).
            load = (lambda c: c[0]) if v.protocol == "tcp" else (lambda c: c[0] + c[1])
            active = {m.server: load(self.counts.get((v.name, m.server), (0, 0))) for m, _ in in_effect}
            table = virtual_table(v, in_effect, active)
            self.shares[v.name] = {b.name: b.share for b in table.backends}
            out.append(table)
        return out

    def commands(self) -> list[dict[str, Any]]:
        return build(self.cfg, self.tables())

    def program(self, why: str, seed: Mapping[str, Sequence[Any]] | None = None) -> bool:
        """Replace the whole table in one transaction (with ``seed``'s elements: the engine's replace);
        False (logged) if the kernel refused it."""
        commands = self.commands()
        if self.engine is None:
            log.info("test-start: would load the nftables table (%s)", why)
            return True
        try:
            if seed is None:
                self.engine.replace(commands)
            else:
                loaded = self.engine.replace(commands, seed=seed)
                if any(seed.values()):  # carried ones count too: on a takeover there are none
                    log.info(
                        "table sync: %s of the partner's %d element(s) loaded",
                        loaded,
                        sum(map(len, seed.values())),
                    )
        except Exception as e:  # NftError, or libnftables missing: keep serving what is loaded
            self.apply_errors += 1
            log.error("nftables table not loaded (%s): %s", why, e)
            return False
        self.applied += 1
        log.info("nftables table loaded: %s", why)
        return True

    def unprogram(self) -> None:
        self.programmed = False
        if self.table_sync is not None:
            self.table_sync.set_active(False)
        if self.engine is not None and self.engine.remove():
            log.info("nftables table removed")

    def _changed(self, why: str) -> None:
        """The pool changed: reload the table once, after the events of this loop turn."""
        if not self.programmed:
            return
        if self._loop is None:
            self.program(why)
            return
        if not self._dirty:
            self._dirty = True
            self._loop.call_soon(self._flush_dirty, why)

    def _flush_dirty(self, why: str) -> None:
        self._dirty = False
        if self.programmed:
            self.program(why)

    # -- ServiceSet: taking and giving up ------------------------------------

    def clear_stale(self) -> None:
        super().clear_stale()
        if self.engine is not None and self.engine.remove():
            log.warning("removed the nftables table left by an earlier run")
        if self.sync is not None:
            self.sync.start()  # on both nodes: the standby must be receiving before it takes over
        if self.table_sync is not None:
            self.table_sync.start()

    def close(self) -> None:
        super().close()
        if self.sync is not None:
            self.sync.close()
        if self.table_sync is not None:
            self.table_sync.close()

    async def acquire(self, services: Iterable[Service] | None = None) -> list[str]:
        """The table first, then the addresses: a VIP must never answer without the table behind it."""
        if services is None:
            if self.sync is not None:
                await self.sync.takeover()  # synced connections into the kernel before table and VIPs
            self.programmed = True
            seed = None
            if self.table_sync is not None:  # direct routing: the partner's pins go in with the table
                seed = self.table_sync.seed()
                self.table_sync.set_active(True)  # snapshots to the partner while the table is ours
            if not self.program("taking over", seed):
                return ["nftables table"]
            self._kernel_settings()
        return await super().acquire(services)

    def _kernel_settings(self) -> None:
        """What a NAT director needs of its namespace: forwarding, and lvs.cf's connection timeouts
        (conntrack's sysctls exist once the table has loaded nf_conntrack)."""
        if self.cfg.network is not NetworkMode.NAT or self.tracker is None:
            return
        cfg = self.cfg
        try:
            if self.tracker.enable_forwarding():
                log.warning("net.ipv4.ip_forward was 0: turned on (a NAT director forwards)")
            for change in self.tracker.set_timeouts(cfg.tcp_timeout, cfg.tcpfin_timeout, cfg.udp_timeout):
                log.info("conntrack timeout for every flow of this host: %s", change)
        except OSError as e:
            log.error("cannot set forwarding or conntrack timeouts: %s", e)

    async def release(
        self, services: Iterable[Service] | None = None, stopped: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """The addresses first, then the table (reverse of acquire)."""
        await super().release(services, stopped)
        if services is None:
            self.unprogram()
            if self.sync is not None:
                await self.sync.standby()

    async def probe_all(self) -> list[tuple[Service, ProbeResult]]:
        return []  # the held addresses carry no service of their own: real servers are probed in run()

    # -- reload -----------------------------------------------------------------

    def reconcile(self, plan: ReloadPlan, cfg: Config) -> list[Service]:
        """A reload: the new held addresses, servers and table (one transaction); unchanged servers keep
        their health and their connections."""
        added = super().reconcile(plan, cfg)
        self.cfg = cfg
        for action in self.nanny.reconcile(members(cfg)):
            self._act(action)
        self._sync_tasks()
        if self.programmed:
            self.program("reload")
        return added

    # -- the nanny ----------------------------------------------------------------

    async def run(self) -> None:
        """Probe every real server each keepalive (one task each, so a slow one delays no other) and
        re-weight least-connection virtuals from live counts."""
        self._loop = asyncio.get_running_loop()
        self._sync_tasks()
        try:
            while True:
                await asyncio.sleep(min(REWEIGHT_EVERY, self.cfg.keepalive))
                counts = await self.count_connections()
                if counts is not None:
                    self.reweight(counts)
        finally:
            for task in self._tasks.values():
                task.cancel()

    def _sync_tasks(self) -> None:
        if self._loop is None:
            return
        wanted = {(m.virtual, m.server): m for m in members(self.cfg)}
        for key in [k for k in self._tasks if k not in wanted]:
            self._tasks.pop(key).cancel()
            self.probed.pop(key, None)
        for key, m in wanted.items():
            task = self._tasks.get(key)
            if task is not None and not task.done():
                continue
            self._tasks[key] = self._loop.create_task(self._watch(m))

    def _virtual(self, name: str) -> Virtual | None:
        return next((v for v in self.cfg.virtuals if v.name == name), None)

    async def _watch(self, m: Member) -> None:
        key = (m.virtual, m.server)
        while True:
            started = self.now()
            v = self._virtual(m.virtual)
            if v is None:
                return
            try:
                result = await self.prober(v, str(m.address), m.port)
            except Exception as e:  # a probe bug is that server's failure, not the end of watching
                result = ProbeResult(False, f"probe error: {e!r}", 0.0)
            self.probed[key] = Probed(result, self.now())
            for action in self.nanny.handle(
                ServerProbed(m.virtual, m.server, result.ok, result.reason), self.now()
            ):
                self._act(action)
            await asyncio.sleep(max(0.0, started + self.cfg.keepalive - self.now()))

    def _act(self, action: object) -> None:
        match action:
            case HealthChanged(virtual=v, server=s, old=old, new=new, reason=reason):
                log.info("real server %s/%s: %s -> %s: %s", v, s, old.value, new.value, reason)
            case PoolChanged(virtual=v, reason=reason):
                self._changed(f"virtual {v}: {reason}")
            case FlushServer(virtual=v, server=s):
                self._flush(v, s)

    def _flush(self, virtual: str, server: str) -> None:
        """A dead server's connections go (not quiesced): its clients reconnect to another."""
        v = self._virtual(virtual)
        m = next((m for m in members(self.cfg) if (m.virtual, m.server) == (virtual, server)), None)
        if not self.programmed or v is None or m is None or self.tracker is None or self._loop is None:
            return
        if self.cfg.network is not NetworkMode.NAT:
            return  # direct routing: its pins are not carried into the new table (net/nft.py)
        self._loop.create_task(self._flush_in_thread(virtual, server, m.address, m.port, v.protocol))

    async def _flush_in_thread(
        self, virtual: str, server: str, address: IPv4Address, port: int, proto: str
    ) -> None:
        assert self.tracker is not None
        try:
            gone = await asyncio.to_thread(self.tracker.flush, address, port, proto)
        except OSError as e:
            log.warning("real server %s/%s: connections not flushed: %s", virtual, server, e)
            return
        log.info("real server %s/%s: %d connection(s) flushed", virtual, server, gone)

    async def count_connections(self) -> dict[tuple[str, str], tuple[int, int]] | None:
        """Live connections per real server: conntrack (NAT, in a thread), the pins per server (direct)."""
        counts: dict[tuple[str, str], tuple[int, int]] = {}
        every = members(self.cfg)
        try:
            if self.cfg.network is NetworkMode.NAT and self.tracker is not None:
                for v in active_virtuals(self.cfg):
                    assert v.address is not None
                    ms = [m for m in every if m.virtual == v.name]
                    vip, vport = (None, None) if v.fwmark else (v.address.ip, v.port)
                    got = await asyncio.to_thread(
                        self.tracker.counts, vip, vport, v.protocol, [(m.address, m.port) for m in ms]
                    )
                    for m in ms:
                        counts[(v.name, m.server)] = got.get((m.address, m.port), (0, 0))
            elif self.engine is not None and self.programmed:
                sizes = self.engine.set_sizes()
                for m in every:
                    counts[(m.virtual, m.server)] = (sizes.get(pin_set(m.virtual, m.server), 0), 0)
        except (OSError, RuntimeError) as e:  # NetlinkError is an OSError, NftError a RuntimeError
            log.debug("connection counts unavailable: %s", e)
            return None
        return counts

    def reweight(self, counts: dict[tuple[str, str], tuple[int, int]]) -> None:
        """New counts: reload the table when a least-connection virtual's shares moved."""
        self.counts = counts
        if not self.programmed:
            return
        before = {name: dict(split) for name, split in self.shares.items()}
        self.tables()
        moved = [
            v.name
            for v in active_virtuals(self.cfg)
            if v.scheduler in LEAST_CONNECTION and before.get(v.name) != self.shares.get(v.name)
        ]
        if moved:
            self.program(f"least-connection re-weighting of {', '.join(moved)}")

    # -- status -------------------------------------------------------------------

    def sync_status(self) -> dict[str, Any] | None:
        """The connection sync daemon's state for pulse status, with the table sync's as ``table``
        (direct routing); None without syncdaemon = 1."""
        out = None if self.sync is None else self.sync.status()
        if self.table_sync is not None:
            out = (out or {"daemon": None}) | {"table": self.table_sync.status()}
        return out

    def virtual_status(self, stamp: Callable[[float | None], float | None]) -> list[dict[str, Any]]:
        """Each virtual and its real servers, like ``ipvsadm -L -n`` (schema in docs/status.md)."""
        out = []
        for v in self.cfg.virtuals:
            in_effect = {m.server: w for m, w in self.nanny.in_effect(v.name)} if v.active else {}
            servers = []
            for s in v.servers:
                st = self.nanny.state(v.name, s.name) if v.active and s.active else None
                p = self.probed.get((v.name, s.name), Probed())
                active, inactive = self.counts.get((v.name, s.name), (0, 0))
                servers.append(
                    {
                        "name": s.name,
                        "address": None if s.address is None else str(s.address),
                        "port": s.port if s.port is not None else v.port,
                        "active": s.active,
                        "health": "inactive" if st is None else st.health.value,
                        "since": None if st is None else stamp(st.since),
                        "weight": s.weight,
                        "weight_in_effect": in_effect.get(s.name),
                        "share": self.shares.get(v.name, {}).get(s.name) if self.programmed else None,
                        "probe": None if p.result is None else ("ok" if p.result.ok else "failed"),
                        "probe_reason": None if p.result is None else p.result.reason,
                        "probe_latency": None if p.result is None else p.result.latency,
                        "last_probe": stamp(p.at),
                        "active_connections": active,
                        "inactive_connections": inactive,
                    }
                )
            servers_up = [x for x in servers if x["weight_in_effect"]]
            out.append(
                {
                    "name": v.name,
                    "active": v.active,
                    "vip": None if v.address is None else str(v.address.ip),
                    "label": None if v.address is None else v.address.label,
                    "port": None if v.fwmark else v.port,
                    "fwmark": v.fwmark,
                    "protocol": v.protocol,
                    "scheduler": v.scheduler,
                    "persistent": v.persistent,
                    "sorry_server": None if v.sorry_server is None else str(v.sorry_server),
                    "sorry_in_use": bool(v.active and v.sorry_server is not None and not servers_up),
                    "servers": servers,
                }
            )
        return out


def planned_commands(cfg: Config) -> list[dict[str, Any]]:
    """The table an active director loads for ``cfg`` with every active real server up (pulse -t)."""
    every = members(cfg)
    return build(
        cfg,
        [
            virtual_table(v, [(m, m.weight) for m in every if m.virtual == v.name])
            for v in active_virtuals(cfg)
        ],
    )
