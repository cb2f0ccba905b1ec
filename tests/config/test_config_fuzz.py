"""Any text at all: the reader returns a model or raises ConfigError, never anything else,
and every diagnostic points inside the file (line >= 1, col >= 1)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pyrhfos.config import ConfigError, loads

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [p.read_text() for p in sorted((ROOT / "tests" / "data").glob("*.cf"))]
EXAMPLES.append((ROOT / "etc" / "lvs.cf.example").read_text())

# Characters that matter to the language, so random text often looks almost right.
SYNTAX = list("={}#\"'\\ \t\n\r:.-_0123456789x") + ["failover ", "virtual ", "server ", "address", "\\x4"]
WORDS = ["primary", "service", "fos", "port", "start_cmd", "192.168.1.10", "eth0:1", "active", "1"]
pieces = st.sampled_from(SYNTAX + WORDS) | st.characters()


def check(text: str) -> None:
    try:
        loads(text, "fuzz.cf")
    except ConfigError as e:
        assert e.diagnostics, "a ConfigError always says why"
        for d in e.diagnostics + e.warnings:
            assert d.line >= 1 and d.col >= 1, str(d)
            assert d.line <= text.count("\n") + 1, str(d)
            assert str(d).startswith("fuzz.cf:")


@settings(max_examples=300, deadline=None)
@given(st.lists(pieces, max_size=80).map("".join))
def test_random_text(text):
    check(text)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_random_unicode(text):
    check(text)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(EXAMPLES), st.data())
def test_mutated_examples(text, data):
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(text)))
        op = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        char = data.draw(pieces)
        if op == "insert":
            text = text[:at] + char + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at] + char + text[at + 1 :]
    check(text)


def test_degenerate_inputs():
    for text in ["", "\n", "{", "}", '"', "'", "#", "=", "\r", "\x00", "a" * 10000, "x = " + "9" * 5000]:
        check(text)
    check(
        'primary = 192.168.1.10\nservice = fos\nfailover a {\nexpect = "a{99999999999}"\nuse_regex = 1\n}\n'
    )
