"""net/conntrackd.py: conntrackd.conf built from lvs.cf (addresses, port, filter, per-instance files, the
writer refusing unsafe values) and ConntrackdProcess on fakes (takeover/standby order, bounded failing
commands, restart with back-off, stop by pid, status)."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from pyrhfos.config import loads
from pyrhfos.config.model import Config
from pyrhfos.core.vocab import Role
from pyrhfos.net import conntrackd
from pyrhfos.net.conntrackd import (
    ConntrackdProcess,
    SyncConfigError,
    accepted_addresses,
    for_director,
    render,
    settings,
    sync_addresses,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "lvs_nat.cf"


def nat_cfg(**changes: Any) -> Config:
    cfg, _ = loads(DATA.read_text().replace("syncdaemon = 0", "syncdaemon = 1"), "lvs.cf")
    return dataclasses.replace(cfg, **changes)


# -- the configuration ----------------------------------------------------------------------------
def test_private_addresses_when_both_directors_have_one_else_public() -> None:
    cfg = nat_cfg()
    assert sync_addresses(cfg, Role.PRIMARY) == (
        IPv4Address("192.168.122.246"),
        IPv4Address("192.168.122.247"),
    )
    assert sync_addresses(cfg, Role.BACKUP) == (
        IPv4Address("192.168.122.247"),
        IPv4Address("192.168.122.246"),
    )
    public = nat_cfg(backup_private=None)
    assert sync_addresses(public, Role.BACKUP) == (IPv4Address("172.25.30.15"), IPv4Address("172.25.30.14"))
    zero = nat_cfg(primary_private=IPv4Address(0))  # Piranha writes 0.0.0.0 for "none"
    assert sync_addresses(zero, Role.PRIMARY) == (IPv4Address("172.25.30.14"), IPv4Address("172.25.30.15"))
    with pytest.raises(SyncConfigError, match="both directors"):
        sync_addresses(nat_cfg(backup=None, backup_private=None), Role.PRIMARY)


def test_filter_accepts_only_the_virtuals_real_and_sorry_servers() -> None:
    cfg = nat_cfg()
    accepted = {str(a) for a in accepted_addresses(cfg)}
    reals = {str(s.address) for v in cfg.virtuals if v.active for s in v.servers if s.active}
    reals |= {str(v.sorry_server) for v in cfg.virtuals if v.active and v.sorry_server is not None}
    directors = {"172.25.30.14", "172.25.30.15", "192.168.122.246", "192.168.122.247"}
    assert accepted == reals - directors, "a NAT'ed flow's reply comes from a real server: it is synced"
    assert not accepted & directors, "the directors' own flows (heartbeats, probes, sync) are not"
    vips = {str(v.address.ip) for v in cfg.virtuals if v.address is not None}
    assert not accepted & vips
    assert len(accepted) == len(accepted_addresses(cfg)), "each address once"


def test_rendered_file_has_ftfw_over_udp_the_filter_and_per_instance_files(tmp_path: Path) -> None:
    cfg = nat_cfg(syncd_id=3)
    s = settings(cfg, Role.BACKUP, tmp_path / "b")
    text = render(s)
    assert "Mode FTFW {" in text and "UDP {" in text and "Multicast" not in text
    assert "IPv4_address 192.168.122.247\n" in text
    assert "IPv4_Destination_Address 192.168.122.246\n" in text
    assert "Port 3783\n" in text and "Interface eth2\n" in text
    assert f"LockFile {tmp_path / 'b' / 'conntrackd.lock'}\n" in text
    assert f"Path {tmp_path / 'b' / 'conntrackd.ctl'}\n" in text
    protocols = text.split("Protocol Accept {", 1)[1].split("}", 1)[0].split()
    assert protocols == sorted({v.protocol.upper() for v in cfg.virtuals if v.active})
    accept = text.split("Address Accept {", 1)[1].split("}", 1)[0]
    assert accept.count("IPv4_address") == len(accepted_addresses(cfg)) and "Address Ignore" not in text
    assert text.count("{") == text.count("}")
    other = render(settings(cfg, Role.PRIMARY, tmp_path / "a"))
    assert "conntrackd.lock" in other and str(tmp_path / "b") not in other, "two lab directors never collide"


def test_syncd_id_beyond_ipvs_range_and_unsafe_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SyncConfigError, match="syncd_id"):
        settings(nat_cfg(syncd_id=256), Role.PRIMARY, tmp_path)
    good = settings(nat_cfg(), Role.PRIMARY, tmp_path)
    for bad in ("eth0\nGeneral {", "eth0}", 'eth"0', "eth0 #", "eth{0"):
        with pytest.raises(SyncConfigError, match="cannot be written"):
            render(dataclasses.replace(good, interface=bad))
    with pytest.raises(SyncConfigError):
        render(dataclasses.replace(good, lock_file=tmp_path / "a b" / "lock"))
    assert "Interface" not in render(dataclasses.replace(good, interface=None))


def test_for_director_puts_its_files_under_the_state_directory(tmp_path: Path) -> None:
    proc = for_director(nat_cfg(), Role.PRIMARY, tmp_path)
    assert proc.conf_path == tmp_path / "conntrackd" / "conntrackd.conf"
    proc.write_config()
    assert proc.conf_path.read_text() == render(proc.settings)
    assert proc.conf_path.stat().st_mode & 0o777 == 0o600
    assert proc.conf_path.parent.stat().st_mode & 0o777 == 0o700


def test_the_debian_conntrackd_accepts_the_rendered_file(tmp_path: Path) -> None:
    """conntrackd -C <file> -s (a client command) parses the whole file before it finds no daemon."""
    import shutil

    if shutil.which("conntrackd") is None:
        pytest.skip("conntrackd not installed (tools/host-deps.sh)")
    proc = for_director(nat_cfg(), Role.PRIMARY, tmp_path)
    proc.write_config()
    done = subprocess.run(
        ["conntrackd", "-C", str(proc.conf_path), "-s"], capture_output=True, text=True, timeout=10
    )
    said = done.stdout + done.stderr
    assert "parsing config file" not in said and "syntax error" not in said, said
    assert "can't connect" in said, said  # parsed, then found no daemon on its socket


# -- the process, on fakes -------------------------------------------------------------------------
class FakeChild:
    _next = 1000

    def __init__(self, argv: list[str], **kw: Any) -> None:
        FakeChild._next += 1
        self.pid = FakeChild._next
        self.argv = argv
        self.kw = kw
        self.returncode: int | None = None
        self.signals: list[str] = []

    def poll(self) -> int | None:
        return self.returncode

    def terminate(self) -> None:
        self.signals.append("TERM")
        self.returncode = -15

    def kill(self) -> None:
        self.signals.append("KILL")
        self.returncode = -9

    def wait(self, timeout: float | None = None) -> int | None:
        return self.returncode


class Rig:
    def __init__(self, tmp: Path, fail: dict[str, Any] | None = None) -> None:
        self.children: list[FakeChild] = []
        self.calls: list[str] = []
        self.sysctls: list[tuple[str, int]] = []
        self.fail = fail or {}
        self.proc = ConntrackdProcess(
            settings(nat_cfg(), Role.BACKUP, tmp),
            tmp / "conntrackd.conf",
            runner=self.run,
            spawn=self.spawn,  # type: ignore[arg-type]  # a fake Popen
            sysctl=self.sysctl,
        )

    def spawn(self, argv: list[str], **kw: Any) -> FakeChild:
        child = FakeChild(argv, **kw)
        self.children.append(child)
        self.proc.settings.socket_path.touch()  # "ready"
        return child

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        flag = argv[-1]
        self.calls.append(flag)
        what = self.fail.get(flag)
        if what == "hang":
            raise subprocess.TimeoutExpired(argv, timeout)
        if what:
            return subprocess.CompletedProcess(argv, 1, "", f"{what}\n")
        return subprocess.CompletedProcess(argv, 0, "", "")

    def sysctl(self, name: str, value: int) -> str:
        self.sysctls.append((name, value))
        return "1"


async def settle(rig: Rig, predicate: Any, limit: float = 2.0) -> None:
    for _ in range(int(limit / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached")


def test_start_runs_conntrackd_in_the_foreground_on_its_file_and_sets_tcp_loose(tmp_path: Path) -> None:
    rig = Rig(tmp_path)

    async def go() -> None:
        rig.proc.start()
        await settle(rig, lambda: rig.proc.running)
        (child,) = rig.children
        assert child.argv == ["conntrackd", "-C", str(tmp_path / "conntrackd.conf")]
        assert child.kw["preexec_fn"] is conntrackd._die_with_parent
        assert rig.proc.conf_path.exists()
        assert ("net.netfilter.nf_conntrack_tcp_loose", 0) in rig.sysctls
        st = rig.proc.status()
        assert st["running"] and st["pid"] == child.pid and st["restarts"] == 0 and st["last_error"] is None
        rig.proc.close()
        assert child.signals == ["TERM"] and not rig.proc.running

    asyncio.run(go())


def test_takeover_commits_first_then_flushes_resyncs_and_bulk_sends(tmp_path: Path) -> None:
    rig = Rig(tmp_path)

    async def go() -> None:
        rig.proc.start()
        await settle(rig, lambda: rig.proc.running)
        await rig.proc.takeover()
        assert rig.calls == ["-c"], "the VIPs wait for the commit only"
        await settle(rig, lambda: len(rig.calls) == 4)
        assert rig.calls == ["-c", "-f", "-R", "-B"]
        await rig.proc.standby()
        assert rig.calls[4:] == ["-t", "-n"]
        assert rig.proc.status()["last_commit_ms"] is not None
        rig.proc.close()

    asyncio.run(go())


def test_failing_and_hanging_commands_are_logged_and_shown_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path, fail={"-c": "hang", "-R": "cannot resync"})

    async def go() -> None:
        rig.proc.start()
        await settle(rig, lambda: rig.proc.running)
        await rig.proc.takeover()
        await settle(rig, lambda: len(rig.calls) == 4)
        st = rig.proc.status()
        assert st["commands"]["-c"] == {"ok": False, "error": "no answer within 2s"}
        assert st["commands"]["-R"]["error"] == "exit status 1: cannot resync"
        assert st["commands"]["-B"]["ok"] is True
        assert "cannot resync" in st["last_error"]
        rig.proc.close()

    asyncio.run(go())
    assert "conntrackd -c failed" in caplog.text


def test_takeover_without_a_running_conntrackd_says_so_and_returns(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    asyncio.run(rig.proc.takeover())
    assert rig.calls == [] and "not running" in (rig.proc.last_error or "")
    asyncio.run(rig.proc.standby())
    assert rig.calls == []


def test_a_dead_conntrackd_is_restarted_with_back_off_and_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conntrackd, "BACKOFF_FIRST", 0.05)
    monkeypatch.setattr(conntrackd, "SUPERVISE_EVERY", 0.01)
    rig = Rig(tmp_path)

    async def go() -> None:
        rig.proc.start()
        await settle(rig, lambda: rig.proc.running)
        rig.children[0].returncode = 1
        (tmp_path / "conntrackd.out").write_text("ERROR: can't open lockfile\n")
        await settle(rig, lambda: len(rig.children) == 2 and rig.proc.running)
        st = rig.proc.status()
        assert st["restarts"] == 1 and st["pid"] == rig.children[1].pid
        assert "exit status 1: ERROR: can't open lockfile" in st["last_error"]
        rig.children[1].returncode = -9
        await settle(rig, lambda: len(rig.children) == 3 and rig.proc.running)
        assert "killed by signal 9" in (rig.proc.last_error or "") and "restarting in 0.1s" in (
            rig.proc.last_error or ""
        ), "the delay doubles"
        rig.proc.close()
        assert rig.children[2].signals == ["TERM"]

    asyncio.run(go())


def test_a_stale_lock_file_is_removed_before_starting(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.proc.settings.lock_file.write_text("")

    async def go() -> None:
        rig.proc.start()
        await settle(rig, lambda: rig.proc.running)
        assert not rig.proc.settings.lock_file.exists()
        rig.proc.close()

    asyncio.run(go())


def test_spawn_failure_is_an_error_in_status_not_an_exception(tmp_path: Path) -> None:
    rig = Rig(tmp_path)

    def broken(argv: list[str], **kw: Any) -> FakeChild:
        raise FileNotFoundError(2, "No such file or directory", "conntrackd")

    rig.proc.spawn = broken  # type: ignore[assignment]

    async def go() -> None:
        rig.proc.start()
        await settle(rig, lambda: rig.proc.last_error is not None)
        assert not rig.proc.running and "not started" in (rig.proc.last_error or "")
        rig.proc.close()

    asyncio.run(go())
