"""Service probes: the matching rules (pure), send_program (local, no network), real TCP probes in a lab.

Every probe that sends a packet runs inside a lab namespace, never on the machine's own interfaces.
"""

from __future__ import annotations

import asyncio
import json
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pyrhfos.config.model import Failover
from pyrhfos.probe import ProbeResult, answer_matches, probe, probe_program

HTTP = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\na\n"
VIP = "192.0.2.100"


# -- matching rules --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answer", "expect", "regex", "ok"),
    [
        (HTTP, "HTTP", False, True),
        (HTTP, "200 OK", False, True),  # substring anywhere, not a prefix
        (HTTP, "HTTP/1.1", False, False),
        (HTTP, "http", False, False),  # case matters
        (HTTP, "200 OK\r\nContent", False, True),  # decoded \r\n in expect
        (HTTP, r"^HTTP/1\.[01] 200", True, True),
        (HTTP, r"^200", True, False),  # ^ anchors at the start of the answer only
        (HTTP, r"Content-Length: \d+", True, True),
        (HTTP, r"^HTTP/1\.[01] 200", False, False),  # without use_regex it is plain text
        (HTTP, "(unclosed", True, False),  # an invalid regex matches nothing (never raises)
        (b"", "*", False, True),
        (b"\x00\xff\xfe", "*", False, True),
        (b"", None, False, True),
        (b"", "", False, True),
        (b"anything", "", True, True),
        (b"", "x", False, False),
        (b"caf\xe9", "caf\xe9", False, True),  # latin-1 both sides, as lvs.cf escapes decode
        (b"caf\xc3\xa9", "caf\xe9", False, False),  # UTF-8 bytes are not the latin-1 code point
        (b"caf\xc3\xa9", "caf\xc3\xa9", False, True),  # ...but match an expect holding those bytes
        (b"\x00\x01OK\x02", "OK", False, True),  # binary around the text
        (b"\x89PNG\r\n\x1a\n", "\x89PNG", False, True),
        (b"\x00\xff\x80", "^\x00\xff", True, True),  # regex over every byte value
        (b"ab\xffcd", r"b.c", True, True),
        (b"line1\nline2", r"line1.line2", True, False),  # re.search without DOTALL
    ],
)
def test_answer_matches(answer: bytes, expect: str | None, regex: bool, ok: bool) -> None:
    assert answer_matches(answer, expect, regex) is ok


def test_probe_result_is_frozen() -> None:
    r = ProbeResult(True, "ok", 0.01)
    with pytest.raises(AttributeError):
        r.ok = False  # type: ignore[misc]


# -- send_program (local: these run no network traffic at all) -----------------------------------
def run_program(program: str, expect: str | None = None, regex: bool = False, timeout: float = 5.0):
    return asyncio.run(probe_program(program, VIP, expect, regex, timeout))


@pytest.fixture
def echo_arg(tmp_path: Path) -> str:
    """A script that prints its first argument, to see what %h became."""
    script = tmp_path / "check"
    script.write_text('#!/bin/sh\necho "checked $1"\n')
    script.chmod(0o755)
    return str(script)


def test_program_host_substituted(echo_arg: str) -> None:
    r = run_program(f"{echo_arg} %h", expect="checked 192.0.2.100")
    assert r.ok and r.reason == "ok", r
    assert run_program("test %h = 192.0.2.100").ok, "%h everywhere, exit 0 is success"
    assert run_program("test '%h%h' = 192.0.2.100192.0.2.100").ok


def test_program_exit_status() -> None:
    r = run_program("exit 3")
    assert r == ProbeResult(False, "send_program exited 3", r.latency)
    r = run_program("kill -9 $$")
    assert not r.ok and r.reason == "send_program killed by signal 9"


def test_program_output_matched(echo_arg: str) -> None:
    assert run_program("echo 'HTTP/1.0 200 OK'", expect=r"^HTTP/1\.[01] 200", regex=True).ok
    assert run_program("echo fine >&2", expect="fine").ok, "stderr counts as output"
    # With an expect the output decides, not the exit status (as nanny did).
    assert run_program("echo up; exit 1", expect="up").ok
    r = run_program(f"{echo_arg} %h", expect="checked 10.0.0.1")
    assert not r.ok and r.reason.startswith("send_program output did not match '")
    assert "checked 192.0.2.100" in r.reason, "the reason shows what it printed"
    r = run_program("true", expect="up")
    assert not r.ok and r.reason == "send_program printed nothing (expected 'up')"
    assert run_program("printf 'caf\\303\\251'", expect="caf\xc3\xa9").ok, "raw bytes, like TCP"


def test_program_star_takes_any_output() -> None:
    assert run_program("true", expect="*").ok
    assert run_program("echo anything; exit 2", expect="*").ok
    assert not run_program("sleep 5", expect="*", timeout=0.3).ok


