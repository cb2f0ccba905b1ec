"""Requests per second and latency through the director (NAT, direct routing) against the client
talking to the real server itself: the cost of the nftables path.

One real server (rs1) in the virtual, so every path ends at the same service. Short TCP
request/response (connect, ``PING``, two lines back, close), a new connection each, from the client's
namespace: one at a time for latency, ``--concurrency`` at once for throughput, paths interleaved in
``--rounds`` so the machine's load falls on all of them alike.

    python bench/lvs_rps.py [--requests 600] [--concurrency 8] [--rounds 5] [--no-markdown]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lvs_common import (  # noqa: E402
    bounded,
    director_pair,
    fmt,
    loadavg,
    md_table,
    median,
    need_root,
    percentile,
    print_table,
    request,
    say,
    stamp_line,
    write_block,
)

from pyrhfos_lab.lvslab import PORT, PRIMARY_IP, VIP, LvsLab, in_netns  # noqa: E402

TIMEOUT = 2.0


def sequential(lab: LvsLab, host: str, n: int) -> dict[str, Any]:
    """``n`` requests one after another: each one's latency (ms), and the rate."""

    def go() -> tuple[list[float], int, float]:
        lat: list[float] = []
        errors = 0
        began = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            if request(host, PORT, TIMEOUT) is None:
                errors += 1
            else:
                lat.append((time.perf_counter() - t0) * 1000)
        return lat, errors, time.perf_counter() - began

    lat, errors, took = in_netns(lab.client.ns, go)
    return {"lat": lat, "errors": errors, "rps": n / took}


def concurrent(lab: LvsLab, host: str, n: int, workers: int) -> dict[str, Any]:
    """``n`` requests over ``workers`` threads (each in the client's namespace): the rate."""

    def go() -> tuple[int, float, list[float]]:
        left = [n]
        lock = threading.Lock()
        errors = [0]
        lat: list[float] = []

        def work() -> None:
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                t0 = time.perf_counter()
                ok = request(host, PORT, TIMEOUT) is not None
                took = (time.perf_counter() - t0) * 1000
                with lock:
                    if ok:
                        lat.append(took)
                    else:
                        errors[0] += 1

        # Threads made by a thread inside the namespace are in it too (namespaces are per task).
        threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
        began = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        return errors[0], time.perf_counter() - began, lat

    errors, took, lat = in_netns(lab.client.ns, go)
    return {"errors": errors, "rps": n / took, "lat": lat}


def measure(lab: LvsLab, paths: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {p: {"seq": [], "conc": [], "loads": []} for p in paths}
    for host in paths.values():  # warm the ARP caches and conntrack paths
        sequential(lab, host, 20)
    for rnd in range(args.rounds):
        for path, host in paths.items():
            out[path]["loads"].append(loadavg())
            out[path]["seq"].append(sequential(lab, host, args.requests))
            out[path]["conc"].append(concurrent(lab, host, 2 * args.requests, args.concurrency))
            s, c = out[path]["seq"][-1], out[path]["conc"][-1]
            say(f"  round {rnd + 1} {path}: {s['rps']:.0f} req/s one at a time, {c['rps']:.0f} at once")
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with director_pair("direct", servers=["rs1"]) as lab:
        results.update(
            measure(
                lab,
                {
                    "client → rs1 (same bridge, no director)": lab.rs_addresses["rs1"],
                    "client → VIP → rs1 (direct routing: netdev ingress, fwd)": VIP,
                },
                args,
            )
        )
    with director_pair("nat", servers=["rs1"]) as lab:
        # Only for the baseline: the client routes to the private network through the active director.
        lab.client.run("ip", "route", "add", "198.51.100.0/24", "via", PRIMARY_IP)
        results.update(
            measure(
                lab,
                {
                    "client → rs1 routed by the director (no NAT)": lab.rs_addresses["rs1"],
                    "client → VIP → rs1 (NAT: dnat, conntrack)": VIP,
                },
                args,
            )
        )
    return results


HEADERS = (
    "path",
    "requests",
    "one at a time: req/s",
    "latency ms p50",
    "p50 − baseline µs",
    "p90",
    "p99",
    "at once: req/s",
    "at once: latency p50 ms",
    "errors",
    "load (min–max)",
)


def rows(results: dict[str, Any], concurrency: int) -> list[list[str]]:
    out = []
    base_p50: float | None = None
    for i, (path, r) in enumerate(results.items()):
        lat = [x for s in r["seq"] for x in s["lat"]]
        p50 = percentile(lat, 0.5)
        # Paths come in pairs per lab: its baseline first, then the path through the director.
        if i % 2 == 0:
            base_p50, extra = p50, "(baseline)"
        else:
            extra = "-" if p50 is None or base_p50 is None else f"{(p50 - base_p50) * 1000:+.0f}"
        clat = [x for s in r["conc"] for x in s["lat"]]
        n = sum(len(s["lat"]) + s["errors"] for s in r["seq"]) + sum(
            len(c["lat"]) + c["errors"] for c in r["conc"]
        )
        errors = sum(s["errors"] for s in r["seq"]) + sum(c["errors"] for c in r["conc"])
        out.append(
            [
                path,
                str(n),
                fmt(median([s["rps"] for s in r["seq"]]), 0),
                fmt(p50, 2),
                extra,
                fmt(percentile(lat, 0.9), 2),
                fmt(percentile(lat, 0.99), 2),
                fmt(median([c["rps"] for c in r["conc"]]), 0),
                fmt(percentile(clat, 0.5), 2),
                str(errors),
                f"{min(r['loads']):.2f}–{max(r['loads']):.2f}",
            ]
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--requests", type=int, default=600, help="per round and path one at a time (twice as many at once)"
    )
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-markdown", action="store_true")
    args = ap.parse_args()
    problem = need_root()
    if problem:
        say(f"bench: {problem}")
        return 1
    began = time.monotonic()
    results = bounded(178, lambda: run(args))
    table = rows(results, args.concurrency)
    print_table("Requests through the director", HEADERS, table)
    if not args.no_markdown:
        lines = [
            "### Requests per second and latency through the director",
            "",
            stamp_line("lvs_rps.py", time.monotonic() - began),
            "",
            "pulse on both directors, the virtual `web` with rs1 alone (so every path ends at the same "
            "service: the lab's Python real-server service, a thread per connection). Each request is a new "
            "TCP connection from the client's namespace: connect, `PING`, read the two answer lines, close. "
            f"{args.rounds} rounds, paths interleaved; per round and path {args.requests} requests one at a "
            f"time (latency: connect to last line) and {2 * args.requests} with {args.concurrency} at once "
            "(rate: requests / wall time; median of the rounds). Baselines: in direct routing the client "
            "reaches rs1 on its own bridge; in NAT it routes to the private network through the active "
            "director (forwarding only: the nat chain sees the packets but nothing matches). The client, "
            "the service and the directors share the machine's 2 cores: the rates are the lab's, not the "
            "kernel's; the differences between paths are the point.",
            "",
            *md_table(HEADERS, table),
            "",
        ]
        write_block("rps", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
