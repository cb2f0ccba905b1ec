"""Form values -> a new Config -> lvs.cf text, checked by the project's own reader; and saving it.

Nothing here concatenates form text into lvs.cf: each field is turned into a typed value (with the
reader's own value types, so the messages match ``pulse --check``), the model is rebuilt with
``dataclasses.replace``, and the writer produces the text, which is then read back with ``loads``.
Form text that could start a new line or block (newline, CR, braces, double quotes, NUL, other
control characters) is refused before any of that.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import hashlib
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from ..config import ConfigError, Diagnostic, load, loads, write
from ..config.grammar import Value
from ..config.keys import BY_SECTION, BadValue, escape, unescape
from ..config.model import Config, DeviceAddress, Failover, ServiceKind
from ..config.runnable import check_diagnostics
from ..fileutil import BACKUP_STAMP, atomic_write, locked

FORBIDDEN = set('\n\r{}"\x00')  # in fields that are not quoted free text (names, addresses, numbers)
# Characters that end a line for some reader (Python's splitlines, editors) or hide text: never in a field.
HIDDEN = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
MAX_FIELD = 1024
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class FieldErrors(Exception):
    """Field name -> message; "" holds errors that belong to no one field."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k or 'form'}: {v}" for k, v in errors.items()))
        self.errors = errors


def check_text(text: str, free_text: bool = False) -> str | None:
    """Why a raw form value is refused, or None. Applied to every field before anything else.

    ``free_text``: a value the writer puts in double quotes and escapes (send, expect, commands),
    where quotes and braces are just characters; line breaks and control characters never pass.
    """
    if len(text) > MAX_FIELD:
        return f"at most {MAX_FIELD} characters"
    bad = sorted(set("\n\r\x00" if free_text else FORBIDDEN) & set(text))
    if bad:
        shown = ", ".join(
            {"\n": "newline", "\r": "carriage return", "\x00": "NUL"}.get(c, repr(c)) for c in bad
        )
        return f"must not contain {shown}"
    hidden = next((c for c in text if unicodedata.category(c) in HIDDEN), None)
    if hidden is not None:
        return f"must not contain control, format or line-separator characters (U+{ord(hidden):04X})"
    return None


# --------------------------------------------------------------- one field -> one typed value


def _word(text: str) -> list[Value]:
    return [Value("word", w, 0) for w in text.split()]


def _read(section: str, key: str, text: str) -> Any:
    """The typed value of ``text`` for ``key``, read by the reader's own type (BadValue if wrong)."""
    return BY_SECTION[section][key].vtype.read(_word(text))


class Form:
    """The fields of one submitted form, read one by one; every problem is collected, none raised early."""

    def __init__(self, data: Mapping[str, str]) -> None:
        self.data = data
        self.errors: dict[str, str] = {}

    def raw(self, name: str, free_text: bool = False) -> str:
        text = self.data.get(name, "")
        why = check_text(text, free_text)
        if why:
            self.errors[name] = why
            return ""
        return text.strip()

    def _given(self, name: str, optional: bool, free_text: bool = False) -> str | None:
        """The field's text, or None when it is refused, or empty (an error unless optional)."""
        text = self.raw(name, free_text)
        if name in self.errors:
            return None
        if not text and not optional:
            self.errors[name] = "required"
        return text or None

    def typed(self, name: str, section: str, key: str | None = None, optional: bool = False) -> Any:
        text = self._given(name, optional)
        if text is None:
            return None
        try:
            return _read(section, key or name, text)
        except BadValue as e:
            self.errors[name] = e.message
            return None

    def string(self, name: str, optional: bool = True, escapes: bool = False) -> str | None:
        """Free text (quoted by the writer). ``escapes``: C escapes (\\r\\n) as in lvs.cf are decoded."""
        text = self._given(name, optional, free_text=True)
        if text is None or not escapes:
            return text
        try:
            return unescape(text)
        except BadValue as e:
            self.errors[name] = e.message
            return None

    def flag(self, name: str) -> bool:
        return self.data.get(name) in ("1", "on", "yes")

    def choice(self, name: str, words: tuple[str, ...]) -> str | None:
        text = self.raw(name)
        if text not in words:
            self.errors[name] = f"one of: {', '.join(words)}"
            return None
        return text

    def done(self) -> None:
        if self.errors:
            raise FieldErrors(self.errors)


# --------------------------------------------------------------- the pages' edits


GLOBAL_FIELDS = ("primary", "network", "service")
REDUNDANCY_FIELDS = (
    "backup_active",
    "backup",
    "primary_private",
    "backup_private",
    "keepalive",
    "deadtime",
    "heartbeat_port",
)
FAILOVER_FIELDS = (
    "name",
    "active",
    "vip",
    "device",
    "vip_nmask",
    "port",
    "send",
    "expect",
    "use_regex",
    "timeout",
    "start_cmd",
    "stop_cmd",
)


