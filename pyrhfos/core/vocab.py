"""Shared vocabulary of a cluster node: its role, its failover state, how its services are probed.

Both the heartbeat wire format and the state machine speak these; neither
imports the other.
"""

from __future__ import annotations

import enum


class Role(enum.IntEnum):
    """Which of the two addresses in lvs.cf this node is."""

    PRIMARY = 1
    BACKUP = 2

    @property
    def partner(self) -> Role:
        return Role.BACKUP if self is Role.PRIMARY else Role.PRIMARY


class State(enum.IntEnum):
    """Failover state of a node; the numbers are on the wire, never renumber."""

    STARTING = 1  # listening for the partner before deciding
    STANDBY = 2  # not serving; ready to take over
    ACTIVE = 3  # holds the VIPs and runs the services
    RELEASING = 4  # stopping services and dropping VIPs
    STOPPED = 5  # done; the daemon exits


class ProbeMode(enum.Enum):
    """Whose service a node's probes watch, which decides what a failed probe means."""

    LOCAL = "local"  # the active node probes its own services: a failure is LocalServiceFailed
    PARTNER = "partner"  # a standby probes its active partner's through the VIP: PartnerServiceFailed
