"""``pulse status|takeover|release|reload``: one request to the running pulse's control socket."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ..daemon.control import COMMANDS, request
from ..daemon.status import render
from ..defaults import SOCKET


def client_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pulse",
        description="Ask the running pulse: status (who serves, why, partner, services, counters), "
        "takeover (this standby node takes the services, planned), release (this active node hands "
        "them to its partner, planned) or reload (re-read lvs.cf and say what changed or why not).",
    )
    p.add_argument("command", choices=COMMANDS)
    p.add_argument("--socket", metavar="PATH", default=SOCKET, help=f"default {SOCKET}")
    p.add_argument("--json", action="store_true", help="status as JSON (schema in docs/status.md)")
    return p


def main(argv: Sequence[str]) -> int:
    """Exit 0 done, 1 refused, 3 no daemon answering."""
    args = client_parser().parse_args(argv)
    try:
        answer = request(args.socket, args.command)
    except OSError as e:
        print(f"pulse: no pulse answers on {args.socket}: {e.strerror or e}", file=sys.stderr)
        return 3
    if not answer.get("ok"):
        print(f"pulse {args.command}: {answer.get('error', 'failed')}", file=sys.stderr)
        return 1
    if args.command != "status":
        print(answer["message"])
    elif args.json:
        print(json.dumps(answer["status"], indent=2, sort_keys=True))
    else:
        print(render(answer["status"]))
    return 0
