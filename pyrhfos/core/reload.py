"""What a reload of lvs.cf may change and what it changes: the keys that need a restart, and the plan
of services kept, added and removed. Pure: two configurations in, a decision out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..config.model import Config, Failover

# Read once at start: the pair's addresses and port make the heartbeat socket and the node's role;
# heartbeat_key's file mode is checked at start only.
RESTART_ONLY = (
    "primary",
    "primary_private",
    "backup",
    "backup_private",
    "backup_active",
    "heartbeat_port",
    "heartbeat_key",
    # conntrackd's configuration is written and the daemon started once, at start.
    "syncdaemon",
    "syncd_iface",
    "syncd_id",
)


def restart_needed(running: Config, new: Config) -> str | None:
    """Why ``new`` cannot be applied to a pulse running ``running`` without a restart, or None."""
    if new.service is not running.service:
        return f"service = {new.service.value} needs a restart of pulse"
    moved = [k for k in RESTART_ONLY if getattr(new, k) != getattr(running, k)]
    if moved:
        return f"changing {', '.join(moved)} needs a restart of pulse"
    return None


@dataclass(frozen=True)
class ReloadPlan:
    """Service names by fate. A changed block is both removed (the old one) and added (the new one)."""

    kept: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]

    def summary(self) -> str:
        return (
            f"{len(self.added)} service(s) added, {len(self.removed)} removed or changed, "
            f"{len(self.kept)} unchanged"
        )


def plan(running: Mapping[str, Failover], wanted: Iterable[Failover]) -> ReloadPlan:
    """Services unchanged are kept untouched (VIP, process, probe state); the rest stop or start."""
    new = {f.name: f for f in wanted}
    kept = tuple(name for name, f in running.items() if new.get(name) == f)
    removed = tuple(name for name in running if name not in kept)
    added = tuple(name for name in new if name not in kept)
    return ReloadPlan(kept, added, removed)
