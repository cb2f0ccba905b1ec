"""The metrics endpoint: one thread however many clients, connections bounded in number and time.

Each scenario runs in a lab namespace of its own (its sockets never touch the host's network).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.lab

COMMON = """
import json, socket, sys, threading, time, urllib.request
from prometheus_client.parser import text_string_to_metric_families
from pyrhfos.daemon import metrics

STATUS = {
    "node": {"state": "active"},
    "partner": {"alive": True, "config_match": True, "paths": {"192.0.2.200": {"last_beat_age": 0.5}}},
    "services": [{"name": "web", "held": True, "probe": "ok"}],
    "counters": {"beats-sent": 7, "beats-received": 5, "dropped-forged": 2, "activations": 1},
}

def scrape(port=9539):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}

def closed_by_peer(s, within):
    s.settimeout(within)
    try:
        return s.recv(1) == b""
    except (TimeoutError, socket.timeout):
        return False
    except ConnectionResetError:
        return True
"""

# 300 idle connections through Metrics.serve, as pulse starts it: no thread more, a scrape works.
IDLE_FLOOD = (
    COMMON
    + """
m = metrics.Metrics(lambda: STATUS)
before = threading.active_count()
m.serve("127.0.0.1", 9539)
started = threading.active_count()
idle = [socket.create_connection(("127.0.0.1", 9539)) for _ in range(300)]
time.sleep(0.5)
during = threading.active_count()
families = scrape()
held = len(m.server.conns) if hasattr(m.server, "conns") else None
m.close()
print(json.dumps({"before": before, "started": started, "during": during, "held": held,
                  "state": {s.labels["state"]: s.value for s in families["pulse_state"].samples},
                  "dropped": [s.value for s in families["pulse_beats_dropped"].samples]}))
"""
)

LIMITS = (
    COMMON
    + """
from prometheus_client import make_wsgi_app
m = metrics.Metrics(lambda: STATUS)
server = metrics.MetricsServer(make_wsgi_app(m.registry), "127.0.0.1", 0, max_connections=4, timeout=0.5)
port = server.address[1]
out = {}
first = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
time.sleep(0.1)
fifth = socket.create_connection(("127.0.0.1", port))  # the table is full: the oldest goes
out["oldest_evicted"] = closed_by_peer(first[0], 1.0)
out["scrape_while_full"] = "pulse_state" in scrape(port)
out["idle_closed_after_timeout"] = all(closed_by_peer(s, 1.5) for s in [*first[1:], fifth])
slow = socket.create_connection(("127.0.0.1", port))
start = time.monotonic()
for ch in b"GET /metrics HTTP/1.0\\r\\n":  # slowloris: a byte every 0.1 s never finishes in time
    try:
        slow.send(bytes([ch]))
    except OSError:
        break
    time.sleep(0.1)
out["slow_request_closed"] = closed_by_peer(slow, 1.0) and time.monotonic() - start < 3.5

def exchange(data):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(data)
    s.settimeout(2)
    answer = b""
    while chunk := s.recv(65536):
        answer += chunk
    return answer.split(b"\\r\\n", 1)[0].decode()

out["oversized"] = exchange(b"GET / HTTP/1.0\\r\\nX: " + b"y" * 9000 + b"\\r\\n\\r\\n")
out["malformed"] = exchange(b"HELLO\\r\\n\\r\\n")
out["post"] = exchange(b"POST /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
out["get"] = exchange(b"GET /metrics HTTP/1.1\\r\\nHost: x\\r\\nAccept-Encoding: gzip\\r\\n\\r\\n")
out["threads"] = sorted(t.name for t in threading.enumerate())
server.close()
out["closed"] = not server.thread.is_alive()
try:
    socket.create_connection(("127.0.0.1", port), timeout=1)
    out["port_free"] = False
except ConnectionRefusedError:
    out["port_free"] = True
print(json.dumps(out))
"""
)


def run(lab: Any, script: str) -> dict[str, Any]:
    node = lab.add_node("m", "192.0.2.100")
    res = node.run_python(script, check=False, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_idle_connections_take_no_thread_and_a_scrape_still_works(lab: Any) -> None:
    """Issue 13 item 12: 300 idle connections made 300 threads in a root daemon."""
    got = run(lab, IDLE_FLOOD)
    assert got["started"] == got["before"] + 1, "one server thread"
    assert got["during"] == got["started"], f"idle connections took threads: {got}"
    assert got["held"] is not None and got["held"] <= 16
    assert got["state"]["active"] == 1.0 and got["state"]["standby"] == 0.0
    assert got["dropped"] == [2.0]


def test_connections_are_bounded_in_number_and_time(lab: Any) -> None:
    got = run(lab, LIMITS)
    assert got["oldest_evicted"] and got["scrape_while_full"], got
    assert got["idle_closed_after_timeout"] and got["slow_request_closed"], got
    assert got["oversized"] == "HTTP/1.0 431 Request Header Fields Too Large"
    assert got["malformed"] == "HTTP/1.0 400 Bad Request"
    assert got["post"] == "HTTP/1.0 405 Method Not Allowed"  # prometheus_client's own answer
    assert got["get"] == "HTTP/1.0 200 OK"
    assert got["threads"] == ["MainThread", "metrics"]
    assert got["closed"] and got["port_free"]
