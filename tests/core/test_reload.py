"""The reload plan and the keys that need a restart: pure, two configurations in."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from pyrhfos.config.model import Config, Failover, ServiceKind
from pyrhfos.core.reload import RESTART_ONLY, ReloadPlan, plan, restart_needed

BASE = Config(primary=IPv4Address("192.0.2.1"), backup=IPv4Address("192.0.2.2"), backup_active=True)


def test_nothing_needs_a_restart_for_timers_or_services() -> None:
    new = replace(BASE, keepalive=1.0, deadtime=3.0, failovers=(Failover("web"),), serial_no=7)
    assert restart_needed(BASE, new) is None


@pytest.mark.parametrize(
    "key, value",
    [
        ("primary", IPv4Address("192.0.2.9")),
        ("primary_private", IPv4Address("198.51.100.1")),
        ("backup", IPv4Address("192.0.2.9")),
        ("backup_private", IPv4Address("198.51.100.2")),
        ("backup_active", False),
        ("heartbeat_port", 540),
        ("heartbeat_key", "/etc/sysconfig/ha/pulse.key"),
        ("syncdaemon", True),
        ("syncd_iface", "eth2"),
        ("syncd_id", 7),
    ],
)
def test_each_restart_only_key_is_refused(key: str, value: object) -> None:
    assert key in RESTART_ONLY
    assert restart_needed(BASE, replace(BASE, **{key: value})) == f"changing {key} needs a restart of pulse"


def test_several_moved_keys_are_named_together() -> None:
    new = replace(BASE, heartbeat_port=540, backup=IPv4Address("192.0.2.9"))
    assert restart_needed(BASE, new) == "changing backup, heartbeat_port needs a restart of pulse"


def test_another_service_kind_needs_a_restart() -> None:
    new = replace(BASE, service=ServiceKind.FOS)
    assert restart_needed(BASE, new) == "service = fos needs a restart of pulse"


def test_plan_keeps_unchanged_removes_gone_and_replaces_changed() -> None:
    web, ftp, db = Failover("web", port=80), Failover("ftp", port=21), Failover("db", port=5432)
    wanted = [web, replace(ftp, timeout=3.0), Failover("mail", port=25)]
    got = plan({"web": web, "ftp": ftp, "db": db}, wanted)
    assert got == ReloadPlan(kept=("web",), added=("ftp", "mail"), removed=("ftp", "db"))
    assert got.summary() == "2 service(s) added, 2 removed or changed, 1 unchanged"


def test_plan_of_the_same_file_changes_nothing() -> None:
    web = Failover("web", port=80)
    assert plan({"web": web}, [Failover("web", port=80)]) == ReloadPlan(("web",), (), ())
