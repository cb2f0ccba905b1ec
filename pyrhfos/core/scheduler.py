"""Per LVS scheduler, the share of each real server: the width of its range in the nftables map.

Pure. nftables has no least-connection: wlc, lc, sed, nq (and lblc/lblcr, as wlc) are approximated
by shares recomputed from live connection counts at every re-weighting (water filling, below).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from fractions import Fraction

WEIGHTED = frozenset({"wrr", "sh", "dh"})
LEAST_CONNECTION = frozenset({"wlc", "lc", "sed", "nq", "lblc", "lblcr"})
SCHEDULERS = frozenset({"rr"}) | WEIGHTED | LEAST_CONNECTION
# Locality-based schedulers keep a client's destination on one server while it is not overloaded:
# without per-destination state here they are run as wlc (config/validate warns).
AS_WLC = {"lblc": "wlc", "lblcr": "wlc"}


def shares(
    scheduler: str,
    weights: Sequence[tuple[str, int]],
    active: Mapping[str, int] | None = None,
    expected_new: int = 0,
) -> dict[str, int]:
    """Each server's share (map range width), in the order of ``weights``; weight <= 0 gives 0.

    rr: 1 for every weight > 0. wrr, sh, dh: the weight. wlc/lc/sed/nq/lblc/lblcr with ``active``
    (live connection counts by server): the shares of ``max(expected_new, 1)`` arrivals that exact
    least-connection would give if none of the current connections ended first; without counts, the
    weights (lc: 1 each).
    """
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}")
    scheduler = AS_WLC.get(scheduler, scheduler)
    names = [n for n, _ in weights]
    if len(set(names)) != len(names):
        raise ValueError("server names repeat")
    live = [(n, w) for n, w in weights if w > 0]
    out = dict.fromkeys(names, 0)
    if scheduler == "rr" or (scheduler == "lc" and active is None):
        out.update((n, 1) for n, _ in live)
    elif scheduler in WEIGHTED or active is None:
        out.update(live)
    else:
        out.update(least_connection(scheduler, live, active, max(expected_new, 1)))
    return out


def least_connection(
    scheduler: str, weights: Sequence[tuple[str, int]], active: Mapping[str, int], arrivals: int
) -> dict[str, int]:
    """How many of ``arrivals`` new connections the exact scheduler sends to each server (weights > 0),
    if they all arrive before any connection ends: the arrivals per server, not a fraction.

    IPVS sends each new connection to the server with the least load: wlc active/weight, lc active,
    sed (active + 1)/weight, nq an idle server first, else as sed; ties to the first server. n arrivals
    therefore fill the servers like water: each takes the ``n`` smallest of its slots (b + k)/w,
    k = 0, 1, ... (b = active, or active + 1 for sed). Computed in exact fractions in O(servers log
    servers), not one arrival at a time: the level T with sum(max(0, T*w - b)) = n, every slot below
    T, then the largest of those dropped until n are left.
    """
    if scheduler == "lc":
        weights = [(n, 1) for n, _ in weights]
    counts = {n: max(0, active.get(n, 0)) for n, _ in weights}
    taken = dict.fromkeys(counts, 0)
    if scheduler == "nq":  # never queue: every idle server takes one first, in order
        for n, _ in weights:
            if arrivals and counts[n] == 0:
                taken[n], counts[n] = 1, 1
                arrivals -= 1
    extra = 1 if scheduler in ("sed", "nq") else 0
    order = {n: i for i, (n, _) in enumerate(weights)}
    servers = [(n, w, counts[n] + extra) for n, w in weights]
    for n, k in _fill(servers, arrivals, order).items():
        taken[n] += k
    return taken


def _fill(servers: Sequence[tuple[str, int, int]], arrivals: int, order: Mapping[str, int]) -> dict[str, int]:
    """The ``arrivals`` smallest slots (b + k)/w over (name, w, b), ties to the earlier server."""
    got = {n: 0 for n, _, _ in servers}
    if arrivals <= 0 or not servers:
        return got
    by_load = sorted(servers, key=lambda s: (Fraction(s[2], s[1]), order[s[0]]))
    # Water level: with the first i servers wet, T = (arrivals + sum b) / sum w, valid below the next.
    total_w = total_b = 0
    level = Fraction(0)
    for i, (_, w, b) in enumerate(by_load):
        total_w += w
        total_b += b
        level = Fraction(arrivals + total_b, total_w)
        if i + 1 == len(by_load) or level <= Fraction(by_load[i + 1][2], by_load[i + 1][1]):
            break
    # Every slot strictly below the level: ceil(T*w - b) of them; at least ``arrivals`` in all.
    for n, w, b in servers:
        room = level * w - b
        got[n] = max(0, -(-room.numerator // room.denominator))
    surplus = sum(got.values()) - arrivals
    # Drop the largest (load, order) last slots until the count is exact (a max-heap by negation).
    heap = [(-Fraction(b + got[n] - 1, w), -order[n], n, w, b) for n, w, b in servers if got[n] > 0]
    heapq.heapify(heap)
    while surplus > 0:
        _, _, n, w, b = heapq.heappop(heap)
        got[n] -= 1
        surplus -= 1
        if got[n] > 0:
            heapq.heappush(heap, (-Fraction(b + got[n] - 1, w), -order[n], n, w, b))
    return got
