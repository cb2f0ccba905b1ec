"""Direct-routing connection sync (lvs.cf ``syncdaemon = 1``, ``network = direct``): the active director's
table's dynamic set elements (pins, persistence) sent to the partner every second; the standby's cache.

netdev has no conntrack, so conntrackd has nothing to copy: a connection's choice of real server lives
in dynamic sets of the active director's table only. The active director lists them (``lister``, in a
thread) and sends the snapshot over UDP (core/pinwire.py; HMAC-SHA256 under heartbeat_key when one is
set) to the partner's sync address (as conntrackd's: private when both are set) on conntrackd's port + 1.
The standby keeps what it hears from that address only: each element until its expiry, at most
``max_cache`` of them, and whatever a complete snapshot no longer holds goes. On takeover the director
hands ``seed()`` to NftEngine.replace, which loads the elements of sets the new table has, for backends
still in it. A connection newer than the last snapshot that arrived (a second old at most; more for a
table that takes over half a second to list and encode) is scheduled afresh by the new director.

A recorded datagram of an earlier session (a restarted sender) is accepted once; within a session an
older sequence number is dropped. Its elements point at backends of the new table only (nft.py), so the
worst a replay does is send a client to a live server it was once pinned to.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from ..config.model import Config
from ..core import pinwire
from ..core.pinwire import Datagram, DecodeError, Element
from ..core.vocab import Role
from .conntrackd import BASE_PORT, MAX_SYNCD_ID, SyncConfigError, sync_addresses

log = logging.getLogger("pulse")

Json = dict[str, Any]
Lister = Callable[[], Mapping[str, Sequence[Any]]]  # set name -> its elements as libnftables lists them

PORT_OFFSET = 1  # conntrackd's port (3780 + syncd_id) + 1: both may run on one director
SEND_EVERY = 1.0  # seconds between snapshots while active
MAX_SNAPSHOT = 131072  # elements per snapshot (about 1700 datagrams): beyond it the rest is left out
MAX_CACHE = 131072  # elements the standby keeps
DROP_REASONS = (*pinwire.DECODE_REASONS, "not-partner", "replayed")

CacheKey = tuple[str, tuple[pinwire.Part, ...], bool]  # set name, key parts, concatenation


@dataclass
class _Cached:
    deadline: float  # monotonic time it expires at
    snapshot: tuple[bytes, int]  # (session, snapshot) that last carried it


class PinCache:
    """What the standby received: each element until its expiry, at most ``limit``; a complete snapshot
    (every part of it received) replaces what came before it. Pure: the clock is passed in."""

    def __init__(self, limit: int = MAX_CACHE) -> None:
        self.limit = limit
        self.entries: dict[CacheKey, _Cached] = {}
        self.session: bytes | None = None
        self.last_seq = -1
        self.current: tuple[bytes, int] | None = None  # the snapshot being received
        self.parts_seen: set[int] = set()
        self.received = 0  # elements accepted
        self.refused = 0  # elements not kept: the cache was full
        self.snapshots = 0  # complete snapshots
        self.last_complete: float | None = None

    def accept(self, d: Datagram, now: float) -> str | None:
        """Take one decoded datagram in; a drop reason if it is not taken (an old sequence number)."""
        if d.session == self.session and d.seq <= self.last_seq:
            return "replayed"
        self.session, self.last_seq = d.session, d.seq
        snap = (d.session, d.snapshot)
        if snap != self.current:
            self.current, self.parts_seen = snap, set()
        for e in d.elements:
            key = (e.set_name, e.parts, e.concat)
            if key not in self.entries and len(self.entries) >= self.limit:
                self.expire(now)
                if len(self.entries) >= self.limit:
                    self.refused += 1
                    continue
            self.entries[key] = _Cached(now + e.expires_ms / 1000, snap)
            self.received += 1
        self.parts_seen.add(d.part)
        if len(self.parts_seen) >= d.parts:  # the whole snapshot: what it did not carry is gone there
            self.entries = {k: c for k, c in self.entries.items() if c.snapshot == snap}
            self.snapshots += 1
            self.last_complete = now
        return None

    def expire(self, now: float) -> None:
        self.entries = {k: c for k, c in self.entries.items() if c.deadline > now}

    def seed(self, now: float) -> dict[str, list[Json]]:
        """The live elements by set name, as libnftables lists them (whole seconds left, at least 1);
        the cache is emptied: from now on they live in this director's table."""
        out: dict[str, list[Json]] = {}
        for (name, parts, concat), c in self.entries.items():
            left = int(c.deadline - now)
            if left >= 1:
                out.setdefault(name, []).append(
                    {"elem": {"val": pinwire.value_of(parts, concat), "expires": left}}
                )
        self.entries.clear()
        return out

    def __len__(self) -> int:
        return len(self.entries)


def snapshot_elements(listed: Mapping[str, Sequence[Any]], limit: int) -> tuple[list[Element], int]:
    """A listing's elements as pinwire Elements, at most ``limit``; and how many were left out (no
    expiry listed, no wire type, over the limit)."""
    out: list[Element] = []
    left_out = 0
    for name, elems in listed.items():
        for x in elems:
            body = x.get("elem") if isinstance(x, dict) else None
            expires = body.get("expires", body.get("timeout")) if isinstance(body, dict) else None
            key = pinwire.key_of(body.get("val")) if isinstance(body, dict) else None
            if key is None or not isinstance(expires, int | float) or len(out) >= limit:
                left_out += 1
                continue
            out.append(Element(name, key[0], key[1], int(expires * 1000)))
    return out, left_out


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, owner: TableSync) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.owner.received(data, addr[0])

    def error_received(self, exc: Exception) -> None:  # an ICMP error for an earlier send
        log.debug("table sync: %s", exc)


