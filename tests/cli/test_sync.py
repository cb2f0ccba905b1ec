"""`pulse sync` with the partner's side run by real local processes (the ssh transport is in
test_sync_lab): the remote command line in a real sh, and sync() against a "partner" on this host."""

from __future__ import annotations

import dataclasses
import datetime
import re
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from pyrhfos.cli.sync import DONE, Remote, SyncError, reload_remote, replace_command, sync
from pyrhfos.config import load, write
from pyrhfos.config.model import RshCommand

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "lvs.cf.example"
NOW = datetime.datetime(2026, 11, 25, 12, 0, 0)


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=cwd)


def test_replace_keeps_the_old_file_under_a_free_name_and_renames_last(tmp_path: Path) -> None:
    d = tmp_path / "a 'b' \"c\" $(touch ran); touch ran"  # the path is data, never shell syntax
    d.mkdir()
    target, staging, backup = d / "lvs.cf", d / "lvs.cf.pulse-sync", d / "lvs.cf.20261125-120000"
    target.write_text("old\n")
    target.chmod(0o640)
    backup.write_text("an earlier backup\n")  # taken: the next free name is used
    staging.write_text("new\n")
    res = run(replace_command(str(staging), str(target), str(backup)), tmp_path)
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "ran").exists()
    kept = d / "lvs.cf.20261125-120000.1"
    assert res.stdout.splitlines() == [f"kept {kept}", DONE]
    assert kept.read_text() == "old\n" and (kept.stat().st_mode & 0o777) == 0o640
    assert backup.read_text() == "an earlier backup\n"
    assert target.read_text() == "new\n" and not staging.exists()


def test_replace_with_no_file_there_keeps_nothing(tmp_path: Path) -> None:
    target, staging = tmp_path / "lvs.cf", tmp_path / "lvs.cf.pulse-sync"
    staging.write_text("new\n")
    res = run(replace_command(str(staging), str(target), str(tmp_path / "lvs.cf.backup")), tmp_path)
    assert res.returncode == 0 and res.stdout.splitlines() == [DONE], res
    assert target.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["lvs.cf"]


def test_failed_backup_replaces_nothing_and_removes_the_staging_file(tmp_path: Path) -> None:
    target, staging = tmp_path / "lvs.cf", tmp_path / "lvs.cf.pulse-sync"
    target.write_text("old\n")
    staging.write_text("new\n")
    res = run(replace_command(str(staging), str(target), str(tmp_path / "no-such-dir" / "backup")), tmp_path)
    assert res.returncode != 0 and DONE not in res.stdout
    assert target.read_text() == "old\n" and not staging.exists()


def test_remote_argv_passes_one_quoted_line() -> None:
    argv = Remote(RshCommand.SSH, "192.0.2.200").shell_argv(["pulse", "reload", "--socket", "/run/a b.sock"])
    assert argv[:2] == ["ssh", "-o"] and argv[-4:] == [
        "-l",
        "root",
        "192.0.2.200",
        "pulse reload --socket '/run/a b.sock'",
    ]
    assert Remote(RshCommand.RSH, "192.0.2.200").shell_argv(["true"])[0] == "rsh"


@dataclasses.dataclass(frozen=True)
class LocalRemote(Remote):
    """A "partner" on this host: cp for scp, sh for ssh, and, like rsh, no remote exit status."""

    shell_runs: bool = True

    def copy_argv(self, source: str, target: str) -> list[str]:
        return ["cp", "-p", "--", source.removeprefix(":"), target.removeprefix(":")]

    def shell_argv(self, words: Sequence[str]) -> list[str]:
        return ["sh", "-c", shlex.join(words) + "; exit 0"] if self.shell_runs else ["true"]


@pytest.fixture
def ours(tmp_path: Path) -> Path:
    cfg, _ = load(str(EXAMPLE))
    path = tmp_path / "ours.cf"
    path.write_text(write(dataclasses.replace(cfg, serial_no=5)))
    return path


