"""Wire format of the direct-routing table sync: a snapshot of our nftables table's dynamic set elements
(set name, element key, remaining expiry) as datagrams of at most MAX_DATAGRAM bytes; no sockets, no clock.

The sender and the receiver are net/tablesync.py. Layout (network byte order):

    header   magic "RHPN", version 1, flags (bit 0: AUTH), session (8 bytes, random per sender start),
             seq (u64, per datagram), snapshot (u32), part (u16), parts (u16), sections (u8)
    section  name length (u8), name (ASCII), kind (u8, bit 0: the key is a concatenation), tag count
             (u8), tags (one byte per key part), element count (u16), then per element: remaining
             expiry in ms (u32) and each part: "A" IPv4 address (4 bytes), "I" integer (u32),
             "Q" integer (u64), "S" string (u8 length, UTF-8)
    trailer  with AUTH: HMAC-SHA256 over everything before it, under a key derived from heartbeat_key

A key part is what libnftables' JSON lists (a string or a number; a concatenation is
``{"concat": [...]}``), so any dynamic set of the table travels, whatever its layout; an element that is
none of these (a range, a prefix, a negative number) is left out by ``encode`` and counted. ``decode``
raises DecodeError, nothing else.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}\Z")


def _dotted(packed: bytes) -> str:
    """Four bytes as a dotted quad (socket.inet_ntop without the socket module: the core does no I/O)."""
    return ".".join(map(str, packed))


__all__ = [
    "DECODE_REASONS",
    "MAC_SIZE",
    "MAGIC",
    "MAX_DATAGRAM",
    "VERSION",
    "Datagram",
    "DecodeError",
    "Element",
    "Encoded",
    "decode",
    "encode",
    "key_of",
    "value_of",
]

MAGIC = b"RHPN"  # differs from the beats' "RHFO": a beat is never taken for a snapshot, nor the reverse
VERSION = 1
AUTH = 0x01
MAX_DATAGRAM = 1400  # under a 1500-byte MTU with IP and UDP headers, so nothing is fragmented
MAC_SIZE = hashlib.sha256().digest_size  # 32
MAX_PARTS = 16  # key parts per element; nftables concatenations have at most 16 too
MAX_EXPIRY_MS = 0xFFFFFFFF
_HEADER = struct.Struct("!4sBB8sQIHHB")
HEADER_SIZE = _HEADER.size  # 31
_SECTION_HEAD = 1 + 1 + 1 + 2  # name length, kind, tag count, element count (+ name and tags)
_CONCAT = 0x01
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,255}")  # nft set names as our table has them
_PART_SIZE = {"A": 4, "I": 4, "Q": 8}  # "S": 1 + its length

DECODE_REASONS: tuple[str, ...] = (
    "truncated",
    "bad-magic",
    "bad-version",
    "bad-length",
    "unauthenticated",
    "bad-mac",
    "bad-field",
)

Part = str | int  # one key part as libnftables' JSON has it


class DecodeError(ValueError):
    """A datagram that is not an acceptable snapshot part; ``reason`` is one of DECODE_REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in DECODE_REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Element:
    """One dynamic set element: its set, its key (parts; ``concat`` as listed) and the ms it has left."""

    set_name: str
    parts: tuple[Part, ...]
    concat: bool
    expires_ms: int


@dataclass(frozen=True)
class Datagram:
    """One decoded datagram: part ``part`` of ``parts`` of snapshot ``snapshot`` from sender ``session``."""

    session: bytes
    seq: int
    snapshot: int
    part: int
    parts: int
    elements: tuple[Element, ...]


@dataclass(frozen=True)
class Encoded:
    """A snapshot as datagrams, and how many elements could not be written (no known part type)."""

    datagrams: list[bytes]
    elements: int
    unsendable: int


def key_of(val: Any) -> tuple[tuple[Part, ...], bool] | None:
    """A listed element value (``"1.2.3.4"``, ``5``, ``{"concat": [...]}``) as (parts, concat); None if
    it is no scalar and no concatenation of 1-16 scalars (a range, a prefix). Which scalars travel is
    encode's to say (not a negative number; any string but an address travels as "S")."""
    concat = isinstance(val, dict)
    if concat:
        if set(val) != {"concat"} or not isinstance(val["concat"], list):
            return None
        parts = tuple(val["concat"])
        if not 1 <= len(parts) <= MAX_PARTS:
            return None
    else:
        parts = (val,)
    # the part types are checked by encode (and counted there); here only that each is a scalar
    if not all(isinstance(p, str | int) and not isinstance(p, bool) for p in parts):
        return None
    return parts, concat


