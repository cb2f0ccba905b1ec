"""The probe scheduler: every service probed each keepalive as nanny did, failures handed to the machine
as events. The machine says whose services a probe watches (Cluster.probe_mode); this loop only times them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ..core.events import Event, LocalServiceFailed, PartnerServiceFailed
from ..core.machine import Cluster
from ..core.vocab import ProbeMode
from .services import ServiceSet

log = logging.getLogger("pulse")

CONFIRM_PERIOD = 0.1  # longest wait for the probe that confirms a failed one


def probe_period(keepalive: float, suspect: bool) -> float:
    """Seconds to the next round: a failed probe is confirmed sooner than the next keepalive, so a
    dead service is known in about one keepalive, while one lost SYN still fails nothing."""
    return min(keepalive / 4, CONFIRM_PERIOD) if suspect else keepalive


@dataclass
class Monitor:
    """Probe rounds for one node; ``busy`` says a job (commands, VIP changes) is under way here."""

    machine: Cluster
    services: ServiceSet
    feed: Callable[[Event], object]
    clock: Callable[[], float]
    busy: Callable[[], bool]
    counters: Counter[str]
    observe: Callable[[str, float], None] | None = None  # probe latency, by service name (metrics)
    mode: ProbeMode | None = None  # of the last round

    def current_mode(self) -> ProbeMode | None:
        return self.machine.probe_mode(self.clock(), self.busy())

    async def run(self) -> None:
        while True:
            started = self.clock()
            period = await self.step()
            await asyncio.sleep(max(0.0, started + period - self.clock()))

    async def step(self) -> float:
        """One round (probes only while they mean something); the seconds until the next."""
        started = self.clock()
        mode = self.current_mode()
        if mode != self.mode:
            self.mode = mode
            # A new holder needs time to start its service before a probe means anything.
            for s in self.services:
                s.reset_probe(started, self.machine.timers.deadtime)
        if mode is not None:
            try:
                await self._round(mode)
            except Exception:  # a probe bug must not end monitoring for good
                self.counters["probe-errors"] += 1
                if self.counters["probe-errors"] == 1:
                    log.exception("service probe round failed (further failures are only counted)")
        suspect = any(s.failures and s.probe_ok is not False for s in self.services)
        return probe_period(self.machine.timers.keepalive, suspect)

    async def _round(self, mode: ProbeMode) -> None:
        results = await self.services.probe_all()
        # The world may have moved while we probed: only report what still applies.
        if self.current_mode() != mode:
            return
        for s, result in results:
            if self.observe is not None:
                self.observe(s.name, result.latency)
            if s.record(result, self.clock()):
                log.warning("service %s failed: %s", s.name, result.reason)
                if mode is ProbeMode.LOCAL:
                    self.feed(LocalServiceFailed(s.name, result.reason))
                else:
                    self.feed(PartnerServiceFailed(s.name, result.reason))
