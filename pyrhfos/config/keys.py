"""The lvs.cf key table: every key, the block it belongs to, and its value type.

validate.py reads values and writer.py writes them through it; the value types, escapes and
near-miss hints live here because the table is built from them.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from ipaddress import AddressValueError, IPv4Address
from typing import Any

from .grammar import Value
from .model import DeviceAddress, NetworkMode, RshCommand, ServiceKind

# ------------------------------------------------------------------ value types


class BadValue(Exception):
    """A value that does not fit its key's type; ``index`` is the offending word."""

    def __init__(self, message: str, index: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.index = index


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'"}
_ESCAPE_RE = re.compile(r"\\(x[0-9A-Fa-f]{2}|x|.)", re.DOTALL)


def unescape(body: str) -> str:
    """Decode C escapes; an unknown one (``\\d`` in a regex) is kept as written."""
    if "\\" not in body:
        return body

    def one(m: re.Match[str]) -> str:
        e = m.group(1)
        if e == "x":
            raise BadValue("'\\x' must be followed by two hex digits")
        if e[0] == "x":
            return chr(int(e[1:], 16))
        return _ESCAPES.get(e, m.group(0))

    return _ESCAPE_RE.sub(one, body)


def escape(text: str) -> str:
    """The inverse of unescape, for the writer: always yields a valid quoted body."""
    out = []
    for ch in text:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F:  # C0, DEL, C1 (U+0085 ends a line for some)
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``word`` is most likely a misspelling of, if any is close enough."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A "; did you mean 'X'?" suffix for a message, or "" when nothing is close."""
    close = closest(word, candidates)
    return f"; did you mean '{close}'?" if close else ""


def _text(v: Value) -> str:
    """A word as text: quotes removed and escapes decoded (Piranha took "80" for 80)."""
    if v.kind in ("dq", "sq"):
        return unescape(v.raw[1:-1])
    return v.raw


def _one(values: list[Value]) -> str:
    if not values:
        raise BadValue("missing value")
    if len(values) > 1:
        raise BadValue(f"unexpected '{values[1].raw}': one value expected", 1)
    return _text(values[0])


class VType:
    """A value type: reads the words of a value, writes the canonical text."""

    def read(self, values: list[Value]) -> Any:
        raise NotImplementedError

    def write(self, value: Any) -> str:
        return str(value)


class Int(VType):
    def __init__(self, lo: int = 0, hi: int | None = None) -> None:
        self.lo, self.hi = lo, hi

    def read(self, values: list[Value]) -> int:
        text = _one(values)
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise BadValue(f"'{text}' is not an integer")
        if len(text) > 30:  # out of any range; and int() refuses very long digit strings
            raise BadValue(f"'{text[:12]}...' is out of range")
        n = int(text)
        if n < self.lo or (self.hi is not None and n > self.hi):
            span = f"{self.lo}-{self.hi}" if self.hi is not None else f">= {self.lo}"
            raise BadValue(f"{n} is out of range ({span})")
        return n


class Bool(VType):
    def read(self, values: list[Value]) -> bool:
        text = _one(values)
        if text not in ("0", "1"):
            raise BadValue(f"'{text}' is not 0 or 1")
        return text == "1"

    def write(self, value: bool) -> str:
        return "1" if value else "0"


class Seconds(VType):
    """Seconds, decimals allowed (a pyrhfos extension: Piranha took whole seconds)."""

    # A day: more is a typo, and a VIP lease of ceil(deadtime) s must fit the kernel's 32-bit lifetime
    # without reaching its "forever" value.
    MAXIMUM = 86400.0

    def __init__(self, minimum: float = 0.0) -> None:
        self.minimum = minimum

    def read(self, values: list[Value]) -> float:
        text = _one(values)
        if not re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", text):
            raise BadValue(f"'{text}' is not a number of seconds")
        x = float(text)
        if not math.isfinite(x) or x > self.MAXIMUM:
            raise BadValue(f"{text} is too large (maximum {self.MAXIMUM:g})")
        if x <= 0 or x < self.minimum:
            raise BadValue(
                f"{text} is too small (minimum {self.write(self.minimum) if self.minimum else 'above 0'})"
            )
        return x

    def write(self, value: float) -> str:
        if float(value).is_integer():
            return str(int(value))
        return format(Decimal(repr(float(value))), "f")  # shortest, never 1e-05


class IPv4(VType):
    def read(self, values: list[Value]) -> IPv4Address:
        return _ip(_one(values))


def _ip(text: str, index: int = 0) -> IPv4Address:
    try:
        return IPv4Address(text)
    except AddressValueError:
        raise BadValue(f"'{text}' is not an IPv4 address", index) from None


def _netmask_ok(mask: IPv4Address) -> bool:
    inverted = ~int(mask) & 0xFFFFFFFF
    return inverted & (inverted + 1) == 0  # ones then zeros


class Netmask(VType):
    def read(self, values: list[Value]) -> IPv4Address:
        mask = _ip(_one(values))
        if not _netmask_ok(mask):
            raise BadValue(f"'{mask}' is not a valid netmask (its one-bits must be contiguous)")
        return mask


_DEVICE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}(:[A-Za-z0-9_]{1,15})?")


