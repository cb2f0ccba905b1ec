"""The state machine, driven with an injected clock: every row of docs/state-machine.md.

Each row test is tagged with its row id (``@row("T9")``); a check ties the tags to the table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from pyrhfos.core.events import (
    Acquire,
    AcquireDone,
    Action,
    Announce,
    BeatReceived,
    Exit,
    LinkChanged,
    LocalServiceFailed,
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
from pyrhfos.core.machine import Cluster, Timers
from pyrhfos.core.vocab import Role, State

TIMERS = Timers(keepalive=1.0, deadtime=3.0, holddown=10.0)
DOC = Path(__file__).resolve().parents[2] / "docs" / "state-machine.md"


def node(role: Role = Role.PRIMARY, **kw: object) -> Cluster:
    return Cluster(role, TIMERS, ("peer",), **kw)  # type: ignore[arg-type]


def beat(state: State, **kw: bool) -> BeatReceived:
    return BeatReceived("peer", state, **kw)


def kinds(actions: list[Action]) -> list[type]:
    return [type(a) for a in actions]


def beats(actions: list[Action]) -> list[SendBeat]:
    return [a for a in actions if isinstance(a, SendBeat)]


def active_primary(now: float = 0.0) -> Cluster:
    """A primary that took the services at start with a standby partner (heard so for two beat
    intervals, [T6]); the partner was last heard at ``now + 0.1``."""
    c = node()
    c.handle(Start(), now - 0.6)
    c.handle(beat(State.STANDBY), now - 0.5)
    c.handle(beat(State.STANDBY), now + 0.1)
    c.handle(AcquireDone(), now + 0.2)
    assert c.state is State.ACTIVE
    return c


def standby_backup(now: float = 0.0) -> Cluster:
    c = node(Role.BACKUP)
    c.handle(Start(), now)
    c.handle(beat(State.ACTIVE), now + 0.1)
    assert c.state is State.STANDBY
    return c


def standby_primary() -> Cluster:
    c = node()
    c.handle(Start(), 0.0)
    c.handle(beat(State.ACTIVE), 0.1)
    assert c.state is State.STANDBY
    return c


# -- one test per row of the transition table, tagged with the row id ---------

ROWS: dict[str, list[str]] = {}  # row id -> names of the tests that walk it
Test = TypeVar("Test", bound=Callable[[], None])


def row(row_id: str) -> Callable[[Test], Test]:
    """Record that the decorated test walks table row ``row_id``; the test itself is unchanged."""

    def tag(test: Test) -> Test:
        ROWS.setdefault(row_id, []).append(test.__name__)
        return test

    return tag


@row("T1")
def test_solo_node_takes_the_services_at_start_and_sends_no_beats() -> None:
    c = node(solo=True)
    out = c.handle(Start(), 0.0)
    assert c.state is State.ACTIVE and Acquire in kinds(out)
    assert not beats(out), "no backup node: nothing to send beats to"


@row("T2")
def test_backup_starts_standing_by_and_says_so() -> None:
    c = node(Role.BACKUP)
    out = c.handle(Start(), 0.0)
    assert c.state is State.STANDBY and beats(out)[0].state is State.STANDBY


@row("T3")
def test_primary_starts_by_listening_before_it_acts() -> None:
    c = node()
    out = c.handle(Start(), 0.0)
    assert c.state is State.STARTING and beats(out)[0].state is State.STARTING
    assert c.next_deadline() == pytest.approx(min(TIMERS.beat_interval, TIMERS.listen))


@row("T4")
def test_starting_primary_stands_by_when_partner_is_active_or_releasing() -> None:
    for partner in (State.ACTIVE, State.RELEASING):
        c = node()
        c.handle(Start(), 0.0)
        out = c.handle(beat(partner), 0.5)
        assert c.state is State.STANDBY and Acquire not in kinds(out)
        assert not beats(out)[0].stopme


@row("T5")
def test_forced_primary_asks_active_partner_to_stop_and_takes_over_once_it_stands_by() -> None:
    c = node(force_active=True)
    c.handle(Start(), 0.0)
    out = c.handle(beat(State.ACTIVE), 0.5)
    assert c.state is State.STANDBY and beats(out)[-1].stopme
    # The partner releases: the forced primary takes over at once.
    c.handle(beat(State.RELEASING), 0.6)
    assert c.state is State.STANDBY
    out = c.handle(beat(State.STANDBY), 0.7)
    assert c.state is State.ACTIVE and Acquire in kinds(out)


@row("T6")
def test_starting_primary_takes_over_from_a_starting_or_standby_partner() -> None:
    confirmed = 0.2 + 2 * TIMERS.beat_interval
    for partner in (State.STARTING, State.STANDBY):
        c = node()
        c.handle(Start(), 0.0)
        c.handle(beat(partner), 0.2)
        assert c.state is State.STARTING, "one beat may be out of date: it is believed two intervals on"
        out: list[Action] = []
        while c.state is State.STARTING:  # ticked as the daemon does, by next_deadline()
            t = c.next_deadline()
            assert t is not None and t <= confirmed + 1e-9
            out = c.handle(Tick(), t)
        assert t == pytest.approx(confirmed)
        assert c.state is State.ACTIVE and Acquire in kinds(out)


@row("T6")
def test_starting_primary_stands_by_when_an_active_beat_overtakes_a_delayed_standby_one() -> None:
    # Issue 14: restarted during a planned stop, the primary first hears the backup's STANDBY beat of
    # before the takeover on the slower path; the backup's ACTIVE beat on the faster path comes next.
    c = Cluster(Role.PRIMARY, TIMERS, ("public", "private"))
    c.handle(Start(), 0.0)
    c.handle(BeatReceived("private", State.STANDBY), 0.18)
    assert c.state is State.STARTING
    out = c.handle(BeatReceived("public", State.ACTIVE), 0.183)
    assert c.state is State.STANDBY and Acquire not in kinds(out)
    c.handle(BeatReceived("private", State.ACTIVE, news=False), 0.44)  # the slower copy: history
    for t in (0.42, 0.66, 0.9, 1.14):
        c.handle(BeatReceived("public", State.ACTIVE), t + 0.003)
    assert c.state is State.STANDBY and c.activations == 0, "a returning primary stays standby"


@row("T7")
def test_starting_primary_takes_over_when_its_listen_window_passes_in_silence() -> None:
    c = node()
    c.handle(Start(), 0.0)
    assert c.handle(Tick(), TIMERS.listen - 0.01) == [SendBeat(State.STARTING)] or c.state is State.STARTING
    out = c.handle(Tick(), TIMERS.listen)
    assert c.state is State.ACTIVE and Acquire in kinds(out)


@row("T8")
def test_stop_while_starting_sends_a_leaving_beat_and_exits() -> None:
    c = node()
    c.handle(Start(), 0.0)
    out = c.handle(Stop(), 0.1)
    assert c.state is State.STOPPED and kinds(out)[-2:] == [SendBeat, Exit]
    assert beats(out)[-1].leaving


@row("T9")
def test_backup_standing_by_takes_over_after_deadtime_of_silence() -> None:
    c = standby_backup()
    c.handle(Tick(), 3.0)
    assert c.state is State.STANDBY, "2.9 s of silence is not yet deadtime"
    out = c.handle(Tick(), 3.1)
    assert c.state is State.ACTIVE and Acquire in kinds(out)
    change = next(a for a in out if isinstance(a, StateChanged))
    assert "no heartbeat" in change.reason


@row("T10")
def test_standby_takes_over_when_partner_says_it_is_leaving() -> None:
    c = standby_backup()
    out = c.handle(beat(State.STOPPED, leaving=True), 0.5)
    assert c.state is State.ACTIVE and Acquire in kinds(out)


@row("T11")
def test_standby_primary_takes_over_from_a_standby_partner() -> None:
    c = standby_primary()
    c.handle(beat(State.ACTIVE), 1.0)
    out = c.handle(beat(State.STANDBY, hold=False), 2.0)
    # The partner went from active to standby: either rule makes the primary serve.
    assert c.state is State.ACTIVE and Acquire in kinds(out)
    # A standby primary whose partner was never active serves too.
    c = node()
    c.handle(Start(), 0.0)
    c.handle(beat(State.ACTIVE), 0.1)
    c.handle(beat(State.STOPPED, leaving=True), 0.2)  # partner left ...
    c.handle(AcquireDone(), 0.3)
    c.handle(Stop(), 0.4)
    assert c.state is State.RELEASING


@row("T12")
def test_standby_takes_over_once_the_active_partner_has_stepped_down() -> None:
    c = standby_backup()
    c.handle(beat(State.RELEASING), 0.5)
    assert c.state is State.STANDBY, "the VIPs are still on the partner while it releases"
    out = c.handle(beat(State.STANDBY), 0.6)
    assert c.state is State.ACTIVE and Acquire in kinds(out)
    assert "gave up" in next(a for a in out if isinstance(a, StateChanged)).reason


@row("T13")
def test_backup_takes_over_from_a_partner_standing_by_for_deadtime() -> None:
    c = node(Role.BACKUP)
    c.handle(Start(), 0.0)
    for t in (0.5, 1.5, 2.5, 3.4):
        c.handle(beat(State.STANDBY), t)
        assert c.state is State.STANDBY, "the backup gives the primary a deadtime first"
    out = c.handle(Tick(), 3.6)
    assert c.state is State.ACTIVE and Acquire in kinds(out)


@row("T14")
def test_partner_service_failure_asks_the_partner_to_release() -> None:
    c = standby_backup()
    out = c.handle(PartnerServiceFailed("web", "connection refused"), 0.5)
    assert c.state is State.STANDBY and beats(out)[-1].stopme
    assert c.want_takeover is not None


@row("T15")
def test_standby_asking_for_release_takes_over_when_partner_stands_by_or_dies() -> None:
    c = standby_backup()
    c.handle(PartnerServiceFailed("web"), 0.5)
    out = c.handle(beat(State.STANDBY), 0.7)
    assert c.state is State.ACTIVE and Acquire in kinds(out)
    # Also when the partner dies instead of answering.
    c = standby_backup()
    c.handle(PartnerServiceFailed("web"), 0.5)
    c.handle(Tick(), 3.2)
    assert c.state is State.ACTIVE


@row("T16")
def test_standby_asking_for_release_takes_over_when_partner_holds_on_for_deadtime() -> None:
    c = standby_backup()
    c.handle(PartnerServiceFailed("web"), 0.5)
    for t in (1.0, 2.0, 3.0):
        c.handle(beat(State.ACTIVE), t)
        assert c.state is State.STANDBY
    out = c.handle(beat(State.ACTIVE), 3.6)
    assert c.state is State.ACTIVE and Acquire in kinds(out)
    assert "did not release" in next(a for a in out if isinstance(a, StateChanged)).reason


@row("T17")
def test_node_in_holddown_stays_standby_until_holddown_ends() -> None:
    c = active_primary()
    c.handle(beat(State.STANDBY), 0.5)
    c.handle(LocalServiceFailed("web", "refused"), 1.0)
    c.handle(ReleaseDone(), 1.1)
    assert c.state is State.STANDBY and c.in_holddown(1.1)
    c.handle(beat(State.ACTIVE), 1.2)
    out = c.handle(beat(State.STANDBY), 1.5)
    assert c.state is State.STANDBY and Acquire not in kinds(out)
    assert beats(c.handle(Tick(), 2.5))[0].hold, "hold-down is announced in the beats"
    for t in (3.0, 5.0, 7.0, 9.0, 10.5):
        c.handle(beat(State.STANDBY), t)
    assert c.state is State.STANDBY
    c.handle(beat(State.STANDBY), 11.5)
    assert c.state is State.ACTIVE, "hold-down over: the primary serves again"


@row("T18")
def test_takeover_request_asks_the_partner_to_release() -> None:
    c = standby_primary()
    out = c.handle(TakeoverRequest(), 0.5)
    assert beats(out)[-1].stopme and c.state is State.STANDBY


@row("T19")
def test_stop_while_standing_by_sends_a_last_beat_and_exits() -> None:
    c = standby_backup()
    out = c.handle(Stop(), 0.5)
    assert c.state is State.STOPPED and kinds(out)[-2:] == [SendBeat, Exit]


def tick_until(c: Cluster, until: float, start: float = 0.0) -> None:
    """Tick every half keepalive, as the daemon does at least once per keepalive."""
    t = start
    while t < until:
        t = min(until, t + TIMERS.keepalive / 2)
        c.handle(Tick(), t)


@row("T20")
def test_active_backup_releases_when_partner_is_also_active() -> None:
    c = node(Role.BACKUP)
    c.handle(Start(), 0.0)
    tick_until(c, 3.0)
    assert c.state is State.ACTIVE
    out = c.handle(beat(State.ACTIVE), 3.5)
    assert c.state is State.RELEASING and Release in kinds(out)


@row("T21")
def test_active_primary_keeps_services_and_reannounces_when_partner_is_also_active() -> None:
    c = active_primary()
    out = c.handle(beat(State.ACTIVE), 0.5)
    assert c.state is State.ACTIVE and Announce in kinds(out)


@row("T22")
def test_active_node_asked_to_stop_releases_and_holds_down() -> None:
    c = active_primary()
    out = c.handle(beat(State.STANDBY, stopme=True), 0.5)
    assert c.state is State.RELEASING and Release in kinds(out) and c.in_holddown(0.6)
    c.handle(ReleaseDone(), 0.6)
    c.handle(beat(State.STANDBY, stopme=True), 0.7)
    assert c.state is State.STANDBY, "the partner is taking over: do not take it back"


@row("T23")
def test_failed_start_cmd_releases_and_holds_down() -> None:
    c = node()
    c.handle(Start(), -0.6)
    c.handle(beat(State.STANDBY), -0.5)
    c.handle(beat(State.STANDBY), 0.1)
    out = c.handle(AcquireDone(ok=False, reason="start_cmd exited 1"), 0.2)
    assert c.state is State.RELEASING and Release in kinds(out) and c.in_holddown(0.3)


@row("T24")
def test_local_service_failure_hands_over_to_a_healthy_standby_partner() -> None:
    c = active_primary()
    c.handle(beat(State.STANDBY), 0.5)
    out = c.handle(LocalServiceFailed("web", "refused"), 1.0)
    assert c.state is State.RELEASING and Release in kinds(out) and c.in_holddown(1.0)


@row("T25")
def test_local_service_failure_restarts_locally_when_partner_is_dead_or_held_down() -> None:
    c = node(solo=True)
    c.handle(Start(), 0.0)
    out = c.handle(LocalServiceFailed("web", "refused"), 1.0)
    assert c.state is State.ACTIVE and kinds(out) == [RestartService]
    c = active_primary()
    c.handle(beat(State.STANDBY, hold=True), 0.5)
    out = c.handle(LocalServiceFailed("web", "refused"), 1.0)
    assert c.state is State.ACTIVE and RestartService in kinds(out)


@row("T26")
def test_release_request_releases_and_holds_down() -> None:
    c = active_primary()
    out = c.handle(ReleaseRequest(), 0.5)
    assert c.state is State.RELEASING and Release in kinds(out) and c.in_holddown(0.6)


@row("T27")
def test_stop_while_active_releases_before_it_exits() -> None:
    c = active_primary()
    out = c.handle(Stop(), 0.5)
    assert c.state is State.RELEASING and Release in kinds(out) and Exit not in kinds(out)


@row("T28")
def test_active_node_releases_after_a_freeze_of_deadtime() -> None:
    c = active_primary()
    c.handle(beat(State.STANDBY), 0.5)
    out = c.handle(beat(State.ACTIVE), 10.0)  # a stale beat read after the thaw
    assert c.state is State.RELEASING and Release in kinds(out)
    c.handle(ReleaseDone(), 10.1)
    c.handle(beat(State.ACTIVE), 10.2)
    assert c.state is State.STANDBY


@row("T29")
def test_release_done_stands_by_and_says_so() -> None:
    c = active_primary()
    c.handle(ReleaseRequest(), 0.5)
    out = c.handle(ReleaseDone(), 0.6)
    assert c.state is State.STANDBY and beats(out)[0].state is State.STANDBY


@row("T30")
def test_stopping_node_exits_with_a_leaving_beat_once_released() -> None:
    c = active_primary()
    c.handle(Stop(), 0.5)
    out = c.handle(ReleaseDone(), 0.6)
    assert c.state is State.STOPPED and kinds(out)[-2:] == [SendBeat, Exit] and beats(out)[-1].leaving


@row("T31")
def test_stop_while_releasing_exits_after_the_release() -> None:
    c = active_primary()
    c.handle(ReleaseRequest(), 0.5)
    assert c.handle(Stop(), 0.6) == [] and c.state is State.RELEASING
    c.handle(ReleaseDone(), 0.7)
    assert c.state is State.STOPPED


@row("T32")
def test_beats_go_out_every_beat_interval_twelve_and_a_half_per_deadtime() -> None:
    c = active_primary()  # its last beat went out at 0.2
    step = TIMERS.beat_interval
    assert step == pytest.approx(TIMERS.deadtime / 12.5), "12.5 beats per deadtime, never fewer"
    assert beats(c.handle(Tick(), 0.2 + step / 2)) == []
    assert beats(c.handle(Tick(), 0.2 + step))[0].state is State.ACTIVE
    assert c.next_deadline() == pytest.approx(0.2 + 2 * step)
    slow = Timers(keepalive=1.0, deadtime=30.0)
    assert slow.beat_interval == 1.0, "never slower than keepalive"


@row("T33")
def test_stopped_node_ignores_every_event() -> None:
    c = standby_backup()
    c.handle(Stop(), 0.5)
    for ev in (Tick(), Start(), beat(State.STANDBY), Stop(), AcquireDone(), ReleaseDone()):
        assert c.handle(ev, 1.0) == []
    assert c.next_deadline() is None


@row("T34")
def test_stopping_node_says_leaving_once_services_stop_before_vips_go_down() -> None:
    c = active_primary()
    c.handle(Stop(), 0.5)
    out = c.handle(ServicesStopped(), 0.6)
    assert c.state is State.RELEASING and beats(out) == [SendBeat(State.RELEASING, leaving=True)]
    c = active_primary()
    c.handle(ReleaseRequest(), 0.5)  # not stopping: the partner sees us give up once the VIPs are down
    assert c.handle(ServicesStopped(), 0.6) == []


def test_every_documented_row_has_a_test_and_every_tagged_row_is_documented() -> None:
    documented = set(re.findall(r"^\| (T\d+) \|", DOC.read_text(), re.M))
    assert documented == set(ROWS)
    tagged = [name for names in ROWS.values() for name in names]
    # A tagged function that pytest does not collect would count as coverage without running.
    assert all(name.startswith("test_") and callable(globals().get(name)) for name in tagged)


# -- whole scenarios: two machines and a simulated network -------------------


class Pair:
    """Two machines wired by a lossless in-memory link; the test owns the clock."""

    def __init__(self, force_active: bool = False) -> None:
        self.nodes = {
            "a": Cluster(Role.PRIMARY, TIMERS, ("b",), force_active=force_active),
            "b": Cluster(Role.BACKUP, TIMERS, ("a",)),
        }
        self.up = {"a": True, "b": True}  # daemon running
        self.link = {"a": True, "b": True}  # its network link up
        self.holders: set[str] = set()
        self.pending: list[tuple[float, str, object]] = []
        self.now = 0.0

    def feed(self, name: str, event: object) -> None:
        for action in self.nodes[name].handle(event, self.now):  # type: ignore[arg-type]
            match action:
                case SendBeat() if self.link[name] and self.link["b" if name == "a" else "a"]:
                    other = "b" if name == "a" else "a"
                    ev = BeatReceived(name, action.state, action.leaving, action.stopme, action.hold)
                    self.pending.append((self.now + 0.001, other, ev))
                case Acquire():
                    self.holders.add(name)
                    self.pending.append((self.now + 0.01, name, AcquireDone()))
                case Release():
                    self.holders.discard(name)
                    self.pending.append((self.now + 0.01, name, ReleaseDone()))

    def run(self, until: float) -> None:
        steps = 0
        while self.now < until:
            steps += 1
            assert steps < 100_000
            deadlines = [n.next_deadline() for k, n in self.nodes.items() if self.up[k]]
            times = [t for t in deadlines if t is not None] + [p[0] for p in self.pending] + [until]
            self.now = max(self.now, min(times))
            due = [p for p in self.pending if p[0] <= self.now]
            self.pending = [p for p in self.pending if p[0] > self.now]
            for _, name, ev in due:
                if self.up[name]:
                    self.feed(name, ev)
            for name in self.nodes:
                if self.up[name]:
                    self.feed(name, Tick())

    def start(self, *names: str) -> None:
        for name in names:
            self.up[name] = True
            self.feed(name, Start())


def test_pair_started_together_leaves_the_primary_holding() -> None:
    p = Pair()
    p.start("a", "b")
    p.run(20.0)
    assert p.holders == {"a"}


def test_pair_primary_dies_backup_takes_over_within_deadtime() -> None:
    p = Pair()
    p.start("a", "b")
    p.run(5.0)
    p.up["a"] = p.link["a"] = False
    p.holders.discard("a")
    p.run(5.0 + TIMERS.deadtime + 0.01)
    assert p.holders == {"b"}
    assert p.nodes["b"].since - 5.0 <= TIMERS.deadtime


def test_pair_returning_primary_stays_standby_unless_forced() -> None:
    for forced in (False, True):
        p = Pair()
        p.start("b")
        p.run(10.0)
        assert p.holders == {"b"}
        p.nodes["a"] = Cluster(Role.PRIMARY, TIMERS, ("b",), force_active=forced)
        p.start("a")
        p.run(30.0)
        assert p.holders == ({"a"} if forced else {"b"})


def test_pair_clean_stop_hands_over_without_deadtime() -> None:
    p = Pair()
    p.start("a", "b")
    p.run(5.0)
    p.feed("a", Stop())
    p.run(5.1)
    assert p.holders == {"b"}
    assert p.nodes["a"].state is State.STOPPED


def test_pair_partition_heals_to_one_holder() -> None:
    p = Pair()
    p.start("a", "b")
    p.run(5.0)
    p.link["a"] = False  # heartbeat partition: a keeps the VIP, b hears nothing
    p.run(10.0)
    assert p.holders == {"a", "b"}
    p.link["a"] = True
    p.run(10.0 + 2 * TIMERS.keepalive)
    assert p.holders == {"a"}


def test_pair_partner_probe_failure_moves_the_services_once() -> None:
    p = Pair()
    p.start("a", "b")
    p.run(5.0)
    p.feed("b", PartnerServiceFailed("web", "refused"))
    p.run(20.0)
    assert p.holders == {"b"}
    assert p.nodes["a"].activations == 1 and p.nodes["b"].activations == 1


def test_pair_service_failure_moves_once_and_does_not_ping_pong() -> None:
    p = Pair()
    p.start("a", "b")
    p.run(5.0)
    p.feed("a", LocalServiceFailed("web", "refused"))
    p.run(6.0)
    assert p.holders == {"b"}
    p.feed("b", LocalServiceFailed("web", "refused"))  # b fails while a is held down
    p.run(8.0)
    assert p.holders == {"b"}, "a is in hold-down: b restarts its service instead"


# -- issue 14: what a schedule search found ----------------------------------------------


def standby_hearing_every_beat_but(lost: int) -> Cluster:
    """A standby backup hears the active primary's beats, then ``lost`` of them in a row are lost."""
    c = node(Role.BACKUP)
    c.handle(Start(), 0.0)
    step = TIMERS.beat_interval
    t = 0.0
    for _ in range(20):
        t += step
        c.handle(beat(State.ACTIVE), t)
    last = t
    for _ in range(lost):  # the machine is ticked as the daemon would, at its deadlines
        t += step
        deadline = c.next_deadline()
        while deadline is not None and deadline <= t:
            c.handle(Tick(), deadline)
            deadline = c.next_deadline()
    t = last + (lost + 1) * step  # the next beat arrives
    deadline = c.next_deadline()
    while deadline is not None and deadline < t:
        c.handle(Tick(), deadline)
        deadline = c.next_deadline()
    if c.state is State.STANDBY:
        c.handle(beat(State.ACTIVE), t)
    return c


