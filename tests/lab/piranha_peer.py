"""A Piranha 0.8 pulse in FOS mode, emulated from its documented wire format and rules.

Run inside a lab node: ``python piranha_peer.py ROLE PARTNER_IP PORT KEEPALIVE DEADTIME``.
It takes no VIP; it prints one JSON line per decision and per new magic heard,
so a test can tell what it believes. Built from ../shared/reference/pulse.md only.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time

RUNNING, STOPPED, STOPME = 0xBEEFBABE, 0xDEADBEEF, 0xDEADDADA


def say(**kw: object) -> None:
    sys.stdout.write(json.dumps({"t": time.time(), **kw}) + "\n")
    sys.stdout.flush()


def main() -> None:
    role, partner, port, keepalive, deadtime = (
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        *map(float, sys.argv[4:6]),
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    active = False
    last_heard = time.monotonic()
    next_beat = 0.0
    heard: set[str] = set()
    say(event="start", role=role, active=active)
    end = time.monotonic() + 600  # bounded: a test never needs longer
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_beat:
            # x86 Piranha sends the C int as it lies in memory: little-endian.
            sock.sendto(struct.pack("<I", RUNNING if active else STOPPED), (partner, port))
            next_beat = now + keepalive
        if not active and now - last_heard >= deadtime:
            active = True
            say(event="activate", reason="partner dead", active=True)
            continue
        ready, _, _ = select.select([sock], [], [], max(0.0, min(next_beat, last_heard + deadtime) - now))
        if not ready:
            continue
        data, (src, _) = sock.recvfrom(64)
        if src != partner:
            say(event="unexpected heartbeat", source=src)
            continue
        if len(data) != 4:
            say(event="bad heartbeat packet", size=len(data))
            continue
        magic = struct.unpack("<I", data)[0]
        if magic not in (RUNNING, STOPPED, STOPME):
            say(event="incompatible heartbeat", magic=hex(magic))
            continue
        last_heard = time.monotonic()
        name = {RUNNING: "RUNNING", STOPPED: "STOPPED", STOPME: "STOPME"}[magic]
        if name not in heard:
            heard.add(name)
            say(event="heard", magic=name, raw=data.hex())
        if magic == RUNNING and active and role == "backup":
            active = False
            sock.sendto(struct.pack("<I", STOPPED), (partner, port))
            say(event="deactivate", reason="partner active", active=False)
        elif magic == STOPPED and not active:
            active = True
            say(event="activate", reason="partner stopped", active=True)
        elif magic == STOPME and active:
            active = False
            say(event="deactivate", reason="stop me", active=False)


if __name__ == "__main__":
    main()
