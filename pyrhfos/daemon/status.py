"""What ``pulse status`` shows: the recent-events log and the one-screen text of a status.

The status schema is documented in docs/status.md.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any


class RecentEvents(logging.Handler):
    """The last log lines at INFO and above, for ``pulse status`` (what happened lately, and why)."""

    def __init__(self, size: int = 20) -> None:
        super().__init__(logging.INFO)
        self.records: deque[tuple[float, str, str]] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.created, record.levelname.lower(), record.getMessage()))


def _age(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f}s ago"


def when(stamp: float | None, missing: str = "-") -> str:
    """A status time stamp as local time; ``missing`` when there is none, "?" when it is not a time."""
    if stamp is None:
        return missing
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
    except (OverflowError, OSError, ValueError, TypeError):
        return "?"


def render(status: dict[str, Any]) -> str:
    """The one-screen text of ``pulse status``."""
    node, partner = status["node"], status["partner"]
    lines = [
        f"this node: {node['role']}, {node['state'].upper()} since {when(node['since'])} ({node['reason']})",
        f"           pid {node['pid']}, {node['config']} (serial {node['serial']})",
    ]
    if partner["addresses"]:
        match = {True: "same lvs.cf", False: "DIFFERENT lvs.cf", None: "lvs.cf not compared"}[
            partner["config_match"]
        ]
        lines.append(
            f"partner:   {', '.join(partner['addresses'])}: {(partner['state'] or 'unknown').upper()}, "
            f"{'alive' if partner['alive'] else 'DEAD'}, {partner['protocol'] or 'not heard'}, {match}"
        )
        for path, info in partner["paths"].items():
            lines.append(f"           last beat via {path}: {_age(info['last_beat_age'])}")
    else:
        lines.append("partner:   none (backup_active = 0)")
    lines.append("services:")
    for s in status["services"]:
        lines.append(
            f"  {s['name']:<16} {s['vip']} on {s['label']} port {s['port']}: "
            f"{'HELD' if s['held'] else 'not held'}, probe {s['probe']}"
            + (f" ({s['probe_reason']})" if s["probe_reason"] and s["probe"] != "ok" else "")
            + f", since {when(s['last_change'])}"
        )
    counters = ", ".join(f"{k} {v}" for k, v in sorted(status["counters"].items()))
    lines.append(f"counters:  {counters or 'none'}")
    events = status.get("events", [])[-5:]
    if events:
        lines.append("recent:")
        lines += [f"  {when(e['time'])} {e['message']}" for e in events]
    return "\n".join(lines)
