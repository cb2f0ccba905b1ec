"""Parse-time benchmark: lvs.cf files with 10, 100 and 1000 failover services.

Run: PYTHONPATH=. python bench/parse.py   (goal: 1000 services in <= 0.5 s)
"""

from __future__ import annotations

import time

from pyrhfos.config import loads


def generate(services: int) -> str:
    """A valid FOS file with the given number of failover blocks, one VIP each."""
    lines = [
        "serial_no = 1",
        "primary = 192.168.1.10",
        "primary_private = 10.0.0.1",
        "service = fos",
        "backup_active = 1",
        "backup = 192.168.1.11",
        "backup_private = 10.0.0.2",
        "heartbeat = 1",
        "heartbeat_port = 539",
        "keepalive = 2",
        "deadtime = 10",
    ]
    for i in range(services):
        lines += [
            f"failover svc{i} {{",
            f"    address = 192.168.{2 + i // 250}.{1 + i % 250} eth0:{i + 1}",
            "    vip_nmask = 255.255.255.0",
            "    active = 1",
            f"    port = {1024 + i}",
            '    send = "GET / HTTP/1.0\\r\\n\\r\\n"',
            '    expect = "HTTP"',
            "    timeout = 10",
            f'    start_cmd = "/etc/rc.d/init.d/svc{i} start"',
            f'    stop_cmd = "/etc/rc.d/init.d/svc{i} stop"',
            "}",
        ]
    return "\n".join(lines) + "\n"


def best_of(text: str, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        cfg, _ = loads(text, "bench.cf")
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    for services in (10, 100, 1000):
        text = generate(services)
        seconds = best_of(text, 5)
        lines = len(text.splitlines())
        print(f"{services:5d} failover services ({lines:6d} lines): {seconds * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
