"""Floating addresses (VIPs): add, adopt, renew and remove a labelled IPv4 address with pyroute2.

Owns nothing but the kernel's address table of the namespace it runs in (the daemon runs in its node).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import functools
import socket
import threading
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Interface
from typing import Any, TypeVar

T = TypeVar("T")
NETLINK_TIMEOUT = 10.0  # seconds; a netlink request that takes longer is an error

IFA_F_SECONDARY = 0x01
EADDRNOTAVAIL = errno.EADDRNOTAVAIL  # deleting an address that is not there


class VipError(RuntimeError):
    """A VIP operation failed (missing interface, bad label, netlink error)."""


def interface_of(label: str) -> str:
    """``eth0:1`` -> ``eth0`` (the alias device naming of ifconfig/Piranha)."""
    return label.split(":", 1)[0]


def _in_netlink_thread(method: Callable[..., T]) -> Callable[..., T]:
    """Run the method in the manager's own thread (see VipManager), directly if already there."""

    @functools.wraps(method)
    def wrapper(self: VipManager, *args: Any, **kwargs: Any) -> T:
        if threading.current_thread() is self._thread:
            return method(self, *args, **kwargs)
        try:
            return self._pool.submit(method, self, *args, **kwargs).result(NETLINK_TIMEOUT)
        except concurrent.futures.TimeoutError as exc:
            raise VipError(f"netlink did not answer within {NETLINK_TIMEOUT} s") from exc
        except RuntimeError as exc:
            if self._closed:
                raise VipError("VipManager is closed") from exc
            raise

    return wrapper