def edit_global(cfg: Config, data: Mapping[str, str]) -> Config:
    f = Form(data)
    primary = f.typed("primary", "global")
    network = f.choice("network", ("nat", "direct", "tunnel"))
    service = f.choice("service", ("fos", "lvs"))
    f.done()
    return dataclasses.replace(
        cfg,
        primary=primary,
        network=_read("global", "network", network or "nat"),
        service=_read("global", "service", service or "fos"),
    )


def edit_redundancy(cfg: Config, data: Mapping[str, str]) -> Config:
    f = Form(data)
    values = {
        "backup_active": f.flag("backup_active"),
        "backup": f.typed("backup", "global", optional=True),
        "primary_private": f.typed("primary_private", "global", optional=True),
        "backup_private": f.typed("backup_private", "global", optional=True),
        "keepalive": f.typed("keepalive", "global"),
        "deadtime": f.typed("deadtime", "global"),
        "heartbeat_port": f.typed("heartbeat_port", "global"),
    }
    f.done()
    return dataclasses.replace(cfg, **values)


def failover_values(data: Mapping[str, str]) -> dict[str, Any]:
    """The typed fields of the failover form (FieldErrors if any is wrong)."""
    f = Form(data)
    name = f.raw("name")
    if "name" not in f.errors and not NAME_RE.fullmatch(name):
        f.errors["name"] = "letters, digits, '_', '.', '-' (at most 64, not starting with '.' or '-')"
    ip, device = f.raw("vip"), f.raw("device")
    address = None
    if "vip" not in f.errors and "device" not in f.errors:
        if not ip:
            f.errors["vip"] = "required"
        elif not device:
            f.errors["device"] = "required, e.g. eth0:1"
        else:
            try:
                address = _read("failover", "address", f"{ip} {device}")
            except BadValue as e:
                f.errors["device" if e.index else "vip"] = e.message
    values = {
        "name": name,
        "active": f.flag("active"),
        "address": address,
        "vip_nmask": f.typed("vip_nmask", "failover", optional=True),
        "port": f.typed("port", "failover"),
        "send": f.string("send", escapes=True),
        "expect": f.string("expect", escapes=True),
        "use_regex": f.flag("use_regex"),
        "timeout": f.typed("timeout", "failover"),
        "start_cmd": f.string("start_cmd", optional=False),
        "stop_cmd": f.string("stop_cmd", optional=False),
    }
    for key in ("send", "expect"):
        max_len = BY_SECTION["failover"][key].vtype.max_len  # type: ignore[attr-defined]
        if values[key] is not None and len(values[key]) > max_len:
            f.errors[key] = f"at most {max_len} characters"
    f.done()
    return values


def edit_failover(cfg: Config, old_name: str | None, data: Mapping[str, str]) -> Config:
    """Add (old_name None) or change a failover block; fields the form lacks are kept."""
    values = failover_values(data)
    if old_name is None:
        if any(f.name == values["name"] for f in cfg.failovers):
            raise FieldErrors({"name": f"a failover service named '{values['name']}' exists already"})
        return dataclasses.replace(cfg, failovers=(*cfg.failovers, Failover(**values)))
    old = find_failover(cfg, old_name)
    if values["name"] != old_name and any(f.name == values["name"] for f in cfg.failovers):
        raise FieldErrors({"name": f"a failover service named '{values['name']}' exists already"})
    new = dataclasses.replace(old, **values)
    return dataclasses.replace(cfg, failovers=tuple(new if f is old else f for f in cfg.failovers))


def delete_failover(cfg: Config, name: str) -> Config:
    old = find_failover(cfg, name)
    return dataclasses.replace(cfg, failovers=tuple(f for f in cfg.failovers if f is not old))


def set_active(cfg: Config, name: str, active: bool) -> Config:
    old = find_failover(cfg, name)
    new = dataclasses.replace(old, active=active)
    return dataclasses.replace(cfg, failovers=tuple(new if f is old else f for f in cfg.failovers))


def find_failover(cfg: Config, name: str) -> Failover:
    for f in cfg.failovers:
        if f.name == name:
            return f
    raise KeyError(name)


