"""Gratuitous ARP: frames built by scapy in a short-lived child, sent by the daemon on an AF_PACKET socket.

Owns the announcement frames and their sending; the daemon never imports scapy (≈ 43-73 MB RSS).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import struct
import subprocess
import sys
from collections.abc import Sequence
from ipaddress import IPv4Address

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806
BROADCAST = "ff:ff:ff:ff:ff:ff"
MIN_FRAME = 60  # Ethernet minimum without FCS; NICs pad short frames, veth and bridges do not
CHILD_TIMEOUT = 30.0

Request = tuple[str, IPv4Address]


class ArpError(RuntimeError):
    """Frames could not be built."""


def build_frames(mac: str, ip: IPv4Address) -> list[bytes]:
    """The two gratuitous ARP forms for ``ip`` at ``mac``, broadcast, padded to 60 bytes (uses scapy).

    * request ("who-has ip tell ip", target MAC zero): the announcement of RFC 5227, which every
      Linux host treats as gratuitous;
    * reply ("ip is-at mac" with target MAC = sender MAC, as ``arping -A``): the form the Linux kernel
      requires of a gratuitous *reply*; some switches and old stacks only listen to replies.
    """
    from scapy.layers.l2 import ARP, Ether  # the child pays for scapy, the daemon does not
    from scapy.packet import Padding

    ip_s = str(IPv4Address(ip))
    mac = mac.lower()
    frames = [
        Ether(dst=BROADCAST, src=mac) / ARP(op=1, hwsrc=mac, psrc=ip_s, hwdst="00:00:00:00:00:00", pdst=ip_s),
        Ether(dst=BROADCAST, src=mac) / ARP(op=2, hwsrc=mac, psrc=ip_s, hwdst=mac, pdst=ip_s),
    ]
    out = []
    for frame in frames:
        raw = bytes(frame)
        out.append(raw + bytes(Padding(load=b"\0" * (MIN_FRAME - len(raw)))) if len(raw) < MIN_FRAME else raw)
    return out


def frames_stdlib(mac: str, ip: IPv4Address) -> list[bytes]:
    """The same frames as :func:`build_frames`, packed by hand: a fallback if the scapy child fails."""
    hw = bytes.fromhex(mac.replace(":", ""))
    bcast = b"\xff" * 6
    pip = IPv4Address(ip).packed
    head = bcast + hw + struct.pack("!H", ETH_P_ARP) + struct.pack("!HHBB", 1, 0x0800, 6, 4)
    request = head + struct.pack("!H", 1) + hw + pip + b"\0" * 6 + pip
    reply = head + struct.pack("!H", 2) + hw + pip + hw + pip
    return [f.ljust(MIN_FRAME, b"\0") for f in (request, reply)]


CHILD_MODULE = "pyrhfos.net.arp"  # this module, run as ``python -m`` in the frame-building child


def _child_argv(requests: Sequence[Request]) -> list[str]:
    # -I (isolated): neither the working directory nor PYTHONPATH nor the user's site-packages join
    # sys.path, so a planted scapy.py or pyrhfos/ cannot run as root in the child; it runs in / too.
    argv = [sys.executable, "-I", "-m", CHILD_MODULE, "build"]
    for mac, ip in requests:
        argv += [mac, str(ip)]
    return argv


def _parse_child(requests: Sequence[Request], stdout: str) -> dict[Request, list[bytes]]:
    data = json.loads(stdout)
    result: dict[Request, list[bytes]] = {}
    for mac, ip in requests:
        frames = [bytes.fromhex(h) for h in data[f"{mac.lower()} {IPv4Address(ip)}"]]
        if not frames:
            raise ArpError(f"no frames for {mac} {ip}")
        result[(mac, IPv4Address(ip))] = frames
    return result


def build_frames_in_child(
    requests: Sequence[Request], timeout: float = CHILD_TIMEOUT, fallback: bool = True
) -> dict[Request, list[bytes]]:
    """Build the frames of every (mac, ip) in a child Python that imports scapy, then exits.

    Called once per VIP set at daemon start/reload. With ``fallback`` a failing child is logged and the
    hand-packed frames are used: a failover must never go unannounced for want of scapy.
    """
    requests = [(mac, IPv4Address(ip)) for mac, ip in requests]
    if not requests:
        return {}
    try:
        proc = subprocess.run(
            _child_argv(requests),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd="/",
        )
        if proc.returncode != 0:
            raise ArpError(f"frame builder exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        return _parse_child(requests, proc.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, ArpError) as exc:
        if not fallback:
            raise ArpError(str(exc)) from exc
        log.warning("gratuitous ARP frames built without scapy: %s", exc)
        return {(mac, ip): frames_stdlib(mac, ip) for mac, ip in requests}


async def build_frames_in_child_async(
    requests: Sequence[Request], timeout: float = CHILD_TIMEOUT, fallback: bool = True
) -> dict[Request, list[bytes]]:
    """:func:`build_frames_in_child` without blocking the daemon's event loop."""
    return await asyncio.to_thread(build_frames_in_child, requests, timeout, fallback)


class GarpSender:
    """Sends prebuilt frames on one interface through a raw AF_PACKET socket (stdlib only).

    The socket is opened here, ahead of time, so announcing costs one send() per frame. It is opened
    with protocol 0: it receives nothing, so no queue builds up in a daemon that never reads it.
    """

    def __init__(self, interface: str, frames: Sequence[bytes]) -> None:
        self.interface = interface
        self.frames = list(frames)
        self.sent = 0
        self.errors = 0
        self._sock: socket.socket | None = None
        self._open()

    def _open(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.bind((self.interface, 0))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock

    def send_once(self) -> int:
        """Send every frame once without blocking; returns how many left. Errors are logged, not raised:
        a link that is down right now must not stop the takeover."""
        if self._sock is None:
            try:
                self._open()  # the interface had vanished; it may be back
            except OSError as exc:
                self.errors += 1
                log.warning("gratuitous ARP on %s: %s", self.interface, exc)
                return 0
        assert self._sock is not None
        count = 0
        for frame in self.frames:
            try:
                self._sock.send(frame)
                count += 1
            except OSError as exc:
                self.errors += 1
                log.warning("gratuitous ARP on %s: %s", self.interface, exc)
                if exc.errno in (errno.ENXIO, errno.ENODEV):  # interface deleted: reopen next time
                    self._sock.close()
                    self._sock = None
                    break
        self.sent += count
        return count

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> GarpSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _main(argv: Sequence[str]) -> int:
    if len(argv) < 3 or argv[0] != "build" or len(argv) % 2 != 1:
        print(f"usage: python -m {CHILD_MODULE} build MAC IP [MAC IP ...]", file=sys.stderr)
        return 2
    pairs = list(zip(argv[1::2], argv[2::2], strict=True))
    out = {
        f"{mac.lower()} {IPv4Address(ip)}": [f.hex() for f in build_frames(mac, IPv4Address(ip))]
        for mac, ip in pairs
    }
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
