"""Dead real server out of rotation: fault on one real server -> no new connection reaches it.

pulse on both directors of the LVS lab (keepalive 1, deadtime 3, the virtual's timeout 1, rr over rs1..rs3).
The client makes a new connection to VIP:80 every 10 ms (50 ms limit); with rs1 and rs3 healthy, every
failed one was sent to rs2. Out of rotation = fault -> the start of the last connection that failed
as one sent to rs2 does (refused, or no answer to its SYN).
Faults: ``kill9`` (SIGKILL of rs2's service: refused at once) and ``silent`` (rs2's switch port down:
its probe times out). Goal (issue 15): median <= timeout + keepalive.

    python bench/lvs_dead.py [--reps 5] [--modes nat,direct] [--faults kill9,silent] [--no-markdown]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lvs_common import (  # noqa: E402
    Prober,
    bounded,
    director_pair,
    fmt,
    loadavg,
    md_table,
    median,
    need_root,
    print_table,
    pulse_log,
    say,
    spread,
    stamp_line,
    write_block,
)

from pyrhfos_lab.lvslab import PORT, VIP, LvsLab  # noqa: E402
from pyrhfos_lab.testbed import wait_until  # noqa: E402

KEEPALIVE, DEADTIME, TIMEOUT, REENTRY = 1.0, 3.0, 1.0, 2.0
GOAL = TIMEOUT + KEEPALIVE
VICTIM = "rs2"
FAULTS = ("kill9", "silent")
MODES = ("nat", "direct")


# How a connection sent to the dead rs2 fails: anything else (a healthy server slow under the machine's
# load past the 50 ms limit) is noise, counted apart.
SIGNATURE = {"kill9": "refused", "silent": "connect timeout"}


def last_failure(failures: list[tuple[float, str]], since: float, kind: str) -> float | None:
    times = [t for t, k in failures if t >= since and k == kind]
    return max(times) if times else None


def one(lab: LvsLab, fault: str) -> dict[str, Any]:
    kind = SIGNATURE[fault]
    prober = Prober(lab)
    try:
        if not wait_until(lambda: sum(1 for _, w in prober.snapshot() if w) >= 30, 10, 0.05):
            raise RuntimeError("no answers through the VIP before the fault")
        time.sleep(0.3 + random.uniform(0.0, KEEPALIVE))  # a random phase of the probe cycle
        fault_at = time.monotonic()
        if fault == "kill9":
            pid = lab.rs_pid(VICTIM)
            if pid is None:
                raise RuntimeError(f"{VICTIM}'s service is not running")
            os.kill(pid, signal.SIGKILL)
        else:
            lab.rs[VICTIM].link_down()
        # Until 1.5 s without such a failure (at most 8 s): the last one is then behind us.
        deadline = fault_at + 8.0
        while time.monotonic() < deadline:
            with prober.lock:
                last = last_failure(prober.failures, fault_at, kind) or fault_at
            if time.monotonic() - max(last, fault_at + 0.5) >= 1.5:
                break
            time.sleep(0.1)
        settled = time.monotonic() < deadline
    finally:
        samples = prober.stop()
    failures = [(t, k) for t, k in prober.failures if t >= fault_at]
    final = last_failure(failures, fault_at, kind)
    return {
        "out_ms": 0.0 if final is None else round((final - fault_at) * 1000, 1),
        "failed": sum(1 for _, k in failures if k == kind),
        "other_failures": sum(1 for _, k in failures if k != kind),
        "tries": sum(1 for t, _ in samples if t >= fault_at),
        "settled": settled,
    }


def restore(lab: LvsLab, fault: str) -> None:
    """rs2 back and answering through the VIP again (after reentry) before the next repetition."""
    if fault == "kill9":
        lab.start_rs(VICTIM)
    else:
        lab.rs[VICTIM].link_up()
    if not wait_until(lambda: lab.connect_many(VIP, PORT, 6, timeout=0.5)[VICTIM] > 0, 20, 0.2):
        raise RuntimeError(f"{VICTIM} did not come back into rotation")
    time.sleep(0.5)


def run_mode(mode: str, faults: list[str], reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pair = director_pair(mode, keepalive=KEEPALIVE, deadtime=DEADTIME, timeout=TIMEOUT, reentry=REENTRY)  # type: ignore[arg-type]
    with pair as lab:
        for fault in faults:
            runs = []
            for rep in range(reps):
                load = loadavg()
                try:
                    r = one(lab, fault)
                except RuntimeError as e:
                    r = {"out_ms": None, "error": str(e), "log": pulse_log(lab, "primary")}
                r["load"] = load
                runs.append(r)
                say(f"  {mode} {fault} #{rep + 1}: out of rotation {fmt(r.get('out_ms'))} ms, "
                    f"{r.get('failed')} failed of {r.get('tries')} ({r.get('other_failures')} other), "
                    f"load {load}")  # fmt: skip
                restore(lab, fault)
            out[fault] = runs
    return out


HEADERS = (
    "mode",
    "fault",
    "out of rotation ms: median (min–max)",
    "failed connections / run: median",
    "other failures (all runs)",
    "goal ≤ timeout + keepalive (2000 ms)",
    "load (min–max)",
)


def rows(results: dict[str, Any]) -> list[list[str]]:
    out = []
    for mode, faults in results.items():
        for fault, runs in faults.items():
            vals = [r["out_ms"] for r in runs if r.get("out_ms") is not None]
            med = median(vals)
            loads = [r["load"] for r in runs]
            errors = len(runs) - len(vals)
            met = "-" if med is None else ("met" if med <= GOAL * 1000 else "NOT met")
            out.append(
                [
                    "NAT" if mode == "nat" else "direct routing",
                    fault + (f" ({errors} failed runs)" if errors else ""),
                    spread(vals, 0),
                    fmt(median([r["failed"] for r in runs if "failed" in r]), 0),
                    str(sum(r.get("other_failures", 0) for r in runs)),
                    met,
                    f"{min(loads):.2f}–{max(loads):.2f}",
                ]
            )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--faults", default=",".join(FAULTS))
    ap.add_argument("--no-markdown", action="store_true")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m in MODES]
    faults = [f for f in args.faults.split(",") if f in FAULTS]
    problem = need_root()
    if problem:
        say(f"bench: {problem}")
        return 1
    began = time.monotonic()
    results = bounded(178, lambda: {m: run_mode(m, faults, args.reps) for m in modes})
    table = rows(results)
    print_table("Dead real server out of rotation", HEADERS, table)
    if not args.no_markdown:
        lines = [
            "### Dead real server out of rotation",
            "",
            stamp_line("lvs_dead.py", time.monotonic() - began),
            "",
            "pulse on both directors (keepalive 1, deadtime 3), virtual `web` on VIP:80, rr over rs1..rs3, "
            f"send/expect probe with timeout {TIMEOUT:g}, reentry {REENTRY:g}, quiesce_server 0. The client "
            "makes a new connection to VIP:80 every 10 ms (50 ms limit); rs1 and rs3 stay healthy, so every "
            "failed connection was sent to rs2. Out of rotation = fault → the start of the last "
            "connection that failed the way one sent to rs2 fails (kill9: refused; silent: no answer to "
            "the SYN within the limit; 0 when none did); other failures (a healthy server slower than "
            "the limit under the machine's load) are counted apart. The fault comes at a random phase of "
            "the probe cycle; then rs2 is restored "
            f"and back in rotation before the next of {args.reps} repetitions, one lab per mode. `kill9`: "
            "SIGKILL of rs2's service (refused at once: the probe after the fault fails); `silent`: rs2's "
            "switch port down (its probe waits out the timeout).",
            "",
            *md_table(HEADERS, table),
            "",
        ]
        write_block("dead", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
