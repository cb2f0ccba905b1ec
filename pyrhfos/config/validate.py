"""What lvs.cf means: the one table of keys and value types, and the semantic rules.

Turns grammar.py's positioned tree into model.py's immutable objects, reporting every bad
line (not just the first) as a Diagnostic at the offending value.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from ipaddress import AddressValueError, IPv4Address
from typing import Any

from .grammar import BLOCKS, Assign, Block, Diagnostic, Value
from .model import (
    Config,
    DeviceAddress,
    Failover,
    NetworkMode,
    Position,
    RshCommand,
    Server,
    ServiceKind,
    Virtual,
)

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

    doc = ""

    def read(self, values: list[Value]) -> Any:
        raise NotImplementedError

    def write(self, value: Any) -> str:
        return str(value)


class Int(VType):
    def __init__(self, lo: int = 0, hi: int | None = None, doc: str = "integer") -> None:
        self.lo, self.hi, self.doc = lo, hi, doc

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
    doc = "0 | 1"

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

    def __init__(self, minimum: float = 0.0, doc: str = "seconds") -> None:
        self.minimum, self.doc = minimum, doc

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
    doc = "IPv4 address"

    def read(self, values: list[Value]) -> IPv4Address:
        return _ip(_one(values))


def _ip(text: str, index: int = 0) -> IPv4Address:
    try:
        return IPv4Address(text)
    except AddressValueError:
        raise BadValue(f"'{text}' is not an IPv4 address", index) from None


def netmask_ok(mask: IPv4Address) -> bool:
    inverted = ~int(mask) & 0xFFFFFFFF
    return inverted & (inverted + 1) == 0  # ones then zeros


class Netmask(VType):
    doc = "netmask"

    def read(self, values: list[Value]) -> IPv4Address:
        mask = _ip(_one(values))
        if not netmask_ok(mask):
            raise BadValue(f"'{mask}' is not a valid netmask (its one-bits must be contiguous)")
        return mask


_DEVICE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}(:[A-Za-z0-9_]{1,15})?")


class DevAddr(VType):
    doc = "IP DEV[:N]"

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
    doc = "string"

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
        self.doc = " | ".join(self.words)

    def read(self, values: list[Value]) -> Any:
        text = _one(values)
        if text not in self.words:
            raise BadValue(
                f"'{text}' is not one of: {', '.join(self.words)}{_did_you_mean(text, self.words)}"
            )
        return self.enum(text) if self.enum else text

    def write(self, value: Any) -> str:
        return value.value if self.enum else value


class DebugLevel(Choice):
    def __init__(self) -> None:
        super().__init__(("NONE", "LOW", "HIGH"))
        self.doc = "NONE | LOW | HIGH | number"

    def read(self, values: list[Value]) -> str:
        text = _one(values)
        return text if text.isdigit() and text.isascii() else super().read(values)


class Word(VType):
    doc = "interface name"

    def read(self, values: list[Value]) -> str:
        text = _one(values)
        if not _DEVICE_RE.fullmatch(text):
            raise BadValue(f"'{text}' is not an interface name")
        return text


# ------------------------------------------------------------------ the key table


@dataclass(frozen=True)
class Key:
    """One key: where it may appear, its type, and whether pyrhfos added it."""

    name: str
    section: str  # "global" | "failover" | "virtual" | "server"
    vtype: VType
    origin: str = "piranha"  # "piranha" | "gui" (seen in real files) | "pyrhfos" (extension)

    @property
    def field(self) -> str:
        return self.name  # model fields are named after their keys


_PORT = Int(1, 65535, "port 1-65535")
_TIMEOUT = Seconds(doc="seconds > 0")
_PROBE = Str(max_len=255, latin1=True)

# The order is the order the writer uses (Piranha's GUI order). Defaults live in model.py.
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
    Key("keepalive", "global", Seconds(0.05, "seconds >= 0.05")),
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
    Key("tcp_timeout", "global", Int(0, doc="seconds")),
    Key("tcpfin_timeout", "global", Int(0, doc="seconds")),
    Key("udp_timeout", "global", Int(0, doc="seconds")),
    Key("reservation_conflict_action", "global", Choice(("nothing", "preempt"))),
    Key("hard_shutdown", "global", Bool()),
    Key("primary_shared", "global", IPv4()),
    Key("backup_shared", "global", IPv4()),
    Key("active_cmd", "global", Str()),
    Key("inactive_cmd", "global", Str()),
    Key("ipvsadm", "global", Str(), "gui"),
    Key("sync", "global", Bool(), "gui"),
    Key("heartbeat_key", "global", Str(), "pyrhfos"),
    Key("metrics_port", "global", _PORT, "pyrhfos"),
    Key("address", "failover", DevAddr()),
    Key("vip_nmask", "failover", Netmask()),
    Key("active", "failover", Bool()),
    Key("port", "failover", _PORT),
    Key("timeout", "failover", _TIMEOUT),
    Key("heartbeat", "failover", Bool(), "gui"),
    Key("send", "failover", _PROBE),
    Key("expect", "failover", _PROBE),
    Key("use_regex", "failover", Bool()),
    Key("send_program", "failover", Str()),
    Key("expect_program", "failover", Str(), "gui"),
    Key("reentry", "failover", _TIMEOUT),
    Key("start_cmd", "failover", Str()),
    Key("stop_cmd", "failover", Str()),
    Key("active", "virtual", Bool()),
    Key("address", "virtual", DevAddr()),
    Key("sorry_server", "virtual", IPv4()),
    Key("vip_nmask", "virtual", Netmask()),
    Key("fwmark", "virtual", Int(0)),
    Key("port", "virtual", _PORT),
    Key("persistent", "virtual", Int(0, doc="seconds")),
    Key("pmask", "virtual", Netmask()),
    Key("send", "virtual", _PROBE),
    Key("expect", "virtual", _PROBE),
    Key("use_regex", "virtual", Bool()),
    Key("send_program", "virtual", Str()),
    Key("expect_program", "virtual", Str(), "gui"),
    Key("load_monitor", "virtual", Choice(("none", "uptime", "rup", "ruptime"))),
    Key("scheduler", "virtual", Choice(("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq"))),
    Key("protocol", "virtual", Choice(("tcp", "udp"))),
    Key("timeout", "virtual", _TIMEOUT),
    Key("reentry", "virtual", _TIMEOUT),
    Key("quiesce_server", "virtual", Bool()),
    Key("client_monitor", "virtual", Str(), "gui"),
    Key("address", "server", IPv4()),
    Key("nmask", "server", Netmask(), "gui"),
    Key("active", "server", Bool()),
    Key("port", "server", _PORT),
    Key("weight", "server", Int(0)),
)

SECTIONS = ("global", "failover", "virtual", "server")
BY_SECTION: dict[str, dict[str, Key]] = {s: {k.name: k for k in KEYS if k.section == s} for s in SECTIONS}
ALL_NAMES = tuple(dict.fromkeys(k.name for k in KEYS))
_TITLE = {
    "global": "the global settings",
    "failover": "a failover block",
    "virtual": "a virtual block",
    "server": "a server block",
}
# Which blocks may open where: the root holds failover/virtual, a virtual holds servers.
_CHILDREN = {"global": ("failover", "virtual"), "virtual": ("server",), "failover": (), "server": ()}
_MODEL = {"global": Config, "failover": Failover, "virtual": Virtual, "server": Server}


def default(section: str, key: str) -> Any:
    """The default of a key, read from the model so there is one source of truth."""
    for f in dataclasses.fields(_MODEL[section]):
        if f.name == BY_SECTION[section][key].field:
            return f.default
    raise KeyError(key)


def _close(word: str, candidates: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = _close(word, candidates)
    return f"; did you mean '{close}'?" if close else ""


# ------------------------------------------------------------------ tree -> model


@dataclass
class _Section:
    """What one block's assignments yielded."""

    values: dict[str, Any]
    positions: dict[str, Position]
    present: set[str]  # keys written, even with a bad value (no "missing" error for them)

    def bad(self, key: str) -> bool:
        """Written with a bad value: already reported, so rules about it stay quiet."""
        return key in self.present and key not in self.values