class TableSync:
    """The table sync of one director: receiving on both nodes from ``start``, sending while active."""

    def __init__(
        self,
        own: IPv4Address,
        peer: IPv4Address,
        port: int,
        key: bytes | None,
        lister: Lister,
        *,
        interval: float = SEND_EVERY,
        max_snapshot: int = MAX_SNAPSHOT,
        max_cache: int = MAX_CACHE,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.own, self.peer, self.port, self.key = own, peer, port, key
        self.lister = lister
        self.interval = interval
        self.max_snapshot = max_snapshot
        self.now = now
        self.cache = PinCache(max_cache)
        self.active = False
        self.session = os.urandom(8)
        self.seq = 0
        self.snapshot = 0
        self.snapshots_sent = 0
        self.elements_sent = 0
        self.left_out = 0  # elements of a snapshot not sent (over the bound, no wire type)
        self.drops: dict[str, int] = {}
        self.seeded: int | None = None  # elements handed to the table at the last takeover
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None

    # -- the director's hooks -------------------------------------------------------

    def start(self) -> None:
        """Bind and start the send loop (from inside the running loop: the daemon's start-up)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def set_active(self, active: bool) -> None:
        """Active: the table is ours (between acquire and release), so snapshots go out."""
        self.active = active

    def seed(self) -> dict[str, list[Json]]:
        """The partner's elements for NftEngine.replace (``seed``); the cache is emptied."""
        out = self.cache.seed(self.now())
        self.seeded = sum(map(len, out.values()))
        return out

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # -- sending ----------------------------------------------------------------------

    def _error(self, message: str) -> None:
        if message != self.last_error:
            log.error("table sync: %s", message)
        self.last_error, self.last_error_time = message, time.time()

    async def _bind(self) -> bool:
        try:
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _Receiver(self), local_addr=(str(self.own), self.port)
            )
        except OSError as e:  # the address not (yet) here, or the port taken: tried again next second
            self._error(f"cannot listen on {self.own} port {self.port}: {e.strerror or e}")
            return False
        self._transport = transport
        log.info("table sync: listening on %s port %d for %s", self.own, self.port, self.peer)
        return True

    async def _run(self) -> None:
        while True:
            started = self.now()
            if self._transport is not None or await self._bind():
                if self.active:
                    try:
                        await self.send_snapshot()
                    except Exception as e:  # never the daemon's end: logged, shown, tried next second
                        self._error(f"snapshot not sent: {e}")
            spent = self.now() - started
            # every interval, or twice the time a snapshot takes: at most half a core for a huge table
            await asyncio.sleep(max(0.05, self.interval - spent, spent))

    def _prepare(self, snapshot: int, seq: int) -> tuple[pinwire.Encoded, int]:
        """In a thread: list the table and encode it (about 10 us an element: off the event loop, so
        a large table never delays a heartbeat)."""
        elements, left_out = snapshot_elements(self.lister(), self.max_snapshot)
        return pinwire.encode(
            elements, session=self.session, seq=seq, snapshot=snapshot, key=self.key
        ), left_out

    async def send_snapshot(self) -> int:
        """List the table and encode it (in a thread), send it; the number of datagrams sent."""
        snapshot = (self.snapshot + 1) & 0xFFFFFFFF
        out, left_out = await asyncio.to_thread(self._prepare, snapshot, self.seq)
        if not self.active or self._transport is None:  # released while listing
            return 0
        self.snapshot = snapshot
        self.seq += len(out.datagrams)
        for data in out.datagrams:
            self._transport.sendto(data, (str(self.peer), self.port))
        self.snapshots_sent += 1
        self.elements_sent += out.elements
        self.left_out += left_out + out.unsendable
        return len(out.datagrams)

    # -- receiving --------------------------------------------------------------------

    def received(self, data: bytes, source: str) -> None:
        """One datagram from ``source``: kept in the cache, or dropped and counted. Never raises."""
        why: str | None
        if source != str(self.peer):
            why = "not-partner"
        else:
            try:
                why = self.cache.accept(pinwire.decode(data, self.key), self.now())
            except DecodeError as e:
                why = e.reason
        if why is not None:
            self.drops[why] = self.drops.get(why, 0) + 1

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The "table" part of pulse status's "sync" section (docs/status.md)."""
        c = self.cache
        return {
            "own": str(self.own),
            "peer": str(self.peer),
            "port": self.port,
            "listening": self._transport is not None,
            "sending": self.active,
            "snapshots_sent": self.snapshots_sent,
            "elements_sent": self.elements_sent,
            "elements_left_out": self.left_out,
            "snapshots_received": c.snapshots,
            "elements_received": c.received,
            "elements_refused": c.refused,
            "dropped": sum(self.drops.values()),
            "drops": dict(sorted(self.drops.items())),
            "cached": len(c),
            "last_snapshot_age": None if c.last_complete is None else round(self.now() - c.last_complete, 1),
            "seeded": self.seeded,
            "last_error": self.last_error,
            "last_error_time": self.last_error_time,
        }


def sync_port(cfg: Config) -> int:
    syncd_id = cfg.syncd_id or 0
    if not 0 <= syncd_id <= MAX_SYNCD_ID:
        raise SyncConfigError(f"syncd_id = {syncd_id}: must be 0-{MAX_SYNCD_ID}")
    return BASE_PORT + syncd_id + PORT_OFFSET


def for_director(cfg: Config, role: Role, key: bytes | None, lister: Lister) -> TableSync:
    """This director's table sync: conntrackd's addresses (private when both are set), port + 1."""
    own, peer = sync_addresses(cfg, role)
    return TableSync(own, peer, sync_port(cfg), key, lister)
