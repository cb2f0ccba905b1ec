"""Service probes: the matching rules (pure) and real probes run inside a lab namespace."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pyrhfos.net.probe import ProbeResult, answer_matches, probe_program

HTTP = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\na\n"


@pytest.mark.parametrize(
    ("answer", "expect", "regex", "ok"),
    [
        (HTTP, "HTTP", False, True),
        (HTTP, "200 OK", False, True),
        (HTTP, "HTTP/1.1", False, False),
        (HTTP, r"^HTTP/1\.[01] 200", True, True),
        (HTTP, r"^200", True, False),
        (b"", "*", False, True),
        (b"\x00\xff\xfe", "*", False, True),
        (b"", None, False, True),
        (b"anything", "", False, True),
        (b"caf\xe9", "caf\xe9", False, True),  # latin-1 both sides, as lvs.cf escapes decode
        (b"\x00\x01OK\x02", "OK", False, True),
        (b"a\n", "^[ab]$", True, True),  # $ before a final newline, as in Python's re
        (b"OK\r\n", "OK$", True, False),
        (b"a\nb\n", "a$", True, False),
        (b"a\nb\n", "(?m)a$", True, True),
        (b"OK\n", "OK\\z", True, False),  # \z is the very end (Python's \Z)
        (b"220 Welcome\r\n", "(?i)WELCOME", True, True),
        (b"caf\xe9", "caf\xe9$", True, True),
        (b"HTTP/1.1 200 OK", "HTTP/1\\.[01] (200|302)", True, True),
    ],
)
def test_answer_matches(answer: bytes, expect: str | None, regex: bool, ok: bool) -> None:
    assert answer_matches(answer, expect, regex) is ok


class Stalled(Exception):
    """Raised by SIGALRM: the regular expression still held the event loop."""


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fail (not hang) in 10 s: Python's re checks signals while it backtracks."""

    def stalled(signum: int, frame: object) -> None:
        raise Stalled("the expect regex held the event loop for 10 s")

    previous = signal.signal(signal.SIGALRM, stalled)
    signal.setitimer(signal.ITIMER_REAL, 10)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


EVIL = "(a+)+$"  # exponential for a backtracking engine on a run of a's that does not end the text


def test_catastrophic_regex_is_linear_on_a_long_answer(alarm: None) -> None:
    start = time.monotonic()
    assert not answer_matches(b"a" * 60000 + b"b", EVIL, True)
    assert answer_matches(b"b" + b"a" * 60000 + b"\n", EVIL, True)
    assert time.monotonic() - start < 1.0


def test_catastrophic_regex_does_not_stall_the_loop(alarm: None) -> None:
    """A send_program answering 20000 a's and a b: the loop keeps ticking, the probe answers in time."""
    program = f"{sys.executable} -c \"print('a' * 20000 + 'b')\""

    async def scenario() -> tuple[ProbeResult, list[float]]:
        ticks: list[float] = []

        async def tick() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0.05)
        result = await probe_program(program, "192.0.2.1", EVIL, True, 5.0)
        await asyncio.sleep(0.05)
        ticker.cancel()
        return result, ticks

    result, ticks = asyncio.run(scenario())
    assert not result.ok and "did not match" in result.reason and result.latency < 5.0
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.5, "the loop kept ticking"


SILENT = """
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 81)); s.listen(8); print("ready", flush=True)
conns = []
while True:
    conns.append(s.accept()[0])  # accept and never answer
"""

PROBE = """
import asyncio, json, sys
from pyrhfos.net.probe import probe_program, probe_tcp
args = json.loads(sys.argv[1])
fn = probe_program if "program" in args else probe_tcp
r = asyncio.run(fn(**args))
print(json.dumps({"ok": r.ok, "reason": r.reason, "latency": r.latency}))
"""


# Every descriptor taken (the loop's own are open already): the probe's socket() fails.
NO_FDS = """
import asyncio, os, resource
from pyrhfos.net.probe import probe_tcp
async def main():
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    held = []
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    r = await probe_tcp("192.0.2.100", 80, None, "HTTP", False, 1.0)
    for fd in held:
        os.close(fd)
    print(r.ok, r.reason)
asyncio.run(main())
"""


def run_probe(node: Any, **kwargs: Any) -> dict[str, Any]:
    res = node.run_python(PROBE, json.dumps(kwargs))
    return json.loads(res.stdout)


def tcp(port: int, expect: str | None, timeout: float = 1.0, regex: bool = False) -> dict[str, Any]:
    return dict(
        host="192.0.2.100",
        port=port,
        send="GET / HTTP/1.0\r\n\r\n",
        expect=expect,
        use_regex=regex,
        timeout=timeout,
    )


@pytest.mark.lab
def test_real_probes_in_a_namespace(lab: Any) -> None:
    node = lab.add_node("a", "192.0.2.100")
    node.start_service(80, "a")
    silent = node.popen([sys.executable, "-c", SILENT], stdout=subprocess.PIPE)
    assert silent.stdout is not None and silent.stdout.readline().startswith(b"ready")

    assert run_probe(node, **tcp(80, "HTTP"))["ok"]
    assert run_probe(node, **tcp(80, r"^HTTP/1\.[01] 200", regex=True))["ok"]
    assert run_probe(node, **tcp(80, "*"))["ok"]
    miss = run_probe(node, **tcp(80, "SMTP"))
    assert not miss["ok"] and "did not match" in miss["reason"]
    refused = run_probe(node, **tcp(82, "HTTP"))
    assert not refused["ok"] and refused["reason"] == "connection refused"
    slow = run_probe(node, **tcp(81, "HTTP", timeout=0.5))
    assert not slow["ok"] and "timeout after 0.5s" in slow["reason"]
    assert slow["latency"] < 3.0, "the whole probe is bounded by its timeout"

    starved = node.run_python(NO_FDS, check=False)
    assert starved.stdout.strip() == "False Too many open files", starved.stdout + starved.stderr

    echo = dict(host="192.0.2.100", expect=None, use_regex=False, timeout=5.0)
    assert run_probe(node, program="test %h = 192.0.2.100", **echo)["ok"], "%h is the host"
    bad = run_probe(node, program="exit 3", **echo)
    assert not bad["ok"] and bad["reason"] == "send_program exited 3"
    out = run_probe(node, program="echo up on %h", **{**echo, "expect": "up on 192.0.2.100"})
    assert out["ok"]
    hung = run_probe(node, program="sleep 30", **{**echo, "timeout": 0.5})
    assert not hung["ok"] and "timed out" in hung["reason"]
