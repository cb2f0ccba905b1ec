"""The LVS lab's topology alone (no pulse): NAT and direct routing, the real servers' service, lvs_cf(),
and that nothing is left behind."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrhfos.config import loads
from pyrhfos.config.model import NetworkMode
from pyrhfos.net.probe import probe_tcp
from pyrhfos_lab.lab import Lab, list_netns
from pyrhfos_lab.lvslab import (
    NAT_ROUTER,
    PRIMARY_IP,
    PRIMARY_PRIVATE,
    PROBE_EXPECT,
    PROBE_SEND,
    UDP_PORT,
    VIP,
    VIPS,
    LvsLab,
    in_netns,
)

pytestmark = pytest.mark.lab


@pytest.fixture
def nat(lab: Lab, tmp_path: Path) -> Iterator[LvsLab]:
    with LvsLab("nat", tmp_path, lab) as lvs:
        yield lvs


@pytest.fixture
def direct(lab: Lab, tmp_path: Path) -> Iterator[LvsLab]:
    with LvsLab("direct", tmp_path, lab) as lvs:
        yield lvs


def route(node_run: subprocess.CompletedProcess[str]) -> list[dict[str, str]]:
    return json.loads(node_run.stdout or "[]")


def act_as_nat_director(lvs: LvsLab) -> None:
    """By hand what the active director will do: hold nat_router, forward; the client routes to the
    private network through it (only for this check: in the LVS tests it sees nothing but the VIPs)."""
    lvs.primary.sysctl("net.ipv4.ip_forward", 1)
    lvs.primary.run("ip", "addr", "add", f"{NAT_ROUTER}/24", "dev", "eth1", "label", "eth1:1")
    lvs.client.run("ip", "route", "add", "198.51.100.0/24", "via", PRIMARY_IP)


def test_nat_client_reaches_each_real_server_through_the_director(nat: LvsLab) -> None:
    assert set(nat.nodes) == {"client", "primary", "backup", "rs1", "rs2", "rs3"}
    for name, rs in nat.rs.items():
        assert rs.addresses() == [(nat.rs_addresses[name], 24, "eth0")]
        default = route(rs.run("ip", "-j", "route", "show", "default"))
        assert [(r["gateway"], r["dev"]) for r in default] == [(NAT_ROUTER, "eth0")]
    for vip in VIPS:  # on-link: the client ARPs for the VIPs itself
        got = route(nat.client.run("ip", "-j", "route", "get", vip))
        assert got[0]["dev"] == "eth0" and "gateway" not in got[0]
    assert nat.primary.addresses("eth1") == [(PRIMARY_PRIVATE, 24, "eth1")]
    assert nat.connect_one("198.51.100.11", timeout=0.5) is None, "the private network is not the client's"
    assert nat.holders(NAT_ROUTER) == set(), "the lab holds no nat_router: the active director will"

    act_as_nat_director(nat)
    assert nat.holders(NAT_ROUTER) == {"primary"}
    for name, addr in nat.rs_addresses.items():
        # Replies go back through the default route: this proves rs -> nat_router -> client too.
        assert nat.connect_many(addr, 80, 3) == Counter({name: 3})
        assert nat.connect_many(addr, UDP_PORT, 2, proto="udp") == Counter({name: 2})


def test_nat_probe_of_lvs_cf_matches_the_service(nat: LvsLab) -> None:
    """The director's view of a real server: lvs_cf()'s send/expect passes, and fails once stopped."""

    def probe() -> bool:
        result = asyncio.run(probe_tcp("198.51.100.12", 80, PROBE_SEND, PROBE_EXPECT, False, 1.0))
        return result.ok

    assert in_netns(nat.primary.ns, probe)
    nat.stop_rs("rs2")
    assert nat.rs_pid("rs2") is None and not in_netns(nat.primary.ns, probe)
    nat.start_rs("rs2")
    assert in_netns(nat.backup.ns, probe)


def test_direct_real_servers_take_the_vip_but_never_answer_arp_for_it(direct: LvsLab) -> None:
    for name, rs in direct.rs.items():
        assert {a for a, _, _ in rs.addresses("lo")} >= set(VIPS)
        for conf in ("all", "eth0"):
            out = rs.run(
                "sysctl", "-n", f"net.ipv4.conf.{conf}.arp_ignore", f"net.ipv4.conf.{conf}.arp_announce"
            )
            assert out.stdout.split() == ["1", "2"]
        # It answers ARP for its own address (the director's fwd needs that) ...
        assert direct.arp_who_has(direct.rs_addresses[name], timeout=0.3) == [rs.mac]
    # ... but nobody answers for a VIP while no director holds it.
    for vip in VIPS:
        assert direct.arp_who_has(vip, timeout=0.5) == []
    assert direct.connect_one(VIP, timeout=0.5) is None
    assert direct.primary.addresses("eth1") == [(PRIMARY_PRIVATE, 24, "eth1")]
    # A frame for the VIP sent to a real server's MAC (what the director's fwd does) is answered.
    for name, rs in direct.rs.items():
        direct.client.run("ip", "neigh", "replace", VIP, "lladdr", rs.mac, "dev", "eth0", "nud", "permanent")
        assert direct.connect_many(VIP, 80, 3) == Counter({name: 3})
        # UDP answers come from the VIP (the client's connected socket takes nothing else).
        assert direct.connect_many(VIP, UDP_PORT, 2, proto="udp") == Counter({name: 2})


def test_held_connection_echoes_and_outlives_a_paused_service(direct: LvsLab) -> None:
    rs1 = direct.rs["rs1"]
    direct.client.run("ip", "neigh", "replace", VIP, "lladdr", rs1.mac, "dev", "eth0", "nud", "permanent")
    held = direct.hold(VIP, 80)
    assert held.name == "rs1" and held.alive() and held.alive()
    pid = direct.rs_pid("rs1")
    direct.stop_rs("rs1", keep_established=True)  # listener closed: new connections refused
    assert direct.connect_one(VIP, timeout=0.5) is None
    assert held.alive(), "a paused service keeps its established connections"
    direct.start_rs("rs1")
    assert direct.rs_pid("rs1") == pid and direct.connect_one(VIP) == "rs1"
    direct.stop_rs("rs1")  # the process ends: its connections with it
    assert not held.alive()
    assert direct.rs_pid("rs1") is None and direct.connect_one(VIP, timeout=0.5) is None
    direct.start_rs("rs1")
    assert direct.rs_pid("rs1") not in (None, pid) and direct.connect_one(VIP) == "rs1"


def test_lvs_cf_defaults_and_overrides(nat: LvsLab) -> None:
    cfg, _ = loads(nat.lvs_cf())
    assert cfg.network is NetworkMode.NAT and str(cfg.nat_router) == "198.51.100.1 eth1:1"
    assert (cfg.keepalive, cfg.deadtime) == (0.5, 2.0)
    (web,) = cfg.virtuals
    assert (web.name, str(web.address), web.port, web.send, web.expect) == (
        "web", f"{VIP} eth0:1", 80, PROBE_SEND, PROBE_EXPECT,
    )  # fmt: skip
    assert [(s.name, str(s.address)) for s in web.servers] == [
        ("rs1", "198.51.100.11"), ("rs2", "198.51.100.12"), ("rs3", "198.51.100.13"),
    ]  # fmt: skip
    text = nat.lvs_cf(
        scheduler="wrr", weights={"rs1": 3}, servers=["rs1", "rs2"], quiesce_server=True,
        primary_private="198.51.100.2", deadtime=3, address="203.0.113.101 eth0:2",
    )  # fmt: skip
    cfg, _ = loads(text)
    (web,) = cfg.virtuals
    assert (web.scheduler, web.quiesce_server, str(web.address), cfg.deadtime) == (
        "wrr",
        True,
        "203.0.113.101 eth0:2",
        3,
    )
    assert [(s.name, s.weight) for s in web.servers] == [("rs1", 3), ("rs2", 1)]
    assert str(cfg.primary_private) == "198.51.100.2"
    with pytest.raises(ValueError, match="no global or virtual key"):
        nat.lvs_cf(schedular="rr")


def test_lvs_cf_direct_and_one_file_per_director(direct: LvsLab) -> None:
    cfg, _ = loads(direct.lvs_cf())
    assert cfg.network is NetworkMode.DIRECT and cfg.nat_router is None
    assert [str(s.address) for s in cfg.virtuals[0].servers] == [
        "203.0.113.11",
        "203.0.113.12",
        "203.0.113.13",
    ]
    # Each director has its own file, and pulse --check (run on the director) takes it.
    direct.write_config(direct.lvs_cf(deadtime=4), ["backup"])
    assert "deadtime = 2\n" in direct.pulse.config_file("primary").read_text()
    assert "deadtime = 4\n" in direct.pulse.config_file("backup").read_text()
    check = direct.pulse.run_pulse("primary", "--check")
    assert check.returncode == 0, check.stderr


def test_everything_is_removed_afterwards(tmp_path: Path) -> None:
    with LvsLab("direct") as lvs:  # its own Lab and work directory
        prefix, workdir = lvs.lab.prefix, lvs.workdir
        pids = [lvs.rs_pid(n) for n in lvs.rs]
        held = lvs.hold(lvs.rs_addresses["rs2"], 80)
        assert held.alive()
        assert len([ns for ns in list_netns() if ns.startswith(prefix)]) == 7  # switch + 6 nodes
    assert [ns for ns in list_netns() if ns.startswith(prefix)] == []
    assert not workdir.exists() and not held.alive()
    for pid in pids:
        assert pid is not None and not Path(f"/proc/{pid}").exists()
    # On a Lab of the caller's, close() stops what LvsLab started and leaves the Lab to its owner.
    lab = Lab()
    try:
        with LvsLab("nat", tmp_path, lab) as lvs:
            proc = lvs.rs["rs1"].popen([sys.executable, "-c", "import time; time.sleep(60)"])
            pids = [lvs.rs_pid(n) for n in lvs.rs]
        assert lab.owned_namespaces() and proc.poll() is None
        assert all(pid is not None and not Path(f"/proc/{pid}").exists() for pid in pids)
    finally:
        lab.teardown()
    assert lab.owned_namespaces() == [] and proc.poll() is not None
