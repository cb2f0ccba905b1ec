"""start_cmd/stop_cmd/send_program runner: the administrator's command under /bin/sh with a time limit.

Owns each command's clean environment and process tree: bounded output, timeout, killing the tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass

import psutil

OUTPUT_LIMIT = 64 * 1024  # keep the last 64 KiB of output
EXIT_GRACE = 0.1  # after the shell exits, how long to wait for the end of its output
KILL_GRACE = 0.5  # SIGTERM -> SIGKILL delay when a command times out
SHELL = "/bin/sh"
# A command's whole environment (docs/lvs.cf.md "Commands"): never the daemon's, whose other variables
# (SSH_AUTH_SOCK, SUDO_*, an administrator's exports) belong to whoever started pulse.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSED = ("LANG", "LC_ALL")
PASSED_PREFIX = "PYRHFOS_"  # the lab names its node with PYRHFOS_NODE

# Pipes still held open by processes a command left running (e.g. a service started with `&`).
# They are drained (and discarded) until those processes exit, so the service never blocks on a full
# pipe nor dies of SIGPIPE; each leaves this set when its last writer closes it.
_lingering: set[asyncio.BaseTransport] = set()


@dataclass(frozen=True)
class CommandResult:
    argv_or_cmd: str
    returncode: int | None  # None: timed out (killed) or could not be started
    output: str  # stdout and stderr interleaved, the last OUTPUT_LIMIT bytes
    timed_out: bool
    duration: float  # seconds

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


class _Collector(asyncio.Protocol):
    """Reads the command's output pipe, keeping only the tail."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.buf = bytearray()
        self.truncated = False
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > OUTPUT_LIMIT:
            del self.buf[: len(self.buf) - OUTPUT_LIMIT]
            self.truncated = True

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        _lingering.discard(self.transport)

    def text(self) -> str:
        out = self.buf.decode("utf-8", errors="replace")
        return "[... output truncated ...]\n" + out if self.truncated else out


def command_env(daemon_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """PATH (the daemon's, else DEFAULT_PATH), LANG and LC_ALL when set, PYRHFOS_*; nothing else."""
    source = os.environ if daemon_env is None else daemon_env
    env = {"PATH": source.get("PATH") or DEFAULT_PATH}
    env.update((k, v) for k, v in source.items() if k in PASSED or k.startswith(PASSED_PREFIX))
    return env


def _signal_tree(pgid: int, procs: list[psutil.Process], sig: int) -> None:
    # The group catches everything still in the command's session, even what the snapshot missed;
    # the psutil snapshot catches descendants that moved to a group of their own.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(sig)  # psutil refuses if the pid was reused meanwhile


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
    return alive


async def _kill_tree(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM, then after ``grace`` SIGKILL, the shell's process group and all its descendants; reap."""
    # The shell is our unreaped child, so its pid (= its process group id) cannot be reused yet.
    try:
        procs = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        procs = []
    _signal_tree(proc.pid, procs, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (proc.returncode is None or _alive(procs)):
        if proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), 0.02)
        else:
            await asyncio.sleep(0.02)
    with contextlib.suppress(psutil.Error):  # children forked since the snapshot
        if proc.returncode is None:
            procs += psutil.Process(proc.pid).children(recursive=True)
    _signal_tree(proc.pid, procs, signal.SIGKILL)
    await proc.wait()
    end = time.monotonic() + 2
    while _alive(procs) and time.monotonic() < end:  # bounded: reparented ones are reaped by init
        await asyncio.sleep(0.01)


async def run_command(
    cmd: str, timeout: float | None, env: Mapping[str, str] | None = None, kill_grace: float = KILL_GRACE
) -> CommandResult:
    """Run the administrator's ``cmd`` with ``/bin/sh -c`` exactly as written.

    Own session (so the tree can be killed as a group), stdin /dev/null, stdout+stderr into one pipe.
    Returns when the shell exits (or ``timeout`` seconds pass: then the whole tree is killed and
    ``timed_out`` is True); processes the command started in the background keep running, and their
    hold on the output pipe does not delay the result. ``env`` None = command_env(), never the daemon's.
    Only configuration text may ever reach this function, never anything received from the network.
    """
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    # Our own pipe rather than asyncio's: asyncio's Process.wait() would also wait for every holder
    # of the pipe to close it, i.e. for a backgrounded service to exit.
    rfd, wfd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            SHELL,
            "-c",
            cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=wfd,
            stderr=wfd,
            start_new_session=True,
            env=command_env() if env is None else dict(env),
        )
    except OSError as exc:
        os.close(rfd)
        return CommandResult(cmd, None, f"cannot run {SHELL}: {exc}", False, time.monotonic() - start)
    finally:
        os.close(wfd)  # only the command's processes hold the write end now
    collector = _Collector(loop)
    transport, _ = await loop.connect_read_pipe(lambda: collector, os.fdopen(rfd, "rb", buffering=0))
    timed_out = False
    try:
        try:
            returncode: int | None = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            timed_out, returncode = True, None
            await _kill_tree(proc, kill_grace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(collector.closed), EXIT_GRACE)
    except BaseException:  # cancelled (daemon stopping) or worse: leave nothing behind
        if proc.returncode is None:
            await asyncio.shield(_kill_tree(proc, 0))
        transport.close()
        raise
    if not collector.closed.done():
        _lingering.add(transport)  # a background process still holds the pipe: keep draining it
    output = collector.text()
    if timed_out:
        output += f"\n[killed after {timeout} s timeout]"
    return CommandResult(cmd, returncode, output, timed_out, time.monotonic() - start)
