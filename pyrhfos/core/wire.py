"""Heartbeat wire format: the pyrhfos native beat (optionally HMAC-SHA256 authenticated) and Piranha's 4-byte
beats, encoded and decoded as bytes; no sockets, no clock. Which beats are new is core/replay.py's.

Layout, drop rules and compatibility notes: docs/heartbeat.md.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from dataclasses import dataclass

from .vocab import Role, State

__all__ = [
    "AUTH_BEAT_SIZE",
    "BEAT_SIZE",
    "DECODE_REASONS",
    "MAC_SIZE",
    "MAGIC",
    "VERSION",
    "Beat",
    "DecodeError",
    "Flag",
    "PiranhaBeat",
    "PiranhaMagic",
    "beat_flags",
    "decode",
    "encode",
    "encode_piranha",
    "piranha_magic_for",
    "piranha_meaning",
]

# "RHFO" = 0x5248464f; differs from every Piranha magic in both byte orders (checked in the tests).
MAGIC = b"RHFO"
VERSION = 1
# Versions 2..0x7f must keep the v1 fields at the same offsets and only append (see decode);
# 0 and 0x80..0xff are reserved for layouts a v1 decoder cannot read.
_MAX_COMPATIBLE_VERSION = 0x7F

# magic, version, flags, role, state, seq, boot_id, serial, digest; "!" = network order, no padding.
_FIXED = struct.Struct("!4sBBBBQ8sI8s")
BEAT_SIZE = _FIXED.size  # 36: a v1 beat without the HMAC trailer
MAC_SIZE = hashlib.sha256().digest_size  # 32
AUTH_BEAT_SIZE = BEAT_SIZE + MAC_SIZE  # 68
_ID_SIZE = 8  # boot_id and digest
_PIRANHA_SIZE = 4

DECODE_REASONS: tuple[str, ...] = (
    "truncated",
    "bad-magic",
    "bad-version",
    "bad-length",
    "bad-field",
    "unauthenticated",
    "bad-mac",
    "piranha-unknown-magic",
)


class Flag(enum.IntFlag):
    """Bits of the native beat's flags byte; 0x08..0x40 are reserved (sent as 0, ignored on receipt)."""

    LEAVING = 0x01  # last beat of a node stopping cleanly: the partner takes over at once
    STOPME = 0x02  # "release your VIPs, I am taking over"
    HOLD = 0x04  # sender is in hold-down: not a failover candidate (hand it nothing)
    AUTH = 0x80  # HMAC-SHA256 trailer present


_KNOWN_FLAGS = Flag.LEAVING | Flag.STOPME | Flag.HOLD | Flag.AUTH


class PiranhaMagic(enum.IntEnum):
    """The 32-bit magics of Piranha's pulse.c; a Piranha beat is one of these and nothing else."""

    HEARTBEAT_RUNNING = 0xBDADDBDA
    HEARTBEAT_STOPPED = 0xADBDDABD
    HOLD = 0xDEAFBABE
    HELD = 0xDEAFDADA
    FOS_HEARTBEAT_RUNNING = 0xBEEFBABE
    FOS_HEARTBEAT_STOPPED = 0xDEADBEEF
    FOS_HEARTBEAT_STOPME = 0xDEADDADA


_FOS_MAGICS = frozenset(
    {
        PiranhaMagic.FOS_HEARTBEAT_RUNNING,
        PiranhaMagic.FOS_HEARTBEAT_STOPPED,
        PiranhaMagic.FOS_HEARTBEAT_STOPME,
    }
)


_LVS_MAGICS = frozenset({PiranhaMagic.HEARTBEAT_RUNNING, PiranhaMagic.HEARTBEAT_STOPPED})

_PIRANHA_VALUES = frozenset(int(m) for m in PiranhaMagic)


