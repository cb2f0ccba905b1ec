"""`pulse simulate`'s simulation on a few timelines: two real daemons agree, fail over and hand over in
virtual time as the daemon's rules say (keepalive 1, deadtime 3, two heartbeat paths)."""

from __future__ import annotations

import time

import pytest
from simrig import config, run, states, unheld

from pyrhfos.core.vocab import Role
from pyrhfos.sim.timeline import parse
from pyrhfos.sim.world import simulate


def test_both_start_the_primary_serves() -> None:
    world = run("", 20)
    assert states(world.records) == [("backup", "starting", "standby"), ("primary", "starting", "active")]
    assert world.holders() == {"web1": ("primary",)}
    assert world.running[(Role.PRIMARY, "web1")] and not world.running.get((Role.BACKUP, "web1"))


def test_a_crash_fails_over_deadtime_after_the_last_beat() -> None:
    world = run("10 primary crash", 20)
    last = world.last_sent[Role.PRIMARY]
    assert 9.0 <= last < 10.0
    takeover = [r for r in world.records if r.kind == "state" and r.node == "backup"][-1]
    assert (takeover.old, takeover.new) == ("standby", "active")
    assert takeover.reason == "no heartbeat from partner for 3.00 s"
    assert takeover.t == pytest.approx(last + 3.0, abs=0.01)
    assert world.holders() == {"web1": ("backup",)}


def test_a_planned_stop_hands_over_without_a_gap() -> None:
    world = run("10 primary stop", 20)
    assert states(world.records)[2:] == [
        ("primary", "active", "releasing"),
        ("backup", "standby", "active"),
        ("primary", "releasing", "stopped"),
    ]
    reasons = [r.reason for r in world.records if r.kind == "state"]
    assert "partner stopped cleanly" in reasons
    assert unheld(world.records, "web1", 1.0, 20.0) < 0.005
    assert world.holders() == {"web1": ("backup",)}
    assert not world.running[(Role.PRIMARY, "web1")]


def test_a_partition_makes_two_holders_and_the_heal_one() -> None:
    world = run("10 primary partition\n20 primary heal", 40)
    during = [r for r in world.records if r.kind == "vip" and 10 < r.t < 20]
    assert any(r.holders == ("backup", "primary") for r in during)  # both sides think the other dead
    after = [r for r in world.records if r.kind == "vip" and r.t >= 20]
    assert after and after[-1].holders in {("primary",), ("backup",)}
    settled = after[-1].t
    assert settled - 20 <= 2 * 1 + 2 * 0.05 + 0.1  # two keepalives, a release and an acquire
    assert not [r for r in world.records if r.kind == "state" and r.t > settled + 0.5]


def test_operator_takeover_and_release_are_answered() -> None:
    world = run("5 backup takeover\n15 backup release", 30)
    notes = [r.reason for r in world.records if r.kind == "note"]
    assert len(notes) == 2 and notes[0].startswith("takeover: ") and notes[1].startswith("release: ")
    assert notes[0] == "takeover: taking over: the partner is asked to release"
    took = [r for r in world.records if r.kind == "state" and r.node == "backup" and r.new == "active"]
    assert took and took[0].reason == "administrator asked this node to take over (pulse takeover)"
    assert ("backup",) in [r.holders for r in world.records if r.kind == "vip"]


def test_a_failing_service_moves_to_the_partner() -> None:
    world = run("5 primary service-fail web1", 20)
    assert world.holders() == {"web1": ("backup",)}
    assert any("web1" in r.reason for r in world.records if r.kind == "state" and r.node == "backup")


def test_one_timeline_one_history() -> None:
    cfg = config()
    text = "3 primary partition\n4 backup freeze 2\n8 primary heal\n12 primary stop\n14 primary start"
    first = simulate(cfg, parse(text), 30, seed=7)
    assert first == simulate(cfg, parse(text), 30, seed=7)


def test_virtual_time_costs_no_real_time() -> None:
    started = time.monotonic()
    run("100 primary crash\n150 primary start", 300)
    assert time.monotonic() - started < 5