def form_values(cfg: Config, fields: tuple[str, ...], fo: Failover | None = None) -> dict[str, str]:
    """What a form shows for the current model: the text a user would type."""
    out: dict[str, str] = {}
    for name in fields:
        if fo is not None:
            value: Any
            if name == "vip":
                value = fo.address.ip if fo.address else None
            elif name == "device":
                value = fo.address.device if fo.address else None
            else:
                value = getattr(fo, name)
            section = "failover"
        else:
            value, section = getattr(cfg, name), "global"
        if value is None:
            out[name] = ""
        elif isinstance(value, bool):
            out[name] = "1" if value else ""
        elif name in ("send", "expect"):
            out[name] = escape(value)  # shown as lvs.cf writes it: \r\n, not a line break
        elif isinstance(value, str | IPv4Address | DeviceAddress) or name in ("name", "vip", "device"):
            out[name] = str(value)
        else:
            key = BY_SECTION[section].get(name)
            out[name] = key.vtype.write(value) if key else str(value)
    return out


# --------------------------------------------------------------- the file: read, propose, save


@dataclass
class Current:
    """The file as it is on disk: its bytes' digest, its text, and its model (or why there is none)."""

    path: Path
    text: str
    sha256: str
    cfg: Config | None
    errors: list[Diagnostic] = field(default_factory=list)
    missing: bool = False
    encoding: str = "utf-8"  # an old latin-1 file is written back in latin-1 (if it reads back the same)


def decode(data: bytes) -> tuple[str, str]:
    """The text of lvs.cf bytes and their encoding, by config.load's rule: UTF-8, else latin-1."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def read_current(path: Path) -> Current:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Current(path, "", "", None, missing=True)
    except OSError as e:
        return Current(path, "", "", None, [Diagnostic(str(path), 0, 0, f"cannot read file: {e.strerror}")])
    sha = hashlib.sha256(data).hexdigest()
    text, encoding = decode(data)
    try:
        cfg, _ = loads(text, str(path))
    except ConfigError as e:
        return Current(path, text, sha, None, e.diagnostics, encoding=encoding)
    return Current(path, text, sha, cfg, encoding=encoding)


@dataclass
class Proposal:
    """A checked new file: its text, the diff against the base, and the reader's warnings."""

    text: str
    diff: list[str]
    warnings: list[str]
    base_sha256: str
    summary: str
    encoding: str = "utf-8"
    serial_no: int = 0  # the new file's


def propose(
    current: Current,
    new_cfg: Config,
    summary: str,
    fields: tuple[str, ...] = (),
    block: str | tuple[str, ...] | None = None,
) -> Proposal:
    """Serial bumped, written by the writer, read back by the reader; FieldErrors when it does not pass.

    ``fields``/``block``: the form's fields and the block it edits (map_diagnostics), to place the errors.
    An LVS file's proposal also carries what ``pulse --check`` warns this host would run otherwise.
    """
    assert current.cfg is not None
    new_cfg = dataclasses.replace(new_cfg, serial_no=(current.cfg.serial_no or 0) + 1)
    text = write(new_cfg)
    try:
        back, warnings = loads(text, str(current.path))
    except ConfigError as e:
        raise FieldErrors(map_diagnostics(text, e.diagnostics, fields, block)) from None
    if back.service is ServiceKind.LVS:
        warnings = sorted([*warnings, *check_diagnostics(back)], key=lambda d: (d.line, d.col))
    diff = list(
        difflib.unified_diff(
            # "\n" only, as the reader counts lines: splitlines() would also break at U+2028 or U+0085.
            current.text.rstrip("\n").split("\n"),
            text.rstrip("\n").split("\n"),
            fromfile=f"{current.path} (now)",
            tofile=f"{current.path} (after saving)",
            lineterm="",
        )
    )
    try:
        data = text.encode(current.encoding)
    except UnicodeEncodeError as e:
        bad = text[e.start]
        raise FieldErrors(
            {"": f"{current.path} is a latin-1 file: {bad!r} cannot be written in it"}
        ) from None
    why = misread(text, data)
    if why:
        raise FieldErrors({"": f"{current.path} is a latin-1 file: {why}"})
    notes = [f"line {w.line}: {w.message}" for w in warnings]
    comments = sum(1 for line in current.text.split("\n") if line.lstrip().startswith("#"))
    if comments:
        # The writer gives the canonical file: say so before the admin loses their notes.
        notes.insert(0, f"the {comments} comment line(s) of the current file are not kept (see the backup)")
    return Proposal(text, diff, notes, current.sha256, summary, current.encoding, new_cfg.serial_no or 0)


def map_diagnostics(
    text: str, diags: list[Diagnostic], fields: tuple[str, ...], block: str | tuple[str, ...] | None = None
) -> dict[str, str]:
    """Put each reader error next to the form field it is about, by the key on its line, else at top.

    ``block``: the failover or virtual block the form edits (its keys map to the form's fields), or
    (virtual, server) for a real server's form; None for the global settings.
    """
    where = block if isinstance(block, tuple) else (block,) if block else ()
    lines = text.split("\n")
    out: dict[str, str] = {}

    def add(name: str, message: str) -> None:
        out[name] = f"{out[name]}; {message}" if name in out else message

    for d in diags:
        target = ""
        line = lines[d.line - 1] if 0 < d.line <= len(lines) else ""
        m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
        key = m.group(1) if m else None
        if key == "address" and "vip" in fields:
            key = "vip"
        in_right_block = _block_of(lines, d.line) == where
        if key in fields and in_right_block:
            target = key
        else:
            quoted = [k for k in re.findall(r"'([a-z_]+)'", d.message) if k in fields]
            if quoted and (key is None or in_right_block):
                target = quoted[0]
        add(target, d.message)
    return out


