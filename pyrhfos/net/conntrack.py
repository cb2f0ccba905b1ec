"""The director's connection table through pyroute2's conntrack (netlink): connections per real server
as ipvsadm counted them, dropping a dead server's connections, and the forwarding sysctls.

Blocking calls on the current network namespace: the asyncio director runs them with asyncio.to_thread
(pyroute2's synchronous sockets drive an event loop of their own and fail inside a running one).
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
TCP_ESTABLISHED = 3  # TCP_CONNTRACK_ESTABLISHED (linux/netfilter/nf_conntrack_tcp.h)
IPS_DST_NAT = 1 << 5  # the entry's destination was rewritten (our dnat), not the director's own flow
SYSCTL_ROOT = Path("/proc/sys")
_SYSCTL_NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")

Backend = tuple[IPv4Address, int]


def _proto(proto: str) -> int:
    try:
        return PROTOCOLS[proto]
    except KeyError:
        raise ValueError(f"protocol must be tcp or udp, not {proto!r}") from None


def _entries(proto: str, vip: IPv4Address | None = None, vport: int | None = None) -> Iterator[Any]:
    """Entries of ``proto`` (with original destination vip:vport when given), kernel-filtered where the
    kernel can (5.8+) and again by pyroute2."""
    from pyroute2 import Conntrack  # here: importing this module must not load pyroute2
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    want = NFCTAttrTuple(
        proto=_proto(proto),
        daddr=None if vip is None else str(vip),
        dport=vport,
    )
    with Conntrack() as ct:
        yield from ct.dump_entries(tuple_orig=want)


def _backend_of(entry: Any) -> Backend | None:
    """The real server a NAT'ed entry leads to: its reply tuple's source."""
    reply = entry.tuple_reply
    if not entry.status & IPS_DST_NAT or reply.saddr is None or reply.sport is None:
        return None
    return IPv4Address(reply.saddr), int(reply.sport)


def counts(
    vip: IPv4Address | None, vport: int | None, proto: str, backends: Iterable[Backend]
) -> dict[Backend, tuple[int, int]]:
    """(active, inactive) connections per backend of one virtual, as ipvsadm's ActiveConn/InActConn:
    active = TCP ESTABLISHED, inactive = every other entry (SYN_RECV, FIN_WAIT, TIME_WAIT, any UDP).

    NAT entries whose original destination is vip:vport (a fwmark virtual passes None for both: every
    NAT'ed entry of ``proto``) and whose reply comes from the backend. Every backend asked for is in the
    result, 0/0 without entries. Direct routing has no conntrack on the director: nothing to count.
    """
    out = dict.fromkeys(backends, (0, 0))
    for entry in _entries(proto, vip, vport):
        key = _backend_of(entry)
        if key not in out:
            continue
        active, inactive = out[key]
        info = entry.protoinfo
        if info is not None and info.state == TCP_ESTABLISHED:
            out[key] = (active + 1, inactive)
        else:
            out[key] = (active, inactive + 1)
    return out


def flush(backend_address: IPv4Address, backend_port: int, proto: str) -> int:
    """Delete every NAT'ed ``proto`` entry leading to backend_address:backend_port; how many went.

    The director's own flows to the server (its probes) are not NAT'ed and stay. A client whose entry
    went is no longer translated: its next packet reaches the director itself, which resets it (with
    nf_conntrack_tcp_loose = 0; with 1 the mid-stream packet is scheduled afresh).
    """
    from pyroute2 import Conntrack
    from pyroute2.netlink.exceptions import NetlinkError

    target = (IPv4Address(backend_address), int(backend_port))
    doomed = [e for e in _entries(proto) if _backend_of(e) == target]
    deleted = 0
    with Conntrack() as ct:
        for entry in doomed:
            try:
                ct.delete(entry)
            except NetlinkError as e:
                if e.code != errno.ENOENT:  # gone meanwhile (timed out, closed): fine
                    raise
                continue
            deleted += 1
    return deleted


def _sysctl_path(name: str) -> Path:
    if not _SYSCTL_NAME.match(name):
        raise ValueError(f"not a sysctl name: {name!r}")
    return SYSCTL_ROOT / name.replace(".", "/")


def get_sysctl(name: str) -> str:
    """The current value of sysctl ``name`` (net.ipv4.ip_forward) in this network namespace."""
    return _sysctl_path(name).read_text().strip()


def set_sysctl(name: str, value: int | str) -> str:
    """Set sysctl ``name`` to ``value`` in this network namespace; return the value it had.

    For net.ipv4.ip_forward (a NAT director forwards) and net.netfilter.nf_conntrack_tcp_loose (0 on
    a director: a mid-stream packet must not become a new, rescheduled connection). The latter exists
    only once nf_conntrack is loaded (our nat table loads it): FileNotFoundError before.
    """
    path = _sysctl_path(name)
    previous = path.read_text().strip()
    if previous != str(value):
        path.write_text(f"{value}\n")
    return previous


class ConntrackTracker:
    """This module's calls as the one object a director is handed (a test hands it a fake)."""

    counts = staticmethod(counts)
    flush = staticmethod(flush)

    def set_timeouts(self, tcp: int | None, tcpfin: int | None, udp: int | None) -> list[str]:
        """lvs.cf's tcp_timeout/tcpfin_timeout/udp_timeout as this namespace's conntrack sysctls (the
        JSON API of Debian's libnftables 1.0.6 drops a ct timeout object's policy); what changed."""
        wanted = {
            "nf_conntrack_tcp_timeout_established": tcp,
            "nf_conntrack_tcp_timeout_fin_wait": tcpfin,
            "nf_conntrack_udp_timeout": udp,
            "nf_conntrack_udp_timeout_stream": udp,
        }
        changed = []
        for key, value in wanted.items():
            if value is None:
                continue
            previous = set_sysctl(f"net.netfilter.{key}", value)
            if previous != str(value):
                changed.append(f"{key} {value} (was {previous})")
        return changed

    def enable_forwarding(self) -> bool:
        """Turn IPv4 forwarding on; True when it was off (worth a log line)."""
        return set_sysctl("net.ipv4.ip_forward", 1) != "1"
