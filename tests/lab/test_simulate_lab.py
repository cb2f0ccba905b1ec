"""One timeline both ways: `pulse simulate` on the lab's lvs.cf, and the same events done to two real
pulses in namespaces; both must go through the same state changes (issue 14)."""

from __future__ import annotations

import re

import pytest

from pyrhfos.config import load
from pyrhfos.sim.timeline import parse
from pyrhfos.sim.world import simulate
from pyrhfos_lab.testbed import Testbed, wait_until

pytestmark = pytest.mark.lab

KEEPALIVE, DEADTIME = 0.2, 1.0
SETTLE = 15.0
STATE = "(starting|standby|active|releasing|stopped)"
CHANGE = re.compile(f": {STATE} -> {STATE}: ")
TIMELINE = """
0 primary start
3 backup start      # once the primary serves
6 primary stop      # planned: the backup takes over
9 primary start     # back: it stands by
"""


def changes(log: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in CHANGE.finditer(log)]


def test_the_simulation_and_the_lab_change_state_alike(bed: Testbed) -> None:
    cfg, _ = load(bed.config_path)
    records = simulate(cfg, parse(TIMELINE), 15)
    simulated = {
        node: [(r.old, r.new) for r in records if r.kind == "state" and r.node == node]
        for node in ("primary", "backup")
    }
    bed.start("a")
    assert bed.wait_holders({"a"}, SETTLE) == {"a"}, bed.log("a")
    bed.start("b")
    assert wait_until(lambda: ("starting", "standby") in changes(bed.log("b")), SETTLE)
    assert bed.stop("a") == 0
    assert bed.wait_holders({"b"}, SETTLE) == {"b"}, bed.log("b")
    bed.start("a")
    assert wait_until(lambda: changes(bed.log("a"))[-1:] == [("starting", "standby")], SETTLE), bed.log("a")
    assert changes(bed.log("a")) == simulated["primary"], bed.log("a")
    assert changes(bed.log("b")) == simulated["backup"], bed.log("b")
    assert simulated["primary"] == [
        ("starting", "active"), ("active", "releasing"), ("releasing", "stopped"), ("starting", "standby"),
    ]  # fmt: skip
    assert simulated["backup"] == [("starting", "standby"), ("standby", "active")]