def test_program_timeout_kills_it_fast(tmp_path: Path) -> None:
    marker = tmp_path / "survived"
    start = time.monotonic()
    r = run_program(f"sleep 0.8; touch {marker}", timeout=0.3)
    took = time.monotonic() - start
    assert not r.ok and r.reason == "send_program timed out after 0.3s"
    assert took < 0.3 + 0.5, took
    time.sleep(0.8)
    assert not marker.exists(), "the program's tree was killed"


def test_program_bad_regex_is_a_result() -> None:
    r = run_program("echo x", expect="(", regex=True)
    assert not r.ok and r.reason.startswith("invalid expect regex '('")


def test_probe_dispatch_without_network(echo_arg: str) -> None:
    f = Failover("web", port=80, send="ignored", send_program=f"{echo_arg} %h", expect="checked 192.0.2.100")
    assert asyncio.run(probe(f, VIP)).ok, "send_program wins over send/port"
    r = asyncio.run(probe(Failover("web"), VIP))
    assert not r.ok and r.reason == "no port to probe"


# -- real TCP probes, inside a lab namespace -------------------------------------------------------
SERVERS = r"""
import asyncio, sys

async def silent(r, w):  # accepts, never answers, never closes
    await asyncio.sleep(3600)

async def closer(r, w):  # closes at once
    w.close()

async def binary(r, w):
    w.write(b"\x00\xff\x89PNG\r\n\x1a\ncaf\xe9")
    await w.drain(); w.close()

async def echo(r, w):  # answers "ECHO " + the request (up to an empty line)
    w.write(b"ECHO " + await r.readuntil(b"\r\n\r\n"))
    await w.drain(); w.close()

async def drip(r, w):  # the status line in two pieces, then holds the connection open
    w.write(b"HTTP/1.0 "); await w.drain(); await asyncio.sleep(0.2)
    w.write(b"200 OK\r\n"); await w.drain(); await asyncio.sleep(3600)

async def flood(r, w):  # 100 KiB, the marker after it, then holds the connection open
    w.write(b"x" * 100 * 1024 + b"MARKER"); await w.drain(); await asyncio.sleep(3600)

async def banner(r, w):  # like SSH: speaks first, then waits
    w.write(b"SSH-2.0-lab\r\n"); await w.drain(); await asyncio.sleep(3600)

async def main():
    for port, handler in ((81, silent), (82, closer), (83, binary), (84, echo), (85, drip),
                          (86, flood), (87, banner)):
        await asyncio.start_server(handler, "0.0.0.0", port, backlog=1024)
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""

# Runs a batch of probes concurrently in one process inside the node; prints results as JSON, plus
# the wall time and how many sockets the probes left open.
RUNNER = r"""
import asyncio, contextlib, dataclasses, json, os, sys, time
from pyrhfos import probe
from pyrhfos.config.model import Failover

def sockets():
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return n

async def one(call):
    call = dict(call)
    fn = call.pop("fn")
    if fn == "probe":
        host = call.pop("host")
        r = await probe.probe(Failover(**call), host)
    else:
        r = await getattr(probe, fn)(**call)
    return dataclasses.asdict(r)

async def main(calls):
    before = sockets()
    start = time.monotonic()
    results = await asyncio.gather(*(one(c) for c in calls))
    wall = time.monotonic() - start
    return {"results": results, "wall": wall, "leaked": sockets() - before}

