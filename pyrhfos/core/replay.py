"""Which of the partner's beats are new: the replay guard, one per partner across every path.

Pure state; the time (monotonic seconds) is passed in. Only authenticated beats are guarded: without a
key anyone may forge a beat, so keeping state would only let one spoofed packet silence the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from .vocab import Role
from .wire import Beat

# Rejection reasons, counted by the daemon as dropped-<reason>.
REPLAY = "replay"  # a beat this path already carried, or one from an earlier boot of the partner
STALE = "stale"  # older than a beat heard on another path: a slower path's late copy
WRONG_ROLE = "wrong-role"  # claims our own role: a reflection of our beat
NEW_BOOT = "new-boot"  # a later start while the current one still beats: heard once the current one ends


@dataclass(frozen=True)
class HighWater:
    """The newest authenticated beat heard from the partner: its boot counter and seq. The daemon keeps
    it across its own restarts (net/state.py), so a recording made before them stays worthless."""

    boot: int
    seq: int


def boot_counter(boot_id: bytes) -> int:
    """An authenticated sender's boot_id field: a counter that grows with every start (big-endian)."""
    return int.from_bytes(boot_id, "big")


class ReplayGuard:
    """Accepts a beat of the partner only when it is newer than every beat heard from it on any path.

    With a key, the partner's boot_id is a boot counter that only grows and its seq only grows within a
    boot, and both are under the MAC: an earlier boot (lower counter) or an earlier part of this boot
    (seq at or below the high-water mark) is a recording, whatever this node's own restarts, since the
    mark is kept across them. A higher counter cannot be a recording (no recording of a later start
    exists), yet it never displaces a boot heard within ``liveness`` seconds (deadtime) that has not
    said LEAVING: two live boots of one partner cannot both be real. The one copy of the newest beat
    that each other path carries within ``twin_window`` seconds is a twin: it proves that path alive
    and says nothing new.
    No wall clock is read, so a clock step on either node opens no window and locks nobody out (the
    sender's counter takes max(last + 1, wall-clock second) at start; see docs/heartbeat.md).
    """

    def __init__(
        self,
        partner: Role | None = None,
        *,
        authenticated: bool = True,
        twin_window: float = 1.0,
        liveness: float = 0.0,
        mark: HighWater | None = None,
    ) -> None:
        self.partner = partner
        self.authenticated = authenticated
        self.twin_window = twin_window
        self.liveness = liveness
        self.mark = mark  # None: nothing heard from the partner, ever
        self.reason: str | None = None  # counter name of the last rejection
        self.twin = False  # the last accepted beat was a twin (nothing new in it)
        self._path_seq: dict[str, int] = {}  # the newest seq each path carried, in mark's boot
        self._newest_at = float("-inf")  # when the beat at the mark first arrived
        self._left = False  # the beat at the mark said LEAVING: that boot is over

    def accept(self, beat: Beat, path: str, now: float) -> bool:
        self.twin = False
        if self.partner is not None and beat.role != self.partner:
            return self._reject(WRONG_ROLE)
        if not self.authenticated:
            return True
        boot = boot_counter(beat.boot_id)
        mark = self.mark
        if mark is None or boot > mark.boot:
            if mark is not None and not self._left and now - self._newest_at < self.liveness:
                return self._reject(NEW_BOOT)
            self._path_seq.clear()
            return self._newest(beat, boot, path, now)
        if boot < mark.boot:
            return self._reject(REPLAY)
        if beat.seq > mark.seq:
            return self._newest(beat, boot, path, now)
        # No path heard since the mark came back from disk: whatever it is, it was sent before.
        if not self._path_seq or self._path_seq.get(path, -1) >= beat.seq:
            return self._reject(REPLAY)
        if beat.seq == mark.seq and now - self._newest_at <= self.twin_window:
            self._path_seq[path] = beat.seq
            self.twin = True
            return True
        return self._reject(STALE)

    def _newest(self, beat: Beat, boot: int, path: str, now: float) -> bool:
        self.mark = HighWater(boot, beat.seq)
        self._path_seq[path] = beat.seq
        self._newest_at = now
        self._left = beat.leaving
        return True

    def _reject(self, reason: str) -> bool:
        self.reason = reason
        return False