def test_eleven_beats_lost_in_a_row_never_fail_over() -> None:
    assert standby_hearing_every_beat_but(11).state is State.STANDBY


def test_twelve_beats_lost_in_a_row_do() -> None:
    assert standby_hearing_every_beat_but(12).state is State.ACTIVE


@row("T35")
def test_a_starting_primary_that_hears_its_partner_leave_serves_at_once() -> None:
    """Issue 14, item 7: it waited out its listen window (2 s with nobody holding the VIP)."""
    c = node()
    c.handle(Start(), 0.0)
    out = c.handle(beat(State.STOPPED, leaving=True), 0.1)
    assert c.state is State.ACTIVE and Acquire in kinds(out)
    assert c.reason == "partner stopped cleanly"


@row("T36")
def test_a_node_taking_over_waits_for_its_partners_stop_cmd() -> None:
    """Issue 14, item 2: after deadtime it started its service while the partner's stop_cmd still ran."""
    timers = Timers(keepalive=1.0, deadtime=3.0, holddown=10.0, command_limit=20.0)
    c = Cluster(Role.BACKUP, timers, ("peer",))
    c.handle(Start(), 0.0)
    c.handle(beat(State.ACTIVE), 0.1)
    c.handle(TakeoverRequest(), 0.5)
    t = 0.5
    while t < 0.5 + 3.0 + 20.0 - 0.5:  # the partner beats RELEASING all along: its stop_cmd runs
        t += 0.25
        c.handle(beat(State.RELEASING), t)
        assert c.state is State.STANDBY, f"took over at {t} while the partner still released"
    deadline = c.next_deadline()
    assert deadline is not None and deadline <= 0.5 + 3.0 + 20.0
    c.handle(beat(State.RELEASING), 0.5 + 3.0 + 20.0)
    assert c.state is State.ACTIVE and "after its time limit" in c.reason
    done = Cluster(Role.BACKUP, timers, ("peer",))
    done.handle(Start(), 0.0)
    done.handle(beat(State.ACTIVE), 0.1)
    done.handle(TakeoverRequest(), 0.5)
    for t in (1.0, 2.0, 3.0, 4.0, 5.0):
        done.handle(beat(State.RELEASING), t)
    assert done.state is State.STANDBY
    done.handle(beat(State.STANDBY), 6.0)
    assert done.state is State.ACTIVE, "takes over once the partner says it is done"


