"""Gratuitous ARP: frame layout, no scapy in the daemon, and neighbour tables updated in the lab."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pyrhfos.net.arp import build_frames_in_child, frames_stdlib

REPO = str(Path(__file__).resolve().parents[2])
VIP = "192.0.2.11"
MAC = "02:00:5e:00:01:0b"

# Runs inside a node (as the daemon would): frames from the scapy child, then VIP up, then GARP.
TAKEOVER = """
import json, sys, time
from ipaddress import IPv4Address
from pyrhfos.net.arp import GarpSender, build_frames_in_child
from pyrhfos.net.vip import VipManager
vip = IPv4Address(sys.argv[1])
vm = VipManager()
mac = vm.interface_mac("eth0")
frames = build_frames_in_child([(mac, vip)], fallback=False)[(mac, vip)]
with GarpSender("eth0", frames) as garp:
    t0 = time.perf_counter()
    vm.add(vip, "eth0:1")
    t1 = time.perf_counter()
    sent = garp.send_once()
    t2 = time.perf_counter()
print(json.dumps({"sent": sent, "add_ms": (t1 - t0) * 1e3, "garp_ms": (t2 - t1) * 1e3,
                  "scapy": "scapy" in sys.modules}))
"""


def takeover(node, vip: str = VIP) -> dict:
    return json.loads(node.run_python(TAKEOVER, vip).stdout)


def wait_neigh(node, ip: str, mac: str | None, timeout: float = 2.0) -> str | None:
    deadline = time.monotonic() + timeout
    seen = node.neigh_mac(ip)
    while seen != mac and time.monotonic() < deadline:
        time.sleep(0.02)
        seen = node.neigh_mac(ip)
    return seen


def test_frames_layout():
    frames = build_frames_in_child([(MAC, IPv4Address(VIP))], fallback=False)[(MAC, IPv4Address(VIP))]
    assert frames == frames_stdlib(MAC, IPv4Address(VIP))
    req, rep = frames
    assert len(req) == len(rep) == 60
    assert req[:6] == b"\xff" * 6 and req[6:12] == bytes.fromhex(MAC.replace(":", ""))
    assert req[12:14] == b"\x08\x06" and req[20:22] == b"\x00\x01" and rep[20:22] == b"\x00\x02"
    vip = IPv4Address(VIP).packed
    assert req[28:32] == vip and req[38:42] == vip  # psrc == pdst == VIP
    assert rep[32:38] == rep[22:28]  # reply form: target MAC = sender MAC (what Linux calls gratuitous)


def test_build_in_child_and_fallback(monkeypatch):
    frames = build_frames_in_child([(MAC, IPv4Address(VIP)), (MAC, "192.0.2.12")], fallback=False)
    assert frames[(MAC, IPv4Address(VIP))] == frames_stdlib(MAC, IPv4Address(VIP))
    assert frames[(MAC, IPv4Address("192.0.2.12"))] == frames_stdlib(MAC, IPv4Address("192.0.2.12"))
    assert "scapy" not in sys.modules  # built in the child; pytest itself stays free of scapy
    # a child that cannot run: hand-packed frames, never no announcement
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    assert build_frames_in_child([(MAC, VIP)]) == {
        (MAC, IPv4Address(VIP)): frames_stdlib(MAC, IPv4Address(VIP))
    }


def test_daemon_modules_do_not_load_scapy():
    # Current RSS from /proc (ru_maxrss would report pytest's peak: it survives fork+exec).
    code = (
        "import sys\n"
        "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
        "base = rss()\n"
        "import pyrhfos.net.arp, pyrhfos.net.vip\n"
        "assert 'scapy' not in sys.modules, 'scapy imported'\n"
        "a = rss()\n"
        "from pyrhfos.net.vip import VipManager\n"
        "VipManager().close()\n"  # read-only: opens the netlink socket, changes nothing
        "assert 'scapy' not in sys.modules\n"
        "print(base, a, rss())\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    base, imported, with_vm = (float(x) for x in out.stdout.split())
    print(
        f"\nRSS: bare interpreter {base:.1f} MB; import pyrhfos.net.arp+vip {imported:.1f} MB; "
        f"after a VipManager (pyroute2) {with_vm:.1f} MB"
    )


@pytest.mark.lab
def test_garp_creates_entry_on_accepting_client(lab):
    a = lab.add_node("a", "192.0.2.100")
    # arp_accept=1: Linux only *updates* existing entries from gratuitous ARP unless arp_accept is set;
    # the lab's client sets it so it learns a VIP it has never talked to (see the realistic case below).
    client = lab.add_node("client", "192.0.2.50", arp_accept=True)
    assert client.neigh_mac(VIP) is None
    result = takeover(a)
    print(f"\nVIP add {result['add_ms']:.2f} ms; first GARP frames out {result['garp_ms']:.3f} ms after")
    assert result["sent"] == 2 and not result["scapy"]
    assert wait_neigh(client, VIP, a.mac) == a.mac


@pytest.mark.lab
def test_garp_moves_existing_entry_from_a_to_b(lab):
    """The realistic case: the client talked to the VIP on A (entry -> A); B takes over and announces."""
    a = lab.add_node("a", "192.0.2.100")
    b = lab.add_node("b", "192.0.2.200")
    client = lab.add_node("client", "192.0.2.50")  # kernel default arp_accept=0, like most hosts
    a.start_service(80)
    b.start_service(80)
    takeover(a)
    assert client.run("curl", "-s", "-m", "2", f"http://{VIP}/").stdout == "a\n"
    assert client.neigh_mac(VIP) == a.mac
    a.run("ip", "addr", "del", f"{VIP}/24", "dev", "eth0")
    # Without arp_accept a GARP for an address the client never used creates nothing:
    takeover(b, "192.0.2.12")
    time.sleep(0.1)
    assert client.neigh_mac("192.0.2.12") is None
    takeover(b)
    assert wait_neigh(client, VIP, b.mac) == b.mac
    assert client.run("curl", "-s", "-m", "2", f"http://{VIP}/").stdout == "b\n"


@pytest.mark.lab
def test_send_on_down_link_does_not_raise(lab):
    a = lab.add_node("a", "192.0.2.100")
    a.link_down(end="node")
    code = (
        "from ipaddress import IPv4Address\n"
        "from pyrhfos.net.arp import GarpSender, frames_stdlib\n"
        "g = GarpSender('eth0', frames_stdlib('02:00:00:00:00:01', IPv4Address('192.0.2.11')))\n"
        "print(g.send_once(), g.errors)\n"
    )
    assert a.run_python(code).stdout.split() == ["0", "2"]
