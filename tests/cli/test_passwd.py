"""piranha-passwd as a command (issue 13, item 19): a password on the command line is set but warned
about (any local user can read it in ps), and --stdin takes it from a pipe instead."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pyrhfos.web import passwd

PASSWORD = "correct horse battery"


def piranha_passwd(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    # Bytes in, so a test can send what is not UTF-8; no stdin at all is /dev/null, never our terminal.
    kw = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    res = subprocess.run(
        [sys.executable, "-m", "pyrhfos.web.passwd", *args], capture_output=True, timeout=60, **kw
    )
    return subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode(), res.stderr.decode())


def test_a_password_argument_is_stored_with_a_warning_about_the_process_list(tmp_path: Path) -> None:
    path = tmp_path / "piranha.passwd"
    res = piranha_passwd("--passwd-file", str(path), PASSWORD)
    assert res.returncode == 0, res.stderr
    assert "visible to every local user in the process list" in res.stderr and "--stdin" in res.stderr
    assert passwd.verify(path, PASSWORD)


def test_stdin_reads_the_password_from_a_pipe_without_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "piranha.passwd"
    res = piranha_passwd("--stdin", "--passwd-file", str(path), stdin=f"{PASSWORD}\n".encode())
    assert res.returncode == 0, res.stderr
    assert res.stderr == "" and "stored in" in res.stdout
    assert passwd.verify(path, PASSWORD) and not passwd.verify(path, PASSWORD + "\n")
    # No newline at the end is the same password; spaces inside and at the ends are kept.
    res = piranha_passwd("--stdin", "--passwd-file", str(path), stdin=f" {PASSWORD} ".encode())
    assert res.returncode == 0 and passwd.verify(path, f" {PASSWORD} "), res.stderr


def test_stdin_refusals_change_nothing(tmp_path: Path) -> None:
    path = tmp_path / "piranha.passwd"
    passwd.set_password(path, PASSWORD)
    before = path.read_bytes()
    for data, said in [
        (b"", "no password on standard input"),
        (b"\n", "no password on standard input"),
        (b"first line\nsecond line\n", "control characters"),
        (b"caf\xe9 latin-1 bytes\n", "not UTF-8"),
        (b"short\n", "at least 8 characters"),
    ]:
        res = piranha_passwd("--stdin", "--passwd-file", str(path), stdin=data)
        assert res.returncode == 1 and said in res.stderr, (data, res.stderr)
        assert "nothing changed" in res.stderr
    both = piranha_passwd("--stdin", "--passwd-file", str(path), PASSWORD, stdin=b"x\n")
    assert both.returncode == 2 and "not both" in both.stderr
    assert path.read_bytes() == before
