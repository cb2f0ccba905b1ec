"""The replay guard, pure, with the time passed in: authenticated beats count only when newer than every
beat heard on any path, across both nodes' restarts; unauthenticated ones are never remembered."""

from __future__ import annotations

from pyrhfos.core.replay import REPLAY, STALE, WRONG_ROLE, HighWater, ReplayGuard
from pyrhfos.core.vocab import Role, State
from pyrhfos.core.wire import Beat, Flag

PUBLIC, PRIVATE = "192.0.2.1", "198.51.100.1"


def boot(n: int) -> bytes:
    return n.to_bytes(8, "big")


def beat(seq: int, boot_no: int = 1_700_000_000, role: Role = Role.PRIMARY) -> Beat:
    return Beat(role, State.ACTIVE, seq, boot(boot_no), 0, bytes(8))


def guard(**kw: object) -> ReplayGuard:
    return ReplayGuard(Role.PRIMARY, window=0.5, **kw)  # type: ignore[arg-type]


def test_beats_in_order_are_new() -> None:
    g = guard()
    assert all(g.accept(beat(s), PUBLIC, 0.1 * s) for s in (1, 2, 3, 10))
    assert g.reason is None and g.mark == HighWater(1_700_000_000, 10)


def test_the_first_beat_may_carry_any_seq() -> None:
    assert guard().accept(beat(2**64 - 1), PUBLIC, 0.0)
    assert guard().accept(beat(0), PUBLIC, 0.0)


def test_a_duplicate_or_older_beat_on_the_same_path_is_a_replay() -> None:
    g = guard()
    assert g.accept(beat(5), PUBLIC, 0.0)
    assert not g.accept(beat(5), PUBLIC, 0.1) and g.reason == REPLAY
    assert not g.accept(beat(4), PUBLIC, 0.1) and g.reason == REPLAY
    assert g.accept(beat(6), PUBLIC, 0.2), "a rejection does not move the mark"


def test_a_later_start_of_the_partner_is_taken_at_once_and_earlier_ones_never() -> None:
    g = guard()
    assert g.accept(beat(1000, boot_no=10), PUBLIC, 0.0)
    assert g.accept(beat(1, boot_no=11), PUBLIC, 0.1), "a higher counter: a restart, seq starts again"
    assert not g.accept(beat(5000, boot_no=10), PUBLIC, 0.2) and g.reason == REPLAY, "that boot is over"
    assert g.accept(beat(2, boot_no=11), PUBLIC, 0.3)


def test_any_number_of_restarts_leaves_every_earlier_boot_worthless() -> None:
    g = guard()
    for n in range(1, 1001):
        assert g.accept(beat(1, boot_no=n), PUBLIC, float(n))
    assert not any(g.accept(beat(99, boot_no=n), PUBLIC, 2000.0) for n in range(1, 1000))


def test_the_mark_kept_across_our_restart_rejects_every_recording() -> None:
    """This node restarted: the partner's mark came back from the state directory."""
    g = guard(mark=HighWater(1_700_000_000, 500))
    assert not g.accept(beat(499), PUBLIC, 0.0) and g.reason == REPLAY, "an earlier part of this boot"
    assert not g.accept(beat(500), PRIVATE, 0.0), "the last beat heard before our restart"
    assert not g.accept(beat(10**6, boot_no=1_600_000_000), PUBLIC, 0.0), "an earlier boot, any seq"
    assert g.accept(beat(501), PUBLIC, 0.1), "the live partner's next beat"


def test_one_guard_for_both_paths_a_twin_proves_its_path_and_says_nothing_new() -> None:
    g = guard()
    assert g.accept(beat(7), PUBLIC, 1.0) and g.news
    assert g.accept(beat(7), PRIVATE, 1.05) and not g.news, "the same beat on the private path"
    assert not g.accept(beat(7), PRIVATE, 1.1) and g.reason == REPLAY, "a second copy on that path"
    assert g.accept(beat(8), PRIVATE, 1.2) and g.news


