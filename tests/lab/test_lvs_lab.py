"""LVS mode end to end: two real pulse directors in the LVS lab, by NAT and by direct routing.

Schedulers, real-server health (stop, reentry, quiesce, sorry server), director failover, reload and a
Piranha example file, seen from the client through the VIP; one lab per mode, pulse restarted on a new lvs.cf.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrhfos_lab import lab as labmod
from pyrhfos_lab.lvslab import (
    BACKUP_IP,
    BACKUP_PRIVATE,
    DEADTIME,
    KEEPALIVE,
    NAT_ROUTER,
    PRIMARY_IP,
    PRIMARY_PRIVATE,
    REAL_SERVERS,
    VIP,
    VIPS,
    LvsLab,
)

pytestmark = pytest.mark.lab

TIMEOUT, REENTRY = 1.0, 3.0  # LvsLab.config()'s probe timeout and reentry of the "web" virtual
EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "lvs.cf.lvs.example"


class Pair:
    """The module's LvsLab and the lvs.cf its two pulses run (None: restart before the next test)."""

    def __init__(self, lvs: LvsLab) -> None:
        self.lvs = lvs
        self.running: str | None = None
        self.virtual = "web"

    @property
    def nat(self) -> bool:
        return self.lvs.mode == "nat"

    def addr(self, name: str) -> str:
        return self.lvs.rs_addresses[name]

    def stop(self) -> None:
        for name in ("backup", "primary"):  # the backup first: it must not take over from the primary
            if name in self.lvs.pulse.pulses:
                self.lvs.stop_pulse(name)
        self.running = None

    def run(self, text: str | None = None, virtual: str = "web", up: tuple[str, ...] = REAL_SERVERS,
            **overrides: Any) -> None:  # fmt: skip
        """Both directors on ``text`` (or ``lvs_cf(**overrides)``), the primary active and the servers
        ``up`` healthy on it; pulse is restarted only when that lvs.cf is not the one running."""
        lvs = self.lvs
        text = text if text is not None else lvs.lvs_cf(**overrides)
        for name in lvs.rs:
            lvs.start_rs(name)  # a test's stopped or paused service listens again
        if text != self.running:
            self.stop()
            lvs.write_config(text)
            lvs.start_pulse("primary")
            lvs.start_pulse("backup")
            self.running, self.virtual = text, virtual
        lvs.wait_holders({"primary"}, 15)
        if self.nat:
            lvs.wait_holders({"primary"}, 5, NAT_ROUTER)
        # After a test's stop_rs a server comes back only after reentry of good probes.
        poll(lambda: all(self.health(s) == "up" for s in up), REENTRY + 10, f"{up} up on the primary")

    def status(self, name: str = "primary") -> dict[str, Any]:
        res = self.lvs.pulse.ask(name, "status", "--json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def servers(self, name: str = "primary") -> dict[str, dict[str, Any]]:
        """The real servers of the running virtual in ``pulse status --json``, by name."""
        (v,) = [v for v in self.status(name)["virtuals"] if v["name"] == self.virtual]
        return {s["name"]: s for s in v["servers"]}

    def health(self, server: str, name: str = "primary") -> str | None:
        s = self.servers(name).get(server)
        return None if s is None else str(s["health"])


def poll(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> float:
    """Seconds until ``predicate()`` is true; fails the test after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout:.1f} s: {what}")
        time.sleep(interval)
    return time.monotonic() - start


@pytest.fixture(scope="module", params=["nat", "direct"])
def module_pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    reason = labmod.lab_available()
    if reason:
        pytest.skip(reason)
    with LvsLab(request.param) as lvs:
        pair = Pair(lvs)
        try:
            yield pair
        finally:
            pair.stop()


@pytest.fixture
def pair(module_pair: Pair) -> Iterator[Pair]:
    yield module_pair
    module_pair.lvs.close_held()


# -- schedulers ------------------------------------------------------------------------------------
def test_rr_spreads_30_connections_10_10_10(pair: Pair) -> None:
    pair.run()
    assert pair.lvs.connect_many(n=30) == Counter({"rs1": 10, "rs2": 10, "rs3": 10})


def test_wrr_3_1_1_on_50_connections(pair: Pair) -> None:
    pair.run(scheduler="wrr", weights={"rs1": 3})
    got = pair.lvs.connect_many(n=50)
    assert None not in got and sum(got.values()) == 50, got
    for name, want in {"rs1": 30, "rs2": 10, "rs3": 10}.items():
        assert abs(got[name] - want) <= 3, got


def test_sh_keeps_a_client_on_one_server(pair: Pair) -> None:
    pair.run(scheduler="sh")
    got = pair.lvs.connect_many(n=20)
    assert len(got) == 1 and None not in got, got


def test_persistent_keeps_a_client_on_one_server_under_rr(pair: Pair) -> None:
    pair.run(persistent=60)
    got = pair.lvs.connect_many(n=20)
    assert len(got) == 1 and None not in got, got


# -- real-server health ----------------------------------------------------------------------------
def test_stopped_server_leaves_within_timeout_plus_keepalive_and_returns_after_reentry(pair: Pair) -> None:
    pair.run()
    lvs = pair.lvs
    lvs.stop_rs("rs2")
    # A refused connection (None) means the director still sends new clients to rs2.
    gone = poll(
        lambda: lvs.connect_many(n=3, timeout=0.5).keys() <= {"rs1", "rs3"}, 10, "rs2 out of rotation"
    )
    print(f"rs2 out of rotation {gone:.2f} s after its service stopped")
    assert gone <= TIMEOUT + KEEPALIVE + 0.5  # + the poll's own granularity
    assert pair.health("rs2") == "down"
    assert lvs.connect_many(n=30) == Counter({"rs1": 15, "rs3": 15})

    lvs.start_rs("rs2")
    back = poll(lambda: "rs2" in lvs.connect_many(n=3, timeout=0.5), REENTRY + 10, "rs2 answering again")
    print(f"rs2 answered again {back:.2f} s after its service restarted (reentry {REENTRY})")
    assert back >= REENTRY / 2, "a server returns only after reentry seconds of good probes"
    assert pair.health("rs2") == "up"
    assert None not in lvs.connect_many(n=9)


def test_quiesce_keeps_a_held_connection_while_new_ones_go_elsewhere(pair: Pair) -> None:
    """quiesce_server = 1: the server whose service stops listening goes to weight 0, its flows go on."""
    pair.run(quiesce_server=True)
    lvs = pair.lvs
    held = lvs.hold()
    assert held.alive()
    lvs.stop_rs(held.name, keep_established=True)  # its listener closes: probes fail, held goes on
    poll(lambda: pair.health(held.name) == "down", 5, f"{held.name} down")
    assert pair.servers()[held.name]["weight_in_effect"] == 0, "quiesced: weight 0, kept in the table"
    got = lvs.connect_many(n=20)
    assert None not in got and held.name not in got, got
    assert held.alive() and held.alive(), "a quiesced server's established connection continues"


def test_no_quiesce_flushes_the_held_connection(pair: Pair) -> None:
    """The paused server would still echo: the connection dies only if the director dropped it (NAT: its
    conntrack entry deleted; direct routing: its pin set not carried over, so the flow reschedules)."""
    pair.run(quiesce_server=False)
    lvs = pair.lvs
    held = lvs.hold()
    assert held.alive()
    lvs.stop_rs(held.name, keep_established=True)
    poll(lambda: pair.health(held.name) == "down", 5, f"{held.name} down")
    poll(lambda: not held.alive(0.5), 5, f"the held connection to {held.name} flushed", interval=0.2)
    got = lvs.connect_many(n=20)
    assert None not in got and held.name not in got, got


def test_sorry_server_answers_when_all_real_servers_are_down(pair: Pair) -> None:
    pair.run(servers=["rs1", "rs2"], sorry_server=pair.addr("rs3"), up=("rs1", "rs2"))
    lvs = pair.lvs
    assert lvs.connect_many(n=10) == Counter({"rs1": 5, "rs2": 5})
    lvs.stop_rs("rs1")
    lvs.stop_rs("rs2")
    took = poll(lambda: lvs.connect_one(timeout=0.5) == "rs3", 10, "the sorry server answering")
    print(f"sorry server answered {took:.2f} s after both real servers stopped")
    assert lvs.connect_many(n=5) == Counter({"rs3": 5})
    (web,) = pair.status()["virtuals"]
    assert web["sorry_in_use"] is True


# -- the directors ---------------------------------------------------------------------------------
def test_primary_public_link_down_the_backup_answers_within_deadtime(pair: Pair) -> None:
    pair.run()
    lvs = pair.lvs
    assert lvs.connect_one() is not None
    lvs.primary.link_down("eth0")
    pair.running = None  # the backup serves afterwards: restart for the next test
    try:
        took = poll(
            lambda: lvs.connect_one(timeout=0.3) is not None, DEADTIME + 10, "an answer via the backup"
        )
        print(f"answered through the VIP again {took:.2f} s after the primary's link went down")
        assert took <= DEADTIME + 1.0
        assert lvs.holds("backup", VIP)
        got = lvs.connect_many(n=9)
        assert None not in got, got
        # The cut-off primary gave up everything at once (its link event), not only the VIP: a
        # second holder of nat_router would be a second gateway for the real servers.
        assert not lvs.holds("primary", VIP)
        if pair.nat:
            assert lvs.holds("backup", NAT_ROUTER)
            assert not lvs.holds("primary", NAT_ROUTER)
        lvs.primary.link_up("eth0")
        # Link back: the primary is a candidate again but does not preempt the serving backup.
        time.sleep(DEADTIME)
        assert lvs.holders(VIP) == {"backup"}
    finally:
        lvs.primary.link_up("eth0")
        pair.stop()


def test_reload_adding_a_server_keeps_a_held_connection(pair: Pair) -> None:
    pair.run(servers=["rs1", "rs2"], up=("rs1", "rs2"))
    lvs = pair.lvs
    held = lvs.hold()
    assert held.alive()
    lvs.write_config(lvs.lvs_cf())  # rs1..rs3
    pair.running = None  # the backup still runs the old file
    res = lvs.pulse.ask("primary", "reload")
    assert res.returncode == 0, res.stdout + res.stderr
    poll(lambda: pair.health("rs3") == "up", 5, "rs3 up after the reload")
    assert held.alive() and held.alive(), "a reload does not reset established connections"
    got = lvs.connect_many(n=30)
    assert None not in got and got["rs3"] >= 9, got
    assert held.alive()


def example_for_lab(pair: Pair) -> str:
    """etc/lvs.cf.lvs.example with the lab's addresses (text replacement only, in one pass)."""
    addr = pair.addr
    subst = {
        "192.0.2.10": PRIMARY_IP, "192.0.2.11": BACKUP_IP,
        "198.51.100.10": PRIMARY_PRIVATE, "198.51.100.11": BACKUP_PRIVATE,
        "192.0.2.100": VIPS[0], "192.0.2.101": VIPS[1], "198.51.100.254": NAT_ROUTER,
        "198.51.100.21": addr("rs1"), "198.51.100.22": addr("rs2"), "198.51.100.23": addr("rs3"),
        "198.51.100.250": addr("rs3"), "198.51.100.53": addr("rs2"), "198.51.100.54": addr("rs3"),
    }  # fmt: skip
    text = EXAMPLE.read_text()
    pattern = re.compile(r"(?<![\d.])(" + "|".join(re.escape(k) for k in subst) + r")(?![\d.])")
    text = pattern.sub(lambda m: subst[m.group(1)], text)
    if not pair.nat:  # the one non-address replacement: the file is a NAT one (nat_router stays, unused)
        text = text.replace("network = nat\n", "network = direct\n")
    return text


def test_piranha_example_file_runs_after_address_substitution(pair: Pair) -> None:
    text = example_for_lab(pair)
    assert not [line for line in text.splitlines() if "192.0.2." in line.partition("#")[0]]
    pair.run(text, virtual="http", up=("web1", "web2"))
    lvs = pair.lvs
    got = lvs.connect_many(n=12)
    assert None not in got and set(got) <= {"rs1", "rs2"} and got["rs2"] > 0, got
    # web3 (active = 0) is in the file only; the HTTP probe answered for web1 and web2.
    assert pair.health("web3") == "inactive"


def test_status_text_lists_each_real_server_with_its_address_and_port(pair: Pair) -> None:
    pair.run()
    res = pair.lvs.pulse.ask("primary", "status")
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if "->" in line]
    for name in REAL_SERVERS:
        want = f"{pair.addr(name)}:80"
        assert any(want in line and name in line for line in lines), res.stdout
    assert f"{VIP}:80" in res.stdout
