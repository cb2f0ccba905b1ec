"""The pid file's lock (issue 13, item 15): held by a running pulse for its life, it alone says one runs.

A stale pid, even one reused by another user's process named pulse, does not block a start; a held
lock refuses one; the lock is not inherited by the programs pulse runs; util-linux ``flock -n`` (the
init scripts' test) sees the same lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrhfos.daemon.startup import AlreadyRunning, lock_pidfile

SLEEP = "/bin/sleep"
NOBODY = 65534


@pytest.fixture
def impostor() -> Iterator[subprocess.Popen[bytes]]:
    """Another user's live process whose command line is ``pulse 60``."""
    proc = subprocess.Popen(["pulse", "60"], executable=SLEEP, user=NOBODY, group=NOBODY)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(5)


def flock_test(path: Path) -> int:
    """The init scripts' test: 75 when someone holds the lock."""
    cmd = ["flock", "-n", "-s", "-E", "75", str(path), "true"]
    return subprocess.run(cmd, timeout=10).returncode


def holder(path: Path) -> subprocess.Popen[str]:
    """A process that takes the lock as pulse does, writes its pid, says so and waits."""
    code = (
        "import os, sys, time\n"
        "from pyrhfos.daemon.startup import lock_pidfile\n"
        "lock = lock_pidfile(sys.argv[1])\n"
        "lock.write(os.getpid())\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_stale_pid_of_another_users_pulse_does_not_block_a_start(
    tmp_path: Path, impostor: subprocess.Popen[bytes]
) -> None:
    path = tmp_path / "pulse.pid"
    path.write_text(f"{impostor.pid}\n")
    assert flock_test(path) == 0, "nobody holds the lock"
    lock = lock_pidfile(str(path))
    try:
        assert path.read_text() == "", "the stale pid is erased at once"
        lock.write(os.getpid())
        assert path.read_text() == f"{os.getpid()}\n" and (path.stat().st_mode & 0o777) == 0o644
        assert flock_test(path) == 75
    finally:
        lock.release()
    assert not path.exists() and flock_test(tmp_path / "absent") == 0
    assert impostor.poll() is None


def test_a_held_lock_refuses_a_start_until_its_holder_dies(tmp_path: Path) -> None:
    path = tmp_path / "pulse.pid"
    proc = holder(path)
    try:
        with pytest.raises(AlreadyRunning) as refused:
            lock_pidfile(str(path), wait=0.2)
        assert refused.value.pid == proc.pid and f"pid {proc.pid}" in str(refused.value)
        assert flock_test(path) == 75
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    assert path.read_text() == f"{proc.pid}\n", "SIGKILL left the file behind"
    assert flock_test(path) == 0
    lock = lock_pidfile(str(path))  # the kernel dropped the dead holder's lock
    lock.release()


def test_a_pulse_starting_during_an_init_script_test_is_not_refused(tmp_path: Path) -> None:
    """flock -n -s holds the lock a moment: lock_pidfile waits that out."""
    path = tmp_path / "pulse.pid"
    path.write_text("")
    probe = subprocess.Popen(["flock", "-s", str(path), SLEEP, "0.2"])
    try:
        lock = lock_pidfile(str(path), wait=3)
        lock.release()
    finally:
        probe.wait(5)


def test_programs_run_by_pulse_do_not_inherit_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "pulse.pid"
    lock = lock_pidfile(str(path))
    child = subprocess.Popen([SLEEP, "30"], close_fds=False)  # even when descriptors are inherited
    try:
        lock.release()
        assert flock_test(path) == 0, "a start_cmd that outlives pulse must not block the next start"
    finally:
        child.kill()
        child.wait(5)


def test_a_symlink_at_the_pid_file_path_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (tmp_path / "pulse.pid").symlink_to(victim)
    with pytest.raises(OSError):
        lock_pidfile(str(tmp_path / "pulse.pid"))
    assert victim.read_text() == "keep\n"
