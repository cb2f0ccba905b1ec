"""What ``pulse status`` shows: the status (schema in docs/status.md) built from the running parts,
the recent-events log, and the one-screen text of a status.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types only: pulse status and piranha-gui render a status without the daemon's parts
    from ..config.model import Config
    from ..core.machine import Cluster
    from .beatlink import BeatLink
    from .services import ServiceSet
    from .startup import Membership

SCHEMA = 1
_PROBE = {None: "unknown", True: "ok", False: "failed"}


class RecentEvents(logging.Handler):
    """The last log lines at INFO and above, for ``pulse status`` (what happened lately, and why)."""

    def __init__(self, size: int = 20) -> None:
        super().__init__(logging.INFO)
        self.records: deque[tuple[float, str, str]] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.created, record.levelname.lower(), record.getMessage()))


def snapshot(
    *,
    machine: Cluster,
    membership: Membership,
    cfg: Config,
    services: ServiceSet,
    link: BeatLink,
    counters: Mapping[str, int],
    events: RecentEvents,
    links: Mapping[str, bool] | None = None,
    now: float,
    wall: float,
) -> dict[str, Any]:
    """Everything ``pulse status`` shows. ``now`` is the machine's clock, ``wall`` the same instant
    as a Unix time (stamps in the status are wall-clock times)."""
    m, p = machine, machine.partner

    def stamp(t: float | None) -> float | None:
        return None if t is None else wall - (now - t)

    return {
        "schema": SCHEMA,
        "node": {
            "role": m.role.name.lower(),
            "state": m.state.name.lower(),
            "since": stamp(m.since),
            "reason": m.reason,
            "pid": os.getpid(),
            "config": cfg.path,
            "mode": cfg.service.value,
            "serial": cfg.serial_no,
            "hold_down": max(0.0, m.hold_until - now),
            "links": dict(links or {}),  # watched interface -> has link (LVS, or monitor_links = 1)
        },
        "partner": {
            "addresses": [str(a) for a in membership.partner_paths],
            "paths": {
                path: {"last_beat_age": None if path not in p.last_heard else now - p.last_heard[path]}
                for path in p.paths
            },
            "state": None if p.state is None else p.state.name.lower(),
            "alive": m.partner_alive(now),
            "hold_down": p.hold,
            "protocol": link.protocol if membership.partner_paths else None,
            "config_match": None if link.partner_digest is None else link.partner_digest == link.digest,
        },
        "services": [
            {
                "name": s.name,
                "vip": str(s.ip),
                "label": s.address.label,
                "port": s.f.port,
                "held": s.held,
                "probe": _PROBE[s.probe_ok],
                "probe_reason": s.probe_reason,
                "probe_latency": s.probe_latency,
                "last_change": stamp(s.changed_at) if s.changed_at else None,
            }
            for s in services
        ],
        "virtuals": services.virtual_status(stamp),
        "sync": _sync_status(services),
        "counters": {**counters, "activations": m.activations, "garp-sent": services.garp_sent},
        "events": [{"time": t, "level": lv, "message": msg} for t, lv, msg in events.records],
    }


def _sync_status(services: ServiceSet) -> dict[str, Any] | None:
    """The director's connection sync daemon (syncdaemon = 1), or None (FOS, or no sync)."""
    sync_status = getattr(services, "sync_status", None)  # only a Director has one
    return None if sync_status is None else sync_status()


def _render_sync(sync: dict[str, Any] | None) -> list[str]:
    if not sync:
        return []
    lines = []
    if sync.get("daemon"):
        if sync["running"]:
            state = f"running, pid {sync['pid']}"
        else:
            state = "NOT RUNNING (connections are not synced)"
        line = f"sync:      {sync['daemon']} {state}, to {sync['peer']} port {sync['port']}"
        line += f", restarts {sync['restarts']}"
        if sync["last_error"]:
            line += f"\n           last error {when(sync['last_error_time'])}: {sync['last_error']}"
        lines.append(line)
    table = sync.get("table")
    if table:  # direct routing: the pins and persistence elements (net/tablesync.py)
        line = "sync:      table" if not lines else "           table"
        line += f" to {table['peer']} port {table['port']}: {'sending' if table['sending'] else 'receiving'}"
        line += f", sent {table['elements_sent']}, received {table['elements_received']}"
        line += f", dropped {table['dropped']}, cached {table['cached']}"
        if table["last_error"]:
            line += f"\n           last error {when(table['last_error_time'])}: {table['last_error']}"
        lines.append(line)
    return lines


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


def _render_virtuals(virtuals: list[dict[str, Any]]) -> list[str]:
    """LVS: each virtual and its real servers, in the shape of ``ipvsadm -L -n``."""
    if not virtuals:
        return []
    lines = ["virtual servers:                         weight  in effect  ActiveConn InActConn  health"]
    for v in virtuals:
        where = f"FWM {v['fwmark']}" if v["fwmark"] else f"{v['vip']}:{v['port']}"
        extra = f" persistent {v['persistent']}" if v["persistent"] else ""
        state = "" if v["active"] else " (inactive)"
        sorry = (
            f", sorry server {v['sorry_server']}" + (" IN USE" if v["sorry_in_use"] else "")
            if v["sorry_server"]
            else ""
        )
        lines.append(f"  {v['protocol'].upper()} {where} {v['scheduler']}{extra} [{v['name']}]{state}{sorry}")
        for s in v["servers"]:
            effect = "-" if s["weight_in_effect"] is None else str(s["weight_in_effect"])
            why = f" ({s['probe_reason']})" if s["probe"] == "failed" and s["probe_reason"] else ""
            lines.append(
                f"    -> {s['address']}:{s['port']:<6} {s['name']:<12} {s['weight']:>6}  {effect:>9}  "
                f"{s['active_connections']:>10} {s['inactive_connections']:>9}  {s['health']}{why}"
            )
    return lines


def render(status: dict[str, Any]) -> str:
    """The one-screen text of ``pulse status``."""
    node, partner = status["node"], status["partner"]
    lines = [
        f"this node: {node['role']}, {node['state'].upper()} since {when(node['since'])} ({node['reason']})",
        f"           pid {node['pid']}, {node['config']} (serial {node['serial']})",
    ]
    down = [name for name, up in node.get("links", {}).items() if not up]
    if node.get("links"):
        state = f"DOWN: {', '.join(down)} (this node cannot serve)" if down else "all up"
        lines.append(f"           links {', '.join(node['links'])}: {state}")
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
    lines.append("services:" if not status.get("virtuals") else "held addresses:")
    for s in status["services"]:
        if s["port"] is None:  # an LVS director's VIP or nat_router: no service of its own to probe
            lines.append(
                f"  {s['name']:<16} {s['vip']} on {s['label']}: {'HELD' if s['held'] else 'not held'}"
            )
            continue
        lines.append(
            f"  {s['name']:<16} {s['vip']} on {s['label']} port {s['port']}: "
            f"{'HELD' if s['held'] else 'not held'}, probe {s['probe']}"
            + (f" ({s['probe_reason']})" if s["probe_reason"] and s["probe"] != "ok" else "")
            + f", since {when(s['last_change'])}"
        )
    lines += _render_virtuals(status.get("virtuals", []))
    lines += _render_sync(status.get("sync"))
    counters = ", ".join(f"{k} {v}" for k, v in sorted(status["counters"].items()))
    lines.append(f"counters:  {counters or 'none'}")
    events = status.get("events", [])[-5:]
    if events:
        lines.append("recent:")
        lines += [f"  {when(e['time'])} {e['message']}" for e in events]
    return "\n".join(lines)
