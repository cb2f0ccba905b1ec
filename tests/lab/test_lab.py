"""The namespace lab itself: topology, links, service, and that teardown/sweep leave nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from pyrhfos_lab import lab as labmod
from pyrhfos_lab.lab import Lab, LabError

pytestmark = pytest.mark.lab
REPO = str(Path(__file__).resolve().parents[2])


def curl(node, url: str, timeout: float = 1) -> str | None:
    r = node.run("curl", "-s", "-m", str(timeout), url, check=False)
    return r.stdout if r.returncode == 0 else None


def test_pair_topology_and_service(lab):
    a, b, client = lab.pair(private=True)
    assert lab.prefix.startswith(f"pyrh-{os.getpid()}-")
    assert set(lab.owned_namespaces()) == {lab.prefix + n for n in ("switch", "a", "b", "client")}
    assert a.ns == lab.prefix + "a" and a.ip == "192.0.2.100" and a.ifname == "eth0"
    assert a.addresses() == [("192.0.2.100", 24, "eth0")]
    assert a.addresses("eth1") == [("198.51.100.100", 24, "eth1")]
    assert len({a.mac, b.mac, client.mac}) == 3
    assert "inet 192.0.2.100" in a.ifconfig() and "eth1" in a.ifconfig()
    a.start_service(80)
    b.start_service(8080, text="bee")
    assert curl(client, "http://192.0.2.100/") == "a\n"
    assert curl(a, "http://192.0.2.200:8080/") == "bee\n"
    assert curl(a, "http://198.51.100.200:8080/") == "bee\n"  # private network
    assert curl(client, "http://198.51.100.200:8080/") is None  # the client is not on it
    assert client.neigh_mac("192.0.2.100") == a.mac
    assert client.neigh_mac("192.0.2.99") is None
    # a bare connect gets the answer too (no request needed), as a nanny-style probe would
    code = "import socket; s = socket.create_connection(('192.0.2.100', 80), 2); print(s.recv(100).decode())"
    assert client.run_python(code).stdout.startswith("HTTP/1.0 200 OK")


def test_nothing_in_root_namespace(lab):
    lab.pair(private=True)
    # (compared by name, not as a before/after diff: other labs may run in parallel on this machine)
    ports = {port for node in lab.nodes.values() for (_, _, _, port) in node.interfaces.values()}
    root = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in root.splitlines()}
    assert not ports & names
    assert lab.prefix not in root  # no root interface peers into one of our namespaces


def test_link_down_switch_end(lab):
    """Default: the bridge-side end goes down (cable pull); the node keeps addresses, routes, UP flag."""
    a, b, client = lab.pair()
    a.start_service(80)
    assert curl(client, "http://192.0.2.100/") == "a\n"
    a.link_down()
    link = a.run("ip", "link", "show", "eth0").stdout
    assert "NO-CARRIER" in link and ",UP" in link
    assert a.addresses() == [("192.0.2.100", 24, "eth0")]
    assert "192.0.2.0/24 dev eth0" in a.run("ip", "route").stdout
    assert curl(client, "http://192.0.2.100/", timeout=0.5) is None
    a.link_up()
    assert curl(client, "http://192.0.2.100/", timeout=2) == "a\n"


def test_link_down_node_end(lab):
    """end="node": ip link set eth0 down inside the node: addresses stay, its routes go, and come back."""
    a, b, client = lab.pair()
    a.start_service(80)
    a.link_down(end="node")
    assert a.addresses() == [("192.0.2.100", 24, "eth0")]
    assert "192.0.2.0/24" not in a.run("ip", "route").stdout
    assert curl(client, "http://192.0.2.100/", timeout=0.5) is None
    a.link_up(end="node")
    assert "192.0.2.0/24 dev eth0" in a.run("ip", "route").stdout
    assert curl(client, "http://192.0.2.100/", timeout=2) == "a\n"
    with pytest.raises(ValueError):
        a.link_down(end="cable")


def test_rejects_addresses_outside_documentation_ranges(lab):
    with pytest.raises(ValueError, match="outside"):
        lab.add_node("x", "10.0.0.1")
    with pytest.raises(ValueError, match="bad node name"):
        lab.add_node("switch", "192.0.2.1")
    lab.add_node("x", "192.0.2.1")
    with pytest.raises(LabError, match="already has eth0"):
        lab.add_node("x", "192.0.2.2")


def test_teardown_kills_processes_and_removes_everything():
    if labmod.lab_available():
        pytest.skip(labmod.lab_available())
    with pytest.raises(RuntimeError, match="boom"), Lab() as lab:
        a = lab.add_node("a", "192.0.2.100")
        service = a.start_service(80)
        # a process that left our process group (double fork + setsid), like a daemon would
        escaped = a.popen(["sh", "-c", "setsid sleep 100 & echo $!"], stdout=subprocess.PIPE)
        escaped_pid = int(escaped.stdout.readline())
        escaped.wait(5)
        names = lab.owned_namespaces()
        assert len(names) == 2
        raise RuntimeError("boom")
    assert not lab.owned_namespaces()
    assert service.poll() is not None
    assert not psutil.pid_exists(escaped_pid) or psutil.Process(escaped_pid).status() == "zombie"
    assert not (labmod.MARKER_DIR / lab.prefix).exists()
    lab.teardown()  # idempotent
    with pytest.raises(LabError):
        lab.add_node("b", "192.0.2.200")


def test_sweep_removes_dead_runs_only(lab):
    lab.add_node("a", "192.0.2.100")
    code = (
        "import sys, time\n"
        "from pyrhfos_lab.lab import Lab\n"
        "lab = Lab()\n"
        "lab.add_node('a', '192.0.2.100')\n"
        "print(lab.prefix, flush=True)\n"
        "time.sleep(60)\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    prefix = None
    try:
        prefix = child.stdout.readline().strip()
        assert prefix.startswith(f"pyrh-{child.pid}-")
        assert labmod.sweep_stale() == []  # owner alive: untouched (and our own lab too)
        assert len([n for n in labmod.list_netns() if n.startswith(prefix)]) == 2
        os.kill(child.pid, signal.SIGKILL)  # crash: no teardown runs
        child.wait(5)
        removed = labmod.sweep_stale()
        assert sorted(removed) == sorted([prefix + "a", prefix + "switch"])
        assert not [n for n in labmod.list_netns() if n.startswith(prefix)]
        assert set(lab.owned_namespaces()) == {lab.prefix + "a", lab.prefix + "switch"}
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(5)
        child.stdout.close()
        if prefix:
            for ns in labmod.list_netns():
                if ns.startswith(prefix):
                    labmod._delete_netns(ns)