def value_of(parts: Sequence[Part], concat: bool) -> Any:
    """The inverse of ``key_of``: the value as libnftables' JSON takes it back."""
    return {"concat": list(parts)} if concat else parts[0]


def _tag(part: Any) -> str | None:
    if isinstance(part, bool):
        return None
    if isinstance(part, int):
        if 0 <= part <= 0xFFFFFFFF:
            return "I"
        return "Q" if 0 <= part <= 0xFFFFFFFFFFFFFFFF else None
    if isinstance(part, str):
        if _DOTTED_QUAD.match(part):  # canonical only (ipaddress costs 10 times more per element)
            return "A"
        return "S" if len(part.encode()) <= 255 else None
    return None


def _pack_part(tag: str, part: Part) -> bytes:
    if tag == "A":
        return bytes(int(octet) for octet in str(part).split("."))
    if tag == "I":
        return struct.pack("!I", part)
    if tag == "Q":
        return struct.pack("!Q", part)
    raw = str(part).encode()
    return bytes([len(raw)]) + raw


@functools.lru_cache(maxsize=64)
def _fixed(tags: str) -> struct.Struct | None:
    """An element (expiry, then its parts) as one struct, when no part is a string."""
    if "S" in tags:
        return None
    return struct.Struct("!I" + "".join({"A": "4s", "I": "I", "Q": "Q"}[t] for t in tags))


def _mac_key(key: bytes) -> bytes:
    # A key of its own for these datagrams: a MAC made for one protocol never verifies in the other.
    return hmac.new(key, b"pyrhfos table sync v1", hashlib.sha256).digest()


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(_mac_key(key), body, hashlib.sha256).digest()


def _check_key(key: bytes | None) -> None:
    if key is not None and len(key) == 0:
        raise ValueError("heartbeat key is empty")


def encode(
    elements: Iterable[Element],
    *,
    session: bytes,
    seq: int,
    snapshot: int,
    key: bytes | None = None,
    limit: int = MAX_DATAGRAM,
) -> Encoded:
    """A whole snapshot as datagrams of at most ``limit`` bytes, numbered from ``seq`` (one seq each).
    A snapshot without elements is one datagram without sections: the receiver learns the sets are empty."""
    _check_key(key)
    if len(session) != 8:
        raise ValueError("session must be 8 bytes")
    room = limit - HEADER_SIZE - (MAC_SIZE if key is not None else 0)
    bodies: list[list[bytes]] = [[]]  # per datagram, its closed sections
    used = 0  # bytes of the last datagram's body, its open section included
    shape: tuple[str, bool, str] | None = None  # the open section's set name, concat and tags
    section: list[bytes] = []
    written = unsendable = 0

    def close() -> None:
        nonlocal shape, section
        if shape is not None and section:
            name, concat, tags = shape
            raw = name.encode()
            head = bytes([len(raw)]) + raw + bytes([_CONCAT if concat else 0, len(tags)]) + tags.encode()
            head += struct.pack("!H", len(section))
            bodies[-1].append(head + b"".join(section))
        shape, section = None, []

    for e in elements:
        tags = "".join(_tag(p) or "?" for p in e.parts)
        if (
            "?" in tags
            or not 1 <= len(e.parts) <= MAX_PARTS
            or (not e.concat and len(e.parts) != 1)
            or not _NAME.fullmatch(e.set_name)
        ):
            unsendable += 1
            continue
        expires = max(0, min(e.expires_ms, MAX_EXPIRY_MS))
        fixed = _fixed(tags)
        if fixed is not None:
            body = fixed.pack(
                expires, *(_pack_part(t, p) if t == "A" else p for t, p in zip(tags, e.parts, strict=True))
            )
        else:
            body = struct.pack("!I", expires) + b"".join(
                _pack_part(t, p) for t, p in zip(tags, e.parts, strict=True)
            )
        head_size = _SECTION_HEAD + len(e.set_name) + len(tags)
        if head_size + len(body) > room:  # fits no datagram
            unsendable += 1
            continue
        this = (e.set_name, e.concat, tags)
        if this != shape or len(section) == 0xFFFF or used + len(body) > room:
            close()
            if used + head_size + len(body) > room or len(bodies[-1]) == 0xFF:
                bodies.append([])
                used = 0
            shape = this
            used += head_size
        section.append(body)
        used += len(body)
        written += 1
    close()
    bodies = [b for b in bodies if b] or [[]]
    if len(bodies) > 0xFFFF:
        raise ValueError(f"snapshot of {len(bodies)} datagrams: at most 65535")
    out = []
    flags = AUTH if key is not None else 0
    for i, sections in enumerate(bodies):
        head = _HEADER.pack(MAGIC, VERSION, flags, session, seq + i, snapshot, i, len(bodies), len(sections))
        data = head + b"".join(sections)
        out.append(data + _mac(key, data) if key is not None else data)
    return Encoded(out, written, unsendable)


