"""What lvs.cf means: the semantic rules that turn grammar.py's tree into model.py's objects.

Reads each value with its keys.py type and reports every bad line (not just the first) as a
Diagnostic at the offending value, with did-you-mean hints for misspelt keys and blocks.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from .grammar import BLOCKS, Assign, Block, Diagnostic
from .keys import ALL_NAMES, BY_SECTION, SECTIONS, BadValue, Seconds, closest, did_you_mean
from .model import Config, Failover, Position, Server, ServiceKind, Virtual

_TITLE = {
    "global": "the global settings",
    "failover": "a failover block",
    "virtual": "a virtual block",
    "server": "a server block",
}
# Which blocks may open where: the root holds failover/virtual, a virtual holds servers.
_CHILDREN = {"global": ("failover", "virtual"), "virtual": ("server",), "failover": (), "server": ()}


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
        meant = closest(a.key, BY_SECTION[section])
        hint = did_you_mean(a.key, BY_SECTION[section]) or did_you_mean(a.key, ALL_NAMES)
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
                    hint = did_you_mean(b.kind, allowed or BLOCKS)
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
                compile_expect(obj.expect)
            except ValueError as e:
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
        if cfg.metrics_address is not None and cfg.metrics_port is None:
            self.warn(at["metrics_address"], "'metrics_address' has no effect without 'metrics_port'")
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
            first = seen.setdefault(f.address.ip, f)
            if first is not f:
                self.error(
                    f.positions["address"],
                    f"VIP {f.address.ip} is already used by failover '{first.name}'"
                    f" (line {first.positions['address'].line})",
                )
        # A virtual service is its fwmark, or its address, protocol and port.
        services: dict[tuple[object, ...], Virtual] = {}
        for v in cfg.virtuals:
            if v.address is None:
                continue
            ident = ("fwmark", v.fwmark) if v.fwmark else (v.address.ip, v.protocol, v.port)
            owner = services.setdefault(ident, v)
            if owner is not v:
                what = f"fwmark {v.fwmark}" if v.fwmark else f"{v.address.ip} {v.protocol} port {v.port}"
                self.error(
                    v.positions.get("fwmark" if v.fwmark else "address", v.positions[""]),
                    f"{what} is already used by virtual '{owner.name}' (line {owner.positions[''].line})",
                )


# RE2's \z (Python's \Z) not after an escaped backslash: the very end, so no retry without a final newline.
_END_OF_TEXT = re.compile(r"(?<!\\)(?:\\\\)*\\z")


@functools.lru_cache(maxsize=1024)
def compile_expect(pattern: str) -> Callable[[str], bool]:
    """The matcher of a ``use_regex = 1`` expect: True when the pattern occurs anywhere in the text.

    RE2 (google-re2), whose time is linear in the answer: no pattern can stall pulse's event loop, as
    ``(a+)+$`` does with Python's re. Python's syntax without backreferences and look-around; ``$`` ends
    the text or stands before its final newline, as in Python. ValueError (RE2's message) if it does not
    compile.
    """
    import re2  # type: ignore[import-untyped]  # ~2.7 MB RSS: paid only by files with use_regex = 1

    options = re2.Options()
    options.log_errors = False  # the caller reports it; RE2 would also print to stderr
    try:
        regex = re2.compile(pattern, options)
    except re2.error as e:
        reason = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        if _python_accepts(pattern):
            reason += " (RE2 has no backreferences or look-around, and writes Python's \\Z as \\z)"
        raise ValueError(reason) from None
    moved_end = _END_OF_TEXT.search(pattern) is None

    def matches(text: str) -> bool:
        if regex.search(text) is not None:
            return True
        # RE2's $ is only the very end: try the text without its final newline too (Python's $ rule).
        return moved_end and text.endswith("\n") and regex.search(text[:-1]) is not None

    return matches


def _python_accepts(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError):
        return False
    return True


def build(root: Block, path: str) -> tuple[Config, list[Diagnostic]]:
    """The model for a parsed tree, and every diagnostic (errors and warnings) found."""
    b = _Builder(path)
    return b.config(root), b.diags
