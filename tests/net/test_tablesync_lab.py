"""The direct-routing table sync for real: two directors in namespaces, each with its nftables table.

The active one's pins go over UDP (signed) to the standby, whose NftEngine.replace loads them as a seed:
only into sets its new table has, and only for backends still in it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from pyrhfos_lab import lab as labmod
from pyrhfos_lab.lab import Lab, Node

pytestmark = pytest.mark.lab

# Shared by both directors: a direct-routing table of virtual "web" over r1..r3 (r3 left out with "two").
COMMON = r"""
import asyncio, json, sys
from ipaddress import IPv4Address
from pyrhfos.config.model import Config, DeviceAddress, NetworkMode, Server, Virtual
from pyrhfos.core.ruleset import VirtualTable, backend_ids, backend_of, build
from pyrhfos.net.nft import NftEngine
from pyrhfos.net.tablesync import TableSync

KEY = b"k" * 32
names = ("r1", "r2", "r3")
IDS = backend_ids(names)

def commands(servers):
    ss = tuple(Server(n, IPv4Address(f"192.0.2.{11 + i}")) for i, n in enumerate(names) if n in servers)
    v = Virtual("web", DeviceAddress(IPv4Address("192.0.2.10"), "eth0:1"), port=80, persistent=60)
    v = Virtual(**{**v.__dict__, "servers": ss})
    table = VirtualTable(v, tuple(backend_of(v, s, 1) for s in ss))
    return build(Config(network=NetworkMode.DIRECT, virtuals=(v,)), [table])
"""

ACTIVE = (
    COMMON
    + r"""
engine = NftEngine()
engine.replace(commands(names))
pins = [{"concat": [f"198.51.100.{i}", 40000 + i, IDS[names[i % 3]]]} for i in range(30)]
engine._run([{"add": {"element": {"family": "netdev", "table": "pyrhfos", "name": "pin-web", "elem": pins}}}])
engine._run([{"add": {"element": {"family": "netdev", "table": "pyrhfos", "name": "per-web",
                                 "elem": [{"concat": ["198.51.100.0", IDS["r2"]]}]}}}])

async def main():
    own, peer = IPv4Address(sys.argv[1]), IPv4Address(sys.argv[2])
    sync = TableSync(own, peer, 3781, KEY, NftEngine().dynamic_elements, interval=0.2)
    sync.set_active(True)
    sync.start()
    await asyncio.sleep(float(sys.argv[3]))
    print(json.dumps(sync.status()))
    sync.close()

asyncio.run(main())
"""
)

STANDBY = (
    COMMON
    + r"""
async def main():
    sync = TableSync(IPv4Address(sys.argv[1]), IPv4Address(sys.argv[2]), 3781, KEY, dict)
    sync.start()
    for _ in range(200):
        await asyncio.sleep(0.05)
        if sync.cache.snapshots:
            break
    status = sync.status()
    sync.close()
    engine = NftEngine()
    engine.remove()
    loaded = engine.replace(commands(sys.argv[3].split(",")), seed=sync.seed())
    print(json.dumps({"status": status, "loaded": loaded, "sets": engine.dynamic_elements(), "ids": IDS}))

asyncio.run(main())
"""
)


@pytest.fixture(scope="module")
def directors() -> Iterator[tuple[Node, Node]]:
    reason = labmod.lab_available()
    if reason:
        pytest.skip(reason)
    lab = Lab()
    try:
        yield lab.add_node("dira", "192.0.2.1"), lab.add_node("dirb", "192.0.2.2")
    finally:
        lab.teardown()


def run_pair(directors: tuple[Node, Node], servers: str) -> dict[str, Any]:
    a, b = directors
    active = a.popen([sys.executable, "-c", ACTIVE, a.ip, b.ip, "4"])
    done = b.run_python(STANDBY, b.ip, a.ip, servers, timeout=30, check=False)
    active.wait(15)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_the_standby_loads_the_active_directors_pins(directors: tuple[Node, Node]) -> None:
    got = run_pair(directors, "r1,r2,r3")
    st = got["status"]
    assert st["snapshots_received"] >= 1 and st["dropped"] == 0 and st["cached"] == 31, st
    pins = got["sets"]["pin-web"]
    assert got["loaded"] == 31 and len(pins) == 30
    assert {tuple(p["elem"]["val"]["concat"]) for p in pins} == {
        (f"198.51.100.{i}", 40000 + i, got["ids"][("r1", "r2", "r3")[i % 3]]) for i in range(30)
    }
    assert all(0 < p["elem"]["expires"] <= 900 for p in pins)
    (per,) = got["sets"]["per-web"]
    assert per["elem"]["val"]["concat"] == ["198.51.100.0", got["ids"]["r2"]]
    assert per["elem"]["expires"] <= 60


def test_pins_to_a_backend_not_in_the_new_table_are_not_loaded(directors: tuple[Node, Node]) -> None:
    got = run_pair(directors, "r1,r2")
    ids = got["ids"]
    pins = got["sets"]["pin-web"]
    assert len(pins) == 20 and {p["elem"]["val"]["concat"][2] for p in pins} == {ids["r1"], ids["r2"]}
    assert len(got["sets"]["per-web"]) == 1