def test_sync_keeps_the_partners_file_and_skips_an_identical_one(tmp_path: Path, ours: Path) -> None:
    cfg, _ = load(str(ours))
    theirs = tmp_path / "theirs.cf"
    theirs.write_text(ours.read_text().replace("serial_no = 5", "serial_no = 4") + "# a hand edit\n")
    before = theirs.read_bytes()
    said: list[str] = []
    sync(cfg, LocalRemote(RshCommand.RSH, "partner"), str(theirs), say=said.append, now=NOW)
    kept = tmp_path / "theirs.cf.20261125-120000"
    assert theirs.read_bytes() == ours.read_bytes() and kept.read_bytes() == before
    assert said[-1] == f"the partner's previous file is kept as {kept}", said
    said.clear()
    sync(cfg, LocalRemote(RshCommand.RSH, "partner"), str(theirs), say=said.append, now=NOW)
    assert "already identical" in said[0] and len(list(tmp_path.glob("theirs.cf.*"))) == 1
    theirs.chmod(0o666)  # same bytes, other mode: still copied (the mode travels with the file)
    said.clear()
    sync(cfg, LocalRemote(RshCommand.RSH, "partner"), str(theirs), say=said.append, now=NOW)
    assert said[0].startswith("copied") and (theirs.stat().st_mode & 0o777) == (ours.stat().st_mode & 0o777)


def test_sync_to_a_partner_without_a_file(tmp_path: Path, ours: Path) -> None:
    cfg, _ = load(str(ours))
    said: list[str] = []
    sync(cfg, LocalRemote(RshCommand.RSH, "partner"), str(tmp_path / "new.cf"), say=said.append, now=NOW)
    assert (tmp_path / "new.cf").read_bytes() == ours.read_bytes() and not any("kept" in s for s in said)


def test_the_copy_tools_run_in_the_c_locale(
    tmp_path: Path, ours: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sync reads the tools' "No such file": an administrator's LANG must not translate it."""
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")

    @dataclasses.dataclass(frozen=True)
    class Translated(LocalRemote):
        """cp as a localised rcp would answer outside the C locale."""

        def copy_argv(self, source: str, target: str) -> list[str]:
            msg = "Datei oder Verzeichnis nicht gefunden"
            script = f'[ "$LC_ALL" = C ] || {{ echo "{msg}" >&2; exit 1; }}; exec cp -p -- "$1" "$2"'
            return ["sh", "-c", script, "sh", source.removeprefix(":"), target.removeprefix(":")]

    cfg, _ = load(str(ours))
    sync(cfg, Translated(RshCommand.RSH, "partner"), str(tmp_path / "new.cf"), say=lambda _: None)
    assert (tmp_path / "new.cf").read_bytes() == ours.read_bytes()


def test_a_partner_file_that_cannot_be_read_is_not_taken_for_none(tmp_path: Path, ours: Path) -> None:
    cfg, _ = load(str(ours))
    odd = tmp_path / "odd.cf"
    odd.mkdir()  # there, but cp cannot read it: the serial guard must not be skipped silently
    with pytest.raises(SyncError, match="reading the partner's lvs.cf"):
        sync(cfg, LocalRemote(RshCommand.RSH, "partner"), str(odd), say=lambda _: None)
    assert not (tmp_path / "odd.cf.pulse-sync").exists()


def test_a_rename_the_partner_does_not_confirm_is_an_error(tmp_path: Path, ours: Path) -> None:
    """rsh exits 0 whatever the remote command did: only the printed DONE counts."""
    cfg, _ = load(str(ours))
    theirs = tmp_path / "theirs.cf"
    theirs.write_text("old\n")
    with pytest.raises(SyncError, match="did not confirm"):
        sync(cfg, LocalRemote(RshCommand.RSH, "partner", shell_runs=False), str(theirs), say=lambda _: None)
    assert theirs.read_text() == "old\n"


@pytest.mark.parametrize(
    ("script", "outcome"),
    [
        (
            "echo 'reloaded lvs.cf (serial 6): 1 service changed'",
            "reloaded lvs.cf (serial 6): 1 service changed",
        ),
        ("exit 3", "no pulse running there; it reads the new file when it starts"),
        ("echo 'lvs.cf:3:1: unknown key' >&2; exit 1", SyncError("lvs.cf:3:1: unknown key")),
    ],
)
def test_reload_on_the_partner_reports_its_exit_status_through_rsh(
    tmp_path: Path, script: str, outcome: str | SyncError
) -> None:
    """rsh drops the remote exit status (LocalRemote too): pulse's own status still decides."""
    pulse = tmp_path / "pulse"
    pulse.write_text(f"#!/bin/sh\n{script}\n")
    pulse.chmod(0o755)
    remote = LocalRemote(RshCommand.RSH, "partner")
    if isinstance(outcome, SyncError):
        with pytest.raises(SyncError, match=re.escape(str(outcome))):
            reload_remote(remote, str(pulse), "/run/pulse.sock")
    else:
        assert reload_remote(remote, str(pulse), "/run/pulse.sock") == outcome
    with pytest.raises(SyncError, match="no exit status"):
        reload_remote(LocalRemote(RshCommand.RSH, "partner", shell_runs=False), str(pulse), "/run/pulse.sock")
