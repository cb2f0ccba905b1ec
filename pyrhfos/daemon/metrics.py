"""Prometheus metrics (optional, ``metrics_port`` in lvs.cf): the status, as prometheus_client exposes it.

Owns the metric families and their HTTP endpoint: one thread, a bounded number of connections, each
bounded in time. Values are read from the daemon's status at scrape time, so nothing is counted twice;
only the probe latency histogram is fed as probes finish. An LVS director adds one family set per
virtual and per real server, from the status's ``virtuals`` (docs/status.md).
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..core.vocab import State

log = logging.getLogger(__name__)

STATES = tuple(s.name.lower() for s in State)  # as pulse status names them


class StatusCollector(Collector):
    """Turns one ``Daemon.status()`` into metric families."""

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.status = status

    def collect(self) -> Iterator[Any]:
        st = self.status()
        state = GaugeMetricFamily("pulse_state", "1 for this node's current failover state", labels=["state"])
        for name in STATES:
            state.add_metric([name], 1.0 if st["node"]["state"] == name else 0.0)
        yield state
        yield GaugeMetricFamily(
            "pulse_partner_alive", "1 while the partner's beats arrive", value=st["partner"]["alive"]
        )
        match = st["partner"]["config_match"]
        yield GaugeMetricFamily(
            "pulse_config_match",
            "1 when the partner's lvs.cf digest equals ours",
            value=1.0 if match else 0.0,
        )
        age = GaugeMetricFamily(
            "pulse_last_beat_age_seconds", "seconds since the last beat per path", labels=["path"]
        )
        for path, info in st["partner"]["paths"].items():
            if info["last_beat_age"] is not None:
                age.add_metric([path], info["last_beat_age"])
        yield age
        held = GaugeMetricFamily(
            "pulse_service_held", "1 when this node holds the service's VIP", labels=["service"]
        )
        ok = GaugeMetricFamily("pulse_service_probe_ok", "1 ok, 0 failed, -1 unknown", labels=["service"])
        for s in st["services"]:
            held.add_metric([s["name"]], 1.0 if s["held"] else 0.0)
            ok.add_metric([s["name"]], {"ok": 1.0, "failed": 0.0}.get(s["probe"], -1.0))
        yield held
        yield ok
        counters = st["counters"]
        beats = CounterMetricFamily("pulse_beats", "heartbeats", labels=["direction"])
        beats.add_metric(["sent"], counters.get("beats-sent", 0))
        beats.add_metric(["received"], counters.get("beats-received", 0))
        yield beats
        dropped = CounterMetricFamily(
            "pulse_beats_dropped", "invalid or foreign packets dropped", labels=["reason"]
        )
        for key, value in counters.items():
            if key.startswith("dropped-"):
                dropped.add_metric([key.removeprefix("dropped-")], value)
        yield dropped
        yield CounterMetricFamily(
            "pulse_activations", "times this node took the services", value=counters.get("activations", 0)
        )
        yield from virtual_families(st.get("virtuals", []))


def virtual_families(virtuals: list[dict[str, Any]]) -> Iterator[GaugeMetricFamily]:
    """LVS: per virtual and per real server, the ``virtuals`` of the status (empty on a FOS node).

    Every configured server has a sample in every family but the latency (none before a first probe),
    so an alert never meets a gap: a server out of the table (down without quiesce, not probed yet,
    inactive) has weight 0.
    """
    if not virtuals:
        return
    v_labels, s_labels = ["virtual"], ["virtual", "server"]
    v_active = GaugeMetricFamily(
        "pulse_virtual_active", "1 when the virtual is active in lvs.cf", labels=v_labels
    )
    v_up = GaugeMetricFamily(
        "pulse_virtual_servers_up",
        "real servers in health up (taking new connections if weight > 0)",
        labels=v_labels,
    )
    v_sorry = GaugeMetricFamily(
        "pulse_virtual_sorry_server_in_use",
        "1 while no real server takes connections and the sorry server does",
        labels=v_labels,
    )
    up = GaugeMetricFamily("pulse_real_server_up", "1 when the real server's health is up", labels=s_labels)
    weight = GaugeMetricFamily(
        "pulse_real_server_weight",
        "weight in effect in the table (0: no new connection, or not in it)",
        labels=s_labels,
    )
    configured = GaugeMetricFamily("pulse_real_server_configured_weight", "weight in lvs.cf", labels=s_labels)
    conns = GaugeMetricFamily(
        "pulse_real_server_connections",
        "connections from conntrack: active (TCP established) and inactive (the rest), as ipvsadm counts",
        labels=[*s_labels, "state"],
    )
    latency = GaugeMetricFamily(
        "pulse_real_server_probe_latency_seconds",
        "duration of the last probe of the real server",
        labels=s_labels,
    )
    probe_ok = GaugeMetricFamily(
        "pulse_real_server_probe_ok", "the last probe: 1 ok, 0 failed, -1 none yet", labels=s_labels
    )
    for v in virtuals:
        name = v["name"]
        servers = v["servers"]
        v_active.add_metric([name], 1.0 if v["active"] else 0.0)
        v_up.add_metric([name], float(sum(1 for s in servers if s["health"] == "up")))
        v_sorry.add_metric([name], 1.0 if v["sorry_in_use"] else 0.0)
        for s in servers:
            key = [name, s["name"]]
            up.add_metric(key, 1.0 if s["health"] == "up" else 0.0)
            weight.add_metric(key, float(s["weight_in_effect"] or 0))
            configured.add_metric(key, float(s["weight"]))
            conns.add_metric([*key, "active"], float(s["active_connections"]))
            conns.add_metric([*key, "inactive"], float(s["inactive_connections"]))
            if s["probe_latency"] is not None:
                latency.add_metric(key, float(s["probe_latency"]))
            probe_ok.add_metric(key, {"ok": 1.0, "failed": 0.0}.get(s["probe"], -1.0))
    yield from (v_active, v_up, v_sorry, up, weight, configured, conns, latency, probe_ok)


class Metrics:
    """The registry, the probe latency histogram and the HTTP endpoint."""

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(StatusCollector(status))
        self.probe_latency = Histogram(
            "pulse_probe_latency_seconds",
            "send/expect probe duration",
            ["service"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.server: MetricsServer | None = None

    def serve(self, address: str, port: int) -> None:
        """Listen on ``address:port`` only (lvs.cf's metrics_address), in a thread of its own."""
        self.server = MetricsServer(make_wsgi_app(self.registry), address, port)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


# ------------------------------------------------------------------ the HTTP endpoint

METRICS_ADDRESS = "127.0.0.1"  # lvs.cf metrics_address unset: this node only
MAX_CONNECTIONS = 16  # open at once; a new one past this evicts the oldest
REQUEST_TIMEOUT = 5.0  # seconds a connection may take to send its request, then to read the answer
MAX_REQUEST = 8192  # bytes of request line and headers


class _Conn:
    """One client: its socket, what it sent so far, the answer still to send, and its deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.request = bytearray()
        self.answer: bytes | None = None  # set once the request is complete
        self.deadline = deadline


class MetricsServer:
    """HTTP/1.0 on one thread and one selector: connections are bounded in number and in time.

    prometheus_client's own server spends a thread per connection (300 idle connections made 300
    threads in a root daemon); here no client can hold more than a slot for REQUEST_TIMEOUT seconds,
    and the oldest slot goes when the table is full, so a scrape always gets in. The answer itself is
    prometheus_client's WSGI app (content negotiation, gzip, name[] filters), called directly.
    """

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        address: str,
        port: int,
        max_connections: int = MAX_CONNECTIONS,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.app = app
        self.max_connections = max_connections
        self.timeout = timeout
        self.listener = socket.create_server((address, port), backlog=64)
        self.listener.setblocking(False)
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self._wake, self._woken = socket.socketpair()  # close() rings it: no polling while idle
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.selector.register(self._woken, selectors.EVENT_READ)
        self.conns: dict[socket.socket, _Conn] = {}  # in accept order: the first is the oldest
        self.closing = False
        self.thread = threading.Thread(target=self._run, name="metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.closing = True
        with contextlib.suppress(OSError):
            self._wake.send(b"x")
        self.thread.join(5)
        self._wake.close()

    # -- the thread

    def _run(self) -> None:
        try:
            while not self.closing:
                self._expire(time.monotonic())
                first = min((c.deadline for c in self.conns.values()), default=None)
                wait = None if first is None else max(0.0, first - time.monotonic())
                for key, events in self.selector.select(wait):
                    conn: _Conn | None = key.data
                    if key.fileobj is self.listener:
                        self._accept()
                    elif key.fileobj is self._woken:
                        return
                    elif conn is not None and self.conns.get(conn.sock) is conn:  # not dropped meanwhile
                        if events & selectors.EVENT_READ:
                            self._read(conn)
                        else:
                            self._write(conn)
        except Exception:  # never silently: the endpoint is gone, pulse goes on
            log.exception("metrics endpoint stopped")
        finally:
            for conn in list(self.conns.values()):
                self._drop(conn)
            self.selector.close()
            self.listener.close()
            self._woken.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of descriptors, say: the backlog waits for the next round
                log.warning("metrics: cannot accept: %s", e)
                return
            if len(self.conns) >= self.max_connections:  # the oldest still silent goes, else the oldest
                conns = self.conns.values()
                self._drop(next((c for c in conns if c.answer is None), next(iter(conns))))
            sock.setblocking(False)
            self.conns[sock] = _Conn(sock, time.monotonic() + self.timeout)
            self.selector.register(sock, selectors.EVENT_READ, self.conns[sock])

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.request += data
        end = conn.request.find(b"\r\n\r\n")
        if end < 0:
            end = conn.request.find(b"\n\n")
        if end < 0 and len(conn.request) <= MAX_REQUEST:
            return
        if end < 0 or end > MAX_REQUEST:
            conn.answer = _response("431 Request Header Fields Too Large", [], b"request too large\n")
        else:
            conn.answer = self._answer(bytes(conn.request[:end]))
        conn.deadline = time.monotonic() + self.timeout
        self.selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        assert conn.answer is not None
        try:
            sent = conn.sock.send(conn.answer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        conn.answer = conn.answer[sent:]
        if not conn.answer:
            self._drop(conn)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self.conns.values() if c.deadline <= now]:
            self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        del self.conns[conn.sock]
        self.selector.unregister(conn.sock)
        conn.sock.close()

    # -- one request

    def _answer(self, head: bytes) -> bytes:
        lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _response("400 Bad Request", [], b"bad request line\n")
        method, target, _ = parts
        path, _, query = target.partition("?")
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep and name.strip().lower() in ("accept", "accept-encoding"):
                environ["HTTP_" + name.strip().upper().replace("-", "_")] = value.strip()
        status: list[Any] = []
        try:
            body = b"".join(self.app(environ, lambda s, h, exc_info=None: status.extend((s, h))))
        except Exception as e:  # the status could not be read (the loop busy for 5 s, say)
            log.warning("metrics: scrape failed: %s", e or type(e).__name__)
            return _response("500 Internal Server Error", [], b"status unavailable\n")
        return _response(status[0], status[1], body)


def _response(status: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """An HTTP/1.0 answer; the connection closes after it."""
    lines = [f"HTTP/1.0 {status}", *(f"{k}: {v}" for k, v in headers)]
    if not any(k.lower() == "content-length" for k, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
