"""Piranha's LVS-mode magics (HEARTBEAT_RUNNING 0xbdaddbda / HEARTBEAT_STOPPED 0xadbddabd): an LVS
director follows and answers them, a FOS node the FOS ones; the other mode's magics mean nothing."""

from __future__ import annotations

import pytest

from pyrhfos.core.vocab import Role, State
from pyrhfos.core.wire import (
    Beat,
    Flag,
    PiranhaBeat,
    PiranhaMagic,
    decode,
    encode_piranha,
    piranha_magic_for,
    piranha_meaning,
)

P = PiranhaMagic
FOS = {P.FOS_HEARTBEAT_RUNNING, P.FOS_HEARTBEAT_STOPPED, P.FOS_HEARTBEAT_STOPME}
LVS = {P.HEARTBEAT_RUNNING, P.HEARTBEAT_STOPPED}


NO_FLAGS = Flag(0)


def beat(state: State, flags: Flag = NO_FLAGS) -> Beat:
    return Beat(Role.PRIMARY, state, 1, bytes(8), 0, bytes(8), flags)


def test_lvs_magics_on_the_wire() -> None:
    # pulse.c's values, as x86 Piranha sends them (a C int as it lies in memory: little-endian).
    assert encode_piranha(P.HEARTBEAT_RUNNING) == bytes.fromhex("dadbadbd")
    assert encode_piranha(P.HEARTBEAT_STOPPED) == bytes.fromhex("bddabdad")
    assert decode(bytes.fromhex("bdaddbda")) == PiranhaBeat(P.HEARTBEAT_RUNNING, False)


def test_an_lvs_director_follows_lvs_beats() -> None:
    for little in (True, False):
        assert piranha_meaning(PiranhaBeat(P.HEARTBEAT_RUNNING, little), lvs=True) == (State.ACTIVE, False)
        assert piranha_meaning(PiranhaBeat(P.HEARTBEAT_STOPPED, little), lvs=True) == (State.STANDBY, False)


@pytest.mark.parametrize("magic", list(PiranhaMagic), ids=lambda m: m.name)
def test_each_mode_ignores_the_other_modes_magics(magic: PiranhaMagic) -> None:
    pb = PiranhaBeat(magic, True)
    assert (piranha_meaning(pb, lvs=True) is not None) == (magic in LVS)
    assert (piranha_meaning(pb, lvs=False) is not None) == (magic in FOS)
    assert piranha_meaning(pb) == piranha_meaning(pb, lvs=False), "FOS stays the default"


def test_an_lvs_director_answers_in_lvs_magics() -> None:
    for state in (State.ACTIVE, State.RELEASING):  # still holding the VIPs: a partner must not start
        assert piranha_magic_for(beat(state), lvs=True) is P.HEARTBEAT_RUNNING
    for state in (State.STARTING, State.STANDBY, State.STOPPED):
        assert piranha_magic_for(beat(state), lvs=True) is P.HEARTBEAT_STOPPED
    # A last beat: STOPPED, so an inactive Piranha director starts at once.
    assert piranha_magic_for(beat(State.RELEASING, Flag.LEAVING), lvs=True) is P.HEARTBEAT_STOPPED
    # LVS mode has no STOPME: RUNNING is what makes an active Piranha backup stand down.
    for state in (State.STANDBY, State.ACTIVE):
        assert piranha_magic_for(beat(state, Flag.STOPME), lvs=True) is P.HEARTBEAT_RUNNING


@pytest.mark.parametrize("lvs", [False, True], ids=["fos", "lvs"])
@pytest.mark.parametrize("state", list(State), ids=lambda s: s.name)
def test_an_answer_means_what_the_beat_said(lvs: bool, state: State) -> None:
    # Round trip through the wire: what the Piranha partner reads back is the state we sent (as Piranha
    # knows states: active or not), in the mode we answered in.
    for flags in (NO_FLAGS, Flag.LEAVING):
        magic = piranha_magic_for(beat(state, flags), lvs=lvs)
        assert (magic in LVS) == lvs and (magic in FOS) == (not lvs)
        received = decode(encode_piranha(magic))
        assert isinstance(received, PiranhaBeat)
        meaning = piranha_meaning(received, lvs=lvs)
        holding = state in (State.ACTIVE, State.RELEASING) and not flags
        assert meaning == ((State.ACTIVE if holding else State.STANDBY), False)