def _block_of(lines: list[str], lineno: int) -> tuple[str, ...]:
    """The names of the blocks a 1-based line is in (or heads): () for the global settings,
    ("web",) in failover or virtual web, ("web", "rs1") in its server rs1."""
    path: list[str] = []
    for i in range(min(lineno, len(lines))):
        m = re.match(r"\s*(failover|virtual|server)\s+(\S+)\s*\{", lines[i])
        if m:
            path.append(m.group(2))
        elif lines[i].strip() == "}" and i != lineno - 1 and path:  # a closing line is in its block
            path.pop()
    return tuple(path)


def misread(text: str, data: bytes) -> str | None:
    """Why ``data`` (``text`` encoded) would be read back as other text, or None when it reads as ``text``.

    Latin-1 bytes that happen to form UTF-8 (typed "ï»¿" is EF BB BF) are read as UTF-8 (U+FEFF).
    """
    back, _ = decode(data)
    if back == text:
        return None
    i = next(
        (i for i, (a, b) in enumerate(zip(text, back, strict=False)) if a != b), min(len(text), len(back))
    )
    if i >= len(back):
        return "the end of the file would be lost when it is read back"
    typed = text[i : i + len(back[i].encode("utf-8"))]
    return (
        f"{typed!r} would be saved as bytes that pulse reads as UTF-8, as U+{ord(back[i]):04X}:"
        " convert the file to UTF-8 first (iconv -f latin1 -t utf8) or leave these characters out"
    )


class NotSaved(Exception):
    """Nothing was written; the message says why."""


class Conflict(NotSaved):
    """The file changed since the edit was proposed: nothing was written."""


class Misread(NotSaved):
    """The written bytes, read back by pulse's own loader, are not the text the admin confirmed."""


def backup_name(path: Path, now: datetime.datetime, exists: Callable[[Path], bool] = os.path.exists) -> Path:
    stem = path.with_name(f"{path.name}.{now.strftime(BACKUP_STAMP)}")
    candidate, n = stem, 0
    while exists(candidate):
        n += 1
        candidate = stem.with_name(f"{stem.name}.{n}")
    return candidate


def save(
    path: Path, proposal: Proposal, now: datetime.datetime | None = None, lock_timeout: float = 30.0
) -> Path:
    """Keep the current file as a timestamped backup, then replace it atomically; returns the backup.

    Under ``fileutil.locked(path)``, the lock ``pulse sync`` takes on this node when it is the
    receiving partner. Refused (Conflict) when the file is no longer the one the proposal was made
    from: checked first, and again on the file's bytes right before the rename (a writer that takes
    no lock, an editor say, may land meanwhile). Refused (Misread) when the new file, read back with
    pulse's own loader (config.load) before the rename, does not give the model of the confirmed text.
    """
    with locked(path, timeout=lock_timeout):  # the name as given: pulse sync locks that one too
        real = path.resolve()  # through a symlink: edit the real file, keep the link
        data = real.read_bytes()
        _check_unchanged(real, data, proposal)
        st = real.stat()
        mode, owner = stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)
        confirmed, _ = loads(proposal.text, str(real))

        def last_checks(tmp: Path) -> None:
            try:
                written, _ = load(tmp)
            except ConfigError as e:
                raise Misread(
                    f"{real}: the new file would not be read by pulse, nothing was written: {e}"
                ) from None
            if written != confirmed:
                raise Misread(
                    f"{real}: pulse would read the new file differently from the diff you confirmed;"
                    " nothing was written"
                )
            _check_unchanged(real, real.read_bytes(), proposal)

        backup = backup_name(real, now or datetime.datetime.now())
        atomic_write(backup, data, mode, owner)
        try:
            atomic_write(
                real, proposal.text.encode(proposal.encoding), mode, owner, before_rename=last_checks
            )
        except BaseException:
            backup.unlink(missing_ok=True)  # nothing was replaced: no backup of it either
            raise
    return backup


def _check_unchanged(path: Path, data: bytes, proposal: Proposal) -> None:
    if hashlib.sha256(data).hexdigest() != proposal.base_sha256:
        raise Conflict(
            f"{path} changed since this edit was prepared; nothing was written: make the edit again"
        )
