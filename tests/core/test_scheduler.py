"""Scheduler shares (core/scheduler.py), the least-connection water filling against one-arrival-at-a-time
least connection, and a seeded simulation of re-weighting against exact wlc."""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping, Sequence
from fractions import Fraction

import pytest

from pyrhfos.core.scheduler import LEAST_CONNECTION, SCHEDULERS, shares

W = [("a", 3), ("b", 2), ("c", 1), ("off", 0)]


def test_rr_is_one_for_every_weighted_server() -> None:
    assert shares("rr", W) == {"a": 1, "b": 1, "c": 1, "off": 0}


@pytest.mark.parametrize("scheduler", ["wrr", "sh", "dh"])
def test_weighted_schedulers_take_the_weights(scheduler: str) -> None:
    assert shares(scheduler, W, {"a": 100}, 10) == {"a": 3, "b": 2, "c": 1, "off": 0}


@pytest.mark.parametrize("scheduler", sorted(LEAST_CONNECTION - {"lc"}))
def test_least_connection_without_counts_takes_the_weights(scheduler: str) -> None:
    assert shares(scheduler, W) == {"a": 3, "b": 2, "c": 1, "off": 0}


def test_lc_without_counts_is_equal() -> None:
    assert shares("lc", W) == {"a": 1, "b": 1, "c": 1, "off": 0}


def test_unknown_scheduler_and_repeated_names_are_refused() -> None:
    with pytest.raises(ValueError):
        shares("fifo", W)
    with pytest.raises(ValueError):
        shares("rr", [("a", 1), ("a", 2)])


def test_no_server_with_weight_gives_all_zero() -> None:
    for s in SCHEDULERS:
        assert shares(s, [("x", 0), ("y", -1)], {"x": 0, "y": 3}, 5) == {"x": 0, "y": 0}
    assert shares("wlc", [], {}, 5) == {}


def test_wlc_fills_the_least_loaded_first() -> None:
    # a at 30/3 = 10, b at 10/2 = 5, c at 2/1 = 2: 6 arrivals bring c to 5 and b, c up evenly after.
    got = shares("wlc", [("a", 3), ("b", 2), ("c", 1)], {"a": 30, "b": 10, "c": 2}, 6)
    assert got == {"a": 0, "b": 2, "c": 4}  # loads 10, 6, 6
    assert sum(got.values()) == 6


def test_wlc_expected_new_at_least_one_and_weight_zero_gets_nothing() -> None:
    got = shares("wlc", [("a", 1), ("b", 1), ("z", 0)], {"a": 5, "b": 2, "z": 0}, 0)
    assert got == {"a": 0, "b": 1, "z": 0}


def test_wlc_with_empty_counts_is_proportional_and_integer() -> None:
    got = shares("wlc", [("a", 3), ("b", 2), ("c", 1)], {}, 60)
    assert got == {"a": 30, "b": 20, "c": 10}


def test_lc_ignores_weights_and_sed_nq_differ_from_wlc() -> None:
    ws = [("big", 10), ("small", 1)]
    assert shares("lc", ws, {"big": 5, "small": 0}, 3) == {"big": 0, "small": 3}  # lc: 5 vs 0..3
    # wlc: small at 0 is least (0 < 0.5); sed compares (a+1)/w: big 6/10 against small 1/1
    assert shares("wlc", ws, {"big": 5, "small": 0}, 1) == {"big": 0, "small": 1}
    assert shares("sed", ws, {"big": 5, "small": 0}, 1) == {"big": 1, "small": 0}
    # nq: an idle server first, whatever its weight; then as sed
    assert shares("nq", ws, {"big": 5, "small": 0}, 1) == {"big": 0, "small": 1}
    assert shares("nq", ws, {"big": 5, "small": 0}, 2) == {"big": 1, "small": 1}


def test_lblc_lblcr_are_wlc() -> None:
    ws, act = [("a", 2), ("b", 1)], {"a": 7, "b": 1}
    assert shares("lblc", ws, act, 9) == shares("lblcr", ws, act, 9) == shares("wlc", ws, act, 9)


def one_at_a_time(
    scheduler: str, ws: Sequence[tuple[str, int]], active: Mapping[str, int], n: int
) -> dict[str, int]:
    """What IPVS does: each arrival to the least loaded server (first on ties), counts updated."""
    live = [(s, w if scheduler != "lc" else 1) for s, w in ws if w > 0]
    act = {s: active.get(s, 0) for s, _ in live}
    got = {s: 0 for s, _ in ws}
    for _ in range(max(n, 1)):
        if not live:
            break
        idle = [s for s, _ in live if act[s] == 0]
        if scheduler == "nq" and idle:
            pick = idle[0]
        else:
            extra = 1 if scheduler in ("sed", "nq") else 0
            pick = min(live, key=lambda sw: Fraction(act[sw[0]] + extra, sw[1]))[0]
        act[pick] += 1
        got[pick] += 1
    return got


