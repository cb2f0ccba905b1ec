"""Connection sync (syncdaemon = 1) end to end: a TCP echo session through the VIP, a line every 100 ms,
keeps going through the backup director after the primary's public link goes down, with no reset and no
lost line; without syncdaemon the same session is reset by the new director (what the sync buys).

The fault is the primary's public link going down at the switch (Node.link_down): the backup hears no
beat and takes over after deadtime. Direct routing has no conntrack on the director: a session's choice
of real server is a pin in the active director's table, which syncdaemon = 1 copies to the backup every
second (net/tablesync.py). With rr a session survives with the sync and is reset without it; with sh it
survives without any sync (the same hash on both directors).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pyrhfos_lab import lab as labmod
from pyrhfos_lab.lvslab import DEADTIME, NAT_ROUTER, REAL_SERVERS, VIP, Held, LvsLab

pytestmark = pytest.mark.lab

TCP_LOOSE = "net.netfilter.nf_conntrack_tcp_loose"
INTERVAL = 0.1  # seconds between the client's lines
AFTER = 3.0  # seconds the session must keep going after the takeover


def poll(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout:.1f} s: {what}")
        time.sleep(interval)
    return time.monotonic() - start


@dataclass
class Session:
    """A held connection sending ``line N`` every INTERVAL and reading the echoes in another thread."""

    held: Held
    sent: list[float] = field(default_factory=list)
    echoed: list[tuple[float, bytes]] = field(default_factory=list)
    error: str | None = None  # how the connection ended, if it did: "reset", "EOF", "timeout ..."
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.held.sock.settimeout(None)
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._send, self._read)]
        for t in self._threads:
            t.start()

    def _send(self) -> None:
        n = 0
        while not self.stop.is_set() and self.error is None:
            try:
                self.held.sock.sendall(f"line {n}\n".encode())
            except OSError as e:
                self.error = self.error or _why(e)
                return
            self.sent.append(time.monotonic())
            n += 1
            self.stop.wait(INTERVAL)

    def _read(self) -> None:
        buf = b""
        sock = self.held.sock
        sock.settimeout(0.5)
        while True:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                if self.stop.is_set() and len(self.echoed) >= len(self.sent):
                    return
                continue
            except OSError as e:
                self.error = self.error or _why(e)
                return
            if not chunk:
                self.error = self.error or "EOF"
                return
            buf += chunk
            now = time.monotonic()
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self.echoed.append((now, line))

    def finish(self, timeout: float = 10.0) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout)

    def lines_in_order(self) -> bool:
        return [line for _, line in self.echoed] == [f"line {i}".encode() for i in range(len(self.echoed))]

    def longest_gap(self) -> float:
        times = [t for t, _ in self.echoed]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


def _why(e: OSError) -> str:
    if isinstance(e, ConnectionResetError):
        return "reset"
    return f"{type(e).__name__}: {e}"


class SyncPair:
    """The NAT lab's two directors on a sync (or no-sync) lvs.cf; the primary serving."""

    def __init__(self, lvs: LvsLab) -> None:
        self.lvs = lvs

    def conntrackd_conf(self, name: str) -> str:
        return str(self.lvs.pulse.state_dir(name) / "conntrackd" / "conntrackd.conf")

    def start(self, sync: bool) -> None:
        lvs = self.lvs
        # Sync over the public link (the lab's directors have no private address in lvs.cf): the
        # backup's external cache is filled before the fault, which is what a takeover commits.
        text = lvs.lvs_cf(syncdaemon=sync, syncd_iface="eth0" if sync else None)
        lvs.write_config(text)
        for name in ("primary", "backup"):  # no flow of an earlier test may carry this one
            lvs.node(name).run("conntrack", "-F", check=False)
        for name in lvs.rs:
            lvs.start_rs(name)
        lvs.start_pulse("primary")
        lvs.start_pulse("backup")
        lvs.wait_holders({"primary"}, 15)
        lvs.wait_holders({"primary"}, 5, NAT_ROUTER)
        for name in ("primary", "backup"):
            # The sysctl exists once nf_conntrack is loaded (the primary's table has loaded it). Without
            # sync it is set by hand, so the control run differs from the sync run in the sync only: with
            # 1 the new director would take a mid-stream packet as new and might pick the same server.
            if not sync:
                lvs.node(name).sysctl(TCP_LOOSE, 0)
        poll(lambda: all(self.health(s) == "up" for s in REAL_SERVERS), 30, "real servers up")
        if sync:
            poll(lambda: all(self.sync_running(n) for n in ("primary", "backup")), 20, "conntrackd on both")

    def status(self, name: str) -> dict[str, Any]:
        res = self.lvs.pulse.ask(name, "status", "--json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def health(self, server: str) -> str | None:
        (web,) = self.status("primary")["virtuals"]
        return next((s["health"] for s in web["servers"] if s["name"] == server), None)

    def sync_running(self, name: str) -> bool:
        sync = self.status(name)["sync"]
        return bool(sync and sync["running"])

    def table_snapshots(self, name: str) -> int:
        """Complete snapshots of the partner's table director ``name`` received (direct routing)."""
        return int(self.status(name)["sync"]["table"]["snapshots_received"])

    def external_cache(self, name: str) -> str:
        """conntrackd -e on director ``name``: the connections its peer synced to it."""
        done = self.lvs.node(name).run("conntrackd", "-C", self.conntrackd_conf(name), "-e", check=False)
        return done.stdout

    def stop(self) -> None:
        self.lvs.primary.link_up("eth0")
        for name in ("backup", "primary"):
            if name in self.lvs.pulse.pulses:
                self.lvs.stop_pulse(name)


@pytest.fixture(scope="module")
def nat_lab() -> Iterator[LvsLab]:
    reason = labmod.lab_available()
    if reason:
        pytest.skip(reason)
    if subprocess.run(["which", "conntrackd"], capture_output=True).returncode != 0:
        pytest.skip("conntrackd not installed (tools/host-deps.sh)")
    with LvsLab("nat") as lvs:
        yield lvs


def failover_under_a_session(pair: SyncPair, synced: bool, table_synced: bool = False) -> Session:
    """Hold a session, fail the primary's public link, keep the session going AFTER seconds past the
    takeover; the session as it ended. ``synced``: first wait until the backup's conntrackd has it;
    ``table_synced`` (direct routing): until the backup has two snapshots of the table taken after it."""
    lvs = pair.lvs
    before = pair.table_snapshots("backup") if table_synced else 0
    held = lvs.hold()
    assert held.alive()
    session = Session(held)
    session.start()
    time.sleep(1.0)
    if synced:
        sport = f"sport={held.sock.getsockname()[1]} "
        poll(lambda: sport in pair.external_cache("backup"), 10, "the session in the backup's external cache")
    if table_synced:
        poll(lambda: pair.table_snapshots("backup") >= before + 2, 10, "the session's pin at the backup")
    lvs.primary.link_down("eth0")
    fault = time.monotonic()
    took = poll(lambda: lvs.holds("backup", VIP), DEADTIME + 10, "the backup holding the VIP")
    print(f"backup took the VIP {took:.2f} s after the primary's link went down")
    deadline = time.monotonic() + AFTER
    while time.monotonic() < deadline and session.error is None:
        time.sleep(0.05)
    session.finish()
    print(
        f"synced={synced}: sent {len(session.sent)}, echoed {len(session.echoed)}, error {session.error}, "
        f"longest echo gap {session.longest_gap():.2f} s ({time.monotonic() - fault:.1f} s after the fault)"
    )
    return session


def test_nat_session_survives_the_failover_with_sync(nat_lab: LvsLab) -> None:
    pair = SyncPair(nat_lab)
    try:
        pair.start(sync=True)
        session = failover_under_a_session(pair, synced=True)
        assert session.error is None, f"the session ended: {session.error}"
        assert session.lines_in_order(), "an echoed line is missing or out of order"
        assert len(session.echoed) == len(session.sent), "every line sent was echoed"
        assert len(session.sent) >= (DEADTIME + AFTER) / INTERVAL / 2
        # The client's retransmissions back off (0.2, 0.4, 0.8, 1.6, 3.2 s): a takeover after deadtime
        # (2 s) is seen at the retransmission 3.0 s in, or at 6.2 s when a loaded machine delays it past 3 s.
        assert session.longest_gap() <= 6.2 + 1.0
        sync = pair.status("backup")["sync"]
        assert sync["running"] and sync["commands"]["-c"]["ok"] is True, sync
        assert sync["last_commit_ms"] is not None
        assert pair.status("backup")["node"]["state"] == "active"
        text = nat_lab.pulse.ask("backup", "status").stdout
        assert "sync:      conntrackd running" in text
    finally:
        pair.stop()


def test_nat_session_is_reset_without_sync(nat_lab: LvsLab) -> None:
    pair = SyncPair(nat_lab)
    try:
        pair.start(sync=False)
        assert pair.status("backup")["sync"] is None
        session = failover_under_a_session(pair, synced=False)
        assert session.error is not None, "without sync the new director has no entry for the session"
        assert session.error == "reset", session.error
    finally:
        pair.stop()


@pytest.fixture(scope="module")
def direct_lab() -> Iterator[LvsLab]:
    reason = labmod.lab_available()
    if reason:
        pytest.skip(reason)
    with LvsLab("direct") as lvs:
        yield lvs


@pytest.mark.parametrize(("scheduler", "sync"), [("rr", True), ("rr", False), ("sh", False)])
def test_direct_routing_session_across_the_failover(direct_lab: LvsLab, scheduler: str, sync: bool) -> None:
    """rr with syncdaemon = 1: the session's pin (client address and port . real server) reached the
    backup's cache before the fault, and the backup's table is loaded with it on takeover. rr without
    sync: the new director schedules the first mid-stream packet afresh (rr from its first server) and
    that server resets it. sh survives without any sync: the choice is a hash of the client's address,
    the same on both directors, and the real server (not the director) holds the connection's state."""
    lvs = direct_lab
    pair = SyncPair(lvs)
    extra: dict[str, Any] = {"syncdaemon": True, "syncd_iface": "eth0"} if sync else {}
    lvs.write_config(lvs.lvs_cf(scheduler=scheduler, **extra))
    try:
        for name in lvs.rs:
            lvs.start_rs(name)
        lvs.start_pulse("primary")
        lvs.start_pulse("backup")
        lvs.wait_holders({"primary"}, 15)
        poll(lambda: all(pair.health(s) == "up" for s in REAL_SERVERS), 15, "real servers up")
        if scheduler == "rr":  # rr's first two choices: the held session goes to the third server
            assert [lvs.connect_one(), lvs.connect_one()] == ["rs1", "rs2"]
        if sync:
            poll(lambda: pair.status("backup")["sync"]["table"]["listening"], 10, "the backup's table sync")
        # nothing of it is in conntrack: conntrackd has nothing to sync
        session = failover_under_a_session(pair, synced=False, table_synced=sync)
        print(f"direct routing, {scheduler}, sync={sync}: the session was on {session.held.name}")
        if scheduler == "rr" and not sync:
            assert session.held.name == "rs3"
            assert session.error == "reset", session.error
            return
        assert session.error is None, f"the session ended: {session.error}"
        assert session.lines_in_order() and len(session.echoed) == len(session.sent)
        if sync:
            table = pair.status("backup")["sync"]["table"]
            assert table["seeded"] and table["seeded"] >= 3, table  # rs1's, rs2's and the session's pins
            assert table["sending"] and table["dropped"] == 0, table
            assert "           table to" in lvs.pulse.ask("backup", "status").stdout
    finally:
        pair.stop()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_conntrackd_is_restarted_and_shown_without_a_failover(nat_lab: LvsLab) -> None:
    pair = SyncPair(nat_lab)
    try:
        pair.start(sync=True)
        before = pair.status("primary")["sync"]
        os.kill(before["pid"], signal.SIGKILL)  # the conntrackd pulse started (its pid from status)
        poll(lambda: (pair.status("primary")["sync"]["restarts"] or 0) >= 1, 10, "conntrackd restarted")
        poll(lambda: pair.status("primary")["sync"]["running"], 10, "conntrackd running again")
        after = pair.status("primary")
        assert after["sync"]["pid"] != before["pid"]
        assert "killed by signal 9" in after["sync"]["last_error"]
        assert after["node"]["state"] == "active" and nat_lab.holds("primary", VIP), "no failover for it"
        text = nat_lab.pulse.ask("primary", "status").stdout
        assert "restarts 1" in text and "last error" in text
    finally:
        pair.stop()


def test_pulse_killed_takes_its_conntrackd_with_it(nat_lab: LvsLab) -> None:
    pair = SyncPair(nat_lab)
    try:
        pair.start(sync=True)
        pid = pair.status("backup")["sync"]["pid"]
        nat_lab.pulse.kill("backup")  # SIGKILL: no clean-up code of pulse runs
        poll(lambda: not _alive(pid), 5, f"conntrackd {pid} gone with its pulse (PR_SET_PDEATHSIG)")
    finally:
        pair.stop()