class DevAddr(VType):
    def read(self, values: list[Value]) -> DeviceAddress:
        if not values:
            raise BadValue("missing value")
        ip = _ip(_text(values[0]))
        if len(values) == 1:
            raise BadValue(f"'{ip}' needs its device too, e.g. '{ip} eth0:1'")
        if len(values) > 2:
            raise BadValue(f"unexpected '{values[2].raw}': expected 'IP DEV'", 2)
        device = _text(values[1])
        if not _DEVICE_RE.fullmatch(device):
            raise BadValue(f"'{device}' is not an interface name like eth0 or eth0:1", 1)
        return DeviceAddress(ip, device)

    def write(self, value: DeviceAddress) -> str:
        return f"{value.ip} {value.device}"


class Str(VType):
    def __init__(self, max_len: int | None = None, latin1: bool = False) -> None:
        self.max_len = max_len
        self.latin1 = latin1  # sent or matched as bytes: one byte per character

    def read(self, values: list[Value]) -> str:
        if len(values) > 1:
            raise BadValue(f"the value has {len(values)} words: put it in double quotes")
        text = _one(values)
        if self.max_len is not None and len(text) > self.max_len:
            raise BadValue(f"is {len(text)} characters long; at most {self.max_len} are allowed")
        if self.latin1:
            wide = next((c for c in text if ord(c) > 0xFF), None)
            if wide is not None:
                raise BadValue(
                    f"U+{ord(wide):04X} is not a byte: probe strings are bytes; write each byte as \\xNN"
                )
        return text

    def write(self, value: str) -> str:
        return f'"{escape(value)}"'


class Choice(VType):
    """One of a fixed set of bare words, optionally mapped to an enum."""

    def __init__(self, words: Iterable[str], enum: type | None = None) -> None:
        self.words = tuple(words)
        self.enum = enum

    def read(self, values: list[Value]) -> Any:
        text = _one(values)
        if text not in self.words:
            raise BadValue(f"'{text}' is not one of: {', '.join(self.words)}{did_you_mean(text, self.words)}")
        return self.enum(text) if self.enum else text

    def write(self, value: Any) -> str:
        return str(value.value) if self.enum else str(value)  # enum values are the words


class DebugLevel(Choice):
    def __init__(self) -> None:
        super().__init__(("NONE", "LOW", "HIGH"))

    def read(self, values: list[Value]) -> str:
        text = _one(values)
        return text if text.isdigit() and text.isascii() else super().read(values)


class Word(VType):
    def read(self, values: list[Value]) -> str:
        text = _one(values)
        if not _DEVICE_RE.fullmatch(text):
            raise BadValue(f"'{text}' is not an interface name")
        return text


# ------------------------------------------------------------------ the key table


@dataclass(frozen=True)
class Key:
    """One key: where it may appear and its type."""

    name: str
    section: str  # "global" | "failover" | "virtual" | "server"
    vtype: VType

    @property
    def field(self) -> str:
        return self.name  # model fields are named after their keys


_PORT = Int(1, 65535)
_TIMEOUT = Seconds()
_PROBE = Str(max_len=255, latin1=True)

