"""The heartbeat state an authenticated node keeps across its restarts, in its state directory
(default /var/lib/pulse, mode 0700): its own boot counter and the partner's high-water mark.

Both guard against replayed beats (core/replay.py); an unauthenticated pair keeps no state.
"""

from __future__ import annotations

import os
import struct
import time

DEFAULT_DIR = "/var/lib/pulse"
SYNC_EVERY = 1.0  # seconds between fdatasyncs of the partner's mark
_RECORD = struct.Struct("!QQ")  # boot counter, seq
_U64 = (1 << 64) - 1


class StateDir:
    """``boot``: this node's last boot counter; ``partner``: the newest (boot, seq) heard from it."""

    def __init__(self, path: str = DEFAULT_DIR) -> None:
        self.path = path
        self._mark_fd: int | None = None
        self._synced = float("-inf")

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _read(self, name: str, size: int) -> bytes | None:
        try:
            with open(self._file(name), "rb") as fh:
                data = fh.read(size + 1)
        except FileNotFoundError:
            return None
        return data if len(data) == size else None  # a torn or foreign file counts as absent

    def next_boot(self, wall: float, *, keep: bool = True) -> int:
        """The counter for this start: above every earlier one, and at least the wall-clock second, so a
        lost state directory on a node with a sane clock still counts up. Written (fsync) before use
        unless ``keep`` is false (``--test-start``, which writes nothing)."""
        raw = self._read("boot", 8)
        last = int.from_bytes(raw, "big") if raw is not None else 0
        boot = min(_U64, max(last + 1, int(wall)))
        if keep:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            tmp = self._file("boot.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, boot.to_bytes(8, "big"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._file("boot"))
        return boot

    def load_mark(self) -> tuple[int, int] | None:
        raw = self._read("partner", _RECORD.size)
        if raw is None:
            return None
        boot, seq = _RECORD.unpack(raw)
        return boot, seq

    def save_mark(self, boot: int, seq: int) -> None:
        """Called on every new beat: one 16-byte write in place, synced to disk at most once a second
        (a crash of pulse keeps every write; a power loss of this node loses at most the last second)."""
        if self._mark_fd is None:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
            self._mark_fd = os.open(self._file("partner"), flags, 0o600)
        os.pwrite(self._mark_fd, _RECORD.pack(boot, seq), 0)
        now = time.monotonic()
        if now - self._synced >= SYNC_EVERY:
            os.fdatasync(self._mark_fd)
            self._synced = now

    def close(self) -> None:
        if self._mark_fd is not None:
            os.close(self._mark_fd)
            self._mark_fd = None
