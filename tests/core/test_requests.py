"""pulse release / pulse takeover as the machine decides them, without a loop: every row A1..A6 of
docs/state-machine.md, and what an accepted request does; plus whose services the probes watch."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from pyrhfos.core import events as ev
from pyrhfos.core.machine import Cluster, Timers
from pyrhfos.core.vocab import ProbeMode, Role, State

TIMERS = Timers(keepalive=1.0, deadtime=3.0, holddown=10.0)
DOC = Path(__file__).resolve().parents[2] / "docs" / "state-machine.md"
ROWS: dict[str, Callable[[], None]] = {}


def row(rid: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def tag(fn: Callable[[], None]) -> Callable[[], None]:
        ROWS[rid] = fn
        return fn

    return tag


def answer(actions: list[ev.Action]) -> ev.Answer:
    found = [a for a in actions if isinstance(a, ev.Answer)]
    assert len(found) == 1, f"exactly one answer per request: {actions}"
    return found[0]


def active_primary(partner: State = State.STANDBY, hold: bool = False) -> Cluster:
    c = Cluster(Role.PRIMARY, TIMERS, ("peer",))
    c.handle(ev.Start(), -0.6)  # the partner is heard standby for two beat intervals first ([T6])
    c.handle(ev.BeatReceived("peer", State.STANDBY), -0.5)
    c.handle(ev.BeatReceived("peer", State.STANDBY), 0.1)
    c.handle(ev.AcquireDone(), 0.2)
    c.handle(ev.BeatReceived("peer", partner, hold=hold), 0.3)
    assert c.state is State.ACTIVE
    return c


def standby_backup(heard: bool = True) -> Cluster:
    c = Cluster(Role.BACKUP, TIMERS, ("peer",))
    c.handle(ev.Start(), 0.0)
    if heard:
        c.handle(ev.BeatReceived("peer", State.ACTIVE), 0.1)
    assert c.state is State.STANDBY
    return c


def test_every_request_row_is_tested() -> None:
    documented = set(re.findall(r"^\| (A\d+) \|", DOC.read_text(), re.M))
    assert documented == set(ROWS) and all(fn.__name__.startswith("test_") for fn in ROWS.values())


@row("A1")
def test_release_is_refused_unless_this_node_is_active() -> None:
    c = standby_backup()
    a = answer(c.handle(ev.ReleaseRequest(), 0.5))
    assert a == ev.Answer(False, "this node is standby, not active") and c.state is State.STANDBY


@row("A2")
def test_release_is_refused_without_a_live_standby_partner() -> None:
    silent = active_primary()
    for t in (1.0, 2.0, 3.0):  # ticks, not one jump: a jump of deadtime is a freeze to the machine
        silent.handle(ev.Tick(), t)
    for c, now in ((silent, 0.3 + TIMERS.deadtime), (active_primary(State.STARTING), 0.5)):
        out = c.handle(ev.ReleaseRequest(), now)
        assert answer(out) == ev.Answer(False, "refused: no standby partner to take the services over")
        assert c.state is State.ACTIVE and ev.Release not in [type(a) for a in out]
        assert not c.in_holddown(now)


@row("A3")
def test_release_is_refused_while_the_partner_is_in_hold_down() -> None:
    c = active_primary(hold=True)
    out = c.handle(ev.ReleaseRequest(), 0.5)
    assert answer(out) == ev.Answer(False, "refused: the partner is in hold-down after a failure")
    assert c.state is State.ACTIVE


def test_an_accepted_release_hands_over_and_holds_down() -> None:
    c = active_primary()
    out = c.handle(ev.ReleaseRequest("pulse release"), 0.5)
    assert answer(out) == ev.Answer(True, "releasing: the partner takes the services over")
    assert c.state is State.RELEASING and c.reason == "pulse release" and c.in_holddown(0.6)


@row("A4")
def test_takeover_is_refused_unless_this_node_is_standby() -> None:
    c = active_primary()
    assert answer(c.handle(ev.TakeoverRequest(), 0.5)) == ev.Answer(False, "this node is active, not standby")
    starting = Cluster(Role.PRIMARY, TIMERS, ("peer",))
    starting.handle(ev.Start(), 0.0)
    refused = ev.Answer(False, "this node is starting, not standby")
    assert answer(starting.handle(ev.TakeoverRequest(), 0.1)) == refused


@row("A5")
def test_takeover_is_refused_when_the_partner_is_not_heard() -> None:
    c = standby_backup(heard=False)
    out = c.handle(ev.TakeoverRequest(), 0.5)
    why = "refused: the partner is not heard; this node takes over by itself"
    assert answer(out) == ev.Answer(False, why)
    assert c.want_takeover is None


@row("A6")
def test_takeover_is_refused_while_services_fail_here() -> None:
    c = standby_backup()
    out = c.handle(ev.TakeoverRequest(failing=("web", "ftp")), 0.5)
    assert answer(out) == ev.Answer(False, "refused: services failing here: web, ftp")
    assert c.want_takeover is None


def test_an_accepted_takeover_asks_the_partner_and_clears_hold_down() -> None:
    c = standby_backup()
    c.hold_until = 5.0
    out = c.handle(ev.TakeoverRequest("pulse takeover"), 0.5)
    assert answer(out) == ev.Answer(True, "taking over: the partner is asked to release")
    assert c.want_takeover == "pulse takeover" and not c.in_holddown(0.5)


def test_a_releasing_node_refuses_both() -> None:
    c = active_primary()
    c.handle(ev.ReleaseRequest(), 0.5)
    assert answer(c.handle(ev.ReleaseRequest(), 0.6)).message == "this node is releasing, not active"
    assert answer(c.handle(ev.TakeoverRequest(), 0.6)).message == "this node is releasing, not standby"


# -- probe mode ---------------------------------------------------------------------


def test_the_active_node_probes_its_own_services() -> None:
    c = active_primary()
    assert c.probe_mode(0.5) is ProbeMode.LOCAL
    assert c.probe_mode(0.5, busy=True) is None, "commands under way: a probe would lie"


def test_a_standby_probes_a_live_active_partner_only() -> None:
    c = standby_backup()
    assert c.probe_mode(0.5) is ProbeMode.PARTNER
    assert c.probe_mode(0.5, busy=True) is None
    assert c.probe_mode(0.1 + TIMERS.deadtime) is None, "partner dead: nothing to probe"
    c.handle(ev.BeatReceived("peer", State.RELEASING), 0.6)
    assert c.probe_mode(0.7) is None, "partner releasing: its service is going away"


def test_nobody_is_probed_while_starting() -> None:
    c = Cluster(Role.PRIMARY, TIMERS, ("peer",))
    c.handle(ev.Start(), 0.0)
    assert c.probe_mode(0.1) is None


def test_a_stopped_node_still_answers() -> None:
    """A request that arrives between Exit and the control socket's close gets its refusal."""
    c = standby_backup()
    c.handle(ev.Stop(), 0.5)
    assert c.state is State.STOPPED
    assert answer(c.handle(ev.ReleaseRequest(), 0.6)).message == "this node is stopped, not active"
    assert answer(c.handle(ev.TakeoverRequest(), 0.6)).message == "this node is stopped, not standby"


@row("A7")
def test_takeover_is_refused_while_a_link_is_down_here() -> None:
    c = standby_backup()
    c.handle(ev.LinkChanged("eth0", False), 0.2)
    reply = answer(c.handle(ev.TakeoverRequest("administrator"), 0.3))
    assert not reply.ok and reply.message == "refused: link eth0 down here"
    assert c.state is State.STANDBY and c.want_takeover is None