# The order is the order the writer uses (Piranha's GUI order). Defaults live in model.py.
# "GUI": written by Piranha's GUI (seen in real files); "pyrhfos extension": not in Piranha.
KEYS: tuple[Key, ...] = (
    Key("serial_no", "global", Int(0)),
    Key("primary", "global", IPv4()),
    Key("primary_private", "global", IPv4()),
    Key("service", "global", Choice(("lvs", "fos"), ServiceKind)),
    Key("backup_active", "global", Bool()),
    Key("backup", "global", IPv4()),
    Key("backup_private", "global", IPv4()),
    Key("heartbeat", "global", Bool()),
    Key("heartbeat_port", "global", _PORT),
    Key("keepalive", "global", Seconds(0.05)),
    Key("deadtime", "global", _TIMEOUT),
    Key("network", "global", Choice(("nat", "direct", "tunnel"), NetworkMode)),
    Key("nat_router", "global", DevAddr()),
    Key("nat_nmask", "global", Netmask()),
    Key("debug_level", "global", DebugLevel()),
    Key("monitor_links", "global", Bool()),
    Key("syncdaemon", "global", Bool()),
    Key("syncd_iface", "global", Word()),
    Key("syncd_id", "global", Int(0)),
    Key("rsh_command", "global", Choice(("rsh", "ssh"), RshCommand)),
    Key("tcp_timeout", "global", Int(0)),
    Key("tcpfin_timeout", "global", Int(0)),
    Key("udp_timeout", "global", Int(0)),
    Key("reservation_conflict_action", "global", Choice(("nothing", "preempt"))),
    Key("hard_shutdown", "global", Bool()),
    Key("primary_shared", "global", IPv4()),
    Key("backup_shared", "global", IPv4()),
    Key("active_cmd", "global", Str()),
    Key("inactive_cmd", "global", Str()),
    Key("ipvsadm", "global", Str()),  # GUI
    Key("sync", "global", Bool()),  # GUI
    Key("heartbeat_key", "global", Str()),  # pyrhfos extension
    Key("metrics_port", "global", _PORT),  # pyrhfos extension
    Key("metrics_address", "global", IPv4()),  # pyrhfos extension
    Key("address", "failover", DevAddr()),
    Key("vip_nmask", "failover", Netmask()),
    Key("active", "failover", Bool()),
    Key("port", "failover", _PORT),
    Key("timeout", "failover", _TIMEOUT),
    Key("heartbeat", "failover", Bool()),  # GUI
    Key("send", "failover", _PROBE),
    Key("expect", "failover", _PROBE),
    Key("use_regex", "failover", Bool()),
    Key("send_program", "failover", Str()),
    Key("expect_program", "failover", Str()),  # GUI
    Key("reentry", "failover", _TIMEOUT),
    Key("start_cmd", "failover", Str()),
    Key("stop_cmd", "failover", Str()),
    Key("active", "virtual", Bool()),
    Key("address", "virtual", DevAddr()),
    Key("sorry_server", "virtual", IPv4()),
    Key("vip_nmask", "virtual", Netmask()),
    Key("fwmark", "virtual", Int(0)),
    Key("port", "virtual", _PORT),
    Key("persistent", "virtual", Int(0)),
    Key("pmask", "virtual", Netmask()),
    Key("send", "virtual", _PROBE),
    Key("expect", "virtual", _PROBE),
    Key("use_regex", "virtual", Bool()),
    Key("send_program", "virtual", Str()),
    Key("expect_program", "virtual", Str()),  # GUI
    Key("load_monitor", "virtual", Choice(("none", "uptime", "rup", "ruptime"))),
    Key("scheduler", "virtual", Choice(("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq"))),
    Key("protocol", "virtual", Choice(("tcp", "udp"))),
    Key("timeout", "virtual", _TIMEOUT),
    Key("reentry", "virtual", _TIMEOUT),
    Key("quiesce_server", "virtual", Bool()),
    Key("client_monitor", "virtual", Str()),  # GUI
    Key("address", "server", IPv4()),
    Key("nmask", "server", Netmask()),  # GUI
    Key("active", "server", Bool()),
    Key("port", "server", _PORT),
    Key("weight", "server", Int(0)),
)

SECTIONS = ("global", "failover", "virtual", "server")
BY_SECTION: dict[str, dict[str, Key]] = {s: {k.name: k for k in KEYS if k.section == s} for s in SECTIONS}
ALL_NAMES = tuple(dict.fromkeys(k.name for k in KEYS))
