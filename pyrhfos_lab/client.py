"""The lab client's side: one request to a VIP (fetch), or a prober trying it every few ms.

Run as ``python -m pyrhfos_lab.client`` inside the client node once per request, so it imports
nothing of pyrhfos (lvs.cf's grammar alone costs ~0.4 s of interpreter start).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Sequence


def fetch_once(host: str, port: int, timeout: float) -> str | None:
    """Connect, read the tiny service's answer, return the node name in its body."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError:
        return None
    body = data.split(b"\r\n\r\n", 1)[-1].strip()
    return body.decode(errors="replace") or None


def probe_forever(host: str, port: int, interval: float, limit: float) -> None:
    """Print ``{"t": wall time, "who": name|null}`` per attempt until killed."""
    next_at = time.monotonic()
    while True:
        t = time.time()
        who = fetch_once(host, port, limit)
        sys.stdout.write(json.dumps({"t": t, "who": who}) + "\n")
        sys.stdout.flush()
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyrhfos_lab.client")
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch")
    f.add_argument("host")
    f.add_argument("port", type=int)
    f.add_argument("timeout", type=float)
    p = sub.add_parser("probe")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("interval", type=float)
    p.add_argument("limit", type=float)
    args = parser.parse_args(argv)
    if args.cmd == "fetch":
        print(fetch_once(args.host, args.port, args.timeout) or "")
        return 0
    try:
        probe_forever(args.host, args.port, args.interval, args.limit)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
