"""Hostile input, in bulk and seeded: 10 000 mutated lvs.cf files, 100 000 bad packets at the daemon."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from rig import build

from pyrhfos.config import ConfigError, loads
from pyrhfos.core.vocab import Role, State
from pyrhfos.core.wire import Beat, Flag, encode

ROOT = Path(__file__).resolve().parents[2]
FILES = [p.read_text() for p in sorted((ROOT / "tests" / "data").glob("*.cf"))]
FILES.append((ROOT / "etc" / "lvs.cf.example").read_text())
ALPHABET = "={}#\"'\\ \t\n:.x0123456789abcdefghijklmnopqrstuvwxyz_\x00\xff"


def mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(len(text) + 1)
        op = rng.random()
        if op < 0.3:
            text = text[:at] + rng.choice(ALPHABET) + text[at:]
        elif op < 0.6:
            text = text[:at] + text[at + 1 :]
        elif op < 0.8:
            text = text[:at] + rng.choice(ALPHABET) + text[at + 1 :]
        else:  # move a whole line: wrong section, duplicate key, stray brace
            lines = text.splitlines(keepends=True)
            if lines:
                lines.insert(rng.randrange(len(lines) + 1), rng.choice(lines))
                text = "".join(lines)
    return text


@pytest.mark.slow
def test_ten_thousand_mutated_files_only_raise_config_error_with_positions() -> None:
    rng = random.Random(20001)
    deadline = time.monotonic() + 240  # bounded even on a slow machine
    done = rejected = 0
    while done < 10_000 and time.monotonic() < deadline:
        text = mutate(rng, rng.choice(FILES))
        try:
            loads(text, "m.cf")
        except ConfigError as e:
            rejected += 1
            assert e.diagnostics
            for d in e.diagnostics:
                assert d.line >= 1 and d.col >= 1, str(d)
        done += 1
    assert done == 10_000, f"only {done} files in the time limit"
    assert rejected > 1000, "mutations must actually break files"


def test_hundred_thousand_bad_packets_change_nothing() -> None:
    cfg, _ = loads(FILES[-1])
    partner = str(cfg.backup)
    rig = build(cfg, key=b"k" * 32)
    d = rig.daemon
    rng = random.Random(539)
    good = encode(Beat(Role.BACKUP, State.ACTIVE, 1, bytes(8), 0, bytes(8), Flag.STOPME), b"k" * 32)
    before = (d.machine.state, d.machine.partner.last(), d.machine.partner.state)

    async def flood() -> None:
        d.loop = asyncio.get_running_loop()
        for i in range(100_000):
            kind = i % 4
            if kind == 0:
                data = rng.randbytes(rng.randrange(0, 80))
            elif kind == 1:  # a valid packet with bits flipped: the MAC must catch it
                raw = bytearray(good)
                for _ in range(rng.randint(1, 4)):
                    raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
                data = bytes(raw)
            elif kind == 2:  # truncated or extended
                data = good[: rng.randrange(len(good))] + rng.randbytes(rng.randrange(0, 3))
            else:  # unsigned beats and Piranha magics are refused with a key
                data = (
                    encode(Beat(Role.BACKUP, State.ACTIVE, i, bytes(8), 0, bytes(8))) if i % 8 else good[:4]
                )
            if data == good:  # a mutation that undid itself is no longer hostile
                data = data[:-1]
            d.on_datagram(data, partner)

    asyncio.run(flood())
    assert (d.machine.state, d.machine.partner.last(), d.machine.partner.state) == before
    assert d.counters["beats-received"] == 0
    assert sum(v for k, v in d.counters.items() if k.startswith("dropped-")) == 100_000