class DecodeError(ValueError):
    """A datagram that is not a beat we accept; `reason` is a stable counter name from DECODE_REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        # Both in args so the exception pickles and compares as constructed.
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@dataclass(frozen=True)
class Beat:
    """One native beat. On a decoded beat, flags carry AUTH when the packet had the HMAC trailer."""

    role: Role
    state: State
    seq: int
    boot_id: bytes
    serial: int
    digest: bytes
    flags: Flag = Flag(0)

    def __post_init__(self) -> None:
        # Validate here so encode() cannot emit a packet decode() would drop; coerce ints to the enums.
        set_ = object.__setattr__
        set_(self, "role", Role(self.role))
        set_(self, "state", State(self.state))
        if not 0 <= self.seq < 1 << 64:
            raise ValueError(f"seq out of u64 range: {self.seq}")
        if not 0 <= self.serial < 1 << 32:
            raise ValueError(f"serial out of u32 range: {self.serial}")
        for name in ("boot_id", "digest"):
            value = bytes(getattr(self, name))
            if len(value) != _ID_SIZE:
                raise ValueError(f"{name} must be {_ID_SIZE} bytes, got {len(value)}")
            set_(self, name, value)
        unknown = int(self.flags) & ~int(_KNOWN_FLAGS)
        if unknown:
            raise ValueError(f"unknown flag bits: {unknown:#x}")
        set_(self, "flags", Flag(self.flags))

    @property
    def leaving(self) -> bool:
        return bool(self.flags & Flag.LEAVING)

    @property
    def stopme(self) -> bool:
        return bool(self.flags & Flag.STOPME)

    @property
    def hold(self) -> bool:
        return bool(self.flags & Flag.HOLD)


def beat_flags(*, leaving: bool = False, stopme: bool = False, hold: bool = False) -> Flag:
    """The flags byte that says what a node's beat says (AUTH is added by encode, with the key)."""
    flags = Flag(0)
    if leaving:
        flags |= Flag.LEAVING
    if stopme:
        flags |= Flag.STOPME
    if hold:
        flags |= Flag.HOLD
    return flags


@dataclass(frozen=True)
class PiranhaBeat:
    """A 4-byte beat from a Piranha node, with the byte order it arrived in (answer in the same order)."""

    magic: PiranhaMagic
    little_endian: bool

    @property
    def fos(self) -> bool:
        return self.magic in _FOS_MAGICS

    @property
    def running(self) -> bool:
        return self.magic in (PiranhaMagic.HEARTBEAT_RUNNING, PiranhaMagic.FOS_HEARTBEAT_RUNNING)

    @property
    def stopped(self) -> bool:
        return self.magic in (PiranhaMagic.HEARTBEAT_STOPPED, PiranhaMagic.FOS_HEARTBEAT_STOPPED)

    @property
    def stopme(self) -> bool:
        return self.magic is PiranhaMagic.FOS_HEARTBEAT_STOPME


def _check_key(key: bytes | None) -> None:
    # An empty key is a configuration mistake, not "no key": refuse it rather than MAC with it.
    if key is not None and len(key) == 0:
        raise ValueError("heartbeat key is empty")


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def encode(beat: Beat, key: bytes | None = None) -> bytes:
    """Encode a v1 beat; with a key, set AUTH and append HMAC-SHA256 over everything before the trailer.

    AUTH on the wire follows the key alone: an AUTH bit in beat.flags (e.g. from a decoded beat) is ignored.
    """
    _check_key(key)
    flags = int(beat.flags) & ~Flag.AUTH
    if key is not None:
        flags |= Flag.AUTH
    body = _FIXED.pack(
        MAGIC, VERSION, flags, int(beat.role), int(beat.state),
        beat.seq, beat.boot_id, beat.serial, beat.digest,
    )  # fmt: skip
    return body + _mac(key, body) if key is not None else body


def encode_piranha(magic: PiranhaMagic, little_endian: bool = True) -> bytes:
    """Encode a Piranha beat: the bare 32-bit magic, little-endian as x86 Piranha sends it, or big-endian."""
    return struct.pack("<I" if little_endian else ">I", PiranhaMagic(magic))


