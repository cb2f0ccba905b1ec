"""The failover services as running things: per lvs.cf block, its VIP, announcements, commands, probes.

The daemon decides nothing here; it asks a ServiceSet to acquire, release, restart, announce or probe.
With no VipManager (``-t/--test-start``) every side effect is only logged as what would be done.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from ..config.model import Config, DeviceAddress, Failover
from ..core.reload import ReloadPlan
from ..net.arp import GarpSender, build_frames_in_child_async
from ..net.commands import run_command
from ..net.probe import ProbeResult, probe
from ..net.vip import VipManager

log = logging.getLogger("pulse")

# A service is failed after this many probes in a row fail: one lost SYN is no failover,
# and at one probe per keepalive it still bounds detection to about 3 keepalives.
PROBE_FAILURES = 3
RESTART_BACKOFF_MAX = 60.0


def lease_seconds(deadtime: float) -> int:
    """Kernel lifetime of a held VIP (whole seconds): it vanishes soon after pulse dies, yet outlives
    deadtime plus the longest gap between renewals (renew_every, then up to one beat interval,
    deadtime/12.5), so a freeze shorter than deadtime, which the partner rightly sits out, never
    leaves the VIP with nobody."""
    return math.floor(deadtime * 1.3) + 1


def renew_every(deadtime: float) -> float:
    """Seconds between lease renewals (at the next beat after): 0.2 + 0.08 deadtime < 1.3 deadtime."""
    return deadtime / 5


@dataclass
class Service:
    """One failover block and what is known of it while running."""

    f: Failover
    frames: list[bytes] | None = None
    garp: GarpSender | None = None
    held: bool = False
    probe_ok: bool | None = None  # None: not probed since the last change of holder
    probe_reason: str = ""
    probe_latency: float | None = None
    failures: int = 0
    changed_at: float = 0.0
    grace_until: float = 0.0  # failures before this are a service still starting, not a failure
    restart_delay: float = 1.0
    next_restart: float = 0.0

    @property
    def name(self) -> str:
        return self.f.name

    @property
    def address(self) -> DeviceAddress:
        assert self.f.address is not None  # mandatory for an active failover (the reader checks)
        return self.f.address

    @property
    def ip(self) -> IPv4Address:
        return self.address.ip

    def reset_probe(self, now: float, grace: float = 0.0) -> None:
        """Forget past results: the holder changed, or the service was (re)started."""
        self.probe_ok, self.probe_reason, self.failures, self.changed_at = None, "", 0, now
        self.grace_until = now + grace

    def record(self, result: ProbeResult, now: float) -> bool:
        """Note one probe result; True exactly when the service has just become failed."""
        self.probe_latency = result.latency
        if result.ok:
            if self.probe_ok is False:
                log.info("service %s answers again (%s)", self.name, result.reason)
            self.failures = 0
            self.restart_delay = 1.0
            if self.probe_ok is not True:
                self.changed_at = now
            self.probe_ok, self.probe_reason = True, result.reason
            return False
        self.probe_reason = result.reason
        if now < self.grace_until:
            return False
        self.failures += 1
        if self.failures == 1:
            log.info("probe of %s failed: %s", self.name, result.reason)
        if self.failures >= PROBE_FAILURES and self.probe_ok is not False:
            self.probe_ok, self.changed_at = False, now
            return True
        return False


class ServiceSet:
    """All failover services of one config: VIPs, gratuitous ARP, start/stop commands, probes."""

    def __init__(
        self,
        failovers: Iterable[Failover],
        vips: VipManager | None,
        deadtime: float,
        command_timeout: float,
        now: Callable[[], float],
    ) -> None:
        self.vips = vips
        self.deadtime = deadtime
        self.command_timeout = command_timeout
        self.now = now
        self.services: dict[str, Service] = {f.name: Service(f) for f in failovers if f.active}
        self.last_renew = 0.0
        self.garp_sent = 0  # gratuitous ARP frames sent, for pulse status

    def __iter__(self):  # noqa: ANN204
        return iter(list(self.services.values()))

    def close(self) -> None:
        for s in self:
            if s.garp is not None:
                s.garp.close()

    # -- start-up -----------------------------------------------------------

    def clear_stale(self) -> None:
        """A VIP left by a crashed pulse must not answer while the partner serves."""
        for s in self._remove(list(self)):
            log.warning("removed %s left on %s by an earlier run", s.ip, s.address.label)

    def _remove(self, chosen: list[Service]) -> list[Service]:
        """Take the chosen VIPs down in one netlink batch; the services whose VIP was there."""
        if self.vips is None:
            return []
        gone = self.vips.remove_all([(s.ip, s.address.label) for s in chosen])
        return [s for s, was_there in zip(chosen, gone, strict=True) if was_there]

    async def prepare_frames(self) -> None:
        """Build gratuitous ARP frames once per VIP (scapy runs in a short-lived child)."""
        if self.vips is None:
            return
        todo = [s for s in self if s.frames is None]
        if not todo:
            return
        wanted = [(self.vips.interface_mac(s.address.interface), s.ip) for s in todo]
        built = await build_frames_in_child_async(wanted)
        for s, key in zip(todo, wanted, strict=True):
            s.frames = built.get(key)
        # A VIP taken while the frames were being built has not been announced yet.
        late = [s for s in todo if s.held]
        if late:
            self.announce(late)

    # -- taking and giving up ----------------------------------------------

    async def acquire(self, services: Iterable[Service] | None = None) -> list[str]:
        """VIPs up, one gratuitous ARP each at once, then start_cmds; returns the names that failed."""
        chosen = list(self if services is None else services)
        self.vips_up(chosen)
        self.announce(chosen)
        ok = await asyncio.gather(*(self.command(s, "start_cmd") for s in chosen))
        now = self.now()
        for s in chosen:
            s.reset_probe(now, self.deadtime)
        return [s.name for s, good in zip(chosen, ok, strict=True) if not good]

    async def release(
        self, services: Iterable[Service] | None = None, stopped: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """stop_cmds, then VIPs down (Piranha's order: the service stops before its address goes).

        ``stopped`` is called between the two.
        """
        chosen = list(self if services is None else services)
        await asyncio.gather(*(self.command(s, "stop_cmd") for s in chosen))
        if stopped is not None:
            await stopped()
        self.vips_down(chosen)
        now = self.now()
        for s in chosen:
            s.reset_probe(now)

    async def restart(self, name: str, reason: str) -> None:
        """stop_cmd then start_cmd, with a doubling back-off so a broken service is not hammered."""
        s = self.services.get(name)
        now = self.now()
        if s is None:
            return
        if now < s.next_restart:
            # Back off: count failures again only once the next restart is allowed,
            # so the failure is reported (and the restart done) then, not forgotten.
            log.info("service %s still failing; next restart in %.0f s", name, s.next_restart - now)
            s.reset_probe(now, s.next_restart - now)
            return
        log.warning("restarting service %s locally: %s", name, reason)
        await self.command(s, "stop_cmd")
        await self.command(s, "start_cmd")
        s.next_restart = self.now() + s.restart_delay
        s.restart_delay = min(RESTART_BACKOFF_MAX, s.restart_delay * 2)
        s.reset_probe(self.now(), self.deadtime)

    def vips_up(self, chosen: list[Service]) -> None:
        """All chosen VIPs up in one netlink batch, each with a fresh lease."""
        for s in chosen:
            s.held = True
        if self.vips is None:
            for s in chosen:
                log.info("test-start: would add %s on %s", s.ip, s.address.label)
            return
        wanted = [(s.ip, s.address.label, s.f.prefixlen) for s in chosen]
        done = self.vips.add_all(wanted, lease_seconds(self.deadtime))
        self.last_renew = self.now()
        for s, (ip, prefix, added) in zip(chosen, done, strict=True):
            log.info("%s %s/%d on %s", "added" if added else "adopted", ip, prefix, s.address.label)

    def vips_down(self, chosen: list[Service]) -> None:
        """All chosen VIPs down in one netlink batch."""
        for s in chosen:
            s.held = False
            if self.vips is None:
                log.info("test-start: would remove %s from %s", s.ip, s.address.label)
        for s in self._remove(chosen):
            log.info("removed %s from %s", s.ip, s.address.label)

    def renew_leases(self) -> None:
        """Push held VIPs' kernel lifetimes ahead; re-add and re-announce one that vanished."""
        lease = lease_seconds(self.deadtime)
        # Not at every beat: one netlink write per VIP per renewal is the daemon's main idle cost
        # with many services (see lease_seconds for why this often is enough).
        if self.vips is None or self.now() - self.last_renew < renew_every(self.deadtime):
            return
        self.last_renew = self.now()
        held = {s.ip: s for s in self if s.held}
        wanted = [(s.ip, s.address.label, s.f.prefixlen) for s in held.values()]
        try:
            readded = self.vips.renew_all(wanted, lease)
        except (OSError, RuntimeError) as e:  # VipError is a RuntimeError; beats must go on regardless
            log.warning("renewing VIP leases failed: %s", e)
            return
        for ip in readded:
            log.warning("%s had vanished from %s: added again", ip, held[ip].address.label)
            self.announce([held[ip]])

    def announce(self, services: Iterable[Service] | None = None) -> int:
        """One round of gratuitous ARP for the given (default: held) VIPs; frames sent."""
        chosen = [s for s in self if s.held] if services is None else list(services)
        if self.vips is None:
            for s in chosen:
                log.info("test-start: would send gratuitous ARP for %s", s.address)
            return 0
        waiting = [s for s in chosen if s.frames is None]
        if waiting:  # one line, not one per VIP: at start with many services all of them wait
            names = ", ".join(str(s.ip) for s in waiting[:5]) + (", ..." if len(waiting) > 5 else "")
            log.info(
                "gratuitous ARP for %d VIP(s) (%s): frames not ready yet; sent once they are",
                len(waiting),
                names,
            )
        sent = 0
        for s in chosen:
            if s.frames is None:
                continue
            try:
                if s.garp is None:
                    s.garp = GarpSender(s.address.interface, s.frames)
                sent += s.garp.send_once()
            except OSError as e:
                log.warning("gratuitous ARP for %s failed: %s", s.ip, e)
        self.garp_sent += sent
        return sent

    async def command(self, s: Service, key: str) -> bool:
        cmd: str | None = getattr(s.f, key)
        if not cmd:
            return True
        if self.vips is None:
            log.info("test-start: would run %s of %s: %s", key, s.name, cmd)
            return True
        result = await run_command(cmd, self.command_timeout)
        tail = " | ".join(result.output.strip().splitlines()[-3:])
        if result.timed_out:
            log.error("%s of %s timed out after %.1fs and was killed: %s", key, s.name, result.duration, cmd)
        elif result.ok:
            log.info("%s of %s ok (%.2fs)", key, s.name, result.duration)
        else:
            log.error("%s of %s exited %s: %s", key, s.name, result.returncode, tail or "(no output)")
        return result.ok

    # -- reload -------------------------------------------------------------

    def blocks(self, cfg: Config) -> list[Failover]:
        """The blocks this set runs for ``cfg`` (a reload plan compares them with ``failovers``)."""
        return list(cfg.active_failovers)

    @property
    def failovers(self) -> dict[str, Failover]:
        """The blocks running now, by name (what a reload plan compares the new file with)."""
        return {name: s.f for name, s in self.services.items()}

    async def retire(self, names: Iterable[str], serving: bool) -> None:
        """A reload removed or changed these: stop them (on the active node) and forget them."""
        gone = [self.services[name] for name in names]
        if serving and gone:
            await self.release(gone)
        for s in gone:
            if s.garp is not None:
                s.garp.close()
            del self.services[s.name]

    def reconcile(self, plan: ReloadPlan, cfg: Config) -> list[Service]:
        """After retire: the new file's services in its order, the kept ones untouched; the added ones."""
        self.deadtime = cfg.deadtime
        kept = {name: self.services[name] for name in plan.kept}
        fresh = {f.name: kept.get(f.name) or Service(f) for f in self.blocks(cfg) if f.active}
        self.services = fresh
        return [fresh[name] for name in plan.added]

    async def run(self) -> None:
        """Work of the set's own while the daemon runs: none for failover services (the Monitor
        probes them); a director probes its real servers (daemon/director.py)."""

    def virtual_status(self, stamp: Callable[[float | None], float | None]) -> list[dict[str, Any]]:
        """LVS virtual servers (daemon/director.py); a FOS node has none."""
        return []

    # -- probes -------------------------------------------------------------

    async def probe_all(self) -> list[tuple[Service, ProbeResult]]:
        """Probe every service once through its VIP, concurrently."""
        chosen = list(self)
        # A bug in one probe must not stop the others from being watched: it is that probe's failure.
        results = await asyncio.gather(*(probe(s.f, str(s.ip)) for s in chosen), return_exceptions=True)
        return [
            (s, r if isinstance(r, ProbeResult) else ProbeResult(False, f"probe error: {r!r}", 0.0))
            for s, r in zip(chosen, results, strict=True)
        ]
