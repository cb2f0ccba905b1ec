"""Prometheus metrics (optional, ``metrics_port`` in lvs.cf): the status, as prometheus_client exposes it.

Values are read from the daemon's status at scrape time, so nothing is counted twice; only the
probe latency histogram is fed as probes finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..core.vocab import State

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
        self.server: Any = None

    def serve(self, address: str, port: int) -> None:
        """Listen on ``address:port`` only (this node's lvs.cf address), in a thread of its own."""
        self.server, _ = start_http_server(port, addr=address, registry=self.registry)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
