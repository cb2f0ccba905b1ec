"""Writing files so that a reader (or a crash) never sees half of one."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

# The previous lvs.cf is kept as FILE.<stamp> (GUI saves, pulse sync on the partner).
BACKUP_STAMP = "%Y%m%d-%H%M%S"


def atomic_write(
    path: str | os.PathLike[str], data: bytes, mode: int = 0o600, owner: tuple[int, int] | None = None
) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory, fsync, rename.

    The temporary file is created with ``mode`` from the start (O_EXCL, never world-readable for a
    moment), so a reader sees the old file or the new one, whole, and never a partial write.
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
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dirfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)  # the rename itself survives a crash
    finally:
        os.close(dirfd)
