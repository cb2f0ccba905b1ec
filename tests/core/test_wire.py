"""Tests for pyrhfos.core.wire: layout, round trips, every drop reason, Piranha magics, HMAC, fuzz.

The replay guard has tests/core/test_replay.py.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import pickle
import random
import re
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrhfos.core.vocab import Role, State
from pyrhfos.core.wire import (
    AUTH_BEAT_SIZE,
    BEAT_SIZE,
    DECODE_REASONS,
    MAC_SIZE,
    MAGIC,
    Beat,
    DecodeError,
    Flag,
    PiranhaBeat,
    PiranhaMagic,
    decode,
    encode,
    encode_piranha,
    piranha_magic_for,
)

KEY = b"k" * 32
OTHER_KEY = b"K" * 32
BOOT = bytes.fromhex("0123456789abcdef")
DIGEST = bytes.fromhex("a1b2c3d4e5f60718")
DOC = Path(__file__).resolve().parents[2] / "docs" / "heartbeat.md"


def beat(**kw: object) -> Beat:
    fields: dict[str, object] = dict(
        role=Role.PRIMARY, state=State.ACTIVE, seq=42, boot_id=BOOT, serial=7, digest=DIGEST
    )
    fields.update(kw)
    return Beat(**fields)  # type: ignore[arg-type]


def raw(
    *,
    magic: bytes = MAGIC,
    version: int = 1,
    flags: int = 0,
    role: int = 1,
    state: int = 3,
    seq: int = 42,
    boot_id: bytes = BOOT,
    serial: int = 7,
    digest: bytes = DIGEST,
    extra: bytes = b"",
    key: bytes | None = None,
) -> bytes:
    """Build a packet by hand, independently of the module, so the layout itself is under test."""
    body = struct.pack(">4sBBBBQ8sI8s", magic, version, flags, role, state, seq, boot_id, serial, digest)
    body += extra
    if key is not None:
        body += hmac.new(key, body, hashlib.sha256).digest()
    return body


def reason_of(data: bytes, key: bytes | None = None) -> str:
    with pytest.raises(DecodeError) as info:
        decode(data, key)
    return info.value.reason


# --- layout -------------------------------------------------------------------------------------------

EXAMPLE_HEX = (
    "5248464f01800103000000000000002a0123456789abcdef00000007a1b2c3d4e5f60718"
    "06563a2623c21ea535a3c9871790e2610235ecbff90e6ec0ad644f9d2db4fce2"
)


def test_sizes() -> None:
    assert (BEAT_SIZE, MAC_SIZE, AUTH_BEAT_SIZE) == (36, 32, 68)
    assert len(encode(beat())) == BEAT_SIZE
    assert len(encode(beat(), KEY)) == AUTH_BEAT_SIZE


def test_layout_matches_hand_built_packet() -> None:
    b = beat(role=Role.BACKUP, state=State.STANDBY, seq=2**64 - 1, serial=2**32 - 1, flags=Flag.STOPME)
    assert encode(b) == raw(flags=2, role=2, state=2, seq=2**64 - 1, serial=2**32 - 1)
    assert encode(b, KEY) == raw(flags=0x82, role=2, state=2, seq=2**64 - 1, serial=2**32 - 1, key=KEY)


def test_doc_example_hexdump() -> None:
    packet = encode(beat(), b"example-key")
    assert packet.hex() == EXAMPLE_HEX
    # The docs show the same bytes as a hexdump; keep them in sync.
    doc = DOC.read_text()
    dumped = "".join(re.findall(r"^[0-9a-f]{8}: ((?:[0-9a-f]{2} ?)+)", doc, flags=re.M)).replace(" ", "")
    assert dumped == EXAMPLE_HEX


def test_doc_names_every_reason() -> None:
    doc = DOC.read_text()
    for reason in (*DECODE_REASONS, "replay", "wrong-role"):
        assert f"`{reason}`" in doc, reason


def test_magic_is_not_a_piranha_magic_in_either_order() -> None:
    for order in ("<I", ">I"):
        (value,) = struct.unpack(order, MAGIC)
        assert value not in {int(m) for m in PiranhaMagic}


# --- round trips -------------------------------------------------------------------------------------

FLAG_SETS = [Flag(0), Flag.LEAVING, Flag.STOPME, Flag.LEAVING | Flag.STOPME]


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "auth"])
def test_round_trip_every_field_combination(key: bytes | None) -> None:
    combos = itertools.product(
        Role, State, FLAG_SETS, (0, 1, 2**63, 2**64 - 1), (0, 1, 2**32 - 1), (BOOT, bytes(8), b"\xff" * 8)
    )
    for role, state, flags, seq, serial, ident in combos:
        b = Beat(role, state, seq, ident, serial, ident[::-1], flags)
        got = decode(encode(b, key), key)
        expected = replace(b, flags=b.flags | Flag.AUTH) if key else b
        assert got == expected
        assert got.leaving == bool(flags & Flag.LEAVING)
        assert got.stopme == bool(flags & Flag.STOPME)
        assert isinstance(got.role, Role) and isinstance(got.state, State)


beats = st.builds(
    Beat,
    role=st.sampled_from(Role),
    state=st.sampled_from(State),
    seq=st.integers(0, 2**64 - 1),
    boot_id=st.binary(min_size=8, max_size=8),
    serial=st.integers(0, 2**32 - 1),
    digest=st.binary(min_size=8, max_size=8),
    flags=st.sampled_from(FLAG_SETS),
)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(b=beats, key=st.one_of(st.none(), st.binary(min_size=1, max_size=80)))
def test_round_trip_property(b: Beat, key: bytes | None) -> None:
    got = decode(encode(b, key), key)
    assert isinstance(got, Beat)
    assert replace(got, flags=got.flags & ~Flag.AUTH) == b
    assert bool(got.flags & Flag.AUTH) == (key is not None)


def test_encode_takes_auth_from_key_only() -> None:
    authed = beat(flags=Flag.AUTH | Flag.LEAVING)
    assert encode(authed) == encode(beat(flags=Flag.LEAVING))
    assert encode(beat(flags=Flag.LEAVING), KEY) == encode(authed, KEY)


def test_beat_validation() -> None:
    assert beat(role=2, state=1).role is Role.BACKUP  # ints are coerced to the enums
    assert beat(boot_id=bytearray(8)).boot_id == bytes(8)
    for bad in (
        dict(role=0),
        dict(state=9),
        dict(seq=-1),
        dict(seq=2**64),
        dict(serial=2**32),
        dict(boot_id=b"short"),
        dict(digest=bytes(9)),
        dict(flags=Flag(0x08)),
    ):
        with pytest.raises(ValueError):
            beat(**bad)


def test_empty_key_is_a_config_error() -> None:
    with pytest.raises(ValueError) as enc:
        encode(beat(), b"")
    with pytest.raises(ValueError) as dec:
        decode(encode(beat()), b"")
    assert not isinstance(enc.value, DecodeError) and not isinstance(dec.value, DecodeError)


# --- every drop reason -------------------------------------------------------------------------------


def test_reason_truncated() -> None:
    assert reason_of(b"") == "truncated"
    assert reason_of(b"RHF") == "truncated"
    assert reason_of(raw()[: BEAT_SIZE - 1]) == "truncated"
    assert reason_of(raw()[:5]) == "truncated"
    # AUTH set but the trailer is cut short (or stripped while the bit stays set).
    assert reason_of(raw(flags=0x80, key=KEY)[:-1]) == "truncated"
    assert reason_of(raw(flags=0x80, key=KEY)[:BEAT_SIZE]) == "truncated"
    assert reason_of(raw(flags=0x80, key=KEY)[:BEAT_SIZE], KEY) == "truncated"


def test_reason_bad_magic() -> None:
    assert reason_of(raw(magic=b"RHFX")) == "bad-magic"
    assert reason_of(raw(magic=b"RHFO"[::-1])) == "bad-magic"
    assert reason_of(b"\x00" * 10) == "bad-magic"
    # A Piranha magic padded to any other length is not a Piranha beat.
    assert reason_of(encode_piranha(PiranhaMagic.FOS_HEARTBEAT_RUNNING) + b"\x00") == "bad-magic"


def test_reason_bad_version() -> None:
    for version in (0, 0x80, 0xFF):
        assert reason_of(raw(version=version)) == "bad-version"
        assert reason_of(raw(version=version, flags=0x80, key=KEY), KEY) == "bad-version"


def test_reason_bad_length() -> None:
    assert reason_of(raw(extra=b"\x00")) == "bad-length"
    assert reason_of(raw(flags=0x80, extra=b"\x00", key=KEY), KEY) == "bad-length"
    assert reason_of(raw(flags=0x80, key=KEY) + b"\x00") == "bad-length"
    # A plain v1 beat with a trailer appended but AUTH clear is too long for v1.
    assert reason_of(raw(key=KEY)) == "bad-length"


def test_reason_bad_field() -> None:
    for fields in (dict(role=0), dict(role=3), dict(state=0), dict(state=6), dict(role=255, state=255)):
        assert reason_of(raw(**fields)) == "bad-field"  # type: ignore[arg-type]
        assert reason_of(raw(flags=0x80, key=KEY, **fields), KEY) == "bad-field"  # type: ignore[arg-type]


def test_reason_unauthenticated() -> None:
    assert reason_of(encode(beat()), KEY) == "unauthenticated"
    # Stripped trailer and cleared AUTH bit: a well-formed plain beat, refused when keyed.
    stripped = bytearray(encode(beat(), KEY)[:BEAT_SIZE])
    stripped[5] &= ~0x80
    assert reason_of(bytes(stripped), KEY) == "unauthenticated"
    # Piranha beats carry no MAC, so they are refused when a key is configured.
    assert reason_of(encode_piranha(PiranhaMagic.FOS_HEARTBEAT_RUNNING), KEY) == "unauthenticated"


def test_reason_bad_mac() -> None:
    assert reason_of(encode(beat(), OTHER_KEY), KEY) == "bad-mac"


def test_reason_piranha_unknown_magic() -> None:
    assert reason_of(b"RHFO") == "piranha-unknown-magic"
    assert reason_of(bytes(4)) == "piranha-unknown-magic"


def test_reasons_are_the_documented_set() -> None:
    assert len(set(DECODE_REASONS)) == len(DECODE_REASONS) == 8


def test_decode_error_shape() -> None:
    err = DecodeError("bad-mac", "detail")
    assert isinstance(err, ValueError)
    assert (err.reason, str(err)) == ("bad-mac", "bad-mac: detail")
    again = pickle.loads(pickle.dumps(err))
    assert (again.reason, again.detail) == ("bad-mac", "detail")


# --- growth rules ------------------------------------------------------------------------------------


def test_later_version_extension_is_skipped() -> None:
    b = decode(raw(version=2, flags=0x01, extra=b"future fields"))
    assert isinstance(b, Beat) and b.leaving and b.seq == 42
    assert decode(raw(version=0x7F)) == beat()
    keyed = raw(version=3, flags=0x80, extra=b"x" * 20, key=KEY)
    assert decode(keyed, KEY) == beat(flags=Flag.AUTH)
    # The extension is covered by the MAC.
    tampered = bytearray(keyed)
    tampered[BEAT_SIZE] ^= 1
    assert reason_of(bytes(tampered), KEY) == "bad-mac"


def test_reserved_flag_bits_are_ignored() -> None:
    assert decode(raw(flags=0x78 | 0x01)) == beat(flags=Flag.LEAVING)
    assert decode(raw(flags=0xF8, key=KEY), KEY) == beat(flags=Flag.AUTH)


def test_auth_beat_without_key_is_decoded_unverified() -> None:
    # Documented decision: no key, no check; the AUTH bit stays visible so the daemon can warn.
    assert decode(encode(beat(), KEY)) == beat(flags=Flag.AUTH)
    assert decode(encode(beat(), OTHER_KEY)) == beat(flags=Flag.AUTH)


def test_accepts_bytes_like() -> None:
    packet = encode(beat(), KEY)
    assert decode(bytearray(packet), KEY) == decode(memoryview(packet), KEY) == beat(flags=Flag.AUTH)


# --- Piranha -----------------------------------------------------------------------------------------


def test_piranha_wire_bytes_from_the_reference() -> None:
    assert decode(bytes.fromhex("bebaefbe")) == PiranhaBeat(PiranhaMagic.FOS_HEARTBEAT_RUNNING, True)
    assert decode(bytes.fromhex("efbeadde")) == PiranhaBeat(PiranhaMagic.FOS_HEARTBEAT_STOPPED, True)
    assert decode(bytes.fromhex("beefbabe")) == PiranhaBeat(PiranhaMagic.FOS_HEARTBEAT_RUNNING, False)
    assert encode_piranha(PiranhaMagic.FOS_HEARTBEAT_RUNNING) == bytes.fromhex("bebaefbe")
    assert encode_piranha(PiranhaMagic.FOS_HEARTBEAT_STOPPED, False) == bytes.fromhex("deadbeef")


@pytest.mark.parametrize("magic", list(PiranhaMagic), ids=lambda m: m.name)
@pytest.mark.parametrize("little_endian", [True, False], ids=["le", "be"])
def test_piranha_both_byte_orders(magic: PiranhaMagic, little_endian: bool) -> None:
    packet = encode_piranha(magic, little_endian)
    assert len(packet) == 4
    assert decode(packet) == PiranhaBeat(magic, little_endian)


def test_no_piranha_magic_is_another_byte_swapped() -> None:
    values = {int(m) for m in PiranhaMagic}
    for m in PiranhaMagic:
        assert int.from_bytes(int(m).to_bytes(4, "little"), "big") not in values


def test_piranha_properties() -> None:
    P = PiranhaMagic
    fos = {P.FOS_HEARTBEAT_RUNNING, P.FOS_HEARTBEAT_STOPPED, P.FOS_HEARTBEAT_STOPME}
    for m in P:
        pb = PiranhaBeat(m, True)
        assert pb.fos == (m in fos)
        assert pb.running == (m in {P.HEARTBEAT_RUNNING, P.FOS_HEARTBEAT_RUNNING})
        assert pb.stopped == (m in {P.HEARTBEAT_STOPPED, P.FOS_HEARTBEAT_STOPPED})
        assert pb.stopme == (m is P.FOS_HEARTBEAT_STOPME)


def test_encode_piranha_rejects_unknown_magic() -> None:
    with pytest.raises(ValueError):
        encode_piranha(0x12345678)  # type: ignore[arg-type]


def test_piranha_answer_rule() -> None:
    P = PiranhaMagic
    # A releasing node still holds the VIPs: a Piranha partner must not start yet.
    for state in (State.ACTIVE, State.RELEASING):
        assert piranha_magic_for(beat(state=state)) is P.FOS_HEARTBEAT_RUNNING
    for state in (State.STARTING, State.STANDBY, State.STOPPED):
        assert piranha_magic_for(beat(state=state)) is P.FOS_HEARTBEAT_STOPPED
    assert piranha_magic_for(beat(state=State.ACTIVE, flags=Flag.STOPME)) is P.FOS_HEARTBEAT_STOPME
    assert piranha_magic_for(beat(state=State.STANDBY, flags=Flag.STOPME)) is P.FOS_HEARTBEAT_STOPME
    assert piranha_magic_for(beat(state=State.RELEASING, flags=Flag.LEAVING)) is P.FOS_HEARTBEAT_STOPPED


# --- HMAC --------------------------------------------------------------------------------------------


def test_hmac_good() -> None:
    assert decode(encode(beat(), KEY), KEY) == beat(flags=Flag.AUTH)


def test_hmac_wrong_key() -> None:
    assert reason_of(encode(beat(), KEY), OTHER_KEY) == "bad-mac"


def test_hmac_every_flipped_bit_is_rejected() -> None:
    packet = encode(beat(flags=Flag.LEAVING), KEY)
    for i in range(len(packet) * 8):
        mutated = bytearray(packet)
        mutated[i // 8] ^= 1 << (i % 8)
        with pytest.raises(DecodeError):
            decode(bytes(mutated), KEY)


def test_hmac_stripped_trailer() -> None:
    packet = encode(beat(), KEY)
    assert reason_of(packet[:BEAT_SIZE], KEY) == "truncated"  # AUTH bit still set
    plain = bytearray(packet[:BEAT_SIZE])
    plain[5] = 0
    assert reason_of(bytes(plain), KEY) == "unauthenticated"


# --- fuzz --------------------------------------------------------------------------------------------

KEYS = (None, KEY)
# Lengths that sit on the decoder's boundaries, to make random packets hit them often.
EDGE_LENGTHS = (0, 1, 3, 4, 5, 8, 35, 36, 37, 67, 68, 69)


def _random_beat(rng: random.Random) -> Beat:
    return Beat(
        rng.choice(list(Role)),
        rng.choice(list(State)),
        rng.getrandbits(64),
        rng.randbytes(8),
        rng.getrandbits(32),
        rng.randbytes(8),
        rng.choice(FLAG_SETS),
    )


def _mutate(rng: random.Random, packet: bytes) -> bytes:
    data = bytearray(packet)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        if op <= 1 and data:  # bit flips, the commonest corruption
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(data) * 8)
                data[i // 8] ^= 1 << (i % 8)
        elif op == 2 and data:  # truncation
            del data[rng.randrange(len(data)) :]
        elif op == 3:  # extension
            data += rng.randbytes(rng.choice((1, 4, 32, rng.randint(1, 64))))
        elif op == 4 and data:  # overwrite one byte, often a header byte
            i = rng.randrange(min(len(data), 8)) if rng.random() < 0.5 else rng.randrange(len(data))
            data[i] = rng.choice((0, 1, 2, 3, 4, 5, 6, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 5 and len(data) > 1:  # delete a slice from the middle
            i = rng.randrange(len(data))
            del data[i : i + rng.randint(1, 8)]
    return bytes(data)


def _check(data: bytes, original: bytes | None, authed: bool) -> None:
    for key in KEYS:
        try:
            got = decode(data, key)
        except DecodeError as err:
            assert err.reason in DECODE_REASONS
            continue
        assert isinstance(got, (Beat, PiranhaBeat))
        if key is not None:
            assert isinstance(got, Beat) and got.flags & Flag.AUTH
            if authed and data != original:
                raise AssertionError(f"mutated authenticated packet accepted: {data.hex()}")


FUZZ_EXAMPLES = 1000
FUZZ_BATCH = 100  # FUZZ_EXAMPLES * FUZZ_BATCH = 100 000 packets, each decoded with and without the key


@settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
)
@given(seed=st.integers(0, 2**32 - 1))
def test_fuzz_random_and_mutated_packets(seed: int) -> None:
    # Hypothesis picks (derandomized) seeds; a plain Random per example keeps 100 packets cheap to make.
    rng = random.Random(seed)
    for _ in range(FUZZ_BATCH):
        kind = rng.random()
        if kind < 0.2:  # pure noise, mostly at boundary lengths
            size = rng.choice(EDGE_LENGTHS) if rng.random() < 0.7 else rng.randint(0, 200)
            _check(rng.randbytes(size), None, False)
        elif kind < 0.3:  # mutated Piranha beats
            magic = rng.choice(list(PiranhaMagic))
            _check(_mutate(rng, encode_piranha(magic, rng.random() < 0.5)), None, False)
        else:  # mutated native beats, half of them authenticated
            authed = rng.random() < 0.5
            original = encode(_random_beat(rng), KEY if authed else None)
            _check(_mutate(rng, original), original, authed)


@settings(max_examples=2000, derandomize=True, database=None, deadline=None)
@given(data=st.one_of(st.binary(max_size=100), st.binary(min_size=4, max_size=4)))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _check(data, None, False)


@settings(max_examples=1000, derandomize=True, database=None, deadline=None)
@given(b=beats, prefix=st.binary(max_size=8), pos=st.integers(0, AUTH_BEAT_SIZE), cut=st.integers(0, 80))
def test_fuzz_spliced_authenticated(b: Beat, prefix: bytes, pos: int, cut: int) -> None:
    # Splice bytes into (or cut) an authenticated packet: it must never verify.
    packet = encode(b, KEY)
    mutated = (packet[:pos] + prefix + packet[pos:])[:cut] if cut < 80 else packet[:pos] + prefix
    if mutated != packet:
        with pytest.raises(DecodeError):
            decode(mutated, KEY)