def test_a_recorded_public_beat_replayed_from_the_private_address_is_refused() -> None:
    """Today's per-path guards let such replays keep a dead partner alive: failover suppressed."""
    g = guard()
    for s in range(1, 6):
        assert g.accept(beat(s), PUBLIC, float(s))
        assert g.accept(beat(s), PRIVATE, s + 0.01)
    # The partner dies after beat 5; the recording of its public beats is replayed from the private path.
    assert not any(g.accept(beat(s), PRIVATE, 10.0) for s in range(1, 6))
    late = guard()
    assert late.accept(beat(5), PUBLIC, 5.0)
    assert not late.accept(beat(5), PRIVATE, 5.0 + 3.0) and late.reason == STALE, "a twin past its window"


def test_an_older_beat_from_a_slower_path_proves_the_path_but_is_not_news() -> None:
    """Issue 14, item 3: applied, a slower path's older ACTIVE beat undid the newer LEAVING."""
    g = guard()
    assert g.accept(beat(10), PRIVATE, 1.0) and g.news
    assert g.accept(beat(9), PUBLIC, 1.06) and not g.news, "liveness of the public path only"
    assert not g.accept(beat(8), PUBLIC, 1.07) and g.reason == REPLAY, "older than what this path carried"
    assert not g.accept(beat(9), PRIVATE, 1.8) and g.reason == REPLAY
    late = guard()
    assert late.accept(beat(10), PRIVATE, 1.0)
    assert not late.accept(beat(9), PUBLIC, 1.6) and late.reason == STALE, "the newest is too old: no proof"


def test_a_beat_claiming_our_role_is_refused() -> None:
    g = guard()
    assert not g.accept(beat(1, role=Role.BACKUP), PUBLIC, 0.0) and g.reason == WRONG_ROLE
    assert g.mark is None, "a reflection of our own beat leaves no trace"


def test_without_a_key_one_spoofed_beat_has_no_lasting_effect() -> None:
    g = ReplayGuard(Role.PRIMARY, authenticated=False)
    assert g.accept(beat(2**64 - 1, boot_no=2**63), PUBLIC, 0.0), "a spoofed beat: huge seq, new boot"
    assert g.accept(beat(3), PUBLIC, 0.1) and g.news, "the next real beat is news"
    assert g.accept(beat(2**64 - 1), PUBLIC, 0.2), "a spoofed beat with the real boot id and a huge seq"
    assert g.accept(beat(4), PUBLIC, 0.3) and g.news, "far behind: the order restarts at the real beat"


def test_without_a_key_beats_are_still_ordered_across_paths() -> None:
    """Issue 14, item 3 holds for unauthenticated pairs too: the older copy is liveness only."""
    g = ReplayGuard(Role.PRIMARY, authenticated=False, window=0.5)
    assert g.accept(beat(10), PRIVATE, 1.0) and g.news
    assert g.accept(beat(9), PUBLIC, 1.06) and not g.news


def test_the_guard_reads_no_clock_so_time_jumps_change_nothing() -> None:
    """Time is the caller's monotonic clock; a huge jump (a suspended VM) changes no verdict."""
    g = guard()
    assert g.accept(beat(1), PUBLIC, 5.0)
    assert g.accept(beat(2), PUBLIC, 5.0 + 86_400.0), "a day later the next beat is still new"
    assert g.accept(beat(1), PRIVATE, 5.0 + 86_400.0) and not g.news, "and an old one is no news"


def test_a_later_start_never_displaces_a_boot_heard_within_deadtime() -> None:
    g = guard(liveness=3.0)
    assert g.accept(beat(10, boot_no=100), PUBLIC, 0.0)
    assert not g.accept(beat(1, boot_no=101), PUBLIC, 1.0) and g.reason == "new-boot"
    assert g.accept(beat(11, boot_no=100), PUBLIC, 1.1), "the live boot goes on"
    assert g.accept(beat(1, boot_no=101), PUBLIC, 1.1 + 3.01), "silent for deadtime: the new start counts"


def test_a_later_start_counts_at_once_after_the_leaving_beat() -> None:
    g = guard(liveness=3.0)
    assert g.accept(Beat(Role.PRIMARY, State.STOPPED, 10, boot(100), 0, bytes(8), Flag.LEAVING), PUBLIC, 0.0)
    assert g.accept(beat(1, boot_no=101), PUBLIC, 0.5)
