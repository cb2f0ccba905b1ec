"""NftEngine and the LVS ruleset for real: a client, a director and three real servers in namespaces.

NAT (real servers route back through the director's private address) and direct routing (real servers
hold the VIP on lo with arp_ignore=1/arp_announce=2); each real server answers its name, then echoes.
The engine runs inside the director's namespace, as the daemon does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from pyrhfos.config.model import Config, DeviceAddress, NetworkMode, Server, Virtual
from pyrhfos.core.ruleset import VirtualTable, backend_of, build
from pyrhfos_lab import lab as labmod
from pyrhfos_lab.lab import Lab, Node

pytestmark = pytest.mark.lab

VIP = "192.0.2.10"
PORT = 80
NAMES = ("r1", "r2", "r3")

SERVER = r"""
import socket, sys, threading
name = sys.argv[1].encode()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[2])))
srv.listen(256)
def serve(c):
    with c:
        c.sendall(name + b"\n")
        while data := c.recv(100):
            c.sendall(name + b" " + data)
print("ready", flush=True)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# n connections one after the other; each reads the name, then checks one echo (a reset fails it).
COUNT = r"""
import collections, json, socket, sys
seen = collections.Counter()
for _ in range(int(sys.argv[3])):
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as s:
        f = s.makefile("rb")
        name = f.readline().strip().decode()
        s.sendall(b"x\n")
        assert f.readline().strip().decode() == name + " x", name
        seen[name] += 1
print(json.dumps(seen))
"""

# One connection held open until the flag file appears; then one echo on it.
HOLD = r"""
import os, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
f = s.makefile("rb")
print(f.readline().strip().decode(), flush=True)
deadline = time.monotonic() + 20
while not os.path.exists(sys.argv[3]) and time.monotonic() < deadline:
    time.sleep(0.02)
s.sendall(b"ping\n")
print(f.readline().strip().decode(), flush=True)
"""

ENGINE = r"""
import json, sys
from pyrhfos.net.nft import NftEngine, NftError, available
op = sys.argv[1]
try:
    if op == "available":
        out = available()
    elif op == "replace":
        out = NftEngine().replace(json.loads(sys.argv[2]))
    else:
        out = getattr(NftEngine(), op)()
except NftError as exc:
    out = {"error": str(exc)}
print(json.dumps(out))
"""