class _Builder:
    def __init__(self, path: str) -> None:
        self.path = path
        self.diags: list[Diagnostic] = []

    def error(self, pos: Position, message: str, severity: str = "error") -> None:
        self.diags.append(Diagnostic(self.path, pos.line, pos.col, message, severity))

    def warn(self, pos: Position, message: str) -> None:
        self.error(pos, message, "warning")

    # -- one block's keys

    def section(self, block: Block, section: str) -> _Section:
        table = BY_SECTION[section]
        out = _Section({}, {"": Position(block.line, block.col)}, set())
        first: dict[str, Assign] = {}
        for a in block.assigns:
            spec = table.get(a.key)
            if spec is None:
                meant = self.unknown_key(a, section)
                if meant:
                    out.present.add(meant)  # no second error saying the meant key is missing
                continue
            if a.key in first:
                self.error(
                    Position(a.line, a.col),
                    f"duplicate key '{a.key}' (first set on line {first[a.key].line})",
                )
                continue
            first[a.key] = a
            out.present.add(a.key)
            if any(v.kind == "unterminated" for v in a.values):
                continue  # the grammar has said so
            try:
                value = spec.vtype.read(a.values)
            except BadValue as e:
                at = a.values[e.index] if a.values else a
                self.error(Position(at.line, at.col), f"bad value for '{a.key}': {e.message}")
                continue
            out.values[spec.field] = value
            out.positions[a.key] = Position(a.values[0].line, a.values[0].col)
        return out

    def unknown_key(self, a: Assign, section: str) -> str | None:
        """Report a key this section lacks; return the key of this section it resembles."""
        pos = Position(a.line, a.col)
        if a.key in BLOCKS:
            self.error(pos, f"'{a.key}' opens a block: write '{a.key} NAME {{'")
            return None
        homes = [s for s in SECTIONS if a.key in BY_SECTION[s]]
        if homes:
            where = " or ".join(_TITLE[s] for s in homes)
            self.error(pos, f"'{a.key}' is not allowed in {_TITLE[section]} (it belongs in {where})")
            return None
        meant = _close(a.key, BY_SECTION[section])
        hint = _did_you_mean(a.key, BY_SECTION[section]) or _did_you_mean(a.key, ALL_NAMES)
        self.error(pos, f"unknown key '{a.key}' in {_TITLE[section]}{hint}")
        return meant

    def children(self, block: Block, section: str) -> dict[str, list[Block]]:
        """Sub-blocks by kind, after reporting misplaced, unknown and duplicate ones."""
        allowed = _CHILDREN[section]
        out: dict[str, list[Block]] = {k: [] for k in allowed}
        names: dict[tuple[str, str], Block] = {}
        for b in block.blocks:
            pos = Position(b.line, b.col)
            if b.kind not in allowed:
                if b.kind in BLOCKS:
                    where = "inside a virtual block" if b.kind == "server" else "at the top level, not nested"
                    self.error(pos, f"'{b.kind}' blocks belong {where}")
                else:
                    hint = _did_you_mean(b.kind, allowed or BLOCKS)
                    self.error(pos, f"unknown block type '{b.kind}'{hint}")
                continue
            if (b.kind, b.name) in names:
                self.error(
                    Position(b.name_line, b.name_col),
                    f"duplicate {b.kind} name '{b.name}' (first on line {names[b.kind, b.name].line})",
                )
                getattr(self, b.kind)(b)  # still check its contents, then drop it
                continue
            names[b.kind, b.name] = b
            out[b.kind].append(b)
        return out

    # -- blocks

    def failover(self, block: Block) -> Failover:
        s = self.section(block, "failover")
        self.children(block, "failover")  # none allowed: reports any
        f = Failover(name=block.name, positions=s.positions, **s.values)
        for key in ("address", "port", "start_cmd", "stop_cmd"):
            if key not in s.present:
                self.error(s.positions[""], f"failover '{f.name}' has no '{key}' (it is mandatory)")
        self.probe(f, s, "failover")
        if f.active and f.address is not None and f.address.ip == IPv4Address(0):
            self.error(
                s.positions["address"], "0.0.0.0 is a placeholder, not a usable VIP for an active service"
            )
        return f

    def virtual(self, block: Block) -> Virtual:
        s = self.section(block, "virtual")
        servers = tuple(self.server(b) for b in self.children(block, "virtual")["server"])
        v = Virtual(name=block.name, servers=servers, positions=s.positions, **s.values)
        if "address" not in s.present:
            self.error(s.positions[""], f"virtual '{v.name}' has no 'address' (it is mandatory)")
        self.probe(v, s, "virtual")
        return v

    def server(self, block: Block) -> Server:
        s = self.section(block, "server")
        self.children(block, "server")
        server = Server(name=block.name, positions=s.positions, **s.values)
        if "address" not in s.present:
            self.error(s.positions[""], f"server '{server.name}' has no 'address' (it is mandatory)")
        return server

    def probe(self, obj: Failover | Virtual, s: _Section, kind: str) -> None:
        """send/expect/send_program rules shared by failover and virtual blocks."""
        if obj.use_regex and "expect" not in s.present:
            self.error(
                s.positions.get("use_regex", s.positions[""]), "'use_regex = 1' needs an 'expect' pattern"
            )
        if obj.use_regex and obj.expect is not None:
            try:
                re.compile(obj.expect)
            except (re.error, OverflowError, RecursionError) as e:
                self.error(s.positions["expect"], f"'expect' is not a valid regular expression: {e}")
        if obj.send is not None and obj.send_program is not None:
            message = "'send' and 'send_program' are both set: the program's output replaces 'send'"
            if kind == "failover":
                self.error(s.positions["send_program"], message)
            else:  # real GUI-written virtual blocks carry both; nanny ignores 'send' then
                self.warn(s.positions["send_program"], message)

    # -- the whole file

    def config(self, root: Block) -> Config:
        s = self.section(root, "global")
        s.positions[""] = Position(1, 1)
        blocks = self.children(root, "global")
        failovers = tuple(self.failover(b) for b in blocks["failover"])
        virtuals = tuple(self.virtual(b) for b in blocks["virtual"])
        cfg = Config(
            path=self.path, failovers=failovers, virtuals=virtuals, positions=s.positions, **s.values
        )
        self.globals(cfg, s)
        self.services(cfg, s)
        return cfg

    def globals(self, cfg: Config, s: _Section) -> None:
        at = s.positions
        top = Position(1, 1)
        if "primary" not in s.present:
            self.error(top, "'primary' is missing: the primary node's address is required")
        if cfg.backup is not None and cfg.backup == cfg.primary:
            self.error(at["backup"], "'backup' is the same address as 'primary'")
        if cfg.backup_active and "backup" not in s.present:
            self.error(at.get("backup_active", top), "'backup_active = 1' needs a 'backup' address")
        elif cfg.backup_active and cfg.backup == IPv4Address(0):
            self.error(at["backup"], "'backup = 0.0.0.0' with 'backup_active = 1': give the backup's address")
        pos = at.get("deadtime", at.get("keepalive", top))
        w = Seconds().write
        if s.bad("keepalive") or s.bad("deadtime"):
            return  # already reported; comparing with a default would only confuse
        if cfg.deadtime <= cfg.keepalive:
            self.error(
                pos, f"'deadtime' ({w(cfg.deadtime)}) must be greater than 'keepalive' ({w(cfg.keepalive)})"
            )
        elif cfg.deadtime < 2 * cfg.keepalive:
            self.warn(
                pos,
                f"'deadtime' ({w(cfg.deadtime)}) is less than twice 'keepalive' ({w(cfg.keepalive)}):"
                " one late heartbeat declares the partner dead",
            )

    def services(self, cfg: Config, s: _Section) -> None:
        if not s.bad("service"):
            self.service_kind(cfg, s)
        self.unique_vips(cfg)

    def service_kind(self, cfg: Config, s: _Section) -> None:
        # One error for a whole misplaced kind of block: not one per block.
        if cfg.service is ServiceKind.FOS:
            if cfg.virtuals:
                self.error(
                    cfg.virtuals[0].positions[""], "virtual blocks are not allowed with 'service = fos'"
                )
            if not cfg.active_failovers:
                self.error(s.positions["service"], "'service = fos' needs at least one active failover block")
        elif cfg.failovers:
            self.error(
                cfg.failovers[0].positions[""],
                "failover blocks need 'service = fos' in the global settings (this file is 'service = lvs')",
            )

    def unique_vips(self, cfg: Config) -> None:
        seen: dict[IPv4Address, Failover] = {}
        for f in cfg.failovers:
            if f.address is None or f.address.ip == IPv4Address(0):
                continue
            other = seen.setdefault(f.address.ip, f)
            if other is not f:
                self.error(
                    f.positions["address"],
                    f"VIP {f.address.ip} is already used by failover '{other.name}'"
                    f" (line {other.positions['address'].line})",
                )
        services: dict[tuple, Virtual] = {}
        for v in cfg.virtuals:
            if v.address is None:
                continue
            ident = ("fwmark", v.fwmark) if v.fwmark else (v.address.ip, v.protocol, v.port)
            other = services.setdefault(ident, v)
            if other is not v:
                what = f"fwmark {v.fwmark}" if v.fwmark else f"{v.address.ip} {v.protocol} port {v.port}"
                self.error(
                    v.positions.get("fwmark" if v.fwmark else "address", v.positions[""]),
                    f"{what} is already used by virtual '{other.name}' (line {other.positions[''].line})",
                )


def build(root: Block, path: str) -> tuple[Config, list[Diagnostic]]:
    """The model for a parsed tree, and every diagnostic (errors and warnings) found."""
    b = _Builder(path)
    return b.config(root), b.diags