class VipManager:
    """One netlink socket (pyroute2 IPRoute) used for every VIP operation of the daemon.

    pyroute2's synchronous IPRoute drives an asyncio loop of its own and fails inside a running one
    (the daemon's), so the socket lives in one private thread and every call is handed to it: the
    API stays synchronous and callable from anywhere; each call blocks the caller for about a ms.
    """

    def __init__(self, netns: str | None = None) -> None:
        # Imported here: pyroute2 costs ~13 MB RSS, paid only by processes that manage addresses.
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        self._netlink_error = NetlinkError
        self._closed = False
        self._netns = netns
        self._batch: Any = None  # IPBatch and a raw socket for the *_all calls, made on first use
        self._raw: socket.socket | None = None
        self._batch_key, self._batch_bytes = "", b""
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vip-netlink")
        self._thread = self._pool.submit(threading.current_thread).result()
        # netns is for the lab/tests only; flags=0 so a typo never creates a namespace.
        self._ipr = self._pool.submit(lambda: IPRoute(netns=netns, flags=0) if netns else IPRoute()).result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._pool.submit(self._ipr.close).result(NETLINK_TIMEOUT)
        if self._raw is not None:
            self._raw.close()
        self._pool.shutdown(wait=False)

    def __enter__(self) -> VipManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers -----------------------------------------------------------------------------------
    def _index(self, interface: str) -> int:
        found = self._ipr.link_lookup(ifname=interface)
        if not found:
            raise VipError(f"interface {interface} does not exist")
        return found[0]

    def _addrs(self, index: int | None = None) -> list[Any]:
        kw = {} if index is None else {"index": index}
        return list(self._ipr.get_addr(family=socket.AF_INET, **kw))

    def _find(self, index: int, ip: IPv4Address) -> Any | None:
        for msg in self._addrs(index):
            if msg.get_attr("IFA_LOCAL", msg.get_attr("IFA_ADDRESS")) == str(ip):
                return msg
        return None

    def _call(self, command: str, **kw: Any) -> None:
        try:
            self._ipr.addr(command, **kw)
        except self._netlink_error as exc:
            raise VipError(f"ip addr {command} {kw.get('address')}/{kw.get('prefixlen')}: {exc}") from exc

    @staticmethod
    def _check_label(label: str) -> str:
        interface = interface_of(label)
        if not interface or len(label) > 15:
            raise VipError(f"bad VIP label {label!r} (interface[:alias], at most 15 characters)")
        return interface

    @staticmethod
    def _addr_args(
        index: int, ip: IPv4Address, prefixlen: int, label: str, lifetime: int | None
    ) -> dict[str, Any]:
        kw: dict[str, Any] = {"index": index, "address": str(ip), "prefixlen": prefixlen, "label": label}
        if prefixlen < 31:
            kw["broadcast"] = str(IPv4Interface(f"{ip}/{prefixlen}").network.broadcast_address)
        if lifetime is not None:
            # valid = preferred: an address the daemon stops renewing disappears after `lifetime` s.
            # (Without them the kernel makes the address permanent, also on replace.)
            kw["valid_lft"] = kw["preferred_lft"] = max(1, int(lifetime))
        return kw

    def _write(
        self, command: str, index: int, ip: IPv4Address, prefixlen: int, label: str, lifetime: int | None
    ) -> None:
        self._call(command, **self._addr_args(index, ip, prefixlen, label, lifetime))

    def _batch_send(self, command: str, requests: list[dict[str, Any]], ignore: tuple[int, ...] = ()) -> None:
        """Send many ``addr COMMAND`` in one datagram (pyroute2 IPBatch builds them) and read the acks.

        One IPRoute call costs ~2.5 ms of CPU; 200 VIPs renewed every second made that the daemon's
        main idle cost, and adding them one by one stalled a takeover. The batch costs a fraction of a ms.
        Errors whose code is in ``ignore`` are not errors (a VIP that went away by itself meanwhile).
        """
        if self._batch is None:
            # Imported here like IPRoute in __init__: importing this module must not load pyroute2.
            from pyroute2 import IPBatch
            from pyroute2.netlink.rtnl.marshal import MarshalRtnl

            self._batch, self._marshal = IPBatch(), MarshalRtnl()
            if self._netns:
                from pyroute2.netns import popns, pushns

                pushns(self._netns)  # this thread only: the socket must live in the VIPs' namespace
                try:
                    self._raw = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
                finally:
                    popns()
            else:
                self._raw = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            self._raw.bind((0, 0))
            self._raw.settimeout(NETLINK_TIMEOUT)
        # The same VIPs and lifetime make the same bytes: build them once (pyroute2's argument
        # processing is most of the cost), resend them at every renewal.
        key = repr((command, requests))
        if key != self._batch_key:
            self._batch.reset()
            for kw in requests:
                self._batch.addr(command, **kw)
            self._batch_key, self._batch_bytes = key, bytes(self._batch.batch)
        raw = self._raw
        assert raw is not None  # opened with the batch above
        raw.send(self._batch_bytes)
        acked, errors = 0, []
        while acked < len(requests):
            for msg in self._marshal.parse(raw.recv(1 << 20)):
                acked += 1
                error = msg["header"].get("error")
                if error is not None and getattr(error, "code", None) not in ignore:
                    errors.append(str(error))
        if errors:
            raise VipError(f"ip addr {command} (batch of {len(requests)}): {'; '.join(sorted(set(errors)))}")

    # -- API ---------------------------------------------------------------------------------------
    @_in_netlink_thread
    def interface_exists(self, interface: str) -> bool:
        return bool(self._ipr.link_lookup(ifname=interface))

    @_in_netlink_thread
    def interface_mac(self, interface: str) -> str:
        link = self._ipr.get_links(self._index(interface))[0]
        return link.get_attr("IFLA_ADDRESS")

    @_in_netlink_thread
    def prefixlen_for(self, interface: str, ip: IPv4Address) -> int:
        """Prefix length for a VIP without vip_nmask: that of the interface's network containing ``ip``,
        else of the interface's primary address, else 32."""
        return self._prefixlen_from(self._addrs(self._index(interface)), IPv4Address(ip))

    @staticmethod
    def _prefixlen_from(dump: Sequence[Any], ip: IPv4Address) -> int:
        msgs = [m for m in dump if m.get_attr("IFA_LOCAL") != str(ip)]
        for m in msgs:
            net = IPv4Interface(f"{m.get_attr('IFA_LOCAL')}/{m['prefixlen']}").network
            if ip in net:
                return m["prefixlen"]
        for m in msgs:
            if not m["flags"] & IFA_F_SECONDARY and not (m.get_attr("IFA_FLAGS", 0) & IFA_F_SECONDARY):
                return m["prefixlen"]
        return 32

    @_in_netlink_thread
    def add(
        self, ip: IPv4Address, label: str, prefixlen: int | None = None, lifetime: int | None = None
    ) -> bool:
        """Bring the VIP up as ``label`` (``eth0:1`` -> on eth0).

        True if added; False if it was already there (adopted, e.g. left by a previous instance): it is
        never duplicated, and its label, prefix and lifetime are set to what is asked.
        ``lifetime`` is the kernel's valid/preferred lifetime in seconds (None = forever).
        """
        ip = IPv4Address(ip)
        interface = self._check_label(label)
        index = self._index(interface)
        if prefixlen is None:
            prefixlen = self.prefixlen_for(interface, ip)
        existing = self._find(index, ip)
        if existing is None:
            self._write("add", index, ip, prefixlen, label, lifetime)
            return True
        if existing.get_attr("IFA_LABEL") != label or existing["prefixlen"] != prefixlen:
            # The kernel cannot relabel an address in place: delete and add again (a blink of µs).
            self._call("del", index=index, address=str(ip), prefixlen=existing["prefixlen"])
            self._write("add", index, ip, prefixlen, label, lifetime)
        else:
            self._write("replace", index, ip, prefixlen, label, lifetime)
        return False

    @_in_netlink_thread
    def add_all(
        self, vips: Sequence[tuple[IPv4Address, str, int | None]], lifetime: int | None
    ) -> list[tuple[IPv4Address, int, bool]]:
        """``add`` for many VIPs: one address dump and one netlink batch, not three dumps and a
        write per VIP (200 VIPs took 2.6 s one by one; the event loop waited that long).

        Returns (ip, prefix length, added) per VIP in order; added is False for one already there.
        An existing VIP keeps its prefix unless one is asked for; a wrong label or prefix takes
        the slow path (delete and add: the kernel cannot relabel in place).
        """
        dump = self._addrs()
        current = {(m["index"], m.get_attr("IFA_LOCAL", m.get_attr("IFA_ADDRESS"))): m for m in dump}
        indexes: dict[str, int] = {}
        results: list[tuple[IPv4Address, int, bool]] = []
        batch: list[dict[str, Any]] = []
        for ip, label, prefixlen in vips:
            ip = IPv4Address(ip)
            interface = self._check_label(label)
            if interface not in indexes:
                indexes[interface] = self._index(interface)
            index = indexes[interface]
            existing = current.get((index, str(ip)))
            if prefixlen is None:
                if existing is not None:
                    prefixlen = existing["prefixlen"]
                else:
                    prefixlen = self._prefixlen_from([m for m in dump if m["index"] == index], ip)
            if existing is not None and (
                existing.get_attr("IFA_LABEL") != label or existing["prefixlen"] != prefixlen
            ):
                self.add(ip, label, prefixlen, lifetime)
            else:
                # "replace" creates an absent address, so one batch serves new and present VIPs.
                batch.append(self._addr_args(index, ip, prefixlen, label, lifetime))
            results.append((ip, prefixlen, existing is None))
        if batch:
            try:
                self._batch_send("replace", batch)
            except VipError:
                for kw in batch:  # one by one, so the error names the VIP it belongs to
                    self._call("replace", **kw)
        return results

    def renew_all(
        self, vips: Sequence[tuple[IPv4Address, str, int | None]], lifetime: int
    ) -> list[IPv4Address]:
        """Push many held VIPs' lifetimes ahead in one batch (every half lease while active).

        Returns the VIPs that had vanished (expired, or removed by hand) and were added again,
        so the caller announces them with gratuitous ARP once more.
        """
        return [ip for ip, _, added in self.add_all(vips, lifetime) if added]

    @_in_netlink_thread
    def remove_all(self, vips: Sequence[tuple[IPv4Address, str]]) -> list[bool]:
        """Drop each VIP from its label's interface in one dump and one batch; True for each that was
        there (an absent VIP, or one on a vanished interface, is fine)."""
        links = {link.get_attr("IFLA_IFNAME"): link["index"] for link in self._ipr.get_links()}
        current = {(m["index"], m.get_attr("IFA_LOCAL", m.get_attr("IFA_ADDRESS"))): m for m in self._addrs()}
        found, batch = [], []
        for ip, label in vips:
            index = links.get(self._check_label(label))  # a vanished interface took its VIPs along
            existing = None if index is None else current.get((index, str(IPv4Address(ip))))
            found.append(existing is not None)
            if existing is not None:
                batch.append({"index": index, "address": str(ip), "prefixlen": existing["prefixlen"]})
        if batch:
            self._batch_send("del", batch, ignore=(EADDRNOTAVAIL,))
        return found