def test_the_lease_is_renewed_while_releasing_but_not_after_a_freeze() -> None:
    """Issue 14, item 1: a planned stop with a long stop_cmd let the lease lapse (2 s with no holder)."""
    c = active_primary()
    assert c.renews_lease()
    c.handle(Stop(), 0.5)
    assert c.state is State.RELEASING and c.renews_lease(), "stop_cmd runs: the VIPs are still ours"
    frozen = active_primary()
    frozen.handle(Tick(), 0.2 + 10.0)  # a freeze of 10 s
    assert frozen.state is State.RELEASING and not frozen.renews_lease(), "the partner may hold them"
    standby = standby_backup()
    assert not standby.renews_lease()


@row("T37")
def test_beats_queued_during_a_freeze_are_not_taken_as_news() -> None:
    """Issue 14, item 6: after a freeze the primary applied four queued STANDBY beats from before the
    backup's takeover, took the VIP back and made the backup release."""
    c = active_primary()
    c.handle(beat(State.STANDBY), 0.5)
    c.handle(Tick(), 12.0)  # the thaw: a freeze of 11.5 s, the backup took over meanwhile
    assert c.state is State.RELEASING
    for t in (12.0, 12.001, 12.002, 12.003):  # the socket's queue: beats sent before the takeover
        c.handle(beat(State.STANDBY), t)
    c.handle(ReleaseDone(), 12.01)
    assert c.state is State.STANDBY and c.partner.state is None, "nothing learnt from stale beats"
    c.handle(beat(State.ACTIVE), 12.01 + 2 * TIMERS.beat_interval)  # the first beat sent after the thaw
    assert c.state is State.STANDBY and c.partner.state is State.ACTIVE
    assert c.activations == 1


