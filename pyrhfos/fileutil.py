"""Writing files so that a reader (or a crash) never sees half of one, and the lock that writers of
lvs.cf (piranha-gui's save, ``pulse sync`` on the partner) take around replacing it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# The previous lvs.cf is kept as FILE.<stamp> (GUI saves, pulse sync on the partner).
BACKUP_STAMP = "%Y%m%d-%H%M%S"


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file of ``path``: ``<path>.lock``, the name as given (a symlink's own name)."""
    return Path(f"{os.fspath(path)}.lock")


@contextlib.contextmanager
def locked(path: str | os.PathLike[str], timeout: float | None = 30.0) -> Iterator[None]:
    """Hold an exclusive flock(2) on ``<path>.lock`` (created 0600 if absent) for the ``with`` body.

    The protocol shared with ``pulse sync``'s receiving side, which runs util-linux
    ``flock <path>.lock ...`` around its rename: whoever holds it may check and replace ``path``.
    TimeoutError after ``timeout`` seconds (None: wait for ever), so a stuck holder cannot hang a caller.
    """
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"{lock_path(path)} is held by another process") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the only descriptor of this open file releases the lock


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
    before_rename: Callable[[Path], None] | None = None,
) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory, fsync, rename.

    The temporary file is created with ``mode`` from the start (O_EXCL, never world-readable for a
    moment), so a reader sees the old file or the new one, whole, and never a partial write.
    ``before_rename(tmp)`` runs on the complete temporary file last; if it raises, nothing is renamed.
    """
    target = Path(path)
    parent = target.parent
    for d in reversed([parent, *parent.parents]):
        if not d.exists():
            d.mkdir(mode=0o700)
    tmp = parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have taken bits away
            if owner is not None:
                os.fchown(fd, *owner)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if before_rename is not None:
            before_rename(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dirfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)  # the rename itself survives a crash
    finally:
        os.close(dirfd)
