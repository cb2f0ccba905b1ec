"""``pulse simulate [-c FILE] TIMELINE [--json]``: run a timeline of events against lvs.cf on the
simulated pair (pyrhfos/sim) and print each state change with the daemon's own reason, and each VIP's holders.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from ..sim.timeline import EVENTS, TimelineError, parse
from ..sim.world import Record, simulate
from .common import EXIT_CONFIG, add_configfile, find_config, load_or_report

EPILOG = (
    "TIMELINE: one event per line, 'SECONDS NODE EVENT [ARG]', NODE primary or backup, EVENT one of "
    + ", ".join(
        {"seconds": f"{e} SECONDS", "service": f"{e} NAME"}.get(a or "", e) for e, a in EVENTS.items()
    )
    + "; link-down/link-up take public or private (default both), partition takes one-way "
    "(only what NODE sends is cut); '#' starts a comment. A node whose first event is not start "
    "starts at 0. See docs/simulate.md."
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pulse simulate",
        description="Run a timeline of events against lvs.cf on two simulated nodes, in virtual time.",
        epilog=EPILOG,
    )
    add_configfile(p, "simulate")
    p.add_argument("timeline", metavar="TIMELINE", help="the timeline file ('-' for standard input)")
    p.add_argument("--json", action="store_true", help="one JSON object per line, for scripts")
    p.add_argument(
        "--until",
        type=float,
        metavar="SECONDS",
        help="end (default: 3 x deadtime, >= 10 s, after the last event)",
    )
    p.add_argument(
        "--start-seconds", type=float, default=0.05, metavar="S", help="how long each start_cmd takes (0.05)"
    )
    p.add_argument(
        "--stop-seconds", type=float, default=0.05, metavar="S", help="how long each stop_cmd takes (0.05)"
    )
    return p


def render(r: Record) -> str:
    """One line of text: state changes as pulse logs them, VIP holders, timeline events, answers."""
    t = f"{r.t:9.3f}"
    if r.kind == "state":
        return f"{t} {r.node} {r.old} -> {r.new}: {r.reason}"
    if r.kind == "vip":
        return f"{t}   vip {r.service} {r.ip}: {', '.join(r.holders) or 'nobody'}"
    if r.kind == "event":
        return f"{t} # {r.node} {r.reason}"
    return f"{t} {r.node}: {r.reason}"


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(list(argv))
    cfg = load_or_report(find_config(args.configfile))
    if cfg is None:
        return EXIT_CONFIG
    if not cfg.backup_active:
        print("pulse simulate: lvs.cf has backup_active = 0: there is no pair to simulate", file=sys.stderr)
        return EXIT_CONFIG
    name = "<stdin>" if args.timeline == "-" else args.timeline
    try:
        text = sys.stdin.read() if args.timeline == "-" else open(args.timeline, encoding="utf-8").read()
    except OSError as e:
        print(f"pulse simulate: {name}: {e.strerror or e}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        steps = parse(text, [f.name for f in cfg.active_failovers])
    except TimelineError as e:
        print(e.render(name), file=sys.stderr)
        return EXIT_CONFIG
    records = simulate(
        cfg,
        steps,
        args.until,
        start_seconds=args.start_seconds,
        stop_seconds=args.stop_seconds,
    )
    try:
        for r in records:
            print(json.dumps(r.as_dict()) if args.json else render(r))
        sys.stdout.flush()
    except BrokenPipeError:  # `pulse simulate ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