def test_hold_down_counts_from_the_end_of_the_release() -> None:
    """Issue 14, item 9: counted from the start of a long stop_cmd, the services came back sooner than
    reentry after the partner took them."""
    c = active_primary()
    c.handle(beat(State.STANDBY), 0.5)
    c.handle(LocalServiceFailed("web", "refused"), 1.0)
    assert c.state is State.RELEASING
    for t in (2.0, 3.0, 4.0, 5.0):  # a 5 s stop_cmd; the standby partner keeps beating
        c.handle(beat(State.STANDBY), t)
    c.handle(ReleaseDone(), 6.0)
    assert c.in_holddown(6.0 + TIMERS.holddown - 0.1), "reentry from when the partner can hold them"
    assert not c.in_holddown(6.0 + TIMERS.holddown + 0.1)


def test_a_one_way_partition_does_not_flap_the_services() -> None:
    """Issue 14, item 8: the primary deaf to the backup, its service broken: 14 backup activations in 60 s."""
    c = standby_backup()
    t = 0.1
    while t < 60.0:
        t += 0.25
        c.handle(beat(State.ACTIVE), t)  # the primary's beats arrive; ours never reach it
        if c.state is State.STANDBY and c.want_takeover is None:
            c.handle(PartnerServiceFailed("web", "refused"), t)
        if c.state is State.RELEASING:
            c.handle(ReleaseDone(), t)
    assert c.activations <= 1 + 60.0 / TIMERS.holddown, f"{c.activations} activations in 60 s"


