"""run_command: exit codes, output, timeouts that kill the whole tree, and daemon-style commands."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import psutil
import pytest

from pyrhfos.net import commands
from pyrhfos.net.commands import CommandResult, run_command
from pyrhfos.net.probe import probe_program


def run(cmd: str, timeout: float | None = 5, **kw) -> CommandResult:
    return asyncio.run(run_command(cmd, timeout, **kw))


def gone(pids: list[int], within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return True
        time.sleep(0.02)
    return False


def test_success_and_output():
    r = run("echo hello; echo oops >&2")
    assert r.ok and r.returncode == 0 and not r.timed_out
    assert r.output == "hello\noops\n"
    assert r.argv_or_cmd == "echo hello; echo oops >&2"
    assert r.duration < 2


def test_failing_exit_code():
    r = run("echo bad; exit 3")
    assert not r.ok and r.returncode == 3 and r.output == "bad\n" and not r.timed_out


def test_shell_syntax_is_the_administrators():
    # exactly as written in lvs.cf, through /bin/sh: pipes, variables, quoting
    r = run("X='a b'; printf '%s\\n' \"$X\" | tr a-z A-Z", env={"PATH": os.environ["PATH"]})
    assert r.output == "A B\n"
    assert run("echo $FOO", env={"FOO": "bar"}).output == "bar\n"


def printed_env(output: str) -> dict[str, str]:
    env = dict(item.split("=", 1) for item in output.split("\0") if item)
    env.pop("PWD", None)  # the shell's own
    return env


def test_commands_get_a_clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """start_cmd, stop_cmd and send_program see PATH, LANG, LC_ALL and PYRHFOS_* only (issue 13 item 16)."""
    for name in list(os.environ):
        monkeypatch.delenv(name)
    daemon = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "de_DE.UTF-8",
        "LC_ALL": "C",
        "PYRHFOS_NODE": "a",
        "SSH_AUTH_SOCK": "/tmp/ssh-XXXX/agent.1",
        "SUDO_USER": "admin",
        "HOME": "/home/admin",
        "PYTHONPATH": "/home/admin/lib",
        "LD_PRELOAD": "/home/admin/hook.so",
    }
    for name, value in daemon.items():
        monkeypatch.setenv(name, value)
    r = run("env -0")  # NUL-separated: a value may hold a newline
    assert r.ok, r.output
    assert printed_env(r.output) == {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "de_DE.UTF-8",
        "LC_ALL": "C",
        "PYRHFOS_NODE": "a",
    }
    # send_program goes through the same runner
    probe = asyncio.run(probe_program("env", "192.0.2.1", "SSH_AUTH_SOCK|HOME=|SUDO", True, 5.0))
    assert not probe.ok and "did not match" in probe.reason
    assert asyncio.run(probe_program("env", "192.0.2.1", "PYRHFOS_NODE=a", False, 5.0)).ok


def test_command_env_without_path_gets_the_default() -> None:
    assert commands.command_env({"HOME": "/root", "LANG": "C.UTF-8"}) == {
        "PATH": commands.DEFAULT_PATH,
        "LANG": "C.UTF-8",
    }


def test_stdin_is_devnull_and_own_session():
    r = run("cat; ps -o sid= -p $$ 2>/dev/null || cat /proc/$$/stat")
    assert r.ok
    assert str(os.getsid(0)) not in r.output.split()  # a session of its own


def test_output_is_bounded():
    r = run(f"{sys.executable} -c \"import sys; sys.stdout.write('x' * 300000 + 'END')\"")
    assert r.ok and r.output.endswith("END") and r.output.startswith("[... output truncated ...]")
    assert len(r.output) <= commands.OUTPUT_LIMIT + 100


def test_missing_command():
    r = run("/nonexistent/start-service")
    assert r.returncode == 127 and not r.ok and "nonexistent" in r.output


def test_timeout_kills_the_whole_tree():
    r = run("echo started; echo $$ > /dev/stderr; sleep 100 & echo $! ; sleep 100", timeout=0.5)
    assert r.timed_out and not r.ok and r.returncode is None
    assert "started" in r.output and "timeout" in r.output
    assert 0.5 <= r.duration < 3
    pids = [int(w) for w in r.output.split() if w.isdigit()]
    assert len(pids) == 2  # the shell and its background sleep
    assert gone(pids)


def test_timeout_kills_grandchild_in_its_own_group():
    # a grandchild that left the process group is still found through the process tree
    script = "sh -c 'setsid sleep 100 & echo $!; sleep 100' & sleep 100"
    r = run(script, timeout=0.5)
    assert r.timed_out
    pids = [int(w) for w in r.output.split() if w.isdigit()]
    assert pids and gone(pids)


def test_sigterm_ignoring_command_is_killed():
    r = run("trap '' TERM; echo $$; sleep 100", timeout=0.3, kill_grace=0.2)
    assert r.timed_out and r.duration < 2
    assert gone([int(w) for w in r.output.split() if w.isdigit()])


def test_daemon_style_command_returns_promptly(tmp_path):
    """An init script that backgrounds a service which keeps the inherited stdout open."""
    pidfile = tmp_path / "server.pid"
    server = (
        f"{sys.executable} -c \"import time, sys\nwhile True: print('tick', flush=True); time.sleep(0.05)\""
    )
    cmd = f"echo starting; nohup {server} & echo $! > {pidfile}; echo started"

    async def scenario() -> tuple[CommandResult, int]:
        r = await run_command(cmd, timeout=10)
        pid = int(pidfile.read_text())
        await asyncio.sleep(0.3)  # the service keeps writing into the (drained) pipe: it must live on
        assert psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        assert len(commands._lingering) == 1
        os.kill(pid, signal.SIGTERM)  # we started it: stop it by pid
        for _ in range(100):
            if not commands._lingering:
                break
            await asyncio.sleep(0.02)
        assert not commands._lingering  # its pipe closed when it exited
        return r, pid

    r, pid = asyncio.run(scenario())
    assert r.ok and r.duration < 1.0
    assert r.output.startswith("starting\n") and "started\n" in r.output
    assert gone([pid])


def test_cancel_kills_the_tree():
    async def scenario() -> list[int]:
        task = asyncio.create_task(run_command("echo $$; sleep 100", timeout=30))
        await asyncio.sleep(0.3)
        me = psutil.Process()
        shells = [c for c in me.children(recursive=True) if c.name() == "sh"]
        pids = [p.pid for s in shells for p in [s, *s.children(recursive=True)]]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pids

    pids = asyncio.run(scenario())
    assert pids and gone(pids)


def test_lingering_pipe_is_dropped_when_its_holder_exits():
    """A background process keeps the output pipe: drained while it lives, dropped when it exits."""

    async def scenario() -> tuple[int, int]:
        r = await run_command("sleep 0.5 &", timeout=5)
        assert r.ok
        held = len(commands._lingering)
        for _ in range(150):  # the sleep exits after 0.5 s; its pipe closes with it
            if not commands._lingering:
                break
            await asyncio.sleep(0.02)
        return held, len(commands._lingering)

    assert asyncio.run(scenario()) == (1, 0)
    assert not commands._lingering