@pytest.mark.parametrize("scheduler", ["wlc", "lc", "sed", "nq"])
def test_water_filling_equals_one_arrival_at_a_time(scheduler: str) -> None:
    rng = random.Random(15)
    for _ in range(300):
        ws = [(f"s{i}", rng.choice([0, 1, 1, 2, 3, 5, 7, 100])) for i in range(rng.randint(1, 7))]
        active = {s: rng.choice([0, 0, 1, 3, 10, 57, 400]) for s, _ in ws}
        n = rng.choice([0, 1, 2, 5, 13, 100, 999])
        assert shares(scheduler, ws, active, n) == one_at_a_time(scheduler, ws, active, n), (ws, active, n)


def test_deterministic_and_fast_for_many_arrivals() -> None:
    ws = [(f"s{i}", 1 + i % 4) for i in range(100)]
    active = {f"s{i}": (i * 37) % 101 for i in range(100)}
    first = shares("wlc", ws, active, 1_000_000)
    assert first == shares("wlc", ws, active, 1_000_000)
    assert sum(first.values()) == 1_000_000


# -- the approximation against exact wlc, simulated (pure, seeded) ----------------------------------
SIM_WEIGHTS = (("a", 3), ("b", 2), ("c", 1))


def simulate(mode: str, seed: int, interval: float = 2.0, seconds: float = 600.0, rate: float = 5.0) -> float:
    """Mean over time of the spread max - min of active/weight, after a minute of warm-up.

    Arrivals are Poisson (``rate`` a second); lengths Pareto(1.5) from 20 s (mean 60 s, a long tail:
    uneven long connections). ``exact``: every arrival to the least active/weight (IPVS wlc).
    ``approx``: what the director does: every ``interval`` seconds a new table whose numgen map has
    the shares from the live counts and the last interval's arrivals, ranges in config order, the
    counter from 0. ``wrr``: the weights only, never re-weighted.
    """
    rng = random.Random(seed)
    names = [n for n, _ in SIM_WEIGHTS]
    weight = dict(SIM_WEIGHTS)
    ends: dict[str, list[float]] = {n: [] for n in names}

    def active(now: float) -> dict[str, int]:
        for h in ends.values():
            while h and h[0] <= now:
                heapq.heappop(h)
        return {n: len(ends[n]) for n in names}

    spreads: list[float] = []
    sample_at, reweight_at = 60.0, 0.0
    table: list[str] = []
    counter = last_interval = this_interval = 0
    wrr = [n for n, w in SIM_WEIGHTS for _ in range(w)]
    t = 0.0
    while t < seconds:
        t += rng.expovariate(rate)
        length = rng.paretovariate(1.5) * 20
        while sample_at <= t:
            loads = [c / weight[n] for n, c in active(sample_at).items()]
            spreads.append(max(loads) - min(loads))
            sample_at += 1.0
        if mode == "exact":
            now = active(t)
            pick = min(names, key=lambda n: now[n] / weight[n])
        elif mode == "wrr":
            pick = wrr[counter % len(wrr)]
            counter += 1
        else:
            while reweight_at <= t:
                got = shares("wlc", SIM_WEIGHTS, active(reweight_at), last_interval)
                table = [n for n in names for _ in range(got[n])]
                counter, last_interval, this_interval = 0, this_interval, 0
                reweight_at += interval
            pick = table[counter % len(table)]
            counter += 1
            this_interval += 1
        heapq.heappush(ends[pick], t + length)
    return sum(spreads) / len(spreads)


def test_reweighting_keeps_the_spread_close_to_exact_wlc() -> None:
    seeds = range(3)
    exact = sum(simulate("exact", s) for s in seeds) / 3
    approx = sum(simulate("approx", s) for s in seeds) / 3
    wrr = sum(simulate("wrr", s) for s in seeds) / 3
    # Measured: exact ~0.7, approx ~2.6, wrr ~5 (connections per unit of weight, ~300 open in all).
    assert exact < 1.5
    assert approx < exact + 2.5  # within a few connections of the ideal on the weight-1 server
    assert approx < 0.6 * wrr  # and far better than the weights alone
    # A shorter interval tracks more closely.
    assert sum(simulate("approx", s, interval=0.5) for s in seeds) / 3 < approx
