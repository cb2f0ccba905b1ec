"""Service probes: the matching rules (pure) and real probes run inside a lab namespace."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from pyrhfos.net.probe import answer_matches

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
    ],
)
def test_answer_matches(answer: bytes, expect: str | None, regex: bool, ok: bool) -> None:
    assert answer_matches(answer, expect, regex) is ok


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
