"""The lvs.cf grammar: pyparsing turns text into a tree of positioned statements.

Owns the lexical and block-structure errors (bad lines, unterminated strings and braces)
and the Diagnostic/ConfigError types; which keys exist is keys.py's, what they mean validate.py's.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

import pyparsing as pp

# Block keywords of the language; the top-level ones may not nest in each other.
TOP_BLOCKS = ("failover", "virtual")
BLOCKS = ("failover", "virtual", "server")


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a file, at a 1-based line and column."""

    path: str
    line: int
    col: int
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        tag = "warning: " if self.severity == "warning" else ""
        return f"{self.path}:{self.line}:{self.col}: {tag}{self.message}"


class ConfigError(Exception):
    """The file cannot be used; ``diagnostics`` holds every error, sorted by position."""

    def __init__(self, diagnostics: list[Diagnostic], warnings: list[Diagnostic] | None = None) -> None:
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.line, d.col))
        self.warnings = list(warnings or [])
        super().__init__("\n".join(str(d) for d in self.diagnostics))


@dataclass(slots=True)
class Value:
    """One word of a value as written: ``kind`` is dq, sq, word or unterminated."""

    kind: str
    raw: str
    loc: int
    line: int = 0
    col: int = 0


@dataclass(slots=True)
class Assign:
    """``key = value...`` with the position of the key."""

    key: str
    values: list[Value]
    loc: int
    line: int = 0
    col: int = 0


@dataclass(slots=True)
class Block:
    """``kind name {`` ... ``}``; the root block (kind "") holds the global settings."""

    kind: str
    name: str
    loc: int
    line: int = 1
    col: int = 1
    name_line: int = 1
    name_col: int = 1
    assigns: list[Assign] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)


@dataclass(slots=True)
class _Open:
    kind: str
    name: str
    loc: int
    name_loc: int


@dataclass(slots=True)
class _Close:
    loc: int


@dataclass(slots=True)
class _Bad:
    message: str
    loc: int


# ---------------------------------------------------------------- the grammar


def _build() -> pp.ParserElement:
    # Few, coarse elements: pyparsing's cost is per element tried, and a file is mostly
    # "key = value" lines (1000 failover blocks must parse in well under a second).
    value = pp.Regex(
        r'(?P<dq>"(?:[^"\\\n]|\\[^\n])*")'
        r"|(?P<sq>'(?:[^'\\\n]|\\[^\n])*')"
        r"|(?P<unterminated>[\"'][^\n]*)"
        r"|(?P<word>[^\s\"'#]+)"
    ).set_parse_action(_value)
    values = pp.ZeroOrMore(value)
    eol = pp.Suppress(pp.Regex(r"(?:#[^\n]*)?\r?\n"))

    key_eq = pp.Regex(r"[A-Za-z_][A-Za-z0-9_.-]*[ \t]*=").set_parse_action(
        lambda s, loc, t: t[0].rstrip(" \t=")
    )
    assign = (key_eq + values + eol).set_parse_action(lambda s, loc, t: Assign(t[0], list(t[1:]), loc))
    block_open = pp.Regex(
        r"(?P<kind>[A-Za-z_][A-Za-z0-9_.-]*)[ \t]+(?P<name>[^\s{}#\"'=]+)[ \t]*\{[ \t]*(?:#[^\n]*)?\r?\n"
    ).set_parse_action(_open)
    close = pp.Regex(r"\}[ \t]*(?:#[^\n]*)?\r?\n").set_parse_action(lambda s, loc, t: _Close(loc))
    # Lines that are recognisably something, but wrong: say what is missing.
    key = pp.Regex(r"[A-Za-z_][A-Za-z0-9_.-]*")
    no_equals = (key + pp.Group(values) + eol).set_parse_action(_no_equals)
    garbage = (pp.Regex(r"[^\n]+") + eol).set_parse_action(
        lambda s, loc, t: _Bad("expected 'key = value', 'failover NAME {', 'virtual NAME {' or '}'", loc)
    )
    line = assign | close | block_open | eol | no_equals | garbage
    grammar = pp.ZeroOrMore(line) + pp.StringEnd()
    _line_whitespace(grammar, set())
    return grammar.parse_with_tabs()


