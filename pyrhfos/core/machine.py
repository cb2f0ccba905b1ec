"""The failover state machine: events in, actions out; pure (no sockets, clock or processes).

``Cluster.handle(event, now)`` is the only entry point for events; the daemon carries out the
returned actions and calls ``handle(Tick(), now)`` no later than ``next_deadline()``. The rules are
grouped by state, each tagged with its row of docs/state-machine.md ([T9]; administrator requests
[A1]..), and the tests walk every row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .events import (
    Acquire,
    AcquireDone,
    Action,
    Announce,
    Answer,
    BeatReceived,
    Event,
    Exit,
    LinkChanged,
    LocalServiceFailed,
    Notice,
    PartnerServiceFailed,
    Release,
    ReleaseDone,
    ReleaseRequest,
    RestartService,
    SendBeat,
    ServicesStopped,
    Start,
    StateChanged,
    Stop,
    TakeoverRequest,
    Tick,
)
from .vocab import ProbeMode, Role, State

# -- the machine ------------------------------------------------------------


@dataclass(frozen=True)
class Timers:
    """Timing from lvs.cf, in seconds."""

    keepalive: float
    deadtime: float
    # After a node gives up the services because of a failure it is not a
    # failover candidate for this long (Piranha's ``reentry``): no ping-pong.
    holddown: float = 0.0
    # The longest a start_cmd or stop_cmd may run (--command-timeout): how long a node asking its
    # releasing partner for the services waits for the partner's stop_cmd.
    command_limit: float = 60.0

    @property
    def beat_interval(self) -> float:
        """Time between beats: keepalive, or shorter so a deadtime holds BEATS_PER_DEADTIME beats.

        Then 12 beats lost in a row look like a dead partner and 11 never do, with 4 % of
        deadtime to spare each way for jitter (12 intervals are 0.96 deadtime, 13 are 1.04).
        With 30 % random
        loss that is 0.3**12, about 5e-7 per beat, where three beats per deadtime
        (keepalive 1, deadtime 3) would fail over every few seconds of such loss.
        """
        return min(self.keepalive, self.deadtime / BEATS_PER_DEADTIME)

    @property
    def listen(self) -> float:
        """How long a starting primary listens for an active partner before acting."""
        return min(self.deadtime, 2 * self.keepalive)


ACTIVE_STATES = (State.ACTIVE, State.RELEASING)
BEATS_PER_DEADTIME = 12.5  # 12 lost in a row fail over, 11 never (see Timers.beat_interval)


@dataclass
class Partner:
    """What this node knows of its partner, from beats only."""

    paths: tuple[str, ...]
    last_heard: dict[str, float] = field(default_factory=dict)
    state: State | None = None  # None: never heard since our start (or since it left)
    hold: bool = False
    left: bool = False  # its last beat said it stops cleanly
    alive_since: float | None = None
    inactive_since: float | None = None  # since when it has been seen not active
    gave_up: bool = False  # it was active and stepped down while alive
    stopme: bool = False  # it is asking us to release: it is about to take over

    def last(self) -> float | None:
        return max(self.last_heard.values()) if self.last_heard else None


class Cluster:
    """One node's failover decisions. Feed it events with the current time."""

    def __init__(
        self,
        role: Role,
        timers: Timers,
        partner_paths: tuple[str, ...] = (),
        *,
        solo: bool = False,
        force_active: bool = False,
    ) -> None:
        self.role = role
        self.timers = timers
        self.solo = solo
        self.force_active = force_active
        self.partner = Partner(paths=partner_paths)
        self.state = State.STARTING
        self.since = 0.0
        self.reason = "not started"
        self.started_at: float | None = None
        # Silence is counted from the later of the last beat and this instant
        # (start-up, or the end of a freeze whose queued beats are stale).
        self.silence_base = 0.0
        self.next_beat: float | None = None
        self.stopping = False
        self.want_takeover: str | None = None  # reason, while asking the partner to release
        self.want_since = 0.0
        self.hold_until = 0.0
        self.lease_lapsed = False  # released after a freeze: the VIPs' lease must stay lapsed
        self.stale_until = float("-inf")  # beats before this were queued during a freeze
        self.release_holds = False  # this release is for a failure: hold down from its end too
        self.last_now: float | None = None
        self.activations = 0  # times this node took the services
        self.links_down: set[str] = set()  # watched interfaces without link: this node cannot serve
        self.link_released = False  # the last release was for a link (a solo node comes back by itself)

    # -- queries ------------------------------------------------------------

    def partner_alive(self, now: float) -> bool:
        last = self.partner.last()
        return last is not None and not self.partner.left and now - last < self.timers.deadtime

    def in_holddown(self, now: float) -> bool:
        return now < self.hold_until

    def candidate(self, now: float) -> bool:
        """May this node take the services? Not in hold-down, and every watched link up."""
        return not self.in_holddown(now) and not self.links_down

    def _links_reason(self) -> str:
        return f"link {', '.join(sorted(self.links_down))} down"

    def renews_lease(self) -> bool:
        """Whether the VIPs' kernel lease is pushed ahead now: while they are meant to be held, that is
        while active and while releasing (a long stop_cmd must not leave them with nobody), except
        after a freeze, when the partner may already hold them."""
        return self.state is State.ACTIVE or (self.state is State.RELEASING and not self.lease_lapsed)

    def probe_mode(self, now: float, busy: bool = False) -> ProbeMode | None:
        """Whose services this node's probes watch now, or None when a probe would mean nothing.

        ``busy``: commands or VIP changes are under way here, so a probe would catch them half-done.
        """
        if busy:
            return None
        if self.state is State.ACTIVE:
            return ProbeMode.LOCAL
        if self.state is State.STANDBY and self.partner_alive(now) and self.partner.state is State.ACTIVE:
            return ProbeMode.PARTNER
        return None

    def next_deadline(self) -> float | None:
        """The latest time at which the daemon must feed a Tick."""
        if self.state is State.STOPPED:
            return None
        times = [self.next_beat]
        if self.state is State.STARTING and self.started_at is not None and self.role is Role.PRIMARY:
            times.append(self.started_at + self.timers.listen)
            if self.partner.state in (State.STARTING, State.STANDBY):
                times.append(self._standby_confirmed())
        if self.state is State.STANDBY and not self.solo:
            times.append(self._silence_deadline())
            if self.partner.inactive_since is not None:
                times.append(self.partner.inactive_since + self.timers.deadtime)
            if self.want_takeover is not None:
                times.append(self.want_since + self.timers.deadtime)
                times.append(self.want_since + self.timers.deadtime + self.timers.command_limit)
            if self.hold_until:
                times.append(self.hold_until)
        # Conditions already due were evaluated at the last event (a hold-down
        # may have kept them from firing): only future instants matter.
        floor = self.last_now if self.last_now is not None else float("-inf")
        future = [t for t in times if t is not None and t > floor]
        return min(future) if future else None

    def _standby_confirmed(self) -> float:
        """When a starting primary may believe its partner's STANDBY (or STARTING): two beat intervals
        after the first such beat, if no ACTIVE beat came in between ([T6]).

        A beat says what the partner was when it sent it. One that left before the partner heard us
        start can be out of date: the partner may have taken the services on our previous life's
        LEAVING or silence, and a slower path still brings its older STANDBY. That partner says ACTIVE
        at once on every path and again each beat interval, so within two intervals the faster path
        brings it (for a round trip up to one interval) and the primary stands by (T4) instead.
        """
        since = self.partner.inactive_since
        return float("inf") if since is None else since + 2 * self.timers.beat_interval

    def _silence_deadline(self) -> float:
        last = self.partner.last()
        return max(last if last is not None else self.silence_base, self.silence_base) + self.timers.deadtime

    # -- the entry point ----------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """One event: what the partner said is learnt, the current state's rules for the event run,
        then the rules of the state it is now in that hold at any time, then a beat if one is due."""
        out: list[Action] = []
        if self.state is State.STOPPED:  # [T33]
            if isinstance(event, ReleaseRequest | TakeoverRequest):  # [A1] [A4]: still answered
                out.append(self._wrong_state(event))
            return out
        self._check_stall(now, out)
        self.last_now = now
        if isinstance(event, BeatReceived) and now < self.stale_until:
            event = Tick()  # [T37] queued during a freeze: it says what was, not what is
        if isinstance(event, BeatReceived) and not event.news:
            # [T38] A slower path's copy of an older beat: that path is alive, its state is history
            # (applied, it would undo what a newer beat on the faster path said).
            self.partner.last_heard[event.path] = now
            event = Tick()
        if isinstance(event, BeatReceived):
            self._learn(event, now)
        elif isinstance(event, LinkChanged):  # [T39] learnt in every state; what it means is per state
            if event.up:
                if event.interface in self.links_down:
                    # Cut off, we heard nothing: give the partner one deadtime to be heard
                    # before its silence counts (it has most likely taken over meanwhile).
                    self.silence_base = now
                self.links_down.discard(event.interface)
            else:
                self.links_down.add(event.interface)
        elif isinstance(event, Stop):
            self.stopping = True
        on_event = {
            State.STARTING: self._starting,
            State.STANDBY: self._standby,
            State.ACTIVE: self._active,
            State.RELEASING: self._releasing,
        }[self.state]
        on_event(event, now, out)
        if self.state is State.STARTING:
            self._starting_conditions(now, out)
        elif self.state is State.STANDBY:
            self._standby_conditions(now, out)
        self._beat_if_due(now, out)  # [T32]
        return out

    # -- what the partner's beats say, whatever our state -------------------

    def _learn(self, beat: BeatReceived, now: float) -> None:
        p = self.partner
        was_alive = self.partner_alive(now)
        was_state = p.state
        p.last_heard[beat.path] = now
        p.hold = beat.hold
        p.stopme = beat.stopme
        if beat.leaving:
            p.left = True
            p.state = State.STOPPED
            p.inactive_since = None
            p.alive_since = None
            p.gave_up = False
            return
        if p.left or not was_alive:
            p.alive_since = now
        p.left = False
        p.state = beat.state
        if beat.state in ACTIVE_STATES:
            p.inactive_since = None
            p.gave_up = False
        elif p.inactive_since is None:
            p.inactive_since = now
            # Stepping down while alive means it wants us to serve (a failed
            # service, a manual release): take over now, not after deadtime.
            p.gave_up = was_alive and was_state in ACTIVE_STATES

    # -- STARTING -----------------------------------------------------------

    def _starting(self, event: Event, now: float, out: list[Action]) -> None:
        match event:
            case Start() if self.started_at is None:
                self.started_at = now
                self.silence_base = now
                self.since = now
                if self.solo:  # [T1]
                    self._activate(now, "no backup node (backup_active = 0)", out)
                elif self.role is Role.BACKUP:  # [T2]
                    self._set(State.STANDBY, now, "backup waits for the primary", out)
                # [T3] the primary stays STARTING and listens; its conditions decide.
            case Stop(reason=reason):  # [T8]
                self._finish(now, out, reason)
            case ReleaseRequest() | TakeoverRequest():
                out.append(self._wrong_state(event))

    def _starting_conditions(self, now: float, out: list[Action]) -> None:
        if self.started_at is None:
            return
        if self.links_down:  # [T40] a node that cannot serve does not listen for its chance
            self._set(State.STANDBY, now, f"{self._links_reason()}: not a candidate", out)
            return
        p = self.partner
        if p.state in ACTIVE_STATES:  # [T4]
            self._set(State.STANDBY, now, "partner is already active", out)
            if self.force_active:  # [T5]
                self._ask_partner_to_release(now, "started with --forceactive", out)
        elif p.state is not None and p.state is not State.STOPPED:
            # [T6] Believed two beat intervals on, even past the listen window (which is for silence).
            if now >= self._standby_confirmed():
                self._activate(now, f"partner is {p.state.name.lower()}: the primary takes the services", out)
        elif p.left:  # [T35] it said LEAVING while we listened: nobody serves, no need to listen on
            self._activate(now, "partner stopped cleanly", out)
        elif now >= self.started_at + self.timers.listen:  # [T7]
            self._activate(now, f"no active partner heard in {self.timers.listen:g} s", out)

    # -- STANDBY ------------------------------------------------------------

    def _standby(self, event: Event, now: float, out: list[Action]) -> None:
        match event:
            case PartnerServiceFailed(name=name, reason=reason) if self.want_takeover is None:  # [T14]
                if self.in_holddown(now):
                    out.append(Notice(f"partner's service {name} failed, but this node is in hold-down"))
                else:
                    self._ask_partner_to_release(now, f"partner's service {name} failed: {reason}", out)
            case TakeoverRequest():
                refusal = self._takeover_refusal(event, now)
                if refusal is not None:
                    out.append(Answer(False, refusal))
                    return
                self.hold_until = 0.0  # [T18]
                self._ask_partner_to_release(now, event.reason, out)
                out.append(Answer(True, "taking over: the partner is asked to release"))
            case ReleaseRequest():
                out.append(self._wrong_state(event))
            case Stop(reason=reason):  # [T19]
                self._finish(now, out, reason)

    def _standby_conditions(self, now: float, out: list[Action]) -> None:
        if self.links_down:  # [T40] whatever the partner does: this node cannot serve
            return
        if self.solo:
            if self.link_released:  # [T41] nobody else can serve: back as soon as the links are
                self._activate(now, "links up again (no backup node)", out)
            return
        p = self.partner
        if self.want_takeover is not None:
            if not self.partner_alive(now) or p.state not in ACTIVE_STATES:  # [T15]
                self._activate(now, self.want_takeover, out)
            elif p.state is State.RELEASING:  # [T36] its stop_cmd runs: two holders would run it twice
                if now >= self.want_since + self.timers.deadtime + self.timers.command_limit:
                    why = "partner still releasing after its time limit"
                    self._activate(now, f"{self.want_takeover}; {why}", out)
            elif now >= self.want_since + self.timers.deadtime:  # [T16]
                self._activate(now, f"{self.want_takeover}; partner did not release in time", out)
            return
        if p.left:  # [T10]
            self._activate(now, "partner stopped cleanly", out)
        elif not self.partner_alive(now):  # [T9]
            if now >= self._silence_deadline():
                last = p.last()
                silent = now - (last if last is not None else self.started_at or now)
                self._activate(now, f"no heartbeat from partner for {silent:.2f} s", out)
        elif p.state in ACTIVE_STATES or p.stopme:  # [T17]
            return
        elif self.in_holddown(now):
            if p.state is State.STANDBY and p.hold and self.role is Role.PRIMARY:  # [T42]
                # Hold-down keeps services from ping-ponging; it must never leave them with nobody.
                self._activate(now, "both nodes in hold-down: the primary serves rather than nobody", out)
            return  # [T17]
        elif p.state is State.STANDBY and self.role is Role.PRIMARY:  # [T11]
            self._activate(now, "no active node: the primary takes the services", out)
        elif p.state is State.STANDBY and p.gave_up:  # [T12]
            self._activate(now, "partner gave up the services", out)
        elif p.inactive_since is not None and now >= p.inactive_since + self.timers.deadtime:  # [T13]
            # The primary should have taken the services by now (a Piranha
            # primary with a failed link or child never does): serve.
            self._activate(now, "partner alive but not serving", out)

    # -- ACTIVE -------------------------------------------------------------

    def _active(self, event: Event, now: float, out: list[Action]) -> None:
        match event:
            case BeatReceived(leaving=False, stopme=True):  # [T22]
                # Our service failed as the partner sees it: do not take it straight back.
                self.hold_until = now + self.timers.holddown
                self._release(now, "partner asked this node to release (it is taking over)", out)
            case BeatReceived(leaving=False, state=State.ACTIVE):
                # Double active (a healed partition): the primary keeps the VIPs,
                # as Piranha did; the backup releases at once.
                if self.role is Role.BACKUP:  # [T20]
                    # Held down after: a one-way partition (the primary deaf to us) would make
                    # the takeover-after-deadtime rule and this one flap the services for ever.
                    self.hold_until = now + self.timers.holddown
                    self._release(now, "both nodes active: the primary keeps the services", out)
                else:  # [T21]
                    out.append(Announce("both nodes active: the primary keeps the services"))
            case AcquireDone(ok=False, reason=reason):  # [T23]
                self.hold_until = now + self.timers.holddown
                self._release(now, f"start failed: {reason}", out)
            case LinkChanged(up=False, interface=name):  # [T39]
                # A director cut off from one network must not keep the other's addresses (two
                # gateways for the real servers): give up everything; the partner takes over.
                self.link_released = True
                self._release(now, f"link {name} down: releasing every address", out)
            case LocalServiceFailed(name=name, reason=reason):
                p_ok = self.partner_alive(now) and self.partner.state is State.STANDBY
                if p_ok and not self.partner.hold:  # [T24]
                    self.hold_until = now + self.timers.holddown
                    self._release(now, f"service {name} failed ({reason}): handing over to the partner", out)
                else:  # [T25]
                    why = "partner is in hold-down" if self.partner_alive(now) else "partner is not available"
                    out.append(RestartService(name, f"{reason}; {why}"))
            case ReleaseRequest(reason=reason):
                refusal = self._release_refusal(now)
                if refusal is not None:
                    out.append(Answer(False, refusal))
                    return
                self.hold_until = now + self.timers.holddown  # [T26]
                self._release(now, reason, out)
                out.append(Answer(True, "releasing: the partner takes the services over"))
            case TakeoverRequest():
                out.append(self._wrong_state(event))
            case Stop(reason=reason):  # [T27]
                self._release(now, f"stopping ({reason})", out)

    # -- RELEASING ----------------------------------------------------------

    def _releasing(self, event: Event, now: float, out: list[Action]) -> None:
        match event:
            case ServicesStopped() if self.stopping:  # [T34]
                # Planned stop: our services are down, so tell the partner now; it takes
                # over while our VIPs go, instead of after (no gap for clients to fall in).
                out.append(SendBeat(State.RELEASING, leaving=True))
            case ReleaseDone() if self.stopping:  # [T30]
                self._finish(now, out)
            case ReleaseDone():  # [T29]
                if self.release_holds:
                    # Hold-down counts from when the partner can hold the services, not from the
                    # start of a long stop_cmd: reentry bounds how soon they come back.
                    self.hold_until = max(self.hold_until, now + self.timers.holddown)
                self._set(State.STANDBY, now, "services released", out)
            case ReleaseRequest() | TakeoverRequest():
                out.append(self._wrong_state(event))
            # [T31] Stop: stopping is set; it exits after ReleaseDone.

    # -- the administrator's requests (pulse release, pulse takeover) -------

    def _wrong_state(self, event: ReleaseRequest | TakeoverRequest) -> Answer:  # [A1] [A4]
        wanted = "active" if isinstance(event, ReleaseRequest) else "standby"
        return Answer(False, f"this node is {self.state.name.lower()}, not {wanted}")

    def _release_refusal(self, now: float) -> str | None:
        """Why this active node must not hand over now, or None: only to a partner that would serve."""
        if not self.partner_alive(now) or self.partner.state is not State.STANDBY:  # [A2]
            return "refused: no standby partner to take the services over"
        if self.partner.hold:  # [A3]
            return "refused: the partner is in hold-down after a failure"
        return None

    def _takeover_refusal(self, event: TakeoverRequest, now: float) -> str | None:
        """Why this standby node must not take over now, or None."""
        if not self.partner_alive(now):  # [A5]
            return "refused: the partner is not heard; this node takes over by itself"
        if self.links_down:  # [A7]
            return f"refused: {self._links_reason()} here"
        if event.failing:  # [A6]
            return f"refused: services failing here: {', '.join(event.failing)}"
        return None

    # -- helpers ------------------------------------------------------------

    def _check_stall(self, now: float, out: list[Action]) -> None:
        """A loop frozen longer than deadtime (SIGSTOP, a VM pause) has lost its lease."""
        if self.last_now is None or now - self.last_now < self.timers.deadtime:
            return
        gap = now - self.last_now
        # Beats queued during the freeze are stale: forget what they said and
        # give the partner one deadtime from now to speak again.
        self.partner = Partner(paths=self.partner.paths)
        self.silence_base = now
        # The socket's queue holds beats from before and during the freeze, read now as if new:
        # two beat intervals later only beats sent after the thaw arrive.
        self.stale_until = now + 2 * self.timers.beat_interval
        if self.state is State.ACTIVE and not self.solo:  # [T28]
            self.lease_lapsed = True
            self._release(now, f"this node was frozen for {gap:.1f} s: the partner may hold the VIPs", out)

    def _ask_partner_to_release(self, now: float, reason: str, out: list[Action]) -> None:
        self.want_takeover = reason
        self.want_since = now
        out.append(Notice(f"asking partner to release: {reason}"))
        self.next_beat = now  # tell it now, not at the next keepalive

    def _activate(self, now: float, reason: str, out: list[Action]) -> None:
        self.want_takeover = None
        self.link_released = False
        self.lease_lapsed = False
        self.activations += 1
        self.partner.gave_up = False
        self._set(State.ACTIVE, now, reason, out)
        out.append(Acquire(reason))

    def _release(self, now: float, reason: str, out: list[Action]) -> None:
        self.release_holds = self.in_holddown(now)
        self._set(State.RELEASING, now, reason, out)
        out.append(Release(reason))

    def _finish(self, now: float, out: list[Action], reason: str | None = None) -> None:
        self._set(State.STOPPED, now, reason or "services released, stopping", out, beat=False)
        out.append(SendBeat(State.STOPPED, leaving=True))
        out.append(Exit())

    def _set(self, new: State, now: float, reason: str, out: list[Action], beat: bool = True) -> None:
        old = self.state
        self.state, self.since, self.reason = new, now, reason
        if new is not State.STANDBY:
            self.want_takeover = None
        out.append(StateChanged(old, new, reason))
        if beat:
            # Tell the partner at once: it decides on our state, so waiting for
            # the next keepalive would only lengthen the outage.
            self.next_beat = now

    def _beat_if_due(self, now: float, out: list[Action]) -> None:
        if self.state is State.STOPPED or self.solo or self.started_at is None:
            return
        if self.next_beat is None or now >= self.next_beat:
            out.append(
                SendBeat(
                    self.state,
                    stopme=self.want_takeover is not None,
                    hold=not self.candidate(now),  # hold-down or a link down: not a candidate
                )
            )
            self.next_beat = now + self.timers.beat_interval
