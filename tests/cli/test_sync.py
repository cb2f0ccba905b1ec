"""`pulse sync` with the partner's side run by real local processes (the ssh transport is in
test_sync_lab): the remote command line in a real sh, and sync() against a "partner" on this host."""

from __future__ import annotations

import dataclasses
import datetime
import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from pyrhfos.cli import sync as syncmod
from pyrhfos.cli.sync import (
    DONE,
    KEPT,
    Remote,
    SyncError,
    fingerprint,
    parse_read,
    read_script,
    reload_remote,
    replace_script,
    sync,
)
from pyrhfos.config import load, write
from pyrhfos.config.model import RshCommand
from pyrhfos.fileutil import locked

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "lvs.cf.example"
NOW = datetime.datetime(2026, 11, 25, 12, 0, 0)


def run(argv: list[str], cwd: Path, script: str | None = None) -> subprocess.CompletedProcess[str]:
    stdin = {"input": script} if script is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=cwd, **stdin)


def on_partner(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The partner's side as sync runs it: ``sh -s`` reading the script on standard input."""
    return run(["sh", "-s"], cwd, script)


def test_replace_keeps_the_old_file_under_a_free_name_and_renames_last(tmp_path: Path) -> None:
    d = tmp_path / "a 'b' \"c\" $(touch ran); touch ran"  # the path is data, never shell syntax
    d.mkdir()
    target, staging, backup = d / "lvs.cf", d / "lvs.cf.pulse-sync", d / "lvs.cf.20261125-120000"
    target.write_text("old\n")
    target.chmod(0o640)
    backup.write_text("an earlier backup\n")  # taken: the next free name is used
    script = replace_script(b"new\n", 0o644, str(target), str(backup), fingerprint(b"old\n"))
    res = on_partner(script, tmp_path)
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "ran").exists()
    kept = d / "lvs.cf.20261125-120000.1"
    assert res.stdout.splitlines() == [f"{KEPT} 1", DONE]
    assert kept.read_text() == "old\n" and (kept.stat().st_mode & 0o777) == 0o640
    assert backup.read_text() == "an earlier backup\n"
    assert target.read_text() == "new\n" and not staging.exists()
    assert (target.stat().st_mode & 0o777) == 0o644, "the mode travels with the file"


def test_replace_with_no_file_there_keeps_nothing(tmp_path: Path) -> None:
    target = tmp_path / "lvs.cf"
    data = bytes(range(256)) + b"no newline at the end, 100% exact \\ ' \""  # every byte value
    res = on_partner(
        replace_script(data, 0o600, str(target), str(tmp_path / "lvs.cf.backup"), "absent"), tmp_path
    )
    assert res.returncode == 0 and res.stdout.splitlines() == [DONE], res
    assert target.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lvs.cf", "lvs.cf.lock"]


def test_failed_backup_replaces_nothing_and_removes_the_staging_file(tmp_path: Path) -> None:
    target, staging = tmp_path / "lvs.cf", tmp_path / "lvs.cf.pulse-sync"
    target.write_text("old\n")
    backup = str(tmp_path / "no-such-dir" / "backup")
    res = on_partner(replace_script(b"new\n", 0o600, str(target), backup, fingerprint(b"old\n")), tmp_path)
    assert res.returncode != 0 and DONE not in res.stdout
    assert target.read_text() == "old\n" and not staging.exists()


def test_replace_refuses_a_file_changed_since_it_was_read(tmp_path: Path) -> None:
    """A GUI save that landed between sync's read and its rename is not overwritten."""
    target = tmp_path / "lvs.cf"
    target.write_text("saved by the GUI meanwhile\n")
    for expected in (fingerprint(b"what sync read\n"), "absent"):
        res = on_partner(
            replace_script(b"new\n", 0o600, str(target), str(tmp_path / "bak"), expected), tmp_path
        )
        assert res.returncode == 1 and "changed since it was read" in res.stderr, res.stderr
        assert target.read_text() == "saved by the GUI meanwhile\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["lvs.cf", "lvs.cf.lock"]


def test_replace_waits_for_the_lock_piranha_gui_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(syncmod, "LOCK_WAIT", 1)
    target = tmp_path / "lvs.cf"
    target.write_text("old\n")
    script = replace_script(b"new\n", 0o600, str(target), str(tmp_path / "bak"), fingerprint(b"old\n"))
    with locked(target):  # a piranha-gui save in progress
        res = on_partner(script, tmp_path)
    assert res.returncode == 1 and "lvs.cf.lock: held by another process" in res.stderr, res.stderr
    assert target.read_text() == "old\n" and not (tmp_path / "lvs.cf.pulse-sync").exists()
    assert on_partner(script, tmp_path).returncode == 0 and target.read_text() == "new\n"


