"""Tests for pyrhfos.core.pinwire: round trips, datagram sizes, truncation, MACs, every drop reason, fuzz."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrhfos.core.pinwire import (
    DECODE_REASONS,
    HEADER_SIZE,
    MAC_SIZE,
    MAGIC,
    MAX_DATAGRAM,
    DecodeError,
    Element,
    decode,
    encode,
    key_of,
    value_of,
)

KEY = b"k" * 32
SESSION = bytes.fromhex("0123456789abcdef")


def pin(i: int, backend: int = 2197023175, expires_ms: int = 900_000) -> Element:
    """An element of a direct-routing pin set: client . source port . backend id."""
    return Element("pin-web", (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1024 + i % 60000, backend),
                   True, expires_ms)  # fmt: skip


def per(i: int) -> Element:
    return Element("per-web", (f"10.0.{i & 255}.0", 3682073858), True, 60_000)


def elements_of(datagrams: list[bytes], key: bytes | None = None) -> list[Element]:
    return [e for d in datagrams for e in decode(d, key).elements]


def test_round_trip_of_a_mixed_snapshot() -> None:
    elements = [pin(1), pin(2), per(1), Element("plain", ("192.0.2.1",), False, 5), pin(3)]
    out = encode(elements, session=SESSION, seq=10, snapshot=7)
    assert out.elements == 5 and out.unsendable == 0 and len(out.datagrams) == 1
    d = decode(out.datagrams[0])
    assert (d.session, d.seq, d.snapshot, d.part, d.parts) == (SESSION, 10, 7, 0, 1)
    assert list(d.elements) == elements


def test_round_trip_with_a_key_and_every_part_type() -> None:
    e = Element("odd_set.1", ("198.51.100.7", 0, 2**32 - 1, 2**40, "eth0", "ünï"), True, 1)
    out = encode([e], session=SESSION, seq=0, snapshot=0, key=KEY)
    assert decode(out.datagrams[0], KEY).elements == (e,)
    plain = encode([e], session=SESSION, seq=0, snapshot=0).datagrams[0]
    assert len(out.datagrams[0]) == len(plain) + MAC_SIZE


@pytest.mark.parametrize("key", [None, KEY])
def test_a_large_snapshot_splits_into_datagrams_of_at_most_1400_bytes(key: bytes | None) -> None:
    elements = [pin(i, backend=i % 3) for i in range(5000)] + [per(i) for i in range(300)]
    out = encode(elements, session=SESSION, seq=100, snapshot=3, key=key)
    assert out.elements == 5300
    assert all(len(d) <= MAX_DATAGRAM for d in out.datagrams)
    assert max(len(d) for d in out.datagrams) > MAX_DATAGRAM - 30  # packed, not one element each
    decoded = [decode(d, key) for d in out.datagrams]
    assert [d.seq for d in decoded] == list(range(100, 100 + len(decoded)))
    assert {d.parts for d in decoded} == {len(decoded)}
    assert [d.part for d in decoded] == list(range(len(decoded)))
    assert elements_of(out.datagrams, key) == elements


def test_an_empty_snapshot_is_one_datagram_without_elements() -> None:
    out = encode([], session=SESSION, seq=5, snapshot=1)
    assert len(out.datagrams) == 1 and len(out.datagrams[0]) == HEADER_SIZE
    d = decode(out.datagrams[0])
    assert d.elements == () and (d.part, d.parts) == (0, 1)


def test_elements_without_a_wire_type_are_left_out_and_counted() -> None:
    bad = [
        Element("pin-web", ("2001:db8::1", 80), True, 1),  # IPv6 is a string: sent as one ("S")
        Element("pin-web", (-1,), True, 1),
        Element("pin-web", (True,), True, 1),
        Element("pin-web", (2**64,), True, 1),
        Element("bad name", ("1.2.3.4",), False, 1),
        Element("pin-web", ("1.2.3.4", 1), False, 1),  # two parts but no concatenation
        Element("pin-web", (), True, 1),
        Element("pin-web", tuple(range(17)), True, 1),
        Element("x" * 256, (1,), False, 1),
    ]
    out = encode([pin(1), *bad], session=SESSION, seq=0, snapshot=0)
    assert out.elements == 2 and out.unsendable == 8
    assert elements_of(out.datagrams) == [pin(1), bad[0]]


def test_expiry_is_clamped_to_its_field() -> None:
    out = encode([pin(1, expires_ms=2**40), pin(2, expires_ms=-5)], session=SESSION, seq=0, snapshot=0)
    assert [e.expires_ms for e in elements_of(out.datagrams)] == [2**32 - 1, 0]


def test_key_of_and_value_of_are_inverse_for_listed_values() -> None:
    good: list[object] = [{"concat": ["10.0.0.1", 40000, 7]}, "10.0.0.0", 42, {"concat": ["10.0.0.0", 1]}]
    for val in good:
        got = key_of(val)
        assert got is not None
        assert value_of(*got) == val
    bad: list[object] = [{"prefix": {"addr": "10.0.0.0", "len": 8}}, {"range": [1, 2]}, [1], None, 1.5]
    for val in [*bad, {"concat": []}, {"concat": [1], "x": 2}, {"concat": "1"}]:
        assert key_of(val) is None


# -- drops --------------------------------------------------------------------


def one(key: bytes | None = None) -> bytes:
    return encode([pin(1), per(1)], session=SESSION, seq=1, snapshot=1, key=key).datagrams[0]


def reason(data: bytes, key: bytes | None = None) -> str:
    with pytest.raises(DecodeError) as info:
        decode(data, key)
    return info.value.reason


def test_every_truncation_is_dropped() -> None:
    for key in (None, KEY):
        data = one(key)
        for n in range(len(data)):
            assert reason(data[:n], key) in ("truncated", "bad-mac", "bad-length"), n


def test_bad_mac_wrong_key_and_missing_auth() -> None:
    data = one(KEY)
    assert reason(data, b"K" * 32) == "bad-mac"
    flipped = bytearray(data)
    flipped[HEADER_SIZE + 3] ^= 1
    assert reason(bytes(flipped), KEY) == "bad-mac"
    assert reason(one(), KEY) == "unauthenticated"
    assert decode(data).elements == decode(one()).elements  # no key: read unverified, trailer skipped


def test_a_beat_mac_does_not_verify_here() -> None:
    """The MAC key is derived from heartbeat_key: HMAC under the bare key is refused."""
    import hashlib
    import hmac

    body = one(KEY)[:-MAC_SIZE]
    assert reason(body + hmac.new(KEY, body, hashlib.sha256).digest(), KEY) == "bad-mac"


def test_wrong_sizes_and_fields() -> None:
    data = one()
    assert reason(b"") == "truncated"
    assert reason(b"XXXX" + data[4:]) == "bad-magic"
    assert reason(data[:4] + b"\x02" + data[5:]) == "bad-version"
    assert reason(data + b"\x00") == "bad-length"  # bytes after the last section
    assert reason(data[:HEADER_SIZE] + b"\x00" * (MAX_DATAGRAM + 1 - HEADER_SIZE)) == "bad-length"
    head = list(struct.unpack("!4sBB8sQIHHB", data[:HEADER_SIZE]))

    def with_header(**fields: int) -> bytes:
        names = ["magic", "version", "flags", "session", "seq", "snapshot", "part", "parts", "sections"]
        values = [fields.get(n, v) for n, v in zip(names, head, strict=True)]
        return struct.pack("!4sBB8sQIHHB", *values) + data[HEADER_SIZE:]

    assert reason(with_header(parts=0, part=0)) == "bad-field"
    assert reason(with_header(part=1, parts=1)) == "bad-field"
    assert reason(with_header(sections=3)) == "truncated"  # says three, holds two
    assert reason(with_header(sections=1)) == "bad-length"  # says one, holds two
    section = data[HEADER_SIZE:]
    assert section[0] == len("pin-web") and section[1:8] == b"pin-web"
    for offset, value, why in (
        (8, 2, "bad-field"),  # kind: an unknown bit
        (9, 0, "bad-field"),  # no key part
        (9, 17, "bad-field"),  # too many key parts
        (10, ord("Z"), "bad-field"),  # unknown part type
        (1, ord(" "), "bad-field"),  # a blank in the set name
        (1, 0xC3, "bad-field"),  # not ASCII
        (0, 0, "bad-field"),  # empty set name
    ):
        broken = bytearray(data)
        broken[HEADER_SIZE + offset] = value
        assert reason(bytes(broken)) == why, (offset, value)
    count_at = HEADER_SIZE + 1 + 7 + 2 + 3
    assert struct.unpack("!H", data[count_at : count_at + 2]) == (1,)
    broken = bytearray(data)
    broken[count_at : count_at + 2] = b"\x00\x00"
    assert reason(bytes(broken)) == "bad-field"  # an empty section
    plain = encode([Element("s", ("x",), False, 1)], session=SESSION, seq=0, snapshot=0).datagrams[0]
    broken = bytearray(plain)
    broken[HEADER_SIZE + 1 + 1 + 1 + 1 + 1 + 2 + 4] = 1
    broken[-1] = 0xFF  # a string part that is not UTF-8
    assert reason(bytes(broken)) == "bad-field"
    broken = bytearray(plain)
    broken[HEADER_SIZE + 2] = 0  # no concatenation with ...
    broken[HEADER_SIZE + 3] = 2  # ... two parts
    assert reason(bytes(broken)) == "bad-field"


def test_an_empty_key_is_refused() -> None:
    with pytest.raises(ValueError):
        encode([], session=SESSION, seq=0, snapshot=0, key=b"")
    with pytest.raises(ValueError):
        decode(one(), b"")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=MAX_DATAGRAM + 10))
def test_random_bytes_only_ever_raise_decode_error(data: bytes) -> None:
    for key in (None, KEY):
        try:
            decode(data, key)
        except DecodeError as e:
            assert e.reason in DECODE_REASONS


def test_mutated_datagrams_only_ever_raise_decode_error() -> None:
    rng = random.Random(16)
    base = encode([pin(i) for i in range(40)] + [per(1)], session=SESSION, seq=0, snapshot=0).datagrams[0]
    assert base.startswith(MAGIC)
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)) :]
        try:
            decode(bytes(data))
        except DecodeError as e:
            assert e.reason in DECODE_REASONS
