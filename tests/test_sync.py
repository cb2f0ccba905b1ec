"""`pulse sync`'s remote command lines, run by a real local sh (the ssh transport is in test_sync_lab)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pyrhfos.config.model import RshCommand
from pyrhfos.sync import Remote, replace_command


def run_sh(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=30, cwd=cwd)


def test_replace_keeps_the_old_file_under_a_free_name_and_renames_last(tmp_path: Path) -> None:
    d = tmp_path / "a 'b' \"c\" $(touch ran); touch ran"  # the path is data, never shell syntax
    d.mkdir()
    target, staging, backup = d / "lvs.cf", d / "lvs.cf.pulse-sync", d / "lvs.cf.20261125-120000"
    target.write_text("old\n")
    target.chmod(0o640)
    backup.write_text("an earlier backup\n")  # taken: the next free name is used
    staging.write_text("new\n")
    res = run_sh(replace_command(str(staging), str(target), str(backup)), tmp_path)
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "ran").exists()
    kept = Path(res.stdout.strip())
    assert kept == d / "lvs.cf.20261125-120000.1"
    assert kept.read_text() == "old\n" and (kept.stat().st_mode & 0o777) == 0o640
    assert backup.read_text() == "an earlier backup\n"
    assert target.read_text() == "new\n" and not staging.exists()


def test_replace_with_no_file_there_keeps_nothing(tmp_path: Path) -> None:
    target, staging = tmp_path / "lvs.cf", tmp_path / "lvs.cf.pulse-sync"
    staging.write_text("new\n")
    res = run_sh(replace_command(str(staging), str(target), str(tmp_path / "lvs.cf.backup")), tmp_path)
    assert res.returncode == 0 and res.stdout == "", res
    assert target.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["lvs.cf"]


def test_failed_backup_replaces_nothing(tmp_path: Path) -> None:
    target, staging = tmp_path / "lvs.cf", tmp_path / "lvs.cf.pulse-sync"
    target.write_text("old\n")
    staging.write_text("new\n")
    res = run_sh(
        replace_command(str(staging), str(target), str(tmp_path / "no-such-dir" / "backup")), tmp_path
    )
    assert res.returncode != 0
    assert target.read_text() == "old\n" and staging.exists()


def test_remote_argv_passes_one_quoted_line() -> None:
    argv = Remote(RshCommand.SSH, "192.0.2.200").shell_argv(["pulse", "reload", "--socket", "/run/a b.sock"])
    assert argv[:2] == ["ssh", "-o"] and argv[-3:] == [
        "root",
        "192.0.2.200",
        "pulse reload --socket '/run/a b.sock'",
    ]
    assert Remote(RshCommand.RSH, "192.0.2.200").shell_argv("true")[0] == "rsh"
