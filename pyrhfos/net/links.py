"""Link state of chosen interfaces from netlink link events (pyroute2, no polling): an interface is up
while it is administratively up and has carrier (operstate UP, or UNKNOWN for devices without one).

Knows nothing of VIPs or failover: it reports (interface, up) changes to a callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("pulse")

# operstate values (RFC 2863) under which an interface carries traffic; loopback and some virtual
# devices report UNKNOWN but still pass packets.
CARRYING = frozenset({"UP", "UNKNOWN"})
IFF_UP = 0x1


def link_up(msg: Any) -> bool:
    """Is the interface of one RTM_NEWLINK message (or dump entry) carrying traffic?"""
    return bool(msg["flags"] & IFF_UP) and msg.get("IFLA_OPERSTATE") in CARRYING


class LinkWatcher:
    """Reports each watched interface's state once at start, then every change."""

    def __init__(self, interfaces: Iterable[str], report: Callable[[str, bool], None]) -> None:
        self.interfaces = frozenset(interfaces)
        self.report = report
        self.state: dict[str, bool] = {}

    def _seen(self, msg: Any) -> None:
        name = msg.get("IFLA_IFNAME")
        if name not in self.interfaces:
            return
        up = msg.get("event") != "RTM_DELLINK" and link_up(msg)
        if self.state.get(name) != up:
            self.state[name] = up
            self.report(name, up)

    async def run(self) -> None:
        """Subscribe first, then dump, so no change between the two is missed; until cancelled."""
        from pyroute2 import AsyncIPRoute  # here: a FOS node without watched links never loads it
        from pyroute2.netlink.rtnl import RTMGRP_LINK

        async with AsyncIPRoute() as ipr:
            await ipr.bind(groups=RTMGRP_LINK)
            for msg in [m async for m in await ipr.link("dump")]:
                self._seen(msg)
            for name in self.interfaces - set(self.state):
                self.state[name] = False  # absent: it carries nothing
                self.report(name, False)
            while True:
                async for msg in ipr.get():  # one receive's batch of messages
                    self._seen(msg)
