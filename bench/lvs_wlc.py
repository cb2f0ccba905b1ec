"""wlc approximation quality: long connections of uneven length through a real director (wlc, weights
1/1/2), the spread of active connections over time against an ideal wlc fed the same arrivals.

The client opens held connections at Poisson arrival times and closes each after a Pareto length
(seeded: every run and mode gets the same arrivals). From its own records it counts each real server's
open connections every 0.25 s; spread = max - min of active/weight over the servers (0 is perfect; the
same measure as tests/core/test_scheduler.py's simulation). The same arrivals are replayed through
exact wlc (each one to the least active/weight, as IPVS does), through wrr on the weights alone (no
re-weighting), and through a model of the director (re-weighted each second from the live counts).

    python bench/lvs_wlc.py [--seconds 60] [--rate 10] [--shortest 5] [--longest 60] [--modes nat,direct]
                            [--no-markdown]
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lvs_common import (  # noqa: E402
    bounded,
    director_pair,
    fmt,
    loadavg,
    md_table,
    need_root,
    percentile,
    print_table,
    say,
    stamp_line,
    write_block,
)

from pyrhfos.core.scheduler import shares  # noqa: E402
from pyrhfos_lab.lvslab import PORT, VIP, Held, LvsLab  # noqa: E402

WEIGHTS = (("rs1", 1), ("rs2", 1), ("rs3", 2))
WEIGHT = dict(WEIGHTS)
NAMES = [n for n, _ in WEIGHTS]
SAMPLE = 0.25
WARMUP = 15.0  # seconds before the spread counts (the servers fill up first)
PARETO_ALPHA = 1.5  # lengths: Pareto from --shortest, capped at --longest (a long tail)
MODES = ("nat", "direct")

Arrival = tuple[float, float]  # (start offset s, length s)
Record = tuple[float, float, str]  # (open at, closed at, server)


def arrivals(seed: int, seconds: float, rate: float, shortest: float, longest: float) -> list[Arrival]:
    rng = random.Random(seed)
    out: list[Arrival] = []
    t = rng.expovariate(rate)
    while t < seconds:
        out.append((t, min(longest, rng.paretovariate(PARETO_ALPHA) * shortest)))
        t += rng.expovariate(rate)
    return out


def mean_length(shortest: float, longest: float) -> float:
    """E[min(X, longest)] for X ~ Pareto(PARETO_ALPHA) from ``shortest``."""
    a = PARETO_ALPHA
    return shortest * a / (a - 1) - shortest**a * longest ** (1 - a) / (a - 1)


def spreads(records: Sequence[Record], seconds: float) -> list[float]:
    """max - min of active/weight every SAMPLE seconds from WARMUP to ``seconds``."""
    out = []
    t = WARMUP
    while t <= seconds:
        active = dict.fromkeys(NAMES, 0)
        for opened, closed, server in records:
            if opened <= t < closed:
                active[server] += 1
        loads = [active[n] / WEIGHT[n] for n in NAMES]
        out.append(max(loads) - min(loads))
        t += SAMPLE
    return out


def replay(plan: Sequence[Arrival], mode: str) -> list[Record]:
    """The same arrivals through ``exact`` wlc, ``wrr`` (weights alone), ``director`` (a new table
    each second: shares from the live counts for one expected arrival, numgen counter from 0, as
    daemon/director.py does now) or ``director-last`` (the same, expecting as many arrivals as the
    last second had: tests/core/test_scheduler.py's model)."""
    ends: dict[str, list[float]] = {n: [] for n in NAMES}
    records: list[Record] = []
    wrr = [n for n, w in WEIGHTS for _ in range(w)]
    counter = 0
    table: list[str] = [n for n, w in WEIGHTS for _ in range(w)]
    next_reweight = 1.0
    this_second = last_second = 0

    def active(now: float) -> dict[str, int]:
        for h in ends.values():
            while h and h[0] <= now:
                heapq.heappop(h)
        return {n: len(ends[n]) for n in NAMES}

    for start, length in plan:
        if mode == "exact":
            now = active(start)
            pick = min(NAMES, key=lambda n: now[n] / WEIGHT[n])
        elif mode == "wrr":
            pick = wrr[counter % len(wrr)]
            counter += 1
        else:
            while next_reweight <= start:
                last_second, this_second = this_second, 0
                expected = last_second if mode == "director-last" else 1
                got = shares("wlc", WEIGHTS, active(next_reweight), expected)
                new = [n for n in NAMES for _ in range(got[n])]
                if new != table:  # the director reloads only when the shares moved
                    table, counter = new, 0
                next_reweight += 1.0
            pick = table[counter % len(table)]
            counter += 1
            this_second += 1
        heapq.heappush(ends[pick], start + length)
        records.append((start, start + length, pick))
    return records


def live(lab: LvsLab, plan: Sequence[Arrival], seconds: float) -> tuple[list[Record], int]:
    """Open and close the held connections on schedule through the VIP; (records, failed opens)."""
    began = time.monotonic()
    closing: list[tuple[float, int, Held]] = []
    records: list[Record] = []
    opened_at: dict[int, tuple[float, str]] = {}
    failed = 0
    i = 0
    while i < len(plan) or closing:
        now = time.monotonic() - began
        if closing and closing[0][0] <= now and (i >= len(plan) or closing[0][0] <= plan[i][0]):
            _, k, held = heapq.heappop(closing)
            held.close()
            t0, name = opened_at.pop(k)
            records.append((t0, time.monotonic() - began, name))
            continue
        if i < len(plan) and plan[i][0] <= now:
            start, length = plan[i]
            try:
                held = lab.hold(VIP, PORT, timeout=2.0)
            except Exception:  # noqa: BLE001 - a failed open is counted, not fatal
                failed += 1
            else:
                t0 = time.monotonic() - began
                opened_at[i] = (t0, held.name)
                # The run ends at ``seconds``: whatever is still open then is closed then.
                heapq.heappush(closing, (min(t0 + length, seconds + 0.5), i, held))
            i += 1
            continue
        nexts = [c[0] for c in closing[:1]] + ([plan[i][0]] if i < len(plan) else [])
        time.sleep(max(0.0, min(0.05, min(nexts) - now)))
    return records, failed


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    plan = arrivals(args.seed, args.seconds, args.rate, args.shortest, args.longest)
    load0 = loadavg()
    weights = dict(WEIGHTS)
    with director_pair(mode, scheduler="wlc", weights=weights, keepalive=1.0) as lab:  # type: ignore[arg-type]
        records, failed = live(lab, plan, args.seconds)
    load = max(load0, loadavg())
    # The replayed connections end at their planned times, cut at the end of the run like the real ones.
    ideal = {
        m: [(o, min(c, args.seconds + 0.5), s) for o, c, s in replay(plan, m)]
        for m in ("exact", "wrr", "director", "director-last")
    }
    out: dict[str, Any] = {"load": load, "failed": failed, "arrivals": len(plan)}
    for name, recs in (("real", records), *ideal.items()):
        sp = spreads(recs, args.seconds)
        per = {n: sum(1 for r in recs if r[2] == n) for n in NAMES}
        out[name] = {
            "mean": sum(sp) / len(sp) if sp else None,
            "p95": percentile(sp, 0.95),
            "max": max(sp) if sp else None,
            "per_server": per,
        }
    return out


HEADERS = (
    "mode",
    "placement",
    "spread of active/weight: mean",
    "p95",
    "max",
    "connections rs1 / rs2 / rs3",
    "load",
)
LABELS = {
    "real": "the director (real run)",
    "exact": "ideal wlc (same arrivals)",
    "director": "model of the director: expects 1 arrival per second (same arrivals)",
    "director-last": "model: expects the last second's arrivals (same arrivals)",
    "wrr": "wrr 1:1:2, never re-weighted",
}


def rows(results: dict[str, Any]) -> list[list[str]]:
    out = []
    for mode, r in results.items():
        for key in ("real", "exact", "director", "director-last", "wrr"):
            e = r[key]
            per = " / ".join(str(e["per_server"][n]) for n in NAMES)
            out.append(
                [
                    "NAT" if mode == "nat" else "direct routing",
                    LABELS[key] + (f" ({r['failed']} failed opens)" if key == "real" and r["failed"] else ""),
                    fmt(e["mean"], 2),
                    fmt(e["p95"], 2),
                    fmt(e["max"], 2),
                    per,
                    f"{r['load']:.2f}",
                ]
            )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=10.0, help="arrivals per second")
    ap.add_argument("--shortest", type=float, default=5.0, help="the Pareto lengths' minimum, s")
    ap.add_argument("--longest", type=float, default=60.0, help="lengths are capped here, s")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--no-markdown", action="store_true")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m in MODES]
    problem = need_root()
    if problem:
        say(f"bench: {problem}")
        return 1
    began = time.monotonic()
    results = bounded(178, lambda: {m: run_mode(m, args) for m in modes})
    table = rows(results)
    print_table("wlc approximation", HEADERS, table)
    if not args.no_markdown:
        n = next(iter(results.values()))["arrivals"] if results else 0
        lines = [
            "### wlc approximation quality",
            "",
            stamp_line("lvs_wlc.py", time.monotonic() - began),
            "",
            f"pulse on both directors, virtual `web` with `scheduler = wlc`, weights rs1 1, rs2 1, rs3 2, "
            f"keepalive 1 (the director re-weights from live counts every second: conntrack in NAT, the "
            f"flow pin sets' sizes in direct routing). The client opens {n} held connections "
            f"(Poisson, {args.rate:g}/s for {args.seconds:g} s, seed {args.seed}) and closes each after a "
            f"Pareto({PARETO_ALPHA:g}) length from {args.shortest:g} s, capped at {args.longest:g} s (mean "
            f"{mean_length(args.shortest, args.longest):.1f} s; still open at the end: closed then). "
            "Spread = max − min over the servers "
            f"of active connections / weight, sampled every {SAMPLE:g} s after {WARMUP:g} s of warm-up, "
            "from the client's own records (0 = perfectly even). The same arrivals replayed through "
            "ideal wlc (each to the least active/weight), through a model of the director (each second "
            "the shares `core/scheduler.shares('wlc', ..., live counts, expected_new=1)`, a new table "
            "only when they moved, numgen counting from 0: what daemon/director.py does), through the "
            "same model expecting as many arrivals as the last second brought (the simulation in "
            "tests/core/test_scheduler.py) and through wrr on the weights alone. In direct routing the "
            "director counts a backend's flow pins, which outlive a closed connection by the pin timeout "
            "(tcp_timeout, else 900 s): there its counts are recent flows, not open connections.",
            "",
            *md_table(HEADERS, table),
            "",
        ]
        write_block("wlc", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