def decode(data: bytes, key: bytes | None = None) -> Datagram:
    """Decode one datagram; any bytes that are not an acceptable snapshot part raise DecodeError.
    With a key the MAC is checked before any field past the header's first bytes is read. Without a key
    an AUTH datagram is read unverified (its trailer skipped), as beats are (core/wire.py)."""
    _check_key(key)
    data = bytes(memoryview(data))
    size = len(data)
    if size > MAX_DATAGRAM:
        raise DecodeError("bad-length", f"{size} bytes, at most {MAX_DATAGRAM}")
    if size < 6:
        raise DecodeError("truncated", f"{size} bytes")
    if data[:4] != MAGIC:
        raise DecodeError("bad-magic", data[:4].hex())
    if data[4] != VERSION:
        raise DecodeError("bad-version", str(data[4]))
    authed = bool(data[5] & AUTH)
    if size < HEADER_SIZE + (MAC_SIZE if authed else 0):
        raise DecodeError("truncated", f"{size} bytes")
    if key is not None:
        if not authed:
            raise DecodeError("unauthenticated", "no AUTH flag while a key is configured")
        if not hmac.compare_digest(_mac(key, data[:-MAC_SIZE]), data[-MAC_SIZE:]):
            raise DecodeError("bad-mac")
    if authed:
        data = data[:-MAC_SIZE]
    _, _, _, session, seq, snapshot, part, parts, sections = _HEADER.unpack_from(data)
    if parts == 0 or part >= parts:
        raise DecodeError("bad-field", f"part {part} of {parts}")
    reader = _Reader(data, HEADER_SIZE)
    elements: list[Element] = []
    for _ in range(sections):
        name_raw = reader.take(reader.byte())
        try:
            name = name_raw.decode("ascii")
        except UnicodeDecodeError:
            raise DecodeError("bad-field", "set name not ASCII") from None
        if not _NAME.fullmatch(name):
            raise DecodeError("bad-field", f"set name {name!r}")
        kind, ntags = reader.byte(), reader.byte()
        if kind & ~_CONCAT:
            raise DecodeError("bad-field", f"kind {kind}")
        concat = bool(kind & _CONCAT)
        if not 1 <= ntags <= MAX_PARTS or (not concat and ntags != 1):
            raise DecodeError("bad-field", f"{ntags} key parts")
        tags = reader.take(ntags).decode("ascii", errors="replace")
        if any(t not in "AIQS" for t in tags):
            raise DecodeError("bad-field", f"part types {tags!r}")
        (count,) = struct.unpack("!H", reader.take(2))
        if count == 0:
            raise DecodeError("bad-field", "empty section")
        fixed = _fixed(tags)
        if fixed is not None:  # no string part: one C call per section (most of the receiving time)
            addresses = [i + 1 for i, t in enumerate(tags) if t == "A"]
            for row in fixed.iter_unpack(reader.take(fixed.size * count)):
                values: list[Part] = list(row[1:])
                for i in addresses:
                    values[i - 1] = _dotted(row[i])
                elements.append(Element(name, tuple(values), concat, row[0]))
            continue
        for _ in range(count):
            (expires,) = struct.unpack("!I", reader.take(4))
            elements.append(Element(name, tuple(reader.part(t) for t in tags), concat, expires))
    if reader.pos != len(data):
        raise DecodeError("bad-length", f"{len(data) - reader.pos} bytes after the last section")
    return Datagram(session, seq, snapshot, part, parts, tuple(elements))


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DecodeError("truncated", f"{n} bytes wanted at offset {self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def part(self, tag: str) -> Part:
        if tag == "A":
            return _dotted(self.take(4))
        if tag == "I":
            return int(struct.unpack("!I", self.take(4))[0])
        if tag == "Q":
            return int(struct.unpack("!Q", self.take(8))[0])
        try:
            return self.take(self.byte()).decode()
        except UnicodeDecodeError:
            raise DecodeError("bad-field", "string part not UTF-8") from None
