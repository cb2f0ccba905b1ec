"""The heartbeat link: the UDP endpoint, datagrams in (decoded, guarded, dropped and counted, or turned
into BeatReceived events) and SendBeat actions out, native or in Piranha's 4-byte dialect.

The bytes themselves are core/wire.py's; this module owns the socket and what was learnt of the partner.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from ..core.events import BeatReceived, SendBeat
from ..core.replay import ReplayGuard
from ..core.vocab import Role
from ..core.wire import (
    Beat,
    DecodeError,
    PiranhaBeat,
    beat_flags,
    decode,
    encode,
    encode_piranha,
    piranha_magic_for,
    piranha_meaning,
)

log = logging.getLogger("pulse")


class Transport(Protocol):
    """What the link needs of a datagram socket (asyncio's DatagramTransport, or a test's fake)."""

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None: ...

    def close(self) -> None: ...


class BeatLink:
    """One node's heartbeat link to its partner, over every path (public first, then private)."""

    def __init__(
        self,
        role: Role,
        paths: tuple[str, ...],
        port: int,
        key: bytes | None,
        counters: Counter[str],
        *,
        digest: bytes,
        serial: int,
        boot_id: bytes | None = None,
        guard: ReplayGuard | None = None,
        on_mark: Callable[[int, int], None] | None = None,
        lvs: bool = False,
    ) -> None:
        self.role = role
        # Piranha's LVS and FOS pulses use different magics: follow and answer those of our lvs.cf's
        # service (shell passes cfg.service is ServiceKind.LVS); the other mode's are dropped.
        self.lvs = lvs
        self.paths = paths
        self.port = port
        self.key = key
        self.counters = counters
        self.digest = digest  # of our lvs.cf, sent in every beat
        self.serial = serial
        # One guard for the partner across every path: a beat is new only if no path carried it yet.
        self.guard = guard or ReplayGuard(role.partner, authenticated=key is not None)
        # With a key the boot counter (net/state.py) makes recordings of earlier starts worthless;
        # without one a random id is as good as anything (a spoofer can claim any boot).
        self.boot_id = boot_id if boot_id is not None else secrets.token_bytes(8)
        self.on_mark = on_mark  # keeps the partner's newest (boot, seq) across our restarts
        self.seq = 0
        self.transport: Transport | None = None
        self.partner_piranha: bool | None = None  # None until the partner is heard
        self.piranha_little_endian = True
        self.partner_digest: bytes | None = None
        self.config_match: bool | None = None  # last logged comparison of the partner's lvs.cf

    async def open(self, on_datagram: Callable[[bytes, str], None]) -> None:
        """Listen on the heartbeat port of every address; raises OSError when it is taken."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _BeatProtocol(on_datagram, self.counters),
            local_addr=("0.0.0.0", self.port),
            family=socket.AF_INET,
        )
        self.transport = transport

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def config_changed(self, digest: bytes, serial: int) -> None:
        """A reload: our beats carry the new file's digest and serial from now on."""
        self.digest, self.serial = digest, serial

    @property
    def protocol(self) -> str | None:
        """The partner's dialect as pulse status names it; None before it is heard."""
        return {None: None, True: "piranha", False: "pyrhfos"}[self.partner_piranha]

    # -- in -----------------------------------------------------------------

    def intake(self, data: bytes, source: str, now: float) -> BeatReceived | None:
        """One datagram from ``source`` at ``now``: the event it means, or None when it was dropped (and
        counted)."""
        # Receive rule order as Piranha: wrong sender first, then the packet.
        if source not in self.paths:
            self._drop("unexpected-source", f"heartbeat from {source}, which is not the partner")
            return None
        try:
            beat = decode(data, self.key)
        except DecodeError as e:
            self._drop(e.reason, f"bad heartbeat from {source}: {e.reason}")
            return None
        if isinstance(beat, PiranhaBeat):
            event = self._from_piranha(beat, source)
        elif not self.guard.accept(beat, source, now):
            reason = self.guard.reason or "replay"
            self._drop(reason, f"heartbeat from {source} rejected: {reason}")
            return None
        else:
            if not self.guard.news:
                event = BeatReceived(source, beat.state, news=False)
            else:
                if self.on_mark is not None and self.guard.mark is not None:
                    self.on_mark(self.guard.mark.boot, self.guard.mark.seq)
                event = self._from_native(beat, source)
        if event is not None:
            self.counters["beats-received"] += 1
        return event

    def _drop(self, reason: str, message: str) -> None:
        self.counters[f"dropped-{reason}"] += 1
        # One warning per reason; the counters tell the rest.
        if self.counters[f"dropped-{reason}"] == 1:
            log.warning("%s (dropped; further ones are only counted)", message)

    def _from_native(self, beat: Beat, source: str) -> BeatReceived:
        if self.partner_piranha is not False:
            log.info("partner %s speaks pyrhfos heartbeats", source)
        self.partner_piranha = False
        self.partner_digest = beat.digest
        match = beat.digest == self.digest
        if match != self.config_match:  # one line per change, not per beat
            if not match:
                # Equal serials with different content: an edit that did not bump serial_no.
                same = " (same serial_no, different content)" if beat.serial == self.serial else ""
                log.warning(
                    "config mismatch: partner's lvs.cf (serial %d) differs from ours (serial %d)%s; "
                    "copy the same file to both nodes (pulse sync)",
                    beat.serial,
                    self.serial,
                    same,
                )
            elif self.config_match is False:
                log.info("config match: partner's lvs.cf (serial %d) is now the same as ours", beat.serial)
            self.config_match = match
        return BeatReceived(source, beat.state, leaving=beat.leaving, stopme=beat.stopme, hold=beat.hold)

    def _from_piranha(self, beat: PiranhaBeat, source: str) -> BeatReceived | None:
        meaning = piranha_meaning(beat, self.lvs)
        if meaning is None:
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
        state, stopme = meaning
        return BeatReceived(source, state, stopme=stopme)

    # -- out ----------------------------------------------------------------

    def send(self, a: SendBeat) -> None:
        """One beat to every path, in the partner's dialect."""
        if self.transport is None:
            return
        self.seq += 1
        flags = beat_flags(leaving=a.leaving, stopme=a.stopme, hold=a.hold)
        beat = Beat(self.role, a.state, self.seq, self.boot_id, self.serial, self.digest, flags)
        if self.partner_piranha:
            data = encode_piranha(piranha_magic_for(beat, self.lvs), self.piranha_little_endian)
        else:
            data = encode(beat, self.key)
        for path in self.paths:
            try:
                self.transport.sendto(data, (path, self.port))
                self.counters["beats-sent"] += 1
            except OSError as e:  # no route while a link is down: keep beating
                self.counters["send-errors"] += 1
                log.debug("beat to %s failed: %s", path, e)


class _BeatProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, str], None], counters: Counter[str]) -> None:
        self.on_datagram = on_datagram
        self.counters = counters

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, addr[0])

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable from a partner that is down: expected, not fatal.
        self.counters["send-errors"] += 1
        log.debug("heartbeat socket error: %s", exc)
