"""The state machine, driven with an injected clock: every row of docs/state-machine.md."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from pyrhfos.core.machine import (
    Acquire,
    AcquireDone,
    Action,
    Announce,
    BeatReceived,
    Cluster,
    Exit,
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
    Timers,
)
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
    """A primary that took the services at start with a standby partner."""
    c = node()
    c.handle(Start(), now)
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


# -- one function per row of the transition table ---------------------------


def t1() -> None:
    c = node(solo=True)
    out = c.handle(Start(), 0.0)
    assert c.state is State.ACTIVE and Acquire in kinds(out)
    assert not beats(out), "no backup node: nothing to send beats to"


def t2() -> None:
    c = node(Role.BACKUP)
    out = c.handle(Start(), 0.0)
    assert c.state is State.STANDBY and beats(out)[0].state is State.STANDBY


def t3() -> None:
    c = node()
    out = c.handle(Start(), 0.0)
    assert c.state is State.STARTING and beats(out)[0].state is State.STARTING
    assert c.next_deadline() == pytest.approx(min(TIMERS.beat_interval, TIMERS.listen))


def t4() -> None:
    for partner in (State.ACTIVE, State.RELEASING):
        c = node()
        c.handle(Start(), 0.0)
        out = c.handle(beat(partner), 0.5)
        assert c.state is State.STANDBY and Acquire not in kinds(out)
        assert not beats(out)[0].stopme


def t5() -> None:
    c = node(force_active=True)
    c.handle(Start(), 0.0)
    out = c.handle(beat(State.ACTIVE), 0.5)
    assert c.state is State.STANDBY and beats(out)[-1].stopme
    # The partner releases: the forced primary takes over at once.
    c.handle(beat(State.RELEASING), 0.6)
    assert c.state is State.STANDBY
    out = c.handle(beat(State.STANDBY), 0.7)
    assert c.state is State.ACTIVE and Acquire in kinds(out)


def t6() -> None:
    for partner in (State.STARTING, State.STANDBY):
        c = node()
        c.handle(Start(), 0.0)
        out = c.handle(beat(partner), 0.2)
        assert c.state is State.ACTIVE and Acquire in kinds(out)


def t7() -> None:
    c = node()
    c.handle(Start(), 0.0)
    assert c.handle(Tick(), TIMERS.listen - 0.01) == [SendBeat(State.STARTING)] or c.state is State.STARTING
    out = c.handle(Tick(), TIMERS.listen)
    assert c.state is State.ACTIVE and Acquire in kinds(out)


def t8() -> None:
    c = node()
    c.handle(Start(), 0.0)
    out = c.handle(Stop(), 0.1)
    assert c.state is State.STOPPED and kinds(out)[-2:] == [SendBeat, Exit]
    assert beats(out)[-1].leaving


def t9() -> None:
    c = standby_backup()
    c.handle(Tick(), 3.0)
    assert c.state is State.STANDBY, "2.9 s of silence is not yet deadtime"
    out = c.handle(Tick(), 3.1)
    assert c.state is State.ACTIVE and Acquire in kinds(out)
    change = next(a for a in out if isinstance(a, StateChanged))
    assert "no heartbeat" in change.reason


def t10() -> None:
    c = standby_backup()
    out = c.handle(beat(State.STOPPED, leaving=True), 0.5)
    assert c.state is State.ACTIVE and Acquire in kinds(out)


def t11() -> None:
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


def t12() -> None:
    c = standby_backup()
    c.handle(beat(State.RELEASING), 0.5)
    assert c.state is State.STANDBY, "the VIPs are still on the partner while it releases"
    out = c.handle(beat(State.STANDBY), 0.6)
    assert c.state is State.ACTIVE and Acquire in kinds(out)
    assert "gave up" in next(a for a in out if isinstance(a, StateChanged)).reason


def t13() -> None:
    c = node(Role.BACKUP)
    c.handle(Start(), 0.0)
    for t in (0.5, 1.5, 2.5, 3.4):
        c.handle(beat(State.STANDBY), t)
        assert c.state is State.STANDBY, "the backup gives the primary a deadtime first"
    out = c.handle(Tick(), 3.6)
    assert c.state is State.ACTIVE and Acquire in kinds(out)


def t14() -> None:
    c = standby_backup()
    out = c.handle(PartnerServiceFailed("web", "connection refused"), 0.5)
    assert c.state is State.STANDBY and beats(out)[-1].stopme
    assert c.want_takeover is not None


def t15() -> None:
    c = standby_backup()
    c.handle(PartnerServiceFailed("web"), 0.5)
    out = c.handle(beat(State.STANDBY), 0.7)
    assert c.state is State.ACTIVE and Acquire in kinds(out)
    # Also when the partner dies instead of answering.
    c = standby_backup()
    c.handle(PartnerServiceFailed("web"), 0.5)
    c.handle(Tick(), 3.2)
    assert c.state is State.ACTIVE


def t16() -> None:
    c = standby_backup()
    c.handle(PartnerServiceFailed("web"), 0.5)
    for t in (1.0, 2.0, 3.0):
        c.handle(beat(State.ACTIVE), t)
        assert c.state is State.STANDBY
    out = c.handle(beat(State.ACTIVE), 3.6)
    assert c.state is State.ACTIVE and Acquire in kinds(out)
    assert "did not release" in next(a for a in out if isinstance(a, StateChanged)).reason


def t17() -> None:
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


def t18() -> None:
    c = standby_primary()
    out = c.handle(TakeoverRequest(), 0.5)
    assert beats(out)[-1].stopme and c.state is State.STANDBY


def t19() -> None:
    c = standby_backup()
    out = c.handle(Stop(), 0.5)
    assert c.state is State.STOPPED and kinds(out)[-2:] == [SendBeat, Exit]


def tick_until(c: Cluster, until: float, start: float = 0.0) -> None:
    """Tick every half keepalive, as the daemon does at least once per keepalive."""
    t = start
    while t < until:
        t = min(until, t + TIMERS.keepalive / 2)
        c.handle(Tick(), t)


def t20() -> None:
    c = node(Role.BACKUP)
    c.handle(Start(), 0.0)
    tick_until(c, 3.0)
    assert c.state is State.ACTIVE
    out = c.handle(beat(State.ACTIVE), 3.5)
    assert c.state is State.RELEASING and Release in kinds(out)


def t21() -> None:
    c = active_primary()
    out = c.handle(beat(State.ACTIVE), 0.5)
    assert c.state is State.ACTIVE and Announce in kinds(out)


def t22() -> None:
    c = active_primary()
    out = c.handle(beat(State.STANDBY, stopme=True), 0.5)
    assert c.state is State.RELEASING and Release in kinds(out) and c.in_holddown(0.6)
    c.handle(ReleaseDone(), 0.6)
    c.handle(beat(State.STANDBY, stopme=True), 0.7)
    assert c.state is State.STANDBY, "the partner is taking over: do not take it back"


def t23() -> None:
    c = node()
    c.handle(Start(), 0.0)
    c.handle(beat(State.STANDBY), 0.1)
    out = c.handle(AcquireDone(ok=False, reason="start_cmd exited 1"), 0.2)
    assert c.state is State.RELEASING and Release in kinds(out) and c.in_holddown(0.3)


def t24() -> None:
    c = active_primary()
    c.handle(beat(State.STANDBY), 0.5)
    out = c.handle(LocalServiceFailed("web", "refused"), 1.0)
    assert c.state is State.RELEASING and Release in kinds(out) and c.in_holddown(1.0)


def t25() -> None:
    c = node(solo=True)
    c.handle(Start(), 0.0)
    out = c.handle(LocalServiceFailed("web", "refused"), 1.0)
    assert c.state is State.ACTIVE and kinds(out) == [RestartService]
    c = active_primary()
    c.handle(beat(State.STANDBY, hold=True), 0.5)
    out = c.handle(LocalServiceFailed("web", "refused"), 1.0)
    assert c.state is State.ACTIVE and RestartService in kinds(out)


def t26() -> None:
    c = active_primary()
    out = c.handle(ReleaseRequest(), 0.5)
    assert c.state is State.RELEASING and Release in kinds(out) and c.in_holddown(0.6)


def t27() -> None:
    c = active_primary()
    out = c.handle(Stop(), 0.5)
    assert c.state is State.RELEASING and Release in kinds(out) and Exit not in kinds(out)


def t28() -> None:
    c = active_primary()
    c.handle(beat(State.STANDBY), 0.5)
    out = c.handle(beat(State.ACTIVE), 10.0)  # a stale beat read after the thaw
    assert c.state is State.RELEASING and Release in kinds(out)
    c.handle(ReleaseDone(), 10.1)
    c.handle(beat(State.ACTIVE), 10.2)
    assert c.state is State.STANDBY


def t29() -> None:
    c = active_primary()
    c.handle(ReleaseRequest(), 0.5)
    out = c.handle(ReleaseDone(), 0.6)
    assert c.state is State.STANDBY and beats(out)[0].state is State.STANDBY


def t30() -> None:
    c = active_primary()
    c.handle(Stop(), 0.5)
    out = c.handle(ReleaseDone(), 0.6)
    assert c.state is State.STOPPED and kinds(out)[-2:] == [SendBeat, Exit] and beats(out)[-1].leaving


def t31() -> None:
    c = active_primary()
    c.handle(ReleaseRequest(), 0.5)
    assert c.handle(Stop(), 0.6) == [] and c.state is State.RELEASING
    c.handle(ReleaseDone(), 0.7)
    assert c.state is State.STOPPED


def t32() -> None:
    c = active_primary()  # its last beat went out at 0.2
    step = TIMERS.beat_interval
    assert step == pytest.approx(TIMERS.deadtime / 12), "12 beats per deadtime, never fewer"
    assert beats(c.handle(Tick(), 0.2 + step / 2)) == []
    assert beats(c.handle(Tick(), 0.2 + step))[0].state is State.ACTIVE
    assert c.next_deadline() == pytest.approx(0.2 + 2 * step)
    slow = Timers(keepalive=1.0, deadtime=30.0)
    assert slow.beat_interval == 1.0, "never slower than keepalive"


def t33() -> None:
    c = standby_backup()
    c.handle(Stop(), 0.5)
    for ev in (Tick(), Start(), beat(State.STANDBY), Stop(), AcquireDone(), ReleaseDone()):
        assert c.handle(ev, 1.0) == []
    assert c.next_deadline() is None


def t34() -> None:
    c = active_primary()
    c.handle(Stop(), 0.5)
    out = c.handle(ServicesStopped(), 0.6)
    assert c.state is State.RELEASING and beats(out) == [SendBeat(State.RELEASING, leaving=True)]
    c = active_primary()
    c.handle(ReleaseRequest(), 0.5)  # not stopping: the partner sees us give up once the VIPs are down
    assert c.handle(ServicesStopped(), 0.6) == []


ROWS: dict[str, Callable[[], None]] = {
    name.upper(): fn for name, fn in globals().items() if re.fullmatch(r"t\d+", name) and callable(fn)
}


def test_every_documented_transition_is_walked() -> None:
    documented = set(re.findall(r"^\| (T\d+) \|", DOC.read_text(), re.M))
    assert documented == set(ROWS)


@pytest.mark.parametrize("row", sorted(ROWS, key=lambda r: int(r[1:])))
def test_transition(row: str) -> None:
    ROWS[row]()


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


def test_pair_start_together_primary_holds() -> None:
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


def test_pair_partner_probe_failure_moves_once() -> None:
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
