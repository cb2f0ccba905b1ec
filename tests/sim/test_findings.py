"""Issue 14's findings as fixed schedules on the simulated pair (keepalive 1, deadtime 3, both paths):
each says what the daemon must do; each fails on the code before its fix."""

from __future__ import annotations

import pytest
from search import Fault, Schedule, broken, execute, generate
from simrig import config, unheld

from pyrhfos.core.vocab import Role
from pyrhfos.sim.timeline import parse
from pyrhfos.sim.world import World


def run(timeline: str, until: float, skew: float = 0.0, **options: float) -> World:
    world = World(config(), **options)  # type: ignore[arg-type]
    for role in Role:
        world.network.way("public", role).delay += skew
    world.schedule(parse(timeline))
    try:
        world.run(until)
    finally:
        world.close()
    return world


def activations(world: World, node: str, since: float = 0.0) -> int:
    return sum(
        1 for r in world.records if r.kind == "state" and r.node == node and r.new == "active" and r.t > since
    )


def test_item_1_a_stop_cmd_longer_than_the_lease_leaves_no_gap() -> None:
    world = run("10 primary stop", 30, stop_seconds=5.0)
    assert unheld(world.records, "web1", 1.0, 30.0) < 0.01
    assert world.holders() == {"web1": ("backup",)}


def test_item_2_a_takeover_never_runs_the_service_twice() -> None:
    world = run("10 backup takeover", 30, stop_seconds=5.0)
    assert world.both_running("web1") == []
    assert world.holders() == {"web1": ("backup",)}


def test_item_5_a_freeze_shorter_than_deadtime_keeps_the_vip() -> None:
    world = run("10 primary freeze 2.5", 30)
    assert unheld(world.records, "web1", 1.0, 30.0) == 0.0
    assert activations(world, "backup") == 0


def test_item_6_a_thaw_applies_no_stale_beat() -> None:
    world = run("10 primary freeze 12", 50, stop_seconds=0.0)
    assert world.holders() == {"web1": ("backup",)}  # the backup took over and keeps the services
    assert activations(world, "backup") == 1


def test_item_8_a_one_way_partition_does_not_flap() -> None:
    world = run("5 primary service-fail web1\n5 backup partition one-way", 65)
    assert activations(world, "backup", since=5.0) <= 2


def test_item_3_a_stale_beat_on_the_slower_path_does_not_undo_a_release() -> None:
    world = run("10 primary release", 40, skew=2.0)
    assert world.holders() == {"web1": ("backup",)}
    assert unheld(world.records, "web1", 10.1, 40.0) < 0.01


def test_item_3_a_planned_stop_over_a_skewed_path_leaves_no_gap() -> None:
    world = run("10 primary stop", 30, skew=2.0)
    assert unheld(world.records, "web1", 1.0, 30.0) < 0.01
    assert activations(world, "backup") == 1


def test_item_4_eleven_beats_lost_in_a_row_never_fail_over() -> None:
    for first in range(20, 32):  # every phase of the loss against the beat schedule
        world = World(config(private=False))
        world.network.way("public", Role.PRIMARY).lose = set(range(first, first + 11))
        world.schedule([])
        world.run(30)
        world.close()
        assert activations(world, "backup") == 0, first


def test_item_4_thirty_percent_loss_on_the_only_path_fails_nothing_over() -> None:
    world = World(config(private=False), seed=4)
    for role in Role:
        world.network.way("public", role).loss = 0.3
    world.schedule([])
    world.run(1800)
    world.close()
    assert world.network.lost > 0.25 * world.network.sent
    assert activations(world, "backup") == 0
    assert world.holders() == {"web1": ("primary",)}


@pytest.mark.parametrize("skew", [0.5, 2.0])
def test_item_10_path_skew_during_a_service_failure_neither_flaps_nor_drops_the_vip(skew: float) -> None:
    world = run("5 primary service-fail web1", 60, skew=skew)
    assert activations(world, "backup") == 1
    assert world.holders() == {"web1": ("backup",)}
    assert unheld(world.records, "web1", 5.5, 60.0) < 0.01


# The long search's last case (PYRHFOS_SEARCH=200: seed 62 at keepalive 1, seed 64 at 0.1), as it
# printed the shrunk schedules: a primary restarted while the backup takes over (on its LEAVING, or on
# its silence after a crash) first hears, on the slower path, a STANDBY beat the backup sent before;
# taken at its word, the primary took the services and web1 ran on both nodes during the backup's
# stop_cmd.
LAST_CASE = {
    "seed 62, restart after a planned stop": (
        (1.0, 3.0),
        Schedule(
            seed=62,
            faults=(Fault(39.441, "stop", Role.PRIMARY, 1.203),),
            start_seconds=0.0,
            stop_seconds=4.5,
            calm=40.645,
            delay=(0.001, 0.5),
        ),
    ),
    "seed 64, restart after a crash": (
        (0.1, 0.3),
        Schedule(
            seed=64,
            faults=(
                Fault(2.595, "one-way", Role.PRIMARY, 0.503),
                Fault(3.953, "crash", Role.PRIMARY, 0.394),
            ),
            start_seconds=0.01,
            stop_seconds=0.0,
            calm=4.348,
            delay=(0.2, 0.001),
            jitter=0.03,
        ),
    ),
}


@pytest.mark.parametrize("timing,schedule", LAST_CASE.values(), ids=LAST_CASE.keys())
def test_a_restarted_primary_does_not_act_on_a_delayed_standby_beat(
    timing: tuple[float, float], schedule: Schedule
) -> None:
    cfg = config(*timing)
    world = execute(schedule, cfg)
    restart = schedule.faults[-1].at  # before it, seed 64's one-way partition rightly made two holders
    assert [(start, end) for start, end in world.both_running("web1") if start > restart] == []
    assert broken(schedule, cfg, world) is None
    assert world.holders() == {"web1": ("backup",)}  # the returning primary stays standby


@pytest.mark.parametrize("timing", [(1.0, 3.0), (0.1, 0.3)], ids=["keepalive 1", "keepalive 0.1"])
def test_both_nodes_in_hold_down_do_not_leave_the_service_with_nobody(timing: tuple[float, float]) -> None:
    """PYRHFOS_SEARCH=1000, path-skew seed 930 ([T42]): the primary released late on a STOPME delayed
    2 s (T22, hold-down), the backup took over and released on the primary's 2 s old ACTIVE beat (T20,
    hold-down), and both stood by in hold-down with nobody holding the VIP for reentry (180 s)."""
    cfg = config(*timing)
    schedule = generate(930, cfg, skew=True)
    assert broken(schedule, cfg, execute(schedule, cfg)) is None
