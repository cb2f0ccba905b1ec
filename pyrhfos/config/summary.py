"""The one-screen summary ``pulse --check`` prints for a valid lvs.cf.

Owns how this host's role is found (its addresses against primary/backup) and the layout.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address

from .keys import Seconds, escape
from .model import Config, Failover, ServiceKind, Virtual

_seconds = Seconds().write


def role(cfg: Config, local_addresses: Iterable[IPv4Address]) -> str:
    """ "primary", "backup" or "none": which of the file's nodes this host is."""
    found = cfg.role_of(local_addresses)
    return "none" if found is None else found.name.lower()


def _node(public: IPv4Address | None, private: IPv4Address | None) -> str:
    text = str(public) if public is not None else "(not set)"
    return f"{text} (private {private})" if private is not None else text


def _quoted(text: str | None) -> str:
    return "-" if text is None else f'"{escape(text)}"'


def _failover(f: Failover) -> list[str]:
    vip = f"{f.address.ip} on {f.address.label}" if f.address else "(no address)"
    if f.vip_nmask is not None:
        vip += f" /{f.prefixlen}"
    lines = [
        f"  failover {f.name}: {'active' if f.active else 'inactive'}, VIP {vip},"
        f" port {f.port}, timeout {_seconds(f.timeout)} s"
    ]
    if f.send_program is not None:
        lines.append(f"      probe: program {_quoted(f.send_program)}, expect {_quoted(f.expect)}")
    else:
        regex = " (regex)" if f.use_regex else ""
        lines.append(f"      probe: send {_quoted(f.send)}, expect {_quoted(f.expect)}{regex}")
    lines.append(f"      start: {f.start_cmd}")
    lines.append(f"      stop:  {f.stop_cmd}")
    return lines


def _virtual(v: Virtual) -> list[str]:
    vip = f"{v.address.ip} on {v.address.label}" if v.address else "(no address)"
    what = f"fwmark {v.fwmark}" if v.fwmark else f"{v.protocol} port {v.port}"
    active = sum(1 for s in v.servers if s.active)
    return [
        f"  virtual {v.name}: {'active' if v.active else 'inactive'}, VIP {vip}, {what},"
        f" scheduler {v.scheduler}, {active}/{len(v.servers)} real servers active"
    ]


def format_summary(cfg: Config, local_addresses: Iterable[IPv4Address]) -> str:
    """The summary text (several lines, no trailing newline)."""
    me = role(cfg, local_addresses)
    primary = _node(cfg.primary, cfg.primary_private)
    backup = _node(cfg.backup, cfg.backup_private) if cfg.backup_active else "none (backup_active = 0)"
    if me == "primary":
        partner = f"backup {backup}"
    elif me == "backup":
        partner = f"primary {primary}"
    else:
        partner = f"primary {primary}, backup {backup}"
    kind = "fos (failover services)" if cfg.service is ServiceKind.FOS else "lvs (virtual servers)"
    heartbeat = f"UDP port {cfg.heartbeat_port}" if cfg.heartbeat else "off"
    if not cfg.backup_active:
        heartbeat += " (none sent: backup_active = 0)"
    timing = f"keepalive {_seconds(cfg.keepalive)} s, deadtime {_seconds(cfg.deadtime)} s"
    lines = [
        f"file:       {cfg.path}",
        f"service:    {kind}",
        f"this host:  {me}" + ("  (no local address matches primary or backup)" if me == "none" else ""),
        f"partner:    {partner}",
        f"heartbeat:  {heartbeat}, {timing}",
    ]
    if cfg.service is ServiceKind.FOS:
        active = len(cfg.active_failovers)
        lines.append(f"failovers:  {len(cfg.failovers)} ({active} active)")
        for f in cfg.failovers:
            lines += _failover(f)
    else:
        lines.append(f"virtuals:   {len(cfg.virtuals)} (network {cfg.network.value})")
        for v in cfg.virtuals:
            lines += _virtual(v)
    return "\n".join(lines)
