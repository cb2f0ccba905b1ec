"""The beat link of an LVS director (``lvs=True``): a Piranha partner in LVS mode is followed and answered
in LVS magics, in its byte order; FOS magics are dropped as Piranha's "Incompatible heartbeat"."""

from __future__ import annotations

from collections import Counter

from rig import FakeTransport

from pyrhfos.core.events import SendBeat
from pyrhfos.core.vocab import Role, State
from pyrhfos.core.wire import PiranhaMagic, encode_piranha
from pyrhfos.daemon.beatlink import BeatLink

PARTNER = "192.0.2.2"


def link(lvs: bool) -> tuple[BeatLink, FakeTransport]:
    b = BeatLink(Role.PRIMARY, (PARTNER,), 539, None, Counter(), digest=bytes(8), serial=0, lvs=lvs)
    t = FakeTransport()
    b.transport = t
    return b, t


def test_an_lvs_partner_is_followed_and_answered_in_kind_and_byte_order() -> None:
    b, t = link(lvs=True)
    event = b.intake(encode_piranha(PiranhaMagic.HEARTBEAT_STOPPED, little_endian=False), PARTNER, 1.0)
    assert event is not None and event.state is State.STANDBY and not event.stopme
    assert b.protocol == "piranha"
    b.send(SendBeat(State.ACTIVE))
    assert t.sent[-1] == (encode_piranha(PiranhaMagic.HEARTBEAT_RUNNING, little_endian=False), (PARTNER, 539))
    event = b.intake(encode_piranha(PiranhaMagic.HEARTBEAT_RUNNING), PARTNER, 2.0)
    assert event is not None and event.state is State.ACTIVE
    b.send(SendBeat(State.STANDBY))
    assert t.sent[-1][0] == encode_piranha(PiranhaMagic.HEARTBEAT_STOPPED)  # now little-endian, as heard
    b.send(SendBeat(State.RELEASING, leaving=True))
    assert t.sent[-1][0] == encode_piranha(PiranhaMagic.HEARTBEAT_STOPPED)
    assert b.counters["beats-received"] == 2


def test_an_lvs_director_drops_fos_magics() -> None:
    b, t = link(lvs=True)
    for magic in (PiranhaMagic.FOS_HEARTBEAT_RUNNING, PiranhaMagic.FOS_HEARTBEAT_STOPME, PiranhaMagic.HOLD):
        assert b.intake(encode_piranha(magic), PARTNER, 1.0) is None
    assert b.counters["dropped-piranha-incompatible"] == 3 and b.counters["beats-received"] == 0
    assert b.protocol is None, "a partner in the other mode is not learnt as a Piranha partner"
    b.send(SendBeat(State.STANDBY))
    assert len(t.sent[-1][0]) > 4, "until a Piranha LVS beat is heard, beats stay native"


def test_a_fos_node_keeps_fos_magics_by_default() -> None:
    b, t = link(lvs=False)
    assert b.intake(encode_piranha(PiranhaMagic.HEARTBEAT_RUNNING), PARTNER, 1.0) is None
    event = b.intake(encode_piranha(PiranhaMagic.FOS_HEARTBEAT_RUNNING), PARTNER, 1.0)
    assert event is not None and event.state is State.ACTIVE
    b.send(SendBeat(State.STANDBY, stopme=True))
    assert t.sent[-1][0] == encode_piranha(PiranhaMagic.FOS_HEARTBEAT_STOPME)
    default = BeatLink(Role.PRIMARY, (PARTNER,), 539, None, Counter(), digest=bytes(8), serial=0)
    assert default.lvs is False


def test_the_daemons_link_follows_the_service_of_its_lvs_cf() -> None:
    from rig import EXAMPLE, ROOT

    from pyrhfos.config import load
    from pyrhfos.daemon.shell import beat_link
    from pyrhfos.daemon.startup import Membership

    for path, lvs in ((ROOT / "etc" / "lvs.cf.lvs.example", True), (EXAMPLE, False)):
        cfg, _ = load(path)
        partner = cfg.node_addresses(Role.BACKUP)
        assert beat_link(cfg, Membership(Role.PRIMARY, partner), None, None).lvs is lvs