def _value(s: str, loc: int, t: pp.ParseResults) -> Value:
    # The regex sets every named group, the ones that did not match to None.
    kind = next(k for k in ("word", "dq", "sq", "unterminated") if t[k] is not None)
    return Value(kind, t[0], loc)


def _open(s: str, loc: int, t: pp.ParseResults) -> _Open:
    kind, name = t["kind"], t["name"]
    return _Open(kind, name, loc, loc + t[0].index(name, len(kind)))


def _no_equals(s: str, loc: int, t: pp.ParseResults) -> _Bad:
    word, rest = t[0], list(t[1])
    if word in BLOCKS:
        return _Bad(f"expected '{word} NAME {{' (one name, then '{{' on the same line)", loc)
    if not rest:
        return _Bad(f"expected '=' and a value after '{word}'", loc)
    return _Bad(f"expected '=' after '{word}'", loc)


def _line_whitespace(expr: pp.ParserElement, seen: set[int]) -> None:
    """Skip only blanks and tabs, everywhere: a newline ends a statement."""
    if id(expr) in seen:
        return
    seen.add(id(expr))
    expr.set_whitespace_chars(" \t")
    for sub in getattr(expr, "exprs", ()):
        _line_whitespace(sub, seen)
    sub = getattr(expr, "expr", None)
    if isinstance(sub, pp.ParserElement):
        _line_whitespace(sub, seen)


_GRAMMAR = _build()


# ------------------------------------------------------------ text -> tree


class _Lines:
    """loc -> (line, col), 1-based, as pyparsing's lineno()/col() but O(log n)."""

    def __init__(self, text: str) -> None:
        self.starts = [0]
        find = text.find
        i = find("\n")
        while i >= 0:
            self.starts.append(i + 1)
            i = find("\n", i + 1)

    def __call__(self, loc: int) -> tuple[int, int]:
        n = bisect.bisect_right(self.starts, loc)
        return n, loc - self.starts[n - 1] + 1


def parse(text: str, path: str = "<string>") -> tuple[Block, list[Diagnostic]]:
    """Parse lvs.cf text into its root Block; never raises on bad input.

    Problems the grammar can see (bad lines, unterminated strings, unbalanced braces) are
    returned as diagnostics; the tree keeps every statement that could be read.
    """
    if not text.endswith("\n"):
        text += "\n"  # every statement ends with a newline
    statements = _GRAMMAR.parse_string(text, parse_all=True)
    where = _Lines(text)
    diags: list[Diagnostic] = []

    def error(loc: int, message: str) -> None:
        line, col = where(loc)
        diags.append(Diagnostic(path, line, col, message))

    root = Block("", "", 0)
    stack = [root]
    for st in statements:
        if isinstance(st, Assign):
            st.line, st.col = where(st.loc)
            for v in st.values:
                v.line, v.col = where(v.loc)
                if v.kind == "unterminated":
                    error(v.loc, f"unterminated string: no closing {v.raw[0]} on this line")
            stack[-1].assigns.append(st)
        elif isinstance(st, _Open):
            line, col = where(st.loc)
            if st.kind in TOP_BLOCKS:
                # A failover/virtual header no deeper than an open one: its '}' was forgotten.
                while len(stack) > 1 and any(b.kind in TOP_BLOCKS and b.col >= col for b in stack[1:]):
                    _unclosed(stack.pop(), error)
            name_line, name_col = where(st.name_loc)
            block = Block(st.kind, st.name, st.loc, line, col, name_line, name_col)
            stack[-1].blocks.append(block)
            stack.append(block)
        elif isinstance(st, _Close):
            if len(stack) == 1:
                error(st.loc, "'}' without an open block")
            else:
                stack.pop()
        else:
            error(st.loc, st.message)
    while len(stack) > 1:
        _unclosed(stack.pop(), error)
    return root, diags


def _unclosed(block: Block, error: Callable[[int, str], None]) -> None:
    error(block.loc, f"'{block.kind} {block.name} {{' is never closed: missing '}}'")
