"""The simulated kernels' address tables: which node holds each VIP, and until when its lease runs.

One table for both nodes, since the question asked of it is the network's: who answers for a VIP now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address


@dataclass
class Kernel:
    """VIP -> {node: expiry (None: forever)}; an expired entry is gone, as the kernel drops it."""

    clock: Callable[[], float]
    on_expiry: Callable[[float], None] = lambda when: None  # a lease will lapse then: look again
    table: dict[IPv4Address, dict[str, float | None]] = field(default_factory=dict)

    def _live(self, ip: IPv4Address) -> dict[str, float | None]:
        now = self.clock()
        entries = self.table.setdefault(ip, {})
        for node, expires in list(entries.items()):
            if expires is not None and expires <= now:
                del entries[node]
        return entries

    def add(self, node: str, ip: IPv4Address, lifetime: float | None) -> bool:
        """Add or renew; True when the address was not there (new, or its lease had lapsed)."""
        entries = self._live(ip)
        added = node not in entries
        expires = None if lifetime is None else self.clock() + lifetime
        entries[node] = expires
        if expires is not None:
            self.on_expiry(expires)
        return added

    def remove(self, node: str, ip: IPv4Address) -> bool:
        return self._live(ip).pop(node, "absent") != "absent"

    def drop_node(self, node: str) -> None:
        """The node lost power: its addresses went with it."""
        for entries in self.table.values():
            entries.pop(node, None)

    def holders(self, ip: IPv4Address) -> tuple[str, ...]:
        return tuple(sorted(self._live(ip)))

    def has(self, node: str, ip: IPv4Address) -> bool:
        return node in self._live(ip)
