"""Connection sync between the directors (lvs.cf ``syncdaemon = 1``): conntrackd's configuration built
from the config model, and the conntrackd child pulse runs, restarts and drives on takeover and release.

conntrackd (FTFW over UDP) copies the active director's conntrack entries into the backup's external
cache; on takeover the backup commits that cache into its kernel before the table and VIPs go up
(conntrack-tools' primary-backup.sh order), so an established NAT'ed connection keeps its translation.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from ..config.model import Config
from ..core.vocab import Role
from .conntrack import set_sysctl

log = logging.getLogger("pulse")

BINARY = "conntrackd"
BASE_PORT = 3780  # conntrackd's documented sync port; lvs.cf's syncd_id (0-255, IPVS's syncid) is added
MAX_SYNCD_ID = 255
COMMAND_TIMEOUT = 2.0  # each conntrackd -c/-f/-R/-B/-t/-n call (the commit took 2 ms in the lab)
READY_TIMEOUT = 3.0  # from spawn to its UNIX socket answering
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0  # restart delays after a crash: doubling, capped
STABLE_AFTER = 60.0  # a child that ran this long restarts at the first delay again
SUPERVISE_EVERY = 0.2
TCP_LOOSE = "net.netfilter.nf_conntrack_tcp_loose"
_PR_SET_PDEATHSIG = 1
# What may appear in a value of conntrackd.conf: its lexer has no quoting, so a newline, brace, quote,
# '#' or blank in a value would end it or open a block. Anything outside this set is refused.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_./:@+-]+$")


class SyncConfigError(ValueError):
    """lvs.cf asks for connection sync this module cannot write a conntrackd.conf for."""


@dataclass(frozen=True)
class SyncSettings:
    """Everything conntrackd.conf says, typed (built by ``settings``; written by ``render``)."""

    own: IPv4Address  # this director's sync address (private when set, else public)
    peer: IPv4Address  # the other director's
    port: int
    interface: str | None  # syncd_iface
    protocols: tuple[str, ...]  # the virtuals' protocols, upper case: TCP, UDP
    accept: tuple[IPv4Address, ...]  # the real servers and sorry servers of the active virtuals
    lock_file: Path
    socket_path: Path
    log_file: Path


def _safe(value: object) -> str:
    text = str(value)
    if not _SAFE_VALUE.match(text):
        raise SyncConfigError(f"value {text!r} cannot be written into conntrackd.conf")
    return text


def sync_addresses(cfg: Config, role: Role) -> tuple[IPv4Address, IPv4Address]:
    """(own, peer): the private addresses when both directors have one, else the public ones."""

    def pick(r: Role) -> tuple[IPv4Address | None, IPv4Address | None]:
        if r is Role.PRIMARY:
            return cfg.primary, cfg.primary_private
        return cfg.backup, cfg.backup_private

    def real(a: IPv4Address | None) -> IPv4Address | None:
        return None if a is None or a == IPv4Address(0) else a

    (own_pub, own_priv), (peer_pub, peer_priv) = pick(role), pick(role.partner)
    own_priv, peer_priv = real(own_priv), real(peer_priv)
    if own_priv is not None and peer_priv is not None:
        return own_priv, peer_priv
    own, peer = real(own_pub), real(peer_pub)
    if own is None or peer is None:
        raise SyncConfigError("syncdaemon = 1 needs both directors' addresses (primary and backup)")
    return own, peer


def accepted_addresses(cfg: Config) -> tuple[IPv4Address, ...]:
    """The sources a virtual's flow has: conntrackd's address filter looks at a flow's original source
    and its reply source, and the reply of a NAT'ed connection comes from its real server (or the sorry
    server). Accepting only those syncs the virtuals' connections and nothing else the director routes
    or runs (heartbeats, probes, the sync itself). A director's own address is never one of them."""
    own = {
        cfg.primary,
        cfg.primary_private,
        cfg.primary_shared,
        cfg.backup,
        cfg.backup_private,
        cfg.backup_shared,
    }
    found: list[IPv4Address] = []
    for v in cfg.virtuals:
        if not v.active:
            continue
        found += [s.address for s in v.servers if s.active and s.address is not None]
        if v.sorry_server is not None:
            found.append(v.sorry_server)
    return tuple(dict.fromkeys(a for a in found if a != IPv4Address(0) and a not in own))


