"""Events the failover machine takes in and actions it hands out: small immutable values, no behaviour.

The daemon turns sockets, timers, signals and command results into events, and carries out actions.
"""

from __future__ import annotations

from dataclasses import dataclass

from .vocab import State

# -- events -----------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """The daemon is up and its heartbeat socket is open."""


@dataclass(frozen=True)
class Tick:
    """Time passed; fired at ``next_deadline()`` (or earlier: it is harmless)."""


@dataclass(frozen=True)
class BeatReceived:
    """A valid beat from the partner on ``path`` (the partner address it came from)."""

    path: str
    state: State
    leaving: bool = False  # last beat of a partner that stops cleanly
    stopme: bool = False  # the partner asks us to release: it is taking over
    hold: bool = False  # the partner is in hold-down: not a failover candidate
    news: bool = True  # False: an older beat on a slower path, proof of the path's life only


@dataclass(frozen=True)
class AcquireDone:
    """The Acquire action finished: VIPs are up and start_cmds ran."""

    ok: bool = True
    reason: str = ""


@dataclass(frozen=True)
class ServicesStopped:
    """During a Release: the stop_cmds ran; the VIPs are still up and go down next."""


@dataclass(frozen=True)
class ReleaseDone:
    """The Release action finished: stop_cmds ran and VIPs are down."""


@dataclass(frozen=True)
class Stop:
    """SIGTERM/SIGINT: release everything and exit."""

    reason: str = "signal"


@dataclass(frozen=True)
class LocalServiceFailed:
    """The active node's own probe of a service failed (seam for service monitoring)."""

    name: str
    reason: str = ""


@dataclass(frozen=True)
class PartnerServiceFailed:
    """The standby's probes of the active partner's service failed repeatedly."""

    name: str
    reason: str = ""


@dataclass(frozen=True)
class ReleaseRequest:
    """The administrator asked this (active) node to hand over (``pulse release``); answered by Answer."""

    reason: str = "administrator request"


@dataclass(frozen=True)
class TakeoverRequest:
    """The administrator asked this (standby) node to take over (``pulse takeover``); answered by Answer.

    ``failing`` names this node's services whose own probes fail: taking them over would be an outage.
    """

    reason: str = "administrator request"
    failing: tuple[str, ...] = ()


@dataclass(frozen=True)
class LinkChanged:
    """A watched interface (one carrying a held address) gained or lost its link: a node whose VIP or
    nat_router interface has no link cannot serve, and must not hold the other addresses either."""

    interface: str
    up: bool


Event = (
    Start
    | Tick
    | BeatReceived
    | AcquireDone
    | ServicesStopped
    | ReleaseDone
    | Stop
    | LocalServiceFailed
    | PartnerServiceFailed
    | ReleaseRequest
    | TakeoverRequest
    | LinkChanged
)

# -- actions ----------------------------------------------------------------


@dataclass(frozen=True)
class StateChanged:
    """Log one line: the node moved from ``old`` to ``new`` because of ``reason``."""

    old: State
    new: State
    reason: str


@dataclass(frozen=True)
class SendBeat:
    """Send one beat to every partner path."""

    state: State
    leaving: bool = False
    stopme: bool = False
    hold: bool = False


@dataclass(frozen=True)
class Acquire:
    """VIPs up, gratuitous ARP, then start_cmds; answer with AcquireDone."""

    reason: str


@dataclass(frozen=True)
class Release:
    """stop_cmds, then VIPs down; answer with ReleaseDone."""

    reason: str


@dataclass(frozen=True)
class Announce:
    """Re-send gratuitous ARP for every held VIP (clients may point at the partner)."""

    reason: str


@dataclass(frozen=True)
class RestartService:
    """Restart one service locally (stop_cmd, start_cmd): nobody can take it over."""

    name: str
    reason: str


@dataclass(frozen=True)
class Notice:
    """Something worth one log line that is not a state change."""

    message: str


@dataclass(frozen=True)
class Answer:
    """The reply to an administrator's request: done (``ok``) or refused, and why."""

    ok: bool
    message: str


@dataclass(frozen=True)
class Exit:
    """Everything is released and the last beat sent: the daemon may exit."""


Action = StateChanged | SendBeat | Acquire | Release | Announce | RestartService | Notice | Answer | Exit