def piranha_magic_for(beat: Beat, lvs: bool = False) -> PiranhaMagic:
    """The magic that says what `beat` says, for answering a partner that speaks only Piranha beats: FOS
    magics for a failover node, LVS ones (HEARTBEAT_RUNNING/STOPPED) for an LVS director (``lvs``)."""
    running, stopped = (
        (PiranhaMagic.HEARTBEAT_RUNNING, PiranhaMagic.HEARTBEAT_STOPPED)
        if lvs
        else (PiranhaMagic.FOS_HEARTBEAT_RUNNING, PiranhaMagic.FOS_HEARTBEAT_STOPPED)
    )
    if beat.leaving:
        # Piranha has no "leaving"; STOPPED makes an inactive Piranha partner start its services at once.
        return stopped
    if beat.stopme:
        # LVS mode has no STOPME: RUNNING is what makes an active Piranha backup shut down ("partner
        # active"); an active Piranha primary keeps serving either way, as it does with Piranha itself.
        return running if lvs else PiranhaMagic.FOS_HEARTBEAT_STOPME
    if beat.state in (State.ACTIVE, State.RELEASING):
        # Still holding the VIPs while releasing: a Piranha partner must not start yet.
        return running
    return stopped


def piranha_meaning(beat: PiranhaBeat, lvs: bool = False) -> tuple[State, bool] | None:
    """What a Piranha beat says as (state, stopme), the inverse of piranha_magic_for.

    A FOS node (``lvs`` False) follows FOS beats: "running", "stopped" or "stop me"; an LVS director
    follows LVS beats: "running" or "stopped" (never stop me). The other mode's magics, and HOLD/HELD,
    are None: they come from a node running other services, which this node cannot follow.
    """
    follows = beat.magic in _LVS_MAGICS if lvs else beat.fos
    if not follows:
        return None
    if beat.running:
        return State.ACTIVE, False
    if beat.stopped:
        return State.STANDBY, False
    return State.STANDBY, beat.stopme  # FOS_HEARTBEAT_STOPME: "release, I am taking over"


def _decode_piranha(data: bytes) -> PiranhaBeat:
    # Try the order x86 Piranha uses first; no magic is another's byte swap, so the order is unambiguous.
    for little_endian, fmt in ((True, "<I"), (False, ">I")):
        (value,) = struct.unpack(fmt, data)
        if value in _PIRANHA_VALUES:
            return PiranhaBeat(PiranhaMagic(value), little_endian)
    raise DecodeError("piranha-unknown-magic", data.hex())


def decode(data: bytes, key: bytes | None = None) -> Beat | PiranhaBeat:
    """Decode one datagram; any bytes that are not an acceptable beat raise DecodeError, nothing else.

    Checks run in the order documented in docs/heartbeat.md; with a key the MAC is verified before any
    field is interpreted. Without a key an AUTH beat is decoded unverified (see the docs for why).
    """
    _check_key(key)
    data = bytes(memoryview(data))  # bytes-like only: bytes(5) would silently make 5 zero bytes
    size = len(data)
    if size == _PIRANHA_SIZE:
        if key is not None:
            raise DecodeError("unauthenticated", "piranha beat while a key is configured")
        return _decode_piranha(data)
    if size < _PIRANHA_SIZE:
        raise DecodeError("truncated", f"{size} bytes")
    if data[:4] != MAGIC:
        raise DecodeError("bad-magic", data[:4].hex())
    version = data[4]
    if version == 0 or version > _MAX_COMPATIBLE_VERSION:
        raise DecodeError("bad-version", str(version))
    if size < BEAT_SIZE:
        raise DecodeError("truncated", f"{size} bytes")
    flags = data[5]
    authed = bool(flags & Flag.AUTH)
    expected = AUTH_BEAT_SIZE if authed else BEAT_SIZE
    if size < expected:
        raise DecodeError("truncated", f"{size} bytes, AUTH set")
    # v1 is exact; later versions append bytes after the fixed fields (before the trailer) that v1 skips.
    if version == VERSION and size != expected:
        raise DecodeError("bad-length", f"{size} bytes for v1, expected {expected}")
    if key is not None:
        if not authed:
            raise DecodeError("unauthenticated", "no AUTH flag while a key is configured")
        body, trailer = data[:-MAC_SIZE], data[-MAC_SIZE:]
        if not hmac.compare_digest(_mac(key, body), trailer):
            raise DecodeError("bad-mac")
    _, _, _, role, state, seq, boot_id, serial, digest = _FIXED.unpack_from(data)
    try:
        role, state = Role(role), State(state)
    except ValueError:
        raise DecodeError("bad-field", f"role={role} state={state}") from None
    # Reserved flag bits are ignored so a later version can define them without breaking v1 receivers.
    return Beat(role, state, seq, boot_id, serial, digest, Flag(flags & int(_KNOWN_FLAGS)))
