"""Start-up checks before pulse daemonizes: this host's place in the pair, its interfaces, the beat key,
and the pid file, whose lock a running pulse holds.

Each failure is a StartupError that names the lvs.cf line to blame, if any.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from ..config.model import Config, Position
from ..core.vocab import Role
from ..net.host import interface_exists, local_ipv4_addresses


class StartupError(Exception):
    """The daemon cannot start with this configuration on this host."""

    def __init__(self, message: str, pos: Position | None = None) -> None:
        super().__init__(message)
        self.pos = pos

    def render(self, path: str) -> str:
        """``FILE:LINE:COL: message`` when a line is to blame, else ``FILE: message``."""
        where = f"{path}:{self.pos.line}:{self.pos.col}" if self.pos else path
        return f"{where}: {self}"


@dataclass(frozen=True)
class Membership:
    """This node's place in the pair, found by matching its own addresses."""

    role: Role
    partner_paths: tuple[IPv4Address, ...]  # public first, then private


def find_membership(cfg: Config, local: Iterable[IPv4Address]) -> Membership:
    """Match the host's addresses against primary/backup (public and private)."""
    local = list(local)
    role = cfg.role_of(local)
    if role is None:
        wanted = ", ".join(str(a) for r in Role for a in cfg.node_addresses(r))
        have = ", ".join(str(a) for a in sorted(set(local))) or "none"
        raise StartupError(
            f"this host is neither primary nor backup: lvs.cf names {wanted}; this host has {have}"
        )
    return Membership(role, cfg.node_addresses(role.partner))


def check_interfaces(cfg: Config) -> None:
    """Every VIP's interface must exist: say so before daemonizing, not in a log."""
    for f in cfg.active_failovers:
        assert f.address is not None
        if not interface_exists(f.address.interface):
            raise StartupError(
                f"failover {f.name}: interface {f.address.interface} (for {f.address}) does not exist",
                f.positions.get("address"),
            )


def check_host(cfg: Config) -> Membership:
    """This host can run ``cfg``: it is one of its nodes and has every VIP's interface."""
    membership = find_membership(cfg, local_ipv4_addresses())
    check_interfaces(cfg)
    return membership


MIN_KEY_BYTES = 16  # 128 bits: shorter secrets are guessable offline from one captured beat


def read_heartbeat_key(cfg: Config) -> bytes | None:
    """The shared beat key named by ``heartbeat_key``: a regular file, not a symbolic link, owned by the
    user pulse runs as (root) and readable by it alone (0600), holding at least MIN_KEY_BYTES bytes.

    The checks run on the open descriptor (fstat), so the file cannot be swapped between check and read.
    """
    if cfg.heartbeat_key is None:
        return None
    pos = cfg.positions.get("heartbeat_key")
    path = cfg.heartbeat_key
    try:
        # O_NONBLOCK: a FIFO put there must not hang the start; it fails the regular-file check below.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            why = "is a symbolic link: name the key file itself"
            raise StartupError(f"heartbeat_key {path} {why}", pos) from None
        raise StartupError(f"heartbeat_key {path}: {e.strerror}", pos) from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise StartupError(f"heartbeat_key {path} is not a regular file", pos)
        if st.st_uid != os.geteuid():
            raise StartupError(
                f"heartbeat_key {path} is owned by uid {st.st_uid}: it must belong to root "
                f"(chown root {path})",
                pos,
            )
        if st.st_mode & 0o077:
            raise StartupError(
                f"heartbeat_key {path} is mode {st.st_mode & 0o777:04o}: it must be 0600 "
                f"(chmod 600 {path})",
                pos,
            )
        key = fh.read().strip()
    if not key:
        raise StartupError(f"heartbeat_key {path} is empty", pos)
    if len(key) < MIN_KEY_BYTES:
        raise StartupError(
            f"heartbeat_key {path} holds {len(key)} bytes: use at least {MIN_KEY_BYTES} "
            f"(head -c 32 /dev/urandom | base64 > {path})",
            pos,
        )
    return key


class AlreadyRunning(Exception):
    """Another pulse holds the pid file's lock; ``pid`` is what the file says (None while it starts)."""

    def __init__(self, path: str, pid: int | None) -> None:
        super().__init__(f"pulse is already running (pid {pid if pid else 'not yet written'}, {path})")
        self.pid = pid


class PidFile:
    """The pid file, flock()ed by the running pulse for its whole life.

    The lock is the proof, not the pid in the file: a pulse killed with SIGKILL leaves its file
    behind, and the pid in it may since belong to anything, even another user's program named pulse,
    but the kernel drops the lock with the last descriptor. ``flock -n FILE`` (util-linux) tests the
    same lock from the init scripts. The descriptor is close-on-exec: no child may keep the lock.
    """

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    def write(self, pid: int) -> None:
        """Record ``pid``, written over the (empty) file in place: the lock stays on this inode."""
        data = f"{pid}\n".encode()
        os.pwrite(self.fd, data, 0)
        os.ftruncate(self.fd, len(data))

    def release(self) -> None:
        """Remove the file, if it is still ours, then drop the lock."""
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            if _same_file(self.fd, self.path):
                os.unlink(self.path)
        os.close(self.fd)
        self.fd = -1


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def lock_pidfile(path: str, wait: float = 0.5) -> PidFile:
    """Take ``path``'s lock for this process (and the children it forks to daemonize).

    Raises AlreadyRunning when another process holds it for longer than ``wait`` seconds (an init
    script's ``flock -n`` test holds it for a moment only), OSError when the file cannot be opened.
    A stale pid in the file is erased at once. O_NOFOLLOW: a symlink planted at the path is refused.
    """
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            if time.monotonic() >= deadline:
                raise AlreadyRunning(path, pid) from None
            time.sleep(0.05)
            continue
        except BaseException:
            os.close(fd)
            raise
        # A pulse that was exiting may have unlinked the file between our open and our lock: a lock
        # on that orphan inode proves nothing, so open the path again.
        if not _same_file(fd, path):
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.fchmod(fd, 0o644)  # readable by the init script and pulse status, whatever the umask was
        return PidFile(path, fd)
