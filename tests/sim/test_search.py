"""The seeded schedule search (issue 14): random partitions, loss, duplication, link failures, crashes,
planned stops, freezes, slow commands, failing services and operator requests on the simulated pair,
checked against the invariants (search.CHECKS). A failure prints its seed and a shrunk list of faults.
Path skew and reordering (issue 14 items 3 and 10) have a search of their own.

PYRHFOS_SEARCH=N runs N schedules per configuration instead of the bounded default.
"""

from __future__ import annotations

import os

import pytest
from search import broken, execute, generate, shrink
from simrig import config

SCHEDULES = int(os.environ.get("PYRHFOS_SEARCH", "40"))
TIMINGS = {"keepalive 1, deadtime 3": (1.0, 3.0), "keepalive 0.1, deadtime 0.3": (0.1, 0.3)}


def search(keepalive: float, deadtime: float, skew: bool, seeds: range) -> None:
    cfg = config(keepalive, deadtime)
    for seed in seeds:
        schedule = generate(seed, cfg, skew=skew)
        why = broken(schedule, cfg, execute(schedule, cfg))
        if why is not None:
            small = shrink(schedule, cfg, broken)
            again = broken(small, cfg, execute(small, cfg))
            pytest.fail(f"{why}\nreproduced by (shrunk): {again}\n{small.describe()}", pytrace=False)


@pytest.mark.parametrize("timing", TIMINGS.values(), ids=TIMINGS.keys())
def test_schedules_keep_the_invariants(timing: tuple[float, float]) -> None:
    search(*timing, skew=False, seeds=range(SCHEDULES))


@pytest.mark.parametrize("timing", TIMINGS.values(), ids=TIMINGS.keys())
def test_schedules_with_path_skew_keep_the_invariants(timing: tuple[float, float]) -> None:
    search(*timing, skew=True, seeds=range(SCHEDULES))
