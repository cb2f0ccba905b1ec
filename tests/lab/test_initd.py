"""init.d/pulse (LSB) driving a real pulse in a lab node; pulse.service checked by systemd-analyze."""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from pyrhfos_lab.testbed import Testbed, wait_until

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "init.d" / "pulse"
UNIT = ROOT / "init.d" / "pulse.service"


class InitD:
    """``sh init.d/pulse ACTION`` with every path of the script pointed into ``run_dir``."""

    def __init__(
        self, node: Any, pulse: str, run_dir: Path, config: Path, pidname: str = "pulse.pid"
    ) -> None:
        run_dir.mkdir(exist_ok=True)
        self.node = node
        self.pidfile = run_dir / pidname
        self.env = {
            "PULSE": pulse,
            "PIDFILE": str(self.pidfile),
            "CONFIG": str(config),
            "SOCKET": str(run_dir / "ctl.sock"),
            "PULSE_OPTS": "",
            "STOP_WAIT": "20",
        }

    def __call__(self, action: str, **env: str | Path) -> subprocess.CompletedProcess[str]:
        argv = [f"{k}={v}" for k, v in {**self.env, **env}.items()]
        if self.node is None:  # only reads /proc and pid files: no pulse, no packets
            cmd = ["env", *argv, "sh", str(SCRIPT), action]
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        return self.node.run("env", *argv, "sh", str(SCRIPT), action, check=False, timeout=60)

    def pid(self) -> int:
        return int(self.pidfile.read_text())

    def cleanup(self) -> None:
        """pulse left the lab's process group when it daemonized: end every pulse of ours by pid.

        Ours = a pyrhfos process whose command line names this test's own pid file, so a
        pulse of the test run is found even after its pid file is gone, and nothing else is.
        """
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if (
                str(self.pidfile) in cmdline
                and any("pyrhfos" in a for a in cmdline)
                and proc.pid != os.getpid()
            ):
                try:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(5)
                except psutil.Error:
                    pass


