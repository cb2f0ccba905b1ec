"""What the simulation tests share: an lvs.cf for the simulated pair, a run, and readings of its record."""

from __future__ import annotations

from typing import Any

from pyrhfos.config import loads
from pyrhfos.config.model import Config
from pyrhfos.sim.timeline import parse
from pyrhfos.sim.world import Record, World


def config(
    keepalive: float = 1,
    deadtime: float = 3,
    reentry: float | None = None,
    services: int = 1,
    private: bool = True,
) -> Config:
    blocks = "".join(
        f"""
failover web{i} {{
    address = 192.168.2.{10 + i} eth0:{i}
    active = 1
    port = 80
    send = "GET / HTTP/1.0\\r\\n\\r\\n"
    expect = "HTTP"
    timeout = {deadtime}
    start_cmd = "/etc/init.d/httpd start"
    stop_cmd = "/etc/init.d/httpd stop"
{"" if reentry is None else f"    reentry = {reentry}"}
}}
"""
        for i in range(1, services + 1)
    )
    text = f"""serial_no = 1
primary = 192.168.1.10
{"primary_private = 10.0.0.1" if private else ""}
service = fos
backup_active = 1
backup = 192.168.1.11
{"backup_private = 10.0.0.2" if private else ""}
heartbeat = 1
heartbeat_port = 539
keepalive = {keepalive}
deadtime = {deadtime}
{blocks}"""
    cfg, _ = loads(text)
    return cfg


def run(timeline: str, until: float, cfg: Config | None = None, **options: Any) -> World:
    """A World that ran ``timeline`` to ``until`` seconds (closed: its record stays readable)."""
    world = World(cfg or config(), **options)
    world.schedule(parse(timeline))
    try:
        world.run(until)
    finally:
        world.close()
    return world


def states(records: list[Record]) -> list[tuple[str, str, str]]:
    return [(r.node or "", r.old or "", r.new or "") for r in records if r.kind == "state"]


def unheld(records: list[Record], service: str, since: float, until: float) -> float:
    """Seconds within [since, until] that nobody held ``service``'s VIP."""
    changes = [(r.t, r.holders) for r in records if r.kind == "vip" and r.service == service]
    total, holders, t0 = 0.0, (), since
    for t, now in changes:
        if t <= since:
            holders = now
            continue
        if t > until:
            break
        if not holders:
            total += t - t0
        holders, t0 = now, t
    if not holders:
        total += until - t0
    return total
