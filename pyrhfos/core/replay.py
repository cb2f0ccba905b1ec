"""Which of the partner's beats are new: the replay guard, one per partner across every path.

Pure state; the time (monotonic seconds) is passed in. Without a key anyone may forge a beat, so there
the guard only orders beats (a slower path's older copy must not undo newer news) and forgets what one
spoofed packet could make it believe within RESET_GAP beats.
"""

from __future__ import annotations

from dataclasses import dataclass

from .vocab import Role
from .wire import Beat

# Rejection reasons, counted by the daemon as dropped-<reason>.
REPLAY = "replay"  # a beat this path already carried, or one from an earlier boot of the partner
STALE = "stale"  # older than a beat heard on another path: a slower path's late copy
WRONG_ROLE = "wrong-role"  # claims our own role: a reflection of our beat
RESET_GAP = 64  # without a key: a beat this far behind the newest restarts the order (a spoofed seq)
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
    """Accepts a beat of the partner when it is news (newer than every beat heard on any path), or, as
    liveness only (``news`` false), when it is the first copy a path carries of a beat sent lately.

    With a key, the partner's boot_id is a boot counter that only grows and its seq only grows within a
    boot, and both are under the MAC: an earlier boot (lower counter) or an earlier part of this boot
    (seq at or below the high-water mark) is a recording, whatever this node's own restarts, since the
    mark is kept across them. A higher counter cannot be a recording (no recording of a later start
    exists), yet it never displaces a boot heard within ``liveness`` seconds (deadtime) that has not
    said LEAVING: two live boots of one partner cannot both be real. A copy another path carries of a
    beat no newer than the mark, while the newest beat is at most ``window`` seconds old, proves that
    path alive and says nothing new (a twin, or a slower path's older beat: its state is not applied).
    No wall clock is read, so a clock step on either node opens no window and locks nobody out (the
    sender's counter takes max(last + 1, wall-clock second) at start; see docs/heartbeat.md).

    Without a key, boot ids are not ordered (any other one starts a new order) and a beat RESET_GAP or
    more behind the mark restarts the order too: one spoofed packet then costs at most that many beats.
    """

    def __init__(
        self,
        partner: Role | None = None,
        *,
        authenticated: bool = True,
        window: float = 1.0,
        liveness: float = 0.0,
        mark: HighWater | None = None,
    ) -> None:
        self.partner = partner
        self.authenticated = authenticated
        self.window = window
        self.liveness = liveness
        self.mark = mark  # None: nothing heard from the partner, ever
        self.reason: str | None = None  # counter name of the last rejection
        self.news = False  # the last accepted beat is news (else it proves its path alive, no more)
        self._boot_id: bytes | None = None  # without a key: the boot id the mark is of
        self._path_seq: dict[str, int] = {}  # the newest seq each path carried, in mark's boot
        self._newest_at = float("-inf")  # when the beat at the mark first arrived
        self._left = False  # the beat at the mark said LEAVING: that boot is over

    def accept(self, beat: Beat, path: str, now: float) -> bool:
        self.news = False
        if self.partner is not None and beat.role != self.partner:
            return self._reject(WRONG_ROLE)
        mark = self.mark
        if self.authenticated:
            boot = boot_counter(beat.boot_id)
            if mark is None or boot > mark.boot:
                if mark is not None and not self._left and now - self._newest_at < self.liveness:
                    return self._reject(NEW_BOOT)
                return self._newest(beat, boot, path, now)
            if boot < mark.boot:
                return self._reject(REPLAY)
        else:
            boot = 0
            if mark is None or beat.boot_id != self._boot_id or beat.seq + RESET_GAP <= mark.seq:
                return self._newest(beat, boot, path, now)
        assert mark is not None
        if beat.seq > mark.seq:
            return self._newest(beat, boot, path, now)
        # No path heard since the mark came back from disk: whatever it is, it was sent before.
        if not self._path_seq or self._path_seq.get(path, -1) >= beat.seq:
            return self._reject(REPLAY)
        if now - self._newest_at > self.window:
            return self._reject(STALE)
        self._path_seq[path] = beat.seq
        return True

    def _newest(self, beat: Beat, boot: int, path: str, now: float) -> bool:
        if self.mark is None or boot != self.mark.boot or beat.boot_id != self._boot_id:
            self._path_seq.clear()
        self.mark = HighWater(boot, beat.seq)
        self._boot_id = beat.boot_id
        self._path_seq[path] = beat.seq
        self._newest_at = now
        self._left = beat.leaving
        self.news = True
        return True

    def _reject(self, reason: str) -> bool:
        self.reason = reason
        return False
