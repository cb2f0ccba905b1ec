"""Real-server health as Piranha's nanny kept it: probe results in, health changes and table actions out.

Pure: the caller passes the time of each event; the director probes, rebuilds tables and flushes conntrack.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address


class Health(enum.Enum):
    UNKNOWN = "unknown"  # not probed yet: takes no traffic (keepalived's alpha)
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class Member:
    """One active server of one active virtual, as the nanny needs it."""

    virtual: str
    server: str
    address: IPv4Address
    port: int
    weight: int
    reentry: float
    quiesce: bool


@dataclass(frozen=True)
class ServerProbed:
    """Event: one probe of one real server ended."""

    virtual: str
    server: str
    ok: bool
    reason: str


@dataclass(frozen=True)
class PoolChanged:
    """Action: rebuild the table for this virtual (the backends in effect changed)."""

    virtual: str
    reason: str


@dataclass(frozen=True)
class FlushServer:
    """Action: drop the server's connections (conntrack entries, pins): it is down and not quiesced."""

    virtual: str
    server: str


@dataclass(frozen=True)
class HealthChanged:
    """Action: one log line."""

    virtual: str
    server: str
    old: Health
    new: Health
    reason: str


Action = PoolChanged | FlushServer | HealthChanged


@dataclass(frozen=True)
class ServerState:
    """What the nanny knows of one server (for status)."""

    health: Health
    since: float | None  # time of the last health change; None while never probed
    last_ok: bool | None  # the last probe's result; None while never probed
    last_reason: str
    last_at: float | None  # when the last probe ended
    failed_at: float | None = None  # the last failed probe: the reentry run counts from it


def _effect(member: Member, health: Health) -> int | None:
    """The member's weight in the table, or None when it is not in the table."""
    if health is Health.UP:
        return member.weight
    if health is Health.DOWN and member.quiesce:
        return 0  # established connections continue, no new ones
    return None


Key = tuple[str, str]


class Nanny:
    """Health of every member, by (virtual, server). Not thread-safe; one event at a time."""

    def __init__(self, members: Iterable[Member]) -> None:
        self._members: dict[Key, Member] = {}
        self._states: dict[Key, ServerState] = {}
        for m in members:
            key = (m.virtual, m.server)
            if key in self._members:
                raise ValueError(f"server {m.server} twice in virtual {m.virtual}")
            self._members[key] = m
            self._states[key] = _unknown()

    @property
    def members(self) -> tuple[Member, ...]:
        return tuple(self._members.values())

    def handle(self, event: ServerProbed, now: float) -> list[Action]:
        """Apply one probe result. Actions come in the order to apply them: log, table, then flush
        (the table first, so no new connection reaches a server whose entries are being dropped)."""
        key = (event.virtual, event.server)
        member = self._members.get(key)
        if member is None:  # a probe of a server a reload removed meanwhile
            return []
        st = self._states[key]
        st = replace(st, last_ok=event.ok, last_reason=event.reason, last_at=now)
        new = st.health
        if not event.ok:
            new = Health.DOWN
            st = replace(st, failed_at=now)
        elif st.health is Health.UNKNOWN:
            new = Health.UP
        elif st.health is Health.DOWN:
            # Good probes for reentry seconds since the last failure, as nanny's reentry/interval
            # good checks in a row: a failure in between moved failed_at.
            start = st.failed_at if st.failed_at is not None else now
            if now - start >= member.reentry:
                new = Health.UP
        old = st.health
        if new is not old:
            st = replace(st, health=new, since=now)
        self._states[key] = st
        if new is old:
            return []
        if not event.ok:
            reason = event.reason
        elif old is Health.UNKNOWN:
            reason = "first good probe"
        else:
            reason = f"good probes for {member.reentry:g}s (reentry)"
        actions: list[Action] = [HealthChanged(member.virtual, member.server, old, new, reason)]
        if _effect(member, old) != _effect(member, new):
            actions.append(PoolChanged(member.virtual, f"{member.server} {new.value}: {reason}"))
        if old is Health.UP and new is Health.DOWN and not member.quiesce:
            actions.append(FlushServer(member.virtual, member.server))
        return actions

    def in_effect(self, virtual: str) -> tuple[tuple[Member, int], ...]:
        """(member, weight in effect) of the servers in the virtual's table, in config order: UP has its
        configured weight, DOWN with quiesce 0; DOWN without quiesce and UNKNOWN are absent."""
        out: list[tuple[Member, int]] = []
        for key, m in self._members.items():
            if m.virtual != virtual:
                continue
            weight = _effect(m, self._states[key].health)
            if weight is not None:
                out.append((m, weight))
        return tuple(out)

    def reconcile(self, members: Iterable[Member]) -> list[Action]:
        """Take a reload's member set. A server with the same virtual, name, address and port keeps its
        health (a changed weight, reentry or quiesce applies from now); others start UNKNOWN; removed ones
        are forgotten. One PoolChanged per virtual whose table changed. The connections of a server taken
        out of the file run to their end (nothing new reaches it); only a down server that loses
        quiesce_server is flushed, as a failure without quiesce would have."""
        old_members = self._members
        virtuals = {m.virtual for m in old_members.values()}
        before = {v: self.in_effect(v) for v in virtuals}
        new_members: dict[Key, Member] = {}
        new_states: dict[Key, ServerState] = {}
        unquiesced: list[FlushServer] = []  # down, kept at weight 0, now without quiesce: as if it failed now
        for m in members:
            key = (m.virtual, m.server)
            if key in new_members:
                raise ValueError(f"server {m.server} twice in virtual {m.virtual}")
            new_members[key] = m
            prev = old_members.get(key)
            same = prev is not None and (prev.address, prev.port) == (m.address, m.port)
            new_states[key] = self._states[key] if same else _unknown()
            if same and prev is not None and prev.quiesce and not m.quiesce:
                if new_states[key].health is Health.DOWN:
                    unquiesced.append(FlushServer(m.virtual, m.server))
        self._members, self._states = new_members, new_states
        virtuals |= {m.virtual for m in new_members.values()}
        actions: list[Action] = []
        for v in sorted(virtuals, key=_order(old_members, new_members)):
            if self.in_effect(v) != before.get(v, ()):
                actions.append(PoolChanged(v, "reload"))
        return actions + unquiesced  # the tables first: nothing new reaches them while they are flushed

    def state(self, virtual: str, server: str) -> ServerState:
        """The server's state; KeyError when it is not a member."""
        return self._states[(virtual, server)]


def _unknown() -> ServerState:
    return ServerState(Health.UNKNOWN, None, None, "not probed yet", None)


def _order(*maps: dict[Key, Member]) -> Callable[[str], int]:
    """Sort key: virtuals in the order they first appear (new file first, then removed ones)."""
    seen: dict[str, int] = {}
    for mp in reversed(maps):
        for v, _ in mp:
            seen.setdefault(v, len(seen))

    def key(v: str) -> int:
        return seen[v]

    return key
