"""Heartbeat intake and output through the daemon shell, on a fake transport: malformed or foreign
packets are dropped and counted, never raised; beats go to every path in the partner's dialect."""

from __future__ import annotations

from rig import Rig, build

from pyrhfos.config.model import Config
from pyrhfos.core.events import SendBeat
from pyrhfos.core.vocab import Role, State
from pyrhfos.core.wire import Beat, Flag, PiranhaMagic, decode, encode, encode_piranha

KEY = b"k" * 32


def test_bad_packets_are_dropped_and_counted(rig: Rig) -> None:
    d, partner = rig.daemon, rig.partner
    d.on_datagram(b"\x00" * 3, partner)  # truncated
    d.on_datagram(b"XXXX" + bytes(40), partner)  # bad magic
    d.on_datagram(encode_piranha(PiranhaMagic.HEARTBEAT_RUNNING), partner)  # LVS magic to a FOS node
    good = Beat(Role.BACKUP, State.STANDBY, 1, bytes(8), 0, bytes(8))
    d.on_datagram(encode(good), "192.0.2.99")  # a stranger
    assert d.machine.partner.last() is None, "no invalid packet may count as a beat"
    d.on_datagram(encode(good), partner)
    assert d.machine.partner.state is State.STANDBY
    assert d.counters["dropped-unexpected-source"] == 1
    assert d.counters["dropped-truncated"] == 1
    assert d.counters["dropped-bad-magic"] == 1
    assert d.counters["dropped-piranha-incompatible"] == 1
    assert d.counters["beats-received"] == 1


def test_a_replayed_signed_beat_is_dropped_and_counted(example: Config) -> None:
    r = build(example, key=KEY)
    beat = encode(Beat(Role.BACKUP, State.STANDBY, 5, bytes(8), 0, bytes(8)), KEY)
    r.daemon.on_datagram(beat, r.partner)
    r.daemon.on_datagram(beat, r.partner)
    assert r.daemon.counters["beats-received"] == 1 and r.daemon.counters["dropped-replay"] == 1


def test_without_a_key_a_spoofed_beat_cannot_silence_the_real_ones(rig: Rig) -> None:
    d, partner = rig.daemon, rig.partner
    spoofed = Beat(Role.BACKUP, State.STANDBY, 2**64 - 1, b"\xff" * 8, 0, bytes(8))
    d.on_datagram(encode(spoofed), partner)
    d.on_datagram(encode(Beat(Role.BACKUP, State.ACTIVE, 3, bytes(8), 0, bytes(8))), partner)
    assert d.counters["beats-received"] == 2 and d.machine.partner.state is State.ACTIVE


def test_flags_reach_the_machine(rig: Rig) -> None:
    d, partner = rig.daemon, rig.partner
    d.on_datagram(encode(Beat(Role.BACKUP, State.STANDBY, 1, bytes(8), 0, bytes(8), Flag.HOLD)), partner)
    assert d.machine.partner.hold
    d.on_datagram(encode(Beat(Role.BACKUP, State.STANDBY, 2, bytes(8), 0, bytes(8), Flag.LEAVING)), partner)
    assert d.machine.partner.left and d.machine.partner.state is State.STOPPED


def test_beats_go_to_every_path_with_our_digest_and_flags(example: Config) -> None:
    r = build(example)
    link = r.daemon.link
    link.paths = (r.partner, "198.51.100.2")
    link.send(SendBeat(State.ACTIVE, stopme=True, hold=True))
    assert [addr for _, addr in r.transport.sent] == [(r.partner, 539), ("198.51.100.2", 539)]
    beat = decode(r.transport.sent[0][0])
    assert isinstance(beat, Beat)
    assert beat.state is State.ACTIVE and beat.role is Role.PRIMARY
    assert beat.stopme and beat.hold and not beat.leaving
    assert beat.digest == link.digest and beat.seq == 1
    assert r.daemon.counters["beats-sent"] == 2


def test_a_piranha_partner_is_answered_in_kind_and_byte_order(rig: Rig) -> None:
    d, partner = rig.daemon, rig.partner
    d.on_datagram(encode_piranha(PiranhaMagic.FOS_HEARTBEAT_STOPPED, little_endian=False), partner)
    assert d.machine.partner.state is State.STANDBY and d.link.protocol == "piranha"
    d.link.send(SendBeat(State.ACTIVE))
    running = encode_piranha(PiranhaMagic.FOS_HEARTBEAT_RUNNING, little_endian=False)
    assert rig.transport.sent[-1][0] == running
    d.on_datagram(encode_piranha(PiranhaMagic.FOS_HEARTBEAT_STOPME), partner)
    assert d.machine.partner.stopme


def test_signed_beats_with_a_key_and_unsigned_ones_dropped(example: Config) -> None:
    key = b"k" * 32
    r = build(example, key=key)
    unsigned = encode(Beat(Role.BACKUP, State.STANDBY, 1, bytes(8), 0, bytes(8)))
    r.daemon.on_datagram(unsigned, r.partner)
    assert r.daemon.counters["dropped-unauthenticated"] == 1 and r.daemon.machine.partner.last() is None
    r.daemon.on_datagram(encode(Beat(Role.BACKUP, State.STANDBY, 2, bytes(8), 0, bytes(8)), key), r.partner)
    assert r.daemon.counters["beats-received"] == 1
    r.daemon.link.send(SendBeat(State.ACTIVE))
    assert isinstance(decode(r.transport.sent[-1][0], key), Beat)


def test_config_match_follows_the_partners_digest(rig: Rig) -> None:
    d, partner = rig.daemon, rig.partner
    d.on_datagram(encode(Beat(Role.BACKUP, State.STANDBY, 1, bytes(8), 7, bytes(8))), partner)
    assert d.status()["partner"]["config_match"] is False
    d.on_datagram(encode(Beat(Role.BACKUP, State.STANDBY, 2, bytes(8), 7, d.link.digest)), partner)
    assert d.status()["partner"]["config_match"] is True
    assert d.status()["partner"]["protocol"] == "pyrhfos"