def settings(cfg: Config, role: Role, run_dir: Path | str) -> SyncSettings:
    """conntrackd's settings for this director: its files in ``run_dir`` (pulse's state directory), so two
    directors on one host (the lab) never share a lock file or control socket."""
    syncd_id = cfg.syncd_id or 0
    if not 0 <= syncd_id <= MAX_SYNCD_ID:
        raise SyncConfigError(
            f"syncd_id = {syncd_id}: must be 0-{MAX_SYNCD_ID} (port {BASE_PORT} + syncd_id)"
        )
    own, peer = sync_addresses(cfg, role)
    protocols = tuple(sorted({v.protocol.upper() for v in cfg.virtuals if v.active})) or ("TCP",)
    run = Path(run_dir)
    return SyncSettings(
        own=own,
        peer=peer,
        port=BASE_PORT + syncd_id,
        interface=cfg.syncd_iface,
        protocols=protocols,
        accept=accepted_addresses(cfg),
        lock_file=run / "conntrackd.lock",
        socket_path=run / "conntrackd.ctl",
        log_file=run / "conntrackd.log",
    )


def render(s: SyncSettings) -> str:
    """conntrackd.conf for ``s``: FTFW over UDP to the peer, a Filter keeping only the virtuals' flows.

    Every value goes through ``_safe``: a value that could end a line or open a block is refused.
    """
    v = _safe
    udp = [
        f"\t\tIPv4_address {v(s.own)}",
        f"\t\tIPv4_Destination_Address {v(s.peer)}",
        f"\t\tPort {v(s.port)}",
    ]
    if s.interface:
        udp.append(f"\t\tInterface {v(s.interface)}")
    udp += ["\t\tSndSocketBuffer 1249280", "\t\tRcvSocketBuffer 1249280", "\t\tChecksum on"]
    lines = [
        "# Written by pulse from lvs.cf (syncdaemon = 1): edits here are overwritten.",
        "Sync {",
        "\tMode FTFW {",
        "\t\tStartupResync on",  # a restarted backup asks the active one for its whole table
        "\t}",
        "\tUDP {",
        *udp,
        "\t}",
        "}",
        "General {",
        "\tHashSize 32768",
        "\tHashLimit 131072",
        f"\tLogFile {v(s.log_file)}",
        "\tSyslog off",
        f"\tLockFile {v(s.lock_file)}",
        "\tUNIX {",
        f"\t\tPath {v(s.socket_path)}",
        "\t}",
        "\tNetlinkBufferSize 2097152",
        "\tNetlinkBufferSizeMaxGrowth 8388608",
        "\tFilter From Userspace {",
        "\t\tProtocol Accept {",
        *(f"\t\t\t{v(p)}" for p in s.protocols),
        "\t\t}",
        "\t\tAddress Accept {",
        *(f"\t\t\tIPv4_address {v(a)}" for a in s.accept),
        "\t\t}",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _die_with_parent() -> None:
    """In the child before exec: conntrackd gets SIGTERM when pulse dies, even by SIGKILL, so a killed
    pulse leaves no conntrackd holding its lock file and port."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


@dataclass
class CommandResult:
    ok: bool
    seconds: float
    error: str | None = None


Runner = Callable[[list[str], float], "subprocess.CompletedProcess[str]"]


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


class ConntrackdProcess:
    """One conntrackd, a child of this pulse (by pid): started with the director, restarted with back-off
    when it dies (logged and shown in status; never a reason to fail over), stopped with pulse.

    ``takeover``/``standby`` run primary-backup.sh's commands for a node becoming primary or backup, each
    bounded in time; a failure is logged and returned in status, never raised into the daemon.
    """

    def __init__(
        self,
        s: SyncSettings,
        conf_path: Path | str,
        *,
        binary: str = BINARY,
        command_timeout: float = COMMAND_TIMEOUT,
        runner: Runner = _run,
        spawn: Callable[..., subprocess.Popen[Any]] = subprocess.Popen,
        sysctl: Callable[[str, int], str] = set_sysctl,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = s
        self.conf_path = Path(conf_path)
        self.binary = binary
        self.command_timeout = command_timeout
        self.runner = runner
        self.spawn = spawn
        self.sysctl = sysctl
        self.now = now
        self.proc: subprocess.Popen[Any] | None = None
        self.started_at: float | None = None
        self.restarts = 0
        self.last_error: str | None = None
        self.last_error_time: float | None = None  # wall clock, for pulse status
        self.commands: dict[str, CommandResult] = {}  # last result of each client command, by flag
        self._task: asyncio.Task[None] | None = None
        self._rest: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._stopping = False

    # -- files ------------------------------------------------------------------

    def write_config(self) -> None:
        """conntrackd.conf (0600) and its directory (0700), written afresh on every start."""
        directory = self.conf_path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.conf_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(render(self.settings))
        os.replace(tmp, self.conf_path)

    def _clear_stale(self) -> None:
        """A conntrackd that died hard leaves its lock file, and a new one refuses to start: the files
        are this instance's own (under pulse's directory), and no child of ours runs now."""
        for path in (self.settings.lock_file, self.settings.socket_path):
            if path.exists():
                log.warning("conntrackd: removing %s left by an earlier run", path)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    # -- the child -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc is not None else None

    def _error(self, message: str) -> None:
        self.last_error = message
        self.last_error_time = time.time()
        log.error("%s", message)

    def _spawn(self) -> bool:
        try:
            self.write_config()
            self._clear_stale()
            out = open(self.conf_path.parent / "conntrackd.out", "ab")  # noqa: SIM115 - the child's
            try:
                self.proc = self.spawn(
                    [self.binary, "-C", str(self.conf_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    close_fds=True,
                    preexec_fn=_die_with_parent,
                )
            finally:
                out.close()
        except (OSError, SyncConfigError) as e:
            self._error(f"conntrackd not started: {e}")
            return False
        self.started_at = self.now()
        log.info(
            "conntrackd started (pid %d): FTFW over UDP %s -> %s port %d",
            self.proc.pid,
            self.settings.own,
            self.settings.peer,
            self.settings.port,
        )
        return True

    def _exit_reason(self) -> str:
        assert self.proc is not None
        code = self.proc.returncode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        try:
            tail = (self.conf_path.parent / "conntrackd.out").read_text(errors="replace").strip()
            last = tail.splitlines()[-1] if tail else ""
        except OSError:
            last = ""
        return how + (f": {last}" if last else "")

    def start(self) -> None:
        """Start conntrackd and watch it (from inside the running loop: the daemon's start-up)."""
        if self._task is not None:
            return
        self._stopping = False
        self.set_tcp_loose()
        self._task = asyncio.get_running_loop().create_task(self._supervise())

    async def _supervise(self) -> None:
        delay = BACKOFF_FIRST
        while not self._stopping:
            if self._spawn():
                await self._wait_ready()
                self.set_tcp_loose()  # nf_conntrack is loaded now (conntrackd's netlink needs it)
                while self.running:
                    await asyncio.sleep(SUPERVISE_EVERY)
                if self._stopping:
                    return
                ran = self.now() - (self.started_at or self.now())
                if ran >= STABLE_AFTER:
                    delay = BACKOFF_FIRST
                self._error(
                    f"conntrackd (pid {self.proc.pid if self.proc else '?'}) died after {ran:.1f}s, "
                    f"{self._exit_reason()}; restarting in {delay:g}s (this director keeps its role; "
                    "connections are not synced meanwhile)"
                )
            self.restarts += 1
            await asyncio.sleep(delay)
            delay = min(BACKOFF_MAX, delay * 2)

    async def _wait_ready(self) -> None:
        deadline = self.now() + READY_TIMEOUT
        while self.running and not self.settings.socket_path.exists() and self.now() < deadline:
            await asyncio.sleep(0.02)

    def close(self) -> None:
        """Stop watching and stop the child (SIGTERM by pid, SIGKILL after 3 s)."""
        self._stopping = True
        for task in (self._task, self._rest):
            if task is not None:
                task.cancel()
        self._task = self._rest = None
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(3.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(2.0)
        log.info("conntrackd stopped (pid %d)", proc.pid)

    # -- sysctl ---------------------------------------------------------------------

    def set_tcp_loose(self) -> bool:
        """nf_conntrack_tcp_loose = 0: with 1 the new director takes a mid-stream packet of a connection
        it has no entry for as a new connection and schedules it afresh. True once it is 0."""
        try:
            previous = self.sysctl(TCP_LOOSE, 0)
        except FileNotFoundError:
            return False  # nf_conntrack not loaded yet: set again when conntrackd runs, and on takeover
        except OSError as e:
            log.error("conntrackd: cannot set %s = 0: %s", TCP_LOOSE, e)
            return False
        if previous != "0":
            log.warning("%s was %s: set to 0 (synced connections must not be picked up mid-stream)",
                        TCP_LOOSE, previous)  # fmt: skip
        return True

    # -- client commands -------------------------------------------------------------

    async def command(self, flag: str) -> CommandResult:
        """``conntrackd -C conf <flag>``, bounded; the result is kept for status and logged on failure."""
        argv = [self.binary, "-C", str(self.conf_path), flag]
        started = self.now()
        try:
            done = await asyncio.to_thread(self.runner, argv, self.command_timeout)
        except subprocess.TimeoutExpired:
            result = CommandResult(False, self.now() - started, f"no answer within {self.command_timeout:g}s")
        except OSError as e:
            result = CommandResult(False, self.now() - started, str(e))
        else:
            error = None
            if done.returncode != 0:
                said = (done.stderr or done.stdout or "").strip().splitlines()
                error = f"exit status {done.returncode}" + (f": {said[-1]}" if said else "")
            result = CommandResult(done.returncode == 0, self.now() - started, error)
        self.commands[flag] = result
        if not result.ok:
            self._error(f"conntrackd {flag} failed: {result.error}")
        return result

    async def takeover(self) -> None:
        """Becoming active, before the table and the VIPs: commit the external cache (the peer's
        connections) into the kernel. Then, as primary-backup.sh does, flush both caches, resync the
        internal cache from the kernel and bulk-send it to the peer: those run after this returns,
        so the VIPs wait only for the commit."""
        self.set_tcp_loose()
        if not self.running:
            self._error("conntrackd is not running: no synced connection to commit on takeover")
            return
        async with self._lock:
            result = await self.command("-c")
        if result.ok:
            log.info("conntrackd: external cache committed in %.1f ms", result.seconds * 1000)
        self._rest = asyncio.get_running_loop().create_task(self._run_all(("-f", "-R", "-B")))

    async def standby(self) -> None:
        """Becoming backup (after the VIPs and the table went): shorten the kernel's timers of the
        connections served here (-t), then ask the peer for its table (-n), as primary-backup.sh does."""
        if not self.running:
            return  # the supervisor restarts it; its StartupResync asks the peer for the table
        await self._run_all(("-t", "-n"))

    async def _run_all(self, flags: Iterable[str]) -> None:
        async with self._lock:
            for flag in flags:
                await self.command(flag)

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The "sync" section of pulse status (docs/status.md)."""
        s = self.settings
        commit = self.commands.get("-c")
        return {
            "daemon": "conntrackd",
            "running": self.running,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_error_time": self.last_error_time,
            "own": str(s.own),
            "peer": str(s.peer),
            "port": s.port,
            "interface": s.interface,
            "config": str(self.conf_path),
            "last_commit_ms": None if commit is None else round(commit.seconds * 1000, 1),
            "commands": {flag: {"ok": r.ok, "error": r.error} for flag, r in sorted(self.commands.items())},
        }


def for_director(cfg: Config, role: Role, state_dir: Path | str) -> ConntrackdProcess:
    """The conntrackd of this director: its files in ``state_dir``/conntrackd."""
    run_dir = Path(state_dir) / "conntrackd"
    return ConntrackdProcess(settings(cfg, role, run_dir), run_dir / "conntrackd.conf")
