"""VipManager against a real kernel address table, inside a lab namespace."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pyrhfos.net.vip import VipError, VipManager

pytestmark = pytest.mark.lab
VIP = IPv4Address("192.0.2.11")


@pytest.fixture
def node(lab):
    return lab.add_node("a", "192.0.2.100")


@pytest.fixture
def vm(node):
    with VipManager(netns=node.ns) as manager:
        yield manager


def vips(node) -> list[tuple[str, int, str]]:
    return [a for a in node.addresses() if a[0] == str(VIP)]


def present(node, ip: IPv4Address) -> bool:
    """Is ``ip`` on any interface of the node? Read with ``ip -j addr``, not through the manager."""
    links = json.loads(node.run("ip", "-j", "-4", "addr", "show").stdout or "[]")
    return any(a.get("local") == str(ip) for link in links for a in link.get("addr_info", []))


def test_add_shows_as_alias_in_ifconfig(node, vm):
    assert vm.add(VIP, "eth0:1") is True
    out = node.ifconfig()
    assert "eth0:1:" in out
    alias = out.split("eth0:1:", 1)[1].split("\n\n", 1)[0]
    assert (
        "inet 192.0.2.11" in alias and "netmask 255.255.255.0" in alias and "broadcast 192.0.2.255" in alias
    )
    assert present(node, VIP)
    assert vips(node) == [("192.0.2.11", 24, "eth0:1")]


def test_add_twice_adopts_without_duplicate(node, vm):
    assert vm.add(VIP, "eth0:1") is True
    assert vm.add(VIP, "eth0:1") is False
    assert vips(node) == [("192.0.2.11", 24, "eth0:1")]


def test_adopt_fixes_label_and_lifetime(node, vm):
    node.run("ip", "addr", "add", "192.0.2.11/24", "dev", "eth0")  # left behind, unlabelled
    assert vm.add(VIP, "eth0:1", lifetime=30) is False
    assert vips(node) == [("192.0.2.11", 24, "eth0:1")]
    info = [a for a in node.address_info() if a["local"] == str(VIP)]
    assert 25 <= info[0]["valid_life_time"] <= 30
    assert vm.add(VIP, "eth0:1") is False  # back to permanent
    info = [a for a in node.address_info() if a["local"] == str(VIP)]
    assert info[0]["valid_life_time"] == 0xFFFFFFFF


def test_remove(node, vm):
    vm.add(VIP, "eth0:1")
    assert vm.remove_all([(VIP, "eth0:1")]) == [True]
    assert vips(node) == []
    assert "eth0:1" not in node.ifconfig()
    assert vm.remove_all([(VIP, "eth0:1")]) == [False]  # absent is fine
    assert vm.remove_all([(VIP, "eth9:1")]) == [False]  # so is a vanished interface
    assert node.addresses() == [("192.0.2.100", 24, "eth0")]  # the node's own address untouched


def test_lifetime_expires_and_renew_keeps_alive(node, vm):
    other = IPv4Address("192.0.2.12")
    vm.add(VIP, "eth0:1", lifetime=2)
    vm.add(other, "eth0:2", lifetime=2)
    start = time.monotonic()
    while time.monotonic() - start < 6 and present(node, VIP):
        assert vm.renew_all([(other, "eth0:2", None)], 2) == []
        time.sleep(0.5)
    gone_after = time.monotonic() - start
    print(f"VIP with lifetime 2 s expired after {gone_after:.1f} s")
    assert not present(node, VIP) and gone_after < 4.5
    assert present(node, other)  # renewed every 0.5 s
    # renew of a vanished VIP puts it back and says so (the caller re-announces it)
    assert vm.renew_all([(VIP, "eth0:1", None)], 5) == [VIP]
    assert vips(node) == [("192.0.2.11", 24, "eth0:1")]


def test_prefix_from_interface_network(lab, node, vm):
    lab.add_node("a", "203.0.113.5", prefixlen=26, bridge="br1", ifname="eth1")
    assert vm.prefixlen_for("eth0", VIP) == 24
    assert vm.prefixlen_for("eth1", IPv4Address("203.0.113.20")) == 26
    # outside the interface's networks: the primary address's prefix
    assert vm.prefixlen_for("eth1", IPv4Address("198.51.100.7")) == 26
    vm.add(IPv4Address("203.0.113.20"), "eth1:0")
    assert ("203.0.113.20", 26, "eth1:0") in node.addresses("eth1")
    vm.add(IPv4Address("203.0.113.21"), "eth1:1", prefixlen=32)  # vip_nmask 255.255.255.255
    assert ("203.0.113.21", 32, "eth1:1") in node.addresses("eth1")


def test_missing_interface_and_bad_label(vm, node):
    with pytest.raises(VipError, match="interface eth9 does not exist"):
        vm.add(VIP, "eth9:1")
    with pytest.raises(VipError, match="interface eth9 does not exist"):
        vm.interface_mac("eth9")
    with pytest.raises(VipError, match="bad VIP label"):
        vm.add(VIP, "eth0:this-is-far-too-long")
    assert not vm.interface_exists("eth9")
    assert vm.interface_exists("eth0")
    assert vm.interface_mac("eth0") == node.mac


def test_inside_namespace_like_the_daemon(node):
    """The daemon runs under `ip netns exec` and opens a plain IPRoute(): same result, no scapy."""
    code = (
        "import json, sys\n"
        "from ipaddress import IPv4Address\n"
        "from pyrhfos.net.vip import VipManager\n"
        "vm = VipManager()\n"
        "r = [vm.add(IPv4Address('192.0.2.11'), 'eth0:1'), vm.add(IPv4Address('192.0.2.11'), 'eth0:1')]\n"
        "print(json.dumps([r, vm.interface_mac('eth0'), 'scapy' in sys.modules]))\n"
    )
    added, mac, scapy_loaded = json.loads(node.run_python(code).stdout)
    assert added == [True, False] and mac == node.mac and not scapy_loaded
    assert "eth0:1" in node.ifconfig()


def test_usable_inside_a_running_event_loop(node):
    """The daemon calls the (synchronous) manager from its asyncio loop; pyroute2 alone would fail."""
    code = (
        "import asyncio\n"
        "from ipaddress import IPv4Address\n"
        "from pyrhfos.net.vip import VipManager\n"
        "async def main():\n"
        "    vm = VipManager()\n"
        "    added = vm.add(IPv4Address('192.0.2.11'), 'eth0:1', lifetime=10)\n"
        "    renewed = bool(vm.renew_all([(IPv4Address('192.0.2.11'), 'eth0:1', None)], 10))\n"
        "    removed = vm.remove_all([(IPv4Address('192.0.2.11'), 'eth0:1')]) == [True]\n"
        "    vm.close()\n"
        "    print(added, renewed, removed)\n"
        "asyncio.run(main())\n"
    )
    assert node.run_python(code).stdout.split() == ["True", "False", "True"]


def test_inside_event_loop_in_process(node, vm):
    async def main() -> list[tuple[str, int, str]]:
        vm.add(VIP, "eth0:1")
        return node.addresses()

    assert ("192.0.2.11", 24, "eth0:1") in asyncio.run(main())


def test_closed_manager_raises(node):
    vm = VipManager(netns=node.ns)
    vm.close()
    vm.close()
    with pytest.raises(VipError, match="closed"):
        vm.interface_exists("eth0")


def test_import_is_light():
    """pyroute2 is loaded only when a VipManager is made (tools like `pulse --check` never pay for it)."""
    code = "import sys, pyrhfos.net.vip; print('pyroute2' in sys.modules, 'scapy' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["False", "False"]


def test_renew_all_refreshes_many_and_readds_the_vanished(node, vm):
    many = [(IPv4Address(f"192.0.2.{h}"), f"eth0:{h}", None) for h in range(20, 30)]
    for ip, label, _ in many:
        vm.add(ip, label, lifetime=3)
    node.run("ip", "addr", "del", f"{many[3][0]}/24", "dev", "eth0")  # gone by hand (or lease lapsed)
    assert vm.renew_all(many, 30) == [many[3][0]]
    info = {a["local"]: a for a in node.address_info()}
    for ip, label, _ in many:
        assert info[str(ip)]["label"] == label and info[str(ip)]["valid_life_time"] > 10


def test_add_all_batches_new_existing_and_relabelled(lab, node, vm):
    lab.add_node("a", "203.0.113.5", prefixlen=26, bridge="br1", ifname="eth1")
    node.run("ip", "addr", "add", "192.0.2.12/24", "dev", "eth0", "label", "eth0:2")  # ours already
    node.run("ip", "addr", "add", "192.0.2.13/24", "dev", "eth0")  # left behind, unlabelled
    many = [IPv4Address(f"192.0.2.{i}") for i in range(20, 60)]
    wanted = [
        (VIP, "eth0:1", None),
        (IPv4Address("192.0.2.12"), "eth0:2", None),
        (IPv4Address("192.0.2.13"), "eth0:3", None),
        (IPv4Address("203.0.113.20"), "eth1:0", None),
        (IPv4Address("203.0.113.21"), "eth1:1", 32),
        *((ip, "eth0:9", None) for ip in many),
    ]
    done = vm.add_all(wanted, 30)
    assert [(str(ip), prefix, added) for ip, prefix, added in done[:5]] == [
        ("192.0.2.11", 24, True),
        ("192.0.2.12", 24, False),
        ("192.0.2.13", 24, False),
        ("203.0.113.20", 26, True),
        ("203.0.113.21", 32, True),
    ]
    assert all(added for _, _, added in done[5:])
    have = {(ip, prefix, label) for ip, prefix, label in node.addresses("eth0") + node.addresses("eth1")}
    assert {
        ("192.0.2.11", 24, "eth0:1"),
        ("192.0.2.13", 24, "eth0:3"),
        ("203.0.113.21", 32, "eth1:1"),
    } <= have
    assert {(str(ip), 24, "eth0:9") for ip in many} <= have
    lives = {a["local"]: a["valid_life_time"] for a in node.address_info() + node.address_info("eth1")}
    assert all(25 <= lives[str(ip)] <= 30 for ip, _, _ in wanted)
    # Renewing finds them all present: nothing re-added, no duplicate.
    assert vm.renew_all(wanted, 30) == []
    assert len(node.addresses("eth0")) == 1 + 3 + len(many)
    with pytest.raises(VipError, match="eth9"):
        vm.add_all([(VIP, "eth9:1", None)], 30)


def test_remove_all_in_one_batch(node, vm):
    many = [(IPv4Address(f"192.0.2.{i}"), "eth0:1", None) for i in range(20, 40)]
    vm.add_all(many, None)
    node.run("ip", "addr", "del", "192.0.2.25/24", "dev", "eth0")  # gone by itself meanwhile
    gone = vm.remove_all([(ip, label) for ip, label, _ in many] + [(VIP, "eth0:1"), (VIP, "eth9:1")])
    assert gone == [str(ip) != "192.0.2.25" for ip, _, _ in many] + [False, False]
    assert node.addresses() == [("192.0.2.100", 24, "eth0")]  # the node's own address untouched