def test_read_script_reports_the_file_its_mode_or_its_absence(tmp_path: Path) -> None:
    target = tmp_path / "lvs.cf"
    res = on_partner(read_script(str(target)), tmp_path)
    assert parse_read(res.stdout, res.stderr) is None
    target.write_bytes(bytes(range(256)))
    target.chmod(0o640)
    res = on_partner("echo noise from a login shell\n" + read_script(str(target)), tmp_path)
    assert parse_read(res.stdout, res.stderr) == (bytes(range(256)), 0o640)


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
    """A "partner" on this host: sh for ssh, and, like rsh, no remote exit status."""

    shell_runs: bool = True

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
    assert "already identical" in said[0] and len(list(tmp_path.glob("theirs.cf.2*"))) == 1
    theirs.chmod(0o666)  # same bytes, other mode: still copied (the mode travels with the file)
    said.clear()
    sync(cfg, LocalRemote(RshCommand.RSH, "partner"), str(theirs), say=said.append, now=NOW)
    assert said[0].startswith("copied") and (theirs.stat().st_mode & 0o777) == (ours.stat().st_mode & 0o777)


def test_sync_to_a_partner_without_a_file(tmp_path: Path, ours: Path) -> None:
    cfg, _ = load(str(ours))
    said: list[str] = []
    sync(cfg, LocalRemote(RshCommand.RSH, "partner"), str(tmp_path / "new.cf"), say=said.append, now=NOW)
    assert (tmp_path / "new.cf").read_bytes() == ours.read_bytes() and not any("kept" in s for s in said)


def test_the_remote_shell_runs_in_the_c_locale(
    tmp_path: Path, ours: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ssh's and rsh's messages are reported as they are: an administrator's LANG must not change them."""
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")

    @dataclasses.dataclass(frozen=True)
    class Translated(LocalRemote):
        """A partner shell that, outside the C locale, answers as a localised tool would."""

        def shell_argv(self, words: Sequence[str]) -> list[str]:
            msg = "Datei oder Verzeichnis nicht gefunden"
            script = f'[ "$LC_ALL" = C ] || {{ echo "{msg}" >&2; exit 1; }}; {shlex.join(words)}'
            return ["sh", "-c", script]

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
        sync(cfg, LosesTheReplace(RshCommand.RSH, "partner"), str(theirs), say=lambda _: None)
    assert theirs.read_text() == "old\n"


@dataclasses.dataclass(frozen=True)
class LosesTheReplace(LocalRemote):
    """A partner whose shell runs the read but not the replace script, and exits 0 as rsh does."""

    def shell_argv(self, words: Sequence[str]) -> list[str]:
        script = 's=$(cat); case $s in *"mv -f"*) exit 0 ;; esac; printf "%s\\n" "$s" | ' + shlex.join(words)
        return ["sh", "-c", script + "; exit 0"]


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


@dataclasses.dataclass(frozen=True)
class TcshPartner(LocalRemote):
    """A partner whose login shell is tcsh, as sshd or rshd would run it: ``tcsh -c COMMAND``."""

    def shell_argv(self, words: Sequence[str]) -> list[str]:
        return ["tcsh", "-c", shlex.join(words)]


HOSTILE = "new\nline ! !! 'single' \"double\" $(touch ran) `touch ran2` ${HOME}"


@pytest.mark.skipif(
    shutil.which("tcsh") is None, reason="tcsh not installed (tools/host-deps.sh installs it)"
)
def test_a_tcsh_login_shell_parses_no_path(tmp_path: Path, ours: Path) -> None:
    """Item 17: the partner's login shell sees ``sh -s`` only; paths with a newline, ``!``, quotes,
    ``$()`` and backquotes are data in the script it forwards."""
    d = tmp_path / HOSTILE
    d.mkdir()
    target = d / "lvs.cf"
    target.write_text(ours.read_text().replace("serial_no = 5", "serial_no = 4"))
    before = target.read_bytes()
    cfg, _ = load(str(ours))
    said: list[str] = []
    partner = TcshPartner(RshCommand.SSH, "partner")
    sync(cfg, partner, str(target), say=said.append, now=NOW)
    assert target.read_bytes() == ours.read_bytes(), said
    kept = d / "lvs.cf.20261125-120000"
    assert kept.read_bytes() == before and said[-1] == f"the partner's previous file is kept as {kept}"
    pulse = d / "pulse"
    pulse.write_text('#!/bin/sh\necho "reloaded with $*"\n')
    pulse.chmod(0o755)
    assert (
        reload_remote(partner, str(pulse), str(d / "ctl.sock"))
        == f"reloaded with reload --socket {d}/ctl.sock"
    )
    assert not list(tmp_path.rglob("ran*")), "no command substitution ran"