@dataclass
class Bed:
    lab: Lab
    client: Node
    director: Node
    servers: dict[str, Node]
    network: NetworkMode
    address: dict[str, str]  # server name -> the address the director sends to

    def engine(self, op: str, commands: list[dict[str, Any]] | None = None) -> Any:
        args = [op] + ([json.dumps(commands)] if commands is not None else [])
        proc = self.director.run_python(ENGINE, *args, check=False)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def load(
        self,
        scheduler: str = "rr",
        shares: dict[str, int] | None = None,
        cfg: dict[str, Any] | None = None,
        ct_timeouts: bool = False,
        **virtual: Any,
    ) -> Any:
        """Replace the director's table with one virtual over the servers named in shares."""
        shares = shares if shares is not None else {n: 1 for n in NAMES}
        servers = tuple(Server(n, IPv4Address(self.address[n])) for n in shares)
        v = Virtual(
            "web", DeviceAddress(IPv4Address(VIP), "eth0:1"), port=PORT, scheduler=scheduler, **virtual
        )
        v = Virtual(**{**v.__dict__, "servers": servers})
        table = VirtualTable(v, tuple(backend_of(v, s, shares[s.name]) for s in servers))
        config = Config(network=self.network, virtuals=(v,), **(cfg or {}))
        out = self.engine("replace", build(config, [table], ct_timeouts=ct_timeouts))
        assert not (isinstance(out, dict) and "error" in out), out
        return out

    def count(self, n: int) -> dict[str, int]:
        proc = self.client.run_python(COUNT, VIP, str(PORT), str(n), timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def hold(self, flag: Path) -> tuple[subprocess.Popen[Any], str]:
        proc = self.client.popen(
            [sys.executable, "-c", HOLD, VIP, str(PORT), str(flag)], stdout=subprocess.PIPE
        )
        return proc, _line(proc)


def _line(proc: subprocess.Popen[Any], timeout: float = 10) -> str:
    got: list[bytes] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    return got[0].decode().strip() if got else ""


def _start_servers(servers: dict[str, Node]) -> None:
    for name, node in servers.items():
        proc = node.popen([sys.executable, "-c", SERVER, name, str(PORT)], stdout=subprocess.PIPE)
        assert _line(proc) == "ready", name


def _bed(network: NetworkMode) -> Iterator[Bed]:
    reason = labmod.lab_available()
    if reason:
        pytest.skip(reason)
    lab = Lab()
    try:
        client = lab.add_node("client", "192.0.2.50")
        director = lab.add_node("dir", "192.0.2.1")
        director.run("ip", "addr", "add", f"{VIP}/24", "dev", "eth0", "label", "eth0:1")
        servers: dict[str, Node] = {}
        address: dict[str, str] = {}
        if network is NetworkMode.NAT:
            lab.add_node("dir", "198.51.100.1", bridge="br1", ifname="eth1")
            director.sysctl("net.ipv4.ip_forward", 1)
            for i, name in enumerate(NAMES, 11):
                address[name] = f"198.51.100.{i}"
                servers[name] = lab.add_node(name, address[name], bridge="br1")
                servers[name].run("ip", "route", "add", "default", "via", "198.51.100.1")
        else:
            for i, name in enumerate(NAMES, 11):
                address[name] = f"192.0.2.{i}"
                node = servers[name] = lab.add_node(name, address[name])
                node.run("ip", "addr", "add", f"{VIP}/32", "dev", "lo")
                for conf in ("all", "eth0"):  # the VIP is the director's on the wire: no ARP answers
                    node.sysctl(f"net.ipv4.conf.{conf}.arp_ignore", 1)
                    node.sysctl(f"net.ipv4.conf.{conf}.arp_announce", 2)
        _start_servers(servers)
        yield Bed(lab, client, director, servers, network, address)
    finally:
        lab.teardown()


@pytest.fixture(scope="module")
def nat() -> Iterator[Bed]:
    yield from _bed(NetworkMode.NAT)


@pytest.fixture(scope="module")
def dr() -> Iterator[Bed]:
    yield from _bed(NetworkMode.DIRECT)


def test_engine_present_remove_and_errors(nat: Bed) -> None:
    assert nat.engine("available") is None
    assert nat.engine("remove") in (True, False)
    assert nat.engine("present") is False and nat.engine("remove") is False
    nat.load()
    assert nat.engine("present") is True
    assert nat.engine("remove") is True
    assert nat.engine("present") is False
    bad = nat.engine("replace", [{"add": {"chain": {"family": "ip", "table": "nowhere", "name": "x"}}}])
    assert "No such file or directory" in bad["error"]


def test_nat_rr_is_exact(nat: Bed) -> None:
    nat.load("rr")
    assert nat.count(30) == {"r1": 10, "r2": 10, "r3": 10}


def test_nat_wrr_weighted_ranges(nat: Bed) -> None:
    nat.load("wrr", {"r1": 3, "r2": 1, "r3": 1})
    assert nat.count(50) == {"r1": 30, "r2": 10, "r3": 10}


def test_nat_sh_keeps_a_client_on_one_server(nat: Bed) -> None:
    nat.load("sh")
    assert len(nat.count(12)) == 1


def test_nat_share_zero_gets_no_new_connection(nat: Bed) -> None:
    nat.load("rr", {"r1": 1, "r2": 0, "r3": 1})
    assert nat.count(10) == {"r1": 5, "r3": 5}


def test_nat_replace_with_one_more_backend_keeps_an_established_connection(nat: Bed, tmp_path: Path) -> None:
    nat.load("rr", {"r1": 1, "r2": 1})
    proc, first = nat.hold(tmp_path / "go")
    assert first in ("r1", "r2")
    nat.load("rr", {"r1": 1, "r2": 1, "r3": 1})
    assert set(nat.count(6)) == {"r1", "r2", "r3"}
    (tmp_path / "go").touch()
    assert _line(proc) == f"{first} ping"


def test_nat_persistence_survives_a_replace(nat: Bed) -> None:
    # r1 takes no new client at first, so the client sticks to r2; a fresh map would give it r1
    nat.load("rr", {"r1": 0, "r2": 1, "r3": 1}, persistent=300)
    assert nat.count(5) == {"r2": 5}
    sizes = nat.engine("set_sizes")
    assert sizes["per-web-r2"] == 1 and sum(sizes.values()) == 1
    assert nat.load("rr", persistent=300) == 1  # one client carried over
    assert nat.count(5) == {"r2": 5}


@pytest.mark.xfail(
    reason="Debian's libnftables 1.0.6 JSON parser drops a ct timeout's policy (json_parse_ct_timeout_policy"
    " returns at once when a policy is given); the engine loads JSON only",
    strict=False,
)
def test_nat_ct_timeout_object_sets_the_connection_timeout(nat: Bed, tmp_path: Path) -> None:
    """ruleset's ct_timeouts=True: tcp_timeout as the entry's timeout."""
    nat.load("rr", cfg={"tcp_timeout": 777}, ct_timeouts=True)
    proc, first = nat.hold(tmp_path / "go")
    assert first
    table = nat.director.run("conntrack", "-L", "-p", "tcp", "--dport", str(PORT), check=False).stdout
    (tcp,) = [line.split() for line in table.splitlines() if "ESTABLISHED" in line]
    (tmp_path / "go").touch()
    assert _line(proc) == f"{first} ping"
    assert int(tcp[2]) <= 777


def test_dr_rr_spreads_and_every_connection_completes(dr: Bed) -> None:
    dr.load("rr")
    assert dr.count(30) == {"r1": 10, "r2": 10, "r3": 10}  # one choice per connection: the pins
    sizes = dr.engine("set_sizes")
    assert set(sizes) == {"pin-web-r1", "pin-web-r2", "pin-web-r3"}


def test_dr_replace_keeps_an_established_connection_by_its_pin(dr: Bed, tmp_path: Path) -> None:
    dr.load("rr", {"r1": 1, "r2": 1})
    proc, first = dr.hold(tmp_path / "go")
    assert first in ("r1", "r2")
    carried = dr.load("rr", {"r1": 1, "r2": 1, "r3": 1})
    assert carried >= 1
    # 7 new choices: an unpinned next packet of the held connection would take 7 mod 3 -> r2, not r1
    assert dr.count(7) == {"r1": 3, "r2": 2, "r3": 2}
    (tmp_path / "go").touch()
    assert _line(proc) == f"{first} ping"


def test_dr_persistence_survives_a_replace(dr: Bed) -> None:
    dr.load("rr", {"r1": 0, "r2": 1, "r3": 1}, persistent=300)
    assert dr.count(3) == {"r2": 3}
    dr.load("rr", persistent=300)
    assert dr.count(6) == {"r2": 6}


def test_dr_pins_live_in_one_set_per_backend_and_a_gone_server_loses_its_own(dr: Bed) -> None:
    dr.load("rr")
    before = dr.engine("set_sizes")  # earlier tests' pins are still alive (the bed is shared)
    assert dr.count(3) == {"r1": 1, "r2": 1, "r3": 1}
    sizes = dr.engine("set_sizes")
    assert sizes == {k: n + 1 for k, n in before.items()} and set(sizes) == {f"pin-web-{n}" for n in NAMES}
    # r2 leaves the table (down, not quiesced): only the others' pins are carried over
    assert dr.load("rr", {"r1": 1, "r3": 1}) == sizes["pin-web-r1"] + sizes["pin-web-r3"]
    assert dr.engine("set_sizes") == {"pin-web-r1": sizes["pin-web-r1"], "pin-web-r3": sizes["pin-web-r3"]}


def test_dr_reordered_servers_keep_their_pins(dr: Bed, tmp_path: Path) -> None:
    dr.load("rr", {"r1": 1, "r2": 1, "r3": 1})
    proc, first = dr.hold(tmp_path / "go")
    assert first in NAMES
    # the same servers in another order (a reload): ids come from names, so the pin still points right
    assert dr.load("rr", {"r3": 1, "r2": 1, "r1": 1}) >= 1
    assert sum(dr.count(7).values()) == 7
    (tmp_path / "go").touch()
    assert _line(proc) == f"{first} ping"


def test_dr_share_zero_keeps_its_pinned_flow(dr: Bed, tmp_path: Path) -> None:
    dr.load("rr", {"r1": 1, "r2": 1, "r3": 1})
    proc, first = dr.hold(tmp_path / "go")
    assert first in NAMES
    # quiesced (share 0): no new connection, but its pin set and address stay, so its pins still hold
    assert dr.load("rr", {n: (0 if n == first else 1) for n in NAMES}) >= 1
    assert first not in dr.count(4)
    (tmp_path / "go").touch()
    assert _line(proc) == f"{first} ping"
