"""The state directory of an authenticated node: the boot counter only grows, whatever the wall clock
does, and the partner's mark survives a restart."""

from __future__ import annotations

import os
from pathlib import Path

from pyrhfos.net.state import StateDir

T = 1_700_000_000.0


def test_the_boot_counter_grows_and_is_written_before_use(tmp_path: Path) -> None:
    st = StateDir(str(tmp_path / "pulse"))
    first = st.next_boot(T)
    assert first == int(T)
    assert StateDir(str(tmp_path / "pulse")).next_boot(T) == first + 1, "same second: still above"
    assert (tmp_path / "pulse").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "pulse" / "boot").stat().st_mode & 0o777 == 0o600


def test_a_clock_step_back_neither_lowers_the_counter_nor_opens_a_window(tmp_path: Path) -> None:
    st = StateDir(str(tmp_path))
    a = st.next_boot(T)
    b = st.next_boot(T - 86_400 * 365)  # the clock stepped back a year
    c = st.next_boot(T + 3600)  # and forward again
    d = st.next_boot(T)  # and back once more
    assert a < b < c < d


def test_a_lost_state_directory_counts_on_from_the_wall_clock(tmp_path: Path) -> None:
    st = StateDir(str(tmp_path))
    old = st.next_boot(T)
    os.unlink(tmp_path / "boot")
    assert st.next_boot(T + 60) > old, "a sane clock keeps the counter above the lost one"


def test_test_start_writes_nothing(tmp_path: Path) -> None:
    st = StateDir(str(tmp_path / "none"))
    assert st.next_boot(T, keep=False) == int(T)
    assert not (tmp_path / "none").exists()


def test_the_partners_mark_survives_a_restart(tmp_path: Path) -> None:
    st = StateDir(str(tmp_path))
    assert st.load_mark() is None
    st.save_mark(1_700_000_001, 41)
    st.save_mark(1_700_000_001, 42)
    st.close()
    assert StateDir(str(tmp_path)).load_mark() == (1_700_000_001, 42)


def test_a_torn_mark_file_counts_as_none(tmp_path: Path) -> None:
    (tmp_path / "partner").write_bytes(b"\x00" * 7)
    assert StateDir(str(tmp_path)).load_mark() is None