@row("T38")
def test_a_slower_paths_older_beat_proves_the_path_but_changes_nothing() -> None:
    """Issue 14, item 3: applied, the primary's older ACTIVE beat (public path, 60 ms slower) made the
    backup, active on the LEAVING beat (private path), see both nodes active and release."""
    c = standby_backup()
    c.handle(beat(State.STOPPED, leaving=True), 1.0)
    assert c.state is State.ACTIVE
    out = c.handle(BeatReceived("peer", State.ACTIVE, news=False), 1.06)
    assert c.state is State.ACTIVE and Release not in kinds(out)
    assert c.partner.last_heard["peer"] == 1.06 and c.partner.left


# -- links (T39-T41) ---------------------------------------------------------


@row("T39")
def test_active_node_that_loses_a_link_releases_everything_and_says_it_cannot_serve() -> None:
    c = active_primary()
    out = c.handle(LinkChanged("eth0", False), 1.0)
    assert c.state is State.RELEASING and Release in kinds(out)
    c.handle(ReleaseDone(), 1.1)
    assert c.state is State.STANDBY
    assert beats(c.handle(Tick(), 2.0))[-1].hold, "the partner must not wait for us"


@row("T40")
def test_node_without_link_never_takes_over_and_waits_a_deadtime_after_it_returns() -> None:
    c = standby_backup()
    c.handle(LinkChanged("eth0", False), 0.5)
    for t in range(1, 20):  # the primary falls silent: still no takeover
        c.handle(Tick(), float(t))
    assert c.state is State.STANDBY and c.activations == 0
    c.handle(LinkChanged("eth0", True), 20.0)
    assert c.state is State.STANDBY, "the partner gets one deadtime to be heard first"
    c.handle(Tick(), 20.0 + TIMERS.deadtime / 2)
    assert c.state is State.STANDBY
    c.handle(Tick(), 20.0 + TIMERS.deadtime + 0.01)
    assert c.state is State.ACTIVE