print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
"""


def start_servers(node: Any) -> None:
    proc = node.popen([sys.executable, "-c", SERVERS], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready and proc.stdout.readline().startswith(b"ready"), "test servers did not start"


def run_batch(node: Any, calls: list[dict[str, Any]]) -> dict[str, Any]:
    out = node.run_python(RUNNER, json.dumps(calls), timeout=30)
    return json.loads(out.stdout)


def tcp(port: int, expect: str | None, *, send: str | None = None, regex: bool = False, timeout: float = 2.0):
    return dict(
        fn="probe_tcp", host=VIP, port=port, send=send, expect=expect, use_regex=regex, timeout=timeout
    )


GET = "GET / HTTP/1.0\r\n\r\n"

# name -> (probe call, ok, text its reason must contain)
TCP_CASES: dict[str, tuple[dict[str, Any], bool, str]] = {
    "expect text": (tcp(80, "HTTP", send=GET), True, "ok"),
    "expect regex": (tcp(80, r"^HTTP/1\.[01] 200", send=GET, regex=True), True, "ok"),
    "expect body": (tcp(80, "\r\n\r\na\n", send=GET), True, "ok"),
    "star": (tcp(80, "*", send=GET), True, "ok"),
    "no expect, no send": (tcp(80, None), True, "ok"),
    "empty expect": (tcp(81, ""), True, "ok"),  # connect is enough: the silent server passes
    "mismatch": (tcp(80, "SMTP", send=GET), False, "answer did not match 'SMTP' (got 'HTTP/1.0 200 OK"),
    "regex mismatch": (tcp(80, r"^HTTP/2", send=GET, regex=True), False, "answer did not match '^HTTP/2'"),
    "refused": (tcp(88, "HTTP"), False, "connection refused"),
    "refused without expect": (tcp(88, None), False, "connection refused"),
    "silent": (tcp(81, "HTTP", send=GET, timeout=0.5), False, "timeout after 0.5s (no answer)"),
    "silent star": (tcp(81, "*", timeout=0.5), False, "timeout after 0.5s (no answer)"),
    "closer": (tcp(82, "HTTP", send=GET), False, ""),  # "closed without an answer" or a reset
    "closer star": (tcp(82, "*", send=GET), True, "ok"),  # a close is a reaction
    "binary": (tcp(83, "PNG"), True, "ok"),
    "binary latin-1": (tcp(83, "caf\xe9"), True, "ok"),
    "binary regex": (tcp(83, "^\x00\xff\x89PNG", regex=True), True, "ok"),
    "binary mismatch": (tcp(83, "GIF"), False, "answer did not match 'GIF' (got '\\x00ÿ\\x89PNG"),
    "send is latin-1": (tcp(84, "ECHO GET /caf\xe9 ", send="GET /caf\xe9 HTTP/1.0\r\n\r\n"), True, "ok"),
    "match before close": (tcp(85, "200 OK", timeout=2.0), True, "ok"),  # two chunks, never EOF
    "partial then silence": (tcp(85, "404", timeout=0.6), False, "timeout after 0.6s (answer did not match"),
    "64 KiB cap": (tcp(86, "MARKER", timeout=2.0), False, "answer did not match 'MARKER' in 64 KiB"),
    "banner": (tcp(87, "SSH-2.0"), True, "ok"),
    "banner star": (tcp(87, "*"), True, "ok"),
}


@pytest.mark.lab
def test_tcp_probes_in_a_namespace(lab: Any) -> None:
    node = lab.add_node("a", VIP)
    node.start_service(80, "a")
    start_servers(node)
    names = list(TCP_CASES)
    out = run_batch(node, [TCP_CASES[n][0] for n in names])
    for name, r in zip(names, out["results"], strict=True):
        call, ok, reason = TCP_CASES[name]
        assert r["ok"] is ok and reason in r["reason"], f"{name}: {r}"
        # The whole probe, connect included, is bounded by its timeout (plus scheduling slack).
        assert r["latency"] < call["timeout"] + 0.3, f"{name}: {r}"
    results = dict(zip(names, out["results"], strict=True))
    assert results["silent"]["latency"] >= 0.5
    for quick in ("match before close", "64 KiB cap", "banner", "closer star"):
        assert results[quick]["latency"] < 1.0, f"{quick} must not wait for EOF or the timeout"
    closer = results["closer"]["reason"]
    assert "closed without an answer" in closer or "reset" in closer, closer
    assert out["leaked"] == 0, "every probe closed its connection"


@pytest.mark.lab
def test_dispatch_program_and_load_in_a_namespace(lab: Any, tmp_path: Path) -> None:
    node = lab.add_node("a", VIP)
    node.start_service(80, "a")
    start_servers(node)
    # A send_program that probes the VIP itself, as administrators wrote them.
    script = tmp_path / "http_check"
    script.write_text(
        f"#!/bin/sh\nexec {sys.executable} -c '"
        "import socket, sys\n"
        "s = socket.create_connection((sys.argv[1], 80), 2)\n"
        's.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")\n'
        "print(s.recv(100).decode())"
        '\' "$1"\n'
    )
    script.chmod(0o755)
    web = dict(fn="probe", host=VIP, name="web", port=80, send=GET, timeout=2.0)
    calls = [
        {**web, "expect": "HTTP/1.0 200"},
        {**web, "port": 81, "expect": "HTTP", "timeout": 0.5},
        {**web, "send_program": f"{script} %h", "expect": "200 OK", "port": 88},
        {**web, "send_program": f"{script} %h", "expect": "500", "port": 88},
    ]
    # Load: 200 services, one probe each per keepalive, all at once.
    calls += [tcp(87, "SSH", timeout=5.0)] * 200
    out = run_batch(node, calls)
    res = out["results"]
    assert res[0]["ok"] and res[0]["reason"] == "ok", res[0]
    assert not res[1]["ok"] and res[1]["reason"] == "timeout after 0.5s (no answer)", res[1]
    assert res[2]["ok"], res[2]
    assert not res[3]["ok"] and "send_program output did not match '500'" in res[3]["reason"], res[3]
    assert all(r["ok"] for r in res[4:]), [r for r in res[4:] if not r["ok"]][:3]
    assert out["wall"] < 3.0, out["wall"]
    assert out["leaked"] == 0
