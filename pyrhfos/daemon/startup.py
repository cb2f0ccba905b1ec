"""Start-up checks before pulse daemonizes: this host's place in the pair, its interfaces, the beat key,
and the pid file of a pulse already running.

Each failure is a StartupError that names the lvs.cf line to blame, if any.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

import psutil

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


def pidfile_owner(path: str) -> int | None:
    """The pid of a running pulse that owns ``path``, or None when stale or absent."""
    try:
        with open(path) as fh:
            pid = int(fh.read().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        proc = psutil.Process(pid)
        argv = proc.cmdline()[:4]
    except psutil.Error:
        return None
    # Whole words only: a recycled pid now owned by pulseaudio is not a running pulse.
    ours = any(os.path.basename(a) == "pulse" or a == "pyrhfos.cli" for a in argv)
    return pid if ours else None
