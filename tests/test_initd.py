"""init.d/pulse (LSB) driving a real pulse in a lab node; pulse.service checked by systemd-analyze."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from pyrhfos.testbed import Testbed, wait_until

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "init.d" / "pulse"


def initd(
    bed: Testbed, action: str, pulse: Path, pidfile: Path, config: Path
) -> subprocess.CompletedProcess[str]:
    env = [
        f"PULSE={pulse}",
        f"PIDFILE={pidfile}",
        f"CONFIG={config}",
        f"SOCKET={pidfile}.sock",
        "STOP_WAIT=20",
    ]
    return bed.a.run("env", *env, "sh", str(SCRIPT), action, check=False, timeout=60)


def kill_if_ours(pidfile: Path) -> None:
    """pulse left the lab's process group when it daemonized: end it by pid, if it is ours."""
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        pid = int(pidfile.read_text())
        if "pyrhfos.cli" in " ".join(psutil.Process(pid).cmdline()):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.lab
def test_init_script_start_status_reload_stop(lab: Any, tmp_path: Path) -> None:
    bed = Testbed(lab, tmp_path, keepalive=0.2, deadtime=1.0)
    pulse = tmp_path / "pulse"
    pulse.write_text(f'#!/bin/sh\nexec {sys.executable} -m pyrhfos.cli "$@"\n')
    pulse.chmod(0o755)
    pidfile = tmp_path / "run" / "pulse.pid"
    pidfile.parent.mkdir()
    cfg = bed.config_path

    def run(action: str, config: Path = cfg) -> subprocess.CompletedProcess[str]:
        return initd(bed, action, pulse, pidfile, config)

    try:
        assert run("status").returncode == 3
        started = run("start")
        assert started.returncode == 0, started.stdout + started.stderr
        status = run("status")
        pid = int(pidfile.read_text())
        assert status.returncode == 0 and f"pid {pid}" in status.stdout
        assert wait_until(lambda: "this node: primary" in run("status").stdout, 10), "pulse status is shown"
        assert wait_until(lambda: bed.holds_vip("a"), 15)
        again = run("start")
        assert again.returncode == 0 and "already running" in again.stdout
        assert run("reload").returncode == 0
        assert int(pidfile.read_text()) == pid and psutil.pid_exists(pid)
        stopped = run("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert not psutil.pid_exists(pid) and not pidfile.exists()
        assert not bed.holds_vip("a")
        assert run("status").returncode == 3
        assert run("stop").returncode == 0, "stopping a stopped pulse is fine"

        pidfile.write_text("999999\n")
        dead = run("status")
        assert dead.returncode == 1 and "dead but pid file exists" in dead.stdout

        broken = tmp_path / "broken.cf"
        broken.write_text(cfg.read_text().replace("deadtime =", "deadtme =", 1))
        refused = run("start", broken)
        assert refused.returncode == 6
        assert f"{broken}:" in refused.stderr and "did you mean 'deadtime'" in refused.stderr
        assert run("start", tmp_path / "missing.cf").returncode == 6
        assert run("bogus").returncode == 2
    finally:
        kill_if_ours(pidfile)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = tmp_path / "pulse.service"
    # Point the unit at binaries that exist here: verify checks ExecStart paths.
    unit.write_text((ROOT / "init.d" / "pulse.service").read_text().replace("/usr/sbin/pulse", "/bin/true"))
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in res.stderr.splitlines() if "pulse.service" in ln]
    assert not problems, res.stderr
    text = unit.read_text()
    for key in ("ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure", "StartLimitBurst="):
        assert key in text