def alive(pid: int) -> bool:
    """A zombie has exited: stop does not wait for init to reap it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wrapper(tmp_path: Path) -> str:
    """A /usr/sbin/pulse for the lab: this interpreter, the repo on PYTHONPATH (Node.run sets it)."""
    pulse = tmp_path / "pulse"
    pulse.write_text(f'#!/bin/sh\nexec {sys.executable} -m pyrhfos.cli "$@"\n')
    pulse.chmod(0o755)
    return str(pulse)


@pytest.fixture
def bed(lab: Any, tmp_path: Path) -> Testbed:
    return Testbed(lab, tmp_path, keepalive=0.2, deadtime=1.0)


@pytest.mark.lab
def test_start_status_reload_stop(bed: Testbed, tmp_path: Path) -> None:
    cfg = bed.config_path
    run = InitD(bed.a, wrapper(tmp_path), tmp_path / "run", cfg)
    try:
        assert run("status").returncode == 3
        assert run("reload").returncode == 7, "reload of a stopped pulse: LSB 'not running'"
        started = run("start")
        assert started.returncode == 0, started.stdout + started.stderr
        pid = run.pid()
        status = run("status")
        assert status.returncode == 0 and f"pulse (pid {pid}) is running" in status.stdout
        assert wait_until(lambda: "this node: primary" in run("status").stdout, 10), "pulse status is shown"
        assert wait_until(lambda: bed.holds_vip("a"), 15)
        again = run("start")
        assert again.returncode == 0 and "already running" in again.stdout

        reloaded = run("reload")
        assert reloaded.returncode == 0, reloaded.stderr
        assert run.pid() == pid and alive(pid)
        assert run("status").returncode == 0 and bed.holds_vip("a")

        broken = tmp_path / "broken.cf"
        broken.write_text(cfg.read_text().replace("deadtime =", "deadtme =", 1))
        refused = run("reload", CONFIG=broken)
        assert refused.returncode == 6 and re.search(rf"{re.escape(str(broken))}:\d+:\d+", refused.stderr)
        assert run.pid() == pid and run("status").returncode == 0, "a broken file reloads nothing"

        stopped = run("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert not alive(pid) and not run.pidfile.exists()
        assert not bed.holds_vip("a"), "SIGTERM released the VIP"
        assert run("status").returncode == 3
        assert run("stop").returncode == 0, "stopping a stopped pulse is fine"

        run.pidfile.write_text("999999999\n")
        dead = run("status")
        assert dead.returncode == 1 and "dead but pid file exists" in dead.stdout
        assert run("stop").returncode == 0 and not run.pidfile.exists(), "stop removes a stale pid file"

        refused = run("start", CONFIG=broken)
        assert refused.returncode == 6, refused.stdout + refused.stderr
        assert re.search(rf"{re.escape(str(broken))}:\d+:\d+: .*did you mean 'deadtime'", refused.stderr)
        missing = run("start", CONFIG=tmp_path / "missing.cf")
        assert missing.returncode == 6 and "does not exist" in missing.stderr
        assert not run.pidfile.exists()

        usage = run("bogus")
        assert usage.returncode == 2 and "Usage:" in usage.stderr
    finally:
        run.cleanup()


@pytest.mark.lab
def test_restart_with_multiword_pulse(bed: Testbed, tmp_path: Path) -> None:
    """PULSE="python3 -m pyrhfos.cli" (no word 'pulse' anywhere in its command line)."""
    run = InitD(bed.a, f"{sys.executable} -m pyrhfos.cli", tmp_path / "run", bed.config_path, "daemon.pid")
    try:
        idle = run("try-restart")
        assert idle.returncode == 0 and run("status").returncode == 3, "try-restart starts nothing"
        assert run("start").returncode == 0
        first = run.pid()
        assert run("status").returncode == 0, "found by its pyrhfos.cli word, not by its pid file's name"
        restarted = run("restart")
        assert restarted.returncode == 0, restarted.stderr
        second = run.pid()
        assert second != first and not alive(first) and alive(second)
        assert run("condrestart").returncode == 0
        assert run.pid() not in (first, second) and run("status").returncode == 0
        assert run("force-reload").returncode == 0
        assert run("stop").returncode == 0 and run("status").returncode == 3
    finally:
        run.cleanup()


@pytest.mark.lab
def test_start_fails_when_pulse_cannot_run(bed: Testbed, tmp_path: Path) -> None:
    run = InitD(bed.a, wrapper(tmp_path), tmp_path / "run", bed.config_path)
    try:
        # A valid file naming neither of this host's addresses: pulse exits 2 before daemonizing.
        elsewhere = tmp_path / "elsewhere.cf"
        elsewhere.write_text(bed.config_path.read_text().replace(bed.a.ip, "192.0.2.99"))
        refused = run("start", CONFIG=elsewhere)
        assert refused.returncode == 6, refused.stdout + refused.stderr
        assert "cannot run on this host" in refused.stderr

        # Something else holds the heartbeat port: pulse daemonizes, writes its pid file, then dies.
        hold = (
            "import socket, time\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.bind(('0.0.0.0', {bed.cfg.heartbeat_port}))\n"
            "print('bound', flush=True)\n"
            "time.sleep(60)\n"
        )
        holder = bed.a.popen([sys.executable, "-c", hold], stdout=subprocess.PIPE)
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"bound"
        failed = run("start", START_WAIT="5")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert run("status").returncode == 3 and not bed.holds_vip("a")
    finally:
        run.cleanup()


@pytest.fixture
def impostors() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Live processes that are not pulse, one of them named like one (pulseaudio)."""
    sleep = shutil.which("sleep") or "/bin/sleep"
    procs = [
        subprocess.Popen(["sleep", "60"], executable=sleep),
        subprocess.Popen(["/usr/bin/pulseaudio", "60"], executable=sleep),
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(5)


def test_recycled_pid_is_never_signalled(impostors: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    run = InitD(None, "/bin/false", tmp_path / "run", tmp_path / "lvs.cf")
    for proc in impostors:
        run.pidfile.write_text(f"{proc.pid}\n")
        status = run("status")
        assert status.returncode == 1 and "dead but pid file exists" in status.stdout
        assert run("reload").returncode == 7
        assert run("stop").returncode == 0 and not run.pidfile.exists()
        assert proc.poll() is None, f"{proc.args} was signalled"


SCRIPTS = {"pulse": SCRIPT, "piranha-gui": ROOT / "init.d" / "piranha-gui"}
NOBODY = 65534


def init_script(name: str, action: str, pidfile: Path) -> subprocess.CompletedProcess[str]:
    """``sh init.d/NAME ACTION`` on ``pidfile``; the program itself is never run (/bin/false)."""
    env = {
        "PATH": os.environ["PATH"],
        "PIDFILE": str(pidfile),
        "PULSE": "/bin/false",
        "PIRANHA_GUI": "/bin/false",
        "CONFIG": str(pidfile.parent / "missing.cf"),
        "SOCKET": str(pidfile.parent / "ctl.sock"),
        "LOGFILE": str(pidfile.parent / f"{name}.log"),
        "STOP_WAIT": "5",
    }
    return subprocess.run(
        ["sh", str(SCRIPTS[name]), action],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_a_stale_pid_reused_by_another_users_program_of_that_name_is_not_running(
    name: str, tmp_path: Path
) -> None:
    """The pid file's lock decides (issue 13, item 15): a program called pulse (or piranha-gui) that
    another user runs under the pid left in the file holds no lock; it is neither reported nor
    signalled, and start goes ahead."""
    pidfile = tmp_path / f"{name}.pid"
    sleep = shutil.which("sleep") or "/bin/sleep"
    other = subprocess.Popen([name, "60"], executable=sleep, user=NOBODY, group=NOBODY)
    try:
        pidfile.write_text(f"{other.pid}\n")
        status = init_script(name, "status", pidfile)
        assert status.returncode == 1 and "dead but pid file exists" in status.stdout, status.stdout
        stopped = init_script(name, "stop", pidfile)
        assert stopped.returncode == 0 and "is not running" in stopped.stdout and not pidfile.exists()
        assert other.poll() is None, "another user's program was signalled"
        if name == "pulse":
            pidfile.write_text(f"{other.pid}\n")
            started = init_script(name, "start", pidfile)
            assert "already running" not in started.stdout
            assert started.returncode == 6 and "missing.cf does not exist" in started.stderr
    finally:
        other.kill()
        other.wait(5)


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_a_locked_pid_file_is_a_running_daemon_that_stop_ends(name: str, tmp_path: Path) -> None:
    pidfile = tmp_path / f"{name}.pid"
    fd = os.open(pidfile, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    sleep = shutil.which("sleep") or "/bin/sleep"
    holder = subprocess.Popen([name, "60"], executable=sleep, pass_fds=(fd,))  # it keeps the lock
    os.close(fd)
    try:
        pidfile.write_text(f"{holder.pid}\n")
        status = init_script(name, "status", pidfile)
        assert status.returncode == 0 and f"(pid {holder.pid}) is running" in status.stdout, status
        assert init_script(name, "stop", pidfile).returncode == 0
        assert holder.wait(10) == -signal.SIGTERM and not pidfile.exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(5)


@pytest.mark.lab
def test_pulse_holds_its_pid_file_lock_and_a_crash_leaves_no_claim(bed: Testbed, tmp_path: Path) -> None:
    """A running pulse refuses a second one on its pid file; after a SIGKILL, the pid left in the
    file, now another user's program called pulse, blocks neither status nor start."""
    run = InitD(bed.a, wrapper(tmp_path), tmp_path / "run", bed.config_path)
    sleep = shutil.which("sleep") or "/bin/sleep"
    other: subprocess.Popen[bytes] | None = None
    try:
        assert run("start").returncode == 0
        pid = run.pid()
        argv = [sys.executable, "-m", "pyrhfos.cli", "-n", "-c", str(bed.config_path)]
        argv += ["--pidfile", str(run.pidfile), "--socket", ""]
        second = bed.a.run(*argv, check=False, timeout=30)
        assert second.returncode == 1 and f"already running (pid {pid}," in second.stderr, second.stderr
        os.kill(pid, signal.SIGKILL)
        # Its last thread, not its first, drops the lock: the main thread may be a zombie before.
        unlocked = ["flock", "-n", "-s", str(run.pidfile), "true"]
        assert wait_until(lambda: subprocess.run(unlocked, timeout=10).returncode == 0, 10)
        assert run.pidfile.exists(), "SIGKILL leaves the file"
        other = subprocess.Popen(["pulse", "60"], executable=sleep, user=NOBODY, group=NOBODY)
        run.pidfile.write_text(f"{other.pid}\n")
        status = run("status")
        assert status.returncode == 1 and "dead but pid file exists" in status.stdout
        started = run("start")
        assert started.returncode == 0 and "already running" not in started.stdout, started
        assert run.pid() not in (pid, other.pid) and run("status").returncode == 0
        assert run("stop").returncode == 0 and other.poll() is None
    finally:
        if other is not None:
            other.kill()
            other.wait(5)
        run.cleanup()


def test_unknown_action_and_no_action(tmp_path: Path) -> None:
    run = InitD(None, "/bin/false", tmp_path / "run", tmp_path / "lvs.cf")
    for action in ("bogus", ""):
        res = run(action)
        assert res.returncode == 2 and "Usage:" in res.stderr and "try-restart" in res.stderr


def test_lsb_header() -> None:
    text = SCRIPT.read_text()
    assert text.startswith("#!/bin/sh\n") and os.access(SCRIPT, os.X_OK)
    header = text[text.index("### BEGIN INIT INFO") : text.index("### END INIT INFO")]
    fields = dict(re.findall(r"^# ([A-Za-z-]+):\s*(.*)$", header, re.M))
    assert fields["Provides"] == "pulse"
    assert {"$network", "$syslog"} <= set(fields["Required-Start"].split())
    assert fields["Default-Start"].split() == ["2", "3", "4", "5"]
    assert fields["Default-Stop"].split() == ["0", "1", "6"]
    assert subprocess.run(["sh", "-n", str(SCRIPT)]).returncode == 0
    if shutil.which("dash"):
        assert subprocess.run(["dash", "-n", str(SCRIPT)]).returncode == 0, (
            "POSIX sh, no bashisms dash rejects"
        )


def unit_sections() -> dict[str, dict[str, list[str]]]:
    """pulse.service as {section: {key: [values]}} (systemd allows a key more than once)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit_keys() -> None:
    unit, service = unit_sections()["Unit"], unit_sections()["Service"]
    assert "network-online.target" in unit["After"][0].split()
    assert int(unit["StartLimitBurst"][0]) >= 1 and int(unit["StartLimitIntervalSec"][0]) > 0
    assert service["Type"] == ["simple"] and "--nodaemon" in service["ExecStart"][0].split()
    assert "--check" in service["ExecStartPre"][0].split()
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["Restart"] == ["on-failure"] and float(service["RestartSec"][0]) > 0
    assert service["KillMode"][0] in ("mixed", "process") and int(service["TimeoutStopSec"][0]) >= 60
    # configparser reads it too (no stray syntax), once duplicate keys are allowed.
    configparser.ConfigParser(strict=False, interpolation=None).read_string(UNIT.read_text())


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = tmp_path / "pulse.service"
    # Point the unit at a binary that exists here: verify checks every Exec path.
    unit.write_text(UNIT.read_text().replace("/usr/sbin/pulse", "/bin/true"))
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in res.stderr.splitlines() if "pulse.service" in ln]
    assert res.returncode == 0 and not problems, res.stderr


def test_defaults_file_is_sourced_and_environment_wins(tmp_path: Path) -> None:
    """/etc/sysconfig/pulse and /etc/default/pulse (here a copy of the script reading tmp files)."""
    sysconfig, default = tmp_path / "sysconfig-pulse", tmp_path / "default-pulse"
    sysconfig.write_text(f"PIDFILE={tmp_path}/from-file.pid\nCONFIG={tmp_path}/sysconfig.cf\n")
    default.write_text(f"CONFIG={tmp_path}/default.cf\n")  # read second: it wins over sysconfig
    script = tmp_path / "initd-pulse"
    text = SCRIPT.read_text()
    assert "for defaults in /etc/sysconfig/pulse /etc/default/pulse; do" in text
    script.write_text(text.replace("/etc/sysconfig/pulse /etc/default/pulse", f"{sysconfig} {default}", 1))
    env = {
        k: v for k, v in os.environ.items() if k not in ("PULSE", "PIDFILE", "CONFIG", "SOCKET", "PULSE_OPTS")
    }

    def run(action: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(script), action], capture_output=True, text=True, timeout=30, env={**env, **extra}
        )

    res = run("start", PULSE="/bin/false")
    assert res.returncode == 6 and f"{tmp_path}/default.cf does not exist" in res.stderr
    (tmp_path / "from-file.pid").write_text("999999999\n")
    assert run("status").returncode == 1, "PIDFILE from the file"
    assert run("status", PIDFILE=str(tmp_path / "from-env.pid")).returncode == 3, "the environment wins"
    res = run("start", PULSE="/bin/false", CONFIG=str(tmp_path / "env.cf"))
    assert res.returncode == 6 and f"{tmp_path}/env.cf does not exist" in res.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("script", ["init.d/pulse", "init.d/piranha-gui", "tools/host-deps.sh", ".ci/run"])
def test_shellcheck_clean(script: str) -> None:
    path = ROOT / script
    res = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout


def test_gui_start_of_a_program_that_is_not_piranha_gui_stops_it(tmp_path: Path) -> None:
    """A wrong PIRANHA_GUI that stays up: start fails and stops it, so nothing runs untracked."""
    env = {
        "PATH": os.environ["PATH"],
        "PIRANHA_GUI": "sleep",
        "GUI_OPTS": "60",
        "PIDFILE": str(tmp_path / "gui.pid"),
        "LOGFILE": str(tmp_path / "gui.log"),
        "START_WAIT": "1",  # sleep never listens: give up after 1 s
    }
    res = subprocess.run(
        ["sh", str(ROOT / "init.d" / "piranha-gui"), "start"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    found = re.search(r"pid (\d+) is not piranha-gui", res.stderr)
    assert res.returncode == 1 and found, res.stderr
    pid = int(found.group(1))
    try:
        assert not (tmp_path / "gui.pid").exists()

        def gone() -> bool:
            try:
                return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        assert wait_until(gone, 10, 0.1), "the stray process was stopped"
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            p = psutil.Process(pid)
            if p.cmdline() == ["sleep", "60"]:  # the one this test started, nothing else
                p.kill()
