"""The seeded schedule search: random faults on the simulated pair, the invariants that must hold once
they stop, and a shrinker that finds a short list of faults still breaking one."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass

from simrig import unheld

from pyrhfos.config.model import Config
from pyrhfos.core.vocab import Role, State
from pyrhfos.sim.timeline import Step
from pyrhfos.sim.world import World

NODES = (Role.PRIMARY, Role.BACKUP)


@dataclass(frozen=True)
class Fault:
    """One fault: what happens at ``at`` and, for most, what undoes it ``length`` seconds later."""

    at: float
    kind: str  # partition, one-way, link-down, crash, stop, freeze, service-fail, takeover, release, loss
    role: Role
    length: float = 0.0
    arg: str | None = None  # a path for link-down and loss, a loss rate

    def __str__(self) -> str:
        extra = f" {self.arg}" if self.arg else ""
        return f"{self.at:.3f} {self.role.name.lower()} {self.kind}{extra} for {self.length:.3f}s"

    def apply(self, world: World) -> None:
        node, t, end = self.role.name.lower(), self.at, self.at + self.length
        steps: list[Step] = []
        match self.kind:
            case "partition" | "one-way":
                steps = [Step(t, self.role, "partition", "one-way" if self.kind == "one-way" else None)]
                steps.append(Step(end, self.role, "heal"))
            case "link-down":
                steps = [Step(t, self.role, "link-down", self.arg), Step(end, self.role, "link-up", self.arg)]
            case "crash" | "stop":
                steps = [Step(t, self.role, self.kind)]
                world.at(end, lambda: start_once_down(world, self.role))
            case "freeze":
                steps = [Step(t, self.role, "freeze", f"{self.length:g}")]
            case "service-fail":
                steps = [
                    Step(t, self.role, "service-fail", "web1"),
                    Step(end, self.role, "service-ok", "web1"),
                ]
            case "takeover" | "release":
                steps = [Step(t, self.role, self.kind)]
            case "loss":
                path, rate = (self.arg or "public 0.3").split()
                way = world.network.way(path, self.role)
                world.at(t, lambda: setattr(way, "loss", float(rate)))
                world.at(end, lambda: setattr(way, "loss", 0.0))
        del node
        for step in steps:
            world.at(step.at, lambda step=step: world.apply(step))


@dataclass(frozen=True)
class Schedule:
    seed: int
    faults: tuple[Fault, ...]
    start_seconds: float
    stop_seconds: float
    calm: float  # every fault is over by then
    delay: tuple[float, float]  # public, private path delays
    jitter: float = 0.0  # on every path: beats overtake each other when it passes their interval
    duplicate: float = 0.0  # chance a datagram arrives twice

    def describe(self) -> str:
        head = (
            f"seed {self.seed}: start_cmd {self.start_seconds:.3f}s, stop_cmd {self.stop_seconds:.3f}s, "
            f"path delays {self.delay[0]:.3f}/{self.delay[1]:.3f}s, jitter {self.jitter:.3f}s, "
            f"duplicates {self.duplicate:.0%}, calm from {self.calm:.3f}s"
        )
        return "\n".join([head, *(f"  {f}" for f in self.faults)])


KINDS = ("partition", "one-way", "link-down", "crash", "stop", "freeze", "service-fail", "takeover",
         "release", "loss")  # fmt: skip


def generate(seed: int, cfg: Config, faults: int = 3, skew: bool = False) -> Schedule:
    """A random schedule; times scale with keepalive, so 0.1/0.3 sees the same shapes as 1/3. With
    ``skew`` one heartbeat path is much slower than the other, or beats are reordered."""
    rng = random.Random(seed)
    k, dead = cfg.keepalive, cfg.deadtime
    window = 40 * k
    chosen = []
    for _ in range(rng.randint(1, faults)):
        kind = rng.choice(KINDS)
        at = round(rng.uniform(2 * k, window), 3)
        length = round(rng.uniform(0.1 * dead, min(4 * dead, window + 5 * k - at)), 3)
        arg = None
        if kind == "link-down":
            arg = rng.choice(("public", "private"))
        elif kind == "loss":
            arg = f"{rng.choice(('public', 'private'))} {rng.choice((0.1, 0.3, 0.5)):g}"
        chosen.append(Fault(at, kind, rng.choice(NODES), length, arg))
    chosen.sort(key=lambda f: f.at)
    calm = max(f.at + f.length for f in chosen) + 0.001
    start = round(rng.choice((0.0, 0.01, 0.2 * dead, 1.5 * dead)), 3)
    stop = round(rng.choice((0.0, 0.01, 0.2 * dead, 1.5 * dead)), 3)
    delays = (round(rng.uniform(0.0005, 0.02 * k), 4), round(rng.uniform(0.0005, 0.02 * k), 4))
    if skew:  # one path much slower than the other (issue 14 items 3 and 10)
        slow = round(rng.choice((0.06, 0.5, 2.0)) * k, 4)
        delays = (slow, 0.001) if rng.random() < 0.5 else (0.001, slow)
    # With skew, jitter of 0.3 keepalives too: beats overtake each other, on a path and across paths.
    jitter = round(rng.choice((0.0, 0.0, 0.01, 0.3) if skew else (0.0, 0.01)) * k, 4)
    duplicate = rng.choice((0.0, 0.0, 0.1, 0.5))
    return Schedule(seed, tuple(chosen), start, stop, calm, delays, jitter, duplicate)


def execute(schedule: Schedule, cfg: Config) -> World:
    world = World(
        cfg, seed=schedule.seed, start_seconds=schedule.start_seconds, stop_seconds=schedule.stop_seconds
    )
    for path, delay in zip(("public", "private"), schedule.delay, strict=True):
        for role in Role:
            way = world.network.way(path, role)
            way.delay, way.jitter, way.duplicate = delay, schedule.jitter, schedule.duplicate
    world.schedule([])
    for fault in schedule.faults:
        fault.apply(world)
    for role in Role:  # calm: whatever was done is undone; a stopped or crashed node is started again
        for event in ("heal", "link-up", "start"):
            world.at(
                schedule.calm, lambda role=role, event=event: world.apply(Step(schedule.calm, role, event))
            )
        world.at(
            schedule.calm, lambda role=role: world.apply(Step(schedule.calm, role, "service-ok", "web1"))
        )
    try:
        world.run(schedule.calm + settle_time(schedule, cfg))
    finally:
        world.close()
    return world


def start_once_down(world: World, role: Role) -> None:
    """Start pulse on ``role`` as an administrator would: once a stopping one has exited."""
    node = world.nodes[role]
    if node.daemon is None:
        world.apply(Step(world.now, role, "start"))
    elif node.daemon.machine.stopping:
        world.at(world.now + 0.05, lambda: start_once_down(world, role))


def settle_time(schedule: Schedule, cfg: Config) -> float:
    """Long enough for a restarted node to listen, decide, and a release and an acquire to run, twice."""
    return 10 * cfg.deadtime + 4 * (schedule.start_seconds + schedule.stop_seconds) + 4


def settled(schedule: Schedule, cfg: Config, world: World) -> str | None:
    """Once faults stop: one node active and the other standby, each VIP held by the active node alone,
    and no state change in the last half of the settling."""
    states = world.states
    active = [role for role, s in states.items() if s is State.ACTIVE]
    if len(active) != 1 or {s for s in states.values()} != {State.ACTIVE, State.STANDBY}:
        return (
            f"after the faults the nodes are {', '.join(f'{r.name.lower()} {s}' for r, s in states.items())}"
        )
    holder = active[0].name.lower()
    for name, holders in world.holders().items():
        if holders != (holder,):
            return f"after the faults {name}'s VIP is held by {', '.join(holders) or 'nobody'}, not {holder}"
    quiet = schedule.calm + settle_time(schedule, cfg) / 2
    late = [r for r in world.records if r.kind == "state" and r.t > quiet]
    if late:
        first = late[0]
        return f"state changes after faults stopped: {first.t:.3f} {first.node} {first.old} -> {first.new}"
    return None


def window(f: Fault, schedule: Schedule, cfg: Config) -> tuple[float, float]:
    """From a deadtime before a fault to a deadtime (and the slow commands) after it is undone."""
    after = (
        cfg.deadtime + schedule.start_seconds + schedule.stop_seconds + max(schedule.delay) + schedule.jitter
    )
    return f.at - cfg.deadtime, f.at + f.length + after


def alone(schedule: Schedule, fault: Fault, cfg: Config) -> bool:
    """No other fault's window meets this one's."""
    lo, hi = window(fault, schedule, cfg)
    others = [window(f, schedule, cfg) for f in schedule.faults if f is not fault]
    return all(end < lo or start > hi for start, end in others)


def serving(world: World, role: Role, t: float) -> bool:
    """``role`` was active (and the partner standby) at ``t``, by the record."""
    now: dict[str, str] = {}
    for r in world.records:
        if r.kind == "state" and r.t < t and r.node:
            now[r.node] = r.new or ""
    return now.get(role.name.lower()) == "active" and now.get(role.partner.name.lower()) == "standby"


def crash_fails_over(schedule: Schedule, cfg: Config, world: World) -> str | None:
    """After a crash of the active node, the partner holds within deadtime (+ an acquire) of the last beat
    it heard (which the slower path may bring late)."""
    for f in schedule.faults:
        bound = (
            f.at
            + max(schedule.delay)
            + schedule.jitter
            + cfg.deadtime
            + schedule.start_seconds
            + 0.05 * cfg.deadtime
        )
        if f.kind != "crash" or f.at + f.length <= bound or not alone(schedule, f, cfg):
            continue  # back before the partner could take over: nothing to check
        if not serving(world, f.role, f.at):
            continue
        partner = f.role.partner.name.lower()
        took = [r for r in world.records if r.kind == "vip" and f.at < r.t <= bound and partner in r.holders]
        if not took:
            return f"{f}: {partner} did not hold the VIP by {bound:.3f}"
    return None


def planned_stop_hands_over(schedule: Schedule, cfg: Config, world: World) -> str | None:
    """A planned stop of the active node never leaves the VIP unheld more than a few ms (issue 14 item 1)."""
    for f in schedule.faults:
        if f.kind != "stop" or not alone(schedule, f, cfg) or not serving(world, f.role, f.at):
            continue
        gap = unheld(
            world.records, "web1", f.at, f.at + schedule.stop_seconds + schedule.start_seconds + cfg.deadtime
        )
        if gap > 0.01:
            return f"{f}: the VIP was unheld for {gap:.3f}s"
    return None


def heal_leaves_one_holder(schedule: Schedule, cfg: Config, world: World) -> str | None:
    """After a partition heals, one holder within 2 x keepalive + a release and an acquire."""
    for f in schedule.faults:
        if f.kind != "partition" or not alone(schedule, f, cfg):
            continue
        healed = f.at + f.length
        bound = healed + 2 * cfg.keepalive + schedule.start_seconds + schedule.stop_seconds
        bound += max(schedule.delay) + schedule.jitter + 0.05 * cfg.deadtime
        vips = [r for r in world.records if r.kind == "vip" and r.t <= bound]
        now = vips[-1].holders if vips else ()
        if len(now) != 1:
            return f"{f}: the VIP is held by {', '.join(now) or 'nobody'} at {bound:.3f}, after the heal"
    return None


def short_freeze_keeps_the_vip(schedule: Schedule, cfg: Config, world: World) -> str | None:
    """An active node frozen for less than deadtime keeps its VIP throughout (issue 14 item 5)."""
    for f in schedule.faults:
        if f.kind != "freeze" or f.length >= cfg.deadtime - cfg.keepalive or not alone(schedule, f, cfg):
            continue
        if serving(world, f.role, f.at):
            gap = unheld(world.records, "web1", f.at, f.at + f.length + cfg.deadtime)
            if gap > 0:
                return f"{f}: the VIP was unheld for {gap:.3f}s"
    return None


def bounded_flapping(schedule: Schedule, cfg: Config, world: World) -> str | None:
    """A fault moves the services a bounded number of times (issue 14 item 8: 14 in 60 s)."""
    moves = sum(1 for r in world.records if r.kind == "state" and r.new == "active")
    bound = 3 * len(schedule.faults) + 2
    return f"{moves} activations for {len(schedule.faults)} fault(s)" if moves > bound else None


NETWORK = ("partition", "one-way", "link-down", "loss", "freeze")  # a node may rightly think the other dead


def exclusive(schedule: Schedule, cfg: Config, world: World) -> str | None:
    """Away from network faults and freezes, the service never runs on both nodes (issue 14 item 2)."""
    excused = [window(f, schedule, cfg) for f in schedule.faults if f.kind in NETWORK]
    for start, end in world.both_running("web1"):
        if all(hi < start or lo > end for lo, hi in excused):
            return f"web1 ran on both nodes from {start:.3f} to {end:.3f}"
    return None


Check = Callable[[Schedule, Config, World], "str | None"]
CHECKS: dict[str, Check] = {
    "settled": settled,
    "crash": crash_fails_over,
    "planned-stop": planned_stop_hands_over,
    "exclusive": exclusive,
    "short-freeze": short_freeze_keeps_the_vip,
    "heal": heal_leaves_one_holder,
    "flapping": bounded_flapping,
}


def broken(
    schedule: Schedule, cfg: Config, world: World, checks: tuple[str, ...] = tuple(CHECKS)
) -> str | None:
    """The first invariant the run broke (named), or None."""
    for name in checks:
        why = CHECKS[name](schedule, cfg, world)
        if why is not None:
            return f"{name}: {why}"
    return None


def shrink(
    schedule: Schedule, cfg: Config, check: Callable[[Schedule, Config, World], str | None]
) -> Schedule:
    """Drop faults one at a time while the schedule still breaks an invariant."""
    current = schedule
    changed = True
    while changed and len(current.faults) > 1:
        changed = False
        for i in range(len(current.faults)):
            faults = current.faults[:i] + current.faults[i + 1 :]
            calm = max(f.at + f.length for f in faults) + 0.001
            trial = dataclasses.replace(current, faults=faults, calm=calm)
            if check(trial, cfg, execute(trial, cfg)) is not None:
                current, changed = trial, True
                break
    return current