@row("T40")
def test_starting_primary_without_link_stands_by() -> None:
    c = node()
    c.handle(Start(), 0.0)
    c.handle(LinkChanged("eth0", False), 0.01)
    assert c.state is State.STANDBY and "eth0 down" in c.reason
    for t in range(1, 10):
        c.handle(Tick(), float(t))
    assert c.state is State.STANDBY


@row("T41")
def test_solo_node_comes_back_when_its_link_does() -> None:
    c = node(solo=True)
    c.handle(Start(), 0.0)
    c.handle(AcquireDone(), 0.1)
    c.handle(LinkChanged("eth0", False), 1.0)
    c.handle(ReleaseDone(), 1.1)
    assert c.state is State.STANDBY
    out = c.handle(LinkChanged("eth0", True), 2.0)
    assert c.state is State.ACTIVE and Acquire in kinds(out)


@row("T42")
def test_primary_serves_when_both_nodes_are_in_hold_down() -> None:
    c = active_primary()
    c.handle(beat(State.STANDBY), 0.5)
    c.handle(LocalServiceFailed("web", "refused"), 1.0)  # T24: released, held down
    c.handle(ReleaseDone(), 1.1)
    assert c.state is State.STANDBY and c.in_holddown(1.2)
    c.handle(beat(State.STANDBY, hold=False), 1.2)
    assert c.state is State.STANDBY, "the partner can serve: hold-down keeps us out"
    out = c.handle(beat(State.STANDBY, hold=True), 1.3)  # it cannot either
    assert c.state is State.ACTIVE and Acquire in kinds(out)


def test_backup_in_hold_down_still_waits_for_a_primary_in_hold_down() -> None:
    c = standby_backup()
    c.hold_until = 100.0
    c.handle(beat(State.STANDBY, hold=True), 0.5)
    assert c.state is State.STANDBY, "only the primary breaks the tie"
