"""What of a valid LVS file this host can run: the refusals pulse starts with (errors, exit 2) and the
warnings ``pulse --check`` prints and daemon start-up logs, each at its FILE:LINE:COL.

validate.py says what a file means (a reader's rules); this module says what a director built on
nftables (docs/lvs.md) does with it. Nothing here makes ``--check`` fail: it only warns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from ipaddress import IPv4Address

from .grammar import Diagnostic
from .model import Config, NetworkMode, Position, Server, ServiceKind, Virtual

__all__ = ["check_diagnostics", "lvs_refusals", "lvs_warnings"]

_ANY = IPv4Address(0)
_Warn = Callable[[Position, str], None]
# Schedulers with no nftables counterpart that the director runs as another one (core/scheduler.py).
_MAPPED_SCHEDULERS = {"lblc": "wlc", "lblcr": "wlc"}


def _at(cfg: Config, pos: Position, message: str, severity: str) -> Diagnostic:
    return Diagnostic(cfg.path, pos.line, pos.col, message, severity)


def _pos(positions: dict[str, Position], key: str) -> Position:
    """Where ``key`` was written, else where its block starts (line 1 for the global settings)."""
    return positions.get(key) or positions.get("") or Position(1, 1)


def _active_virtuals(cfg: Config) -> tuple[Virtual, ...]:
    return tuple(v for v in cfg.virtuals if v.active)


def _active_servers(v: Virtual) -> tuple[Server, ...]:
    return tuple(s for s in v.servers if s.active)


def lvs_refusals(cfg: Config) -> list[Diagnostic]:
    """Errors pulse refuses to start an LVS director with (exit 2); ``--check`` shows them as warnings.

    Empty for a FOS file. Sorted by position.
    """
    if cfg.service is not ServiceKind.LVS:
        return []
    out: list[Diagnostic] = []

    def refuse(pos: Position, message: str) -> None:
        out.append(_at(cfg, pos, message, "error"))

    if cfg.network is NetworkMode.TUNNEL:
        refuse(
            _pos(cfg.positions, "network"),
            "'network = tunnel' (IPIP) is not built: pulse refuses to start with it;"
            " use 'network = nat' or 'network = direct'",
        )
    if cfg.network is NetworkMode.NAT and cfg.nat_router is not None and cfg.nat_router.ip == _ANY:
        refuse(
            _pos(cfg.positions, "nat_router"),
            "'nat_router = 0.0.0.0' is not an address the director can hold:"
            " give the real servers' gateway, or remove the line",
        )
    for v in _active_virtuals(cfg):
        if v.address is not None and v.address.ip == _ANY:
            refuse(
                _pos(v.positions, "address"),
                f"virtual '{v.name}': 0.0.0.0 is a placeholder, not a VIP a director can hold"
                " (give the address, or set 'active = 0')",
            )
        for s in _active_servers(v):
            if s.address is not None and s.address == _ANY:
                refuse(
                    _pos(s.positions, "address"),
                    f"server '{s.name}' of virtual '{v.name}': 0.0.0.0 is not a real server's address"
                    " (give it, or set 'active = 0')",
                )
    return sorted(out, key=lambda d: (d.line, d.col))


def lvs_warnings(cfg: Config) -> list[Diagnostic]:
    """What an LVS director runs differently from what the file asks, or what it lacks to serve.

    Empty for a FOS file. Sorted by position. None of these stops pulse.
    """
    if cfg.service is not ServiceKind.LVS:
        return []
    out: list[Diagnostic] = []

    def warn(pos: Position, message: str) -> None:
        out.append(_at(cfg, pos, message, "warning"))

    active = _active_virtuals(cfg)
    g = cfg.positions
    if cfg.hard_shutdown:
        warn(_pos(g, "hard_shutdown"), "'hard_shutdown = 1': power-switch fencing is not supported: ignored")
    if cfg.reservation_conflict_action != "nothing":
        warn(
            _pos(g, "reservation_conflict_action"),
            f"'reservation_conflict_action = {cfg.reservation_conflict_action}': shared-SCSI reservations"
            " are not supported: treated as 'nothing'",
        )
    if cfg.network is NetworkMode.NAT and cfg.nat_router is None and active:
        warn(
            _pos(g, "network"),
            "'network = nat' without 'nat_router': the real servers need a route back through the"
            " director (nat_router = IP DEV:N as their default gateway), or their replies bypass the NAT",
        )
    for v in active:
        _virtual_warnings(cfg, v, warn)
    return sorted(out, key=lambda d: (d.line, d.col))


def _virtual_warnings(cfg: Config, v: Virtual, warn: _Warn) -> None:
    p = v.positions
    name = f"virtual '{v.name}'"
    mapped = _MAPPED_SCHEDULERS.get(v.scheduler)
    if mapped is not None:
        warn(
            _pos(p, "scheduler"),
            f"{name}: 'scheduler = {v.scheduler}' (locality-based) has no nftables counterpart:"
            f" run as {mapped}",
        )
    if "load_monitor" in p and v.load_monitor != "none":
        warn(
            _pos(p, "load_monitor"),
            f"{name}: 'load_monitor = {v.load_monitor}' (weights from the real servers' load over rsh)"
            " is not supported: treated as none",
        )
    if "port" not in p and v.fwmark is None:
        warn(_pos(p, ""), f"{name} has no 'port' (nor 'fwmark'): port 80 is used, as Piranha did")
    servers = _active_servers(v)
    if not servers and v.sorry_server is None:
        warn(
            _pos(p, ""),
            f"{name} has no active server and no 'sorry_server': connections to it find no one",
        )
    elif servers and all(s.weight == 0 for s in servers) and v.sorry_server is None:
        warn(
            _pos(p, ""),
            f"{name}: every active server has 'weight = 0', and there is no 'sorry_server':"
            " no new connection is served",
        )
    if v.protocol == "udp" and v.send_program is None and not v.send:
        warn(
            _pos(p, "protocol"),
            f"{name}: a UDP probe with neither 'send_program' nor 'send' sees a dead server only when it"
            " answers ICMP port unreachable (silence counts as up): give a 'send_program'",
        )
    if cfg.network is NetworkMode.DIRECT:
        if v.fwmark is not None:
            warn(
                _pos(p, "fwmark"),
                f"{name}: with 'network = direct' the mark is read at the interface's ingress hook,"
                " before iptables or nftables prerouting rules run: set it in a netdev ingress chain",
            )
        for s in servers:
            if s.port is not None and s.port != v.port and v.fwmark is None:
                warn(
                    _pos(s.positions, "port"),
                    f"server '{s.name}' of {name}: direct routing forwards the packet unchanged, so port"
                    f" {s.port} is probed but connections arrive on port {v.port}",
                )
    seen: dict[tuple[IPv4Address, int], Server] = {}
    for s in servers:
        if s.address is None:
            continue
        first = seen.setdefault((s.address, s.port or v.port), s)
        if first is not s:
            warn(
                _pos(s.positions, "address"),
                f"server '{s.name}' of {name} is the same real server as '{first.name}'"
                f" (line {_pos(first.positions, '').line}): it is scheduled twice",
            )


def check_diagnostics(cfg: Config) -> list[Diagnostic]:
    """What ``pulse --check`` prints: the refusals, as warnings naming the refusal, and the warnings."""
    refusals = [dataclasses.replace(d, severity="warning") for d in lvs_refusals(cfg)]
    return sorted(refusals + lvs_warnings(cfg), key=lambda d: (d.line, d.col))
