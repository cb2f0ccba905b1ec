"""Replayed heartbeats have no effect (issue 13, item 1), with real processes and real recorded frames.

The primary's signed beats, its LEAVING beat among them, are recorded with a packet socket on its
bridge port; both nodes restart; the frames are sent again verbatim from the client's namespace.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pyrhfos.core.wire import Beat, decode
from pyrhfos_lab.testbed import Testbed, wait_until

pytestmark = pytest.mark.lab

KEEPALIVE, DEADTIME = 0.2, 1.0
KEY = "correct horse battery staple"

# Run in the switch namespace: every frame from SRC to UDP port 539 seen on the bridge port, for SECONDS.
# veth leaves the UDP checksum to "hardware" that is not there; the recorder fills it in, as the NIC of
# a real wire would, so the frames are what a capture on a real network holds.
RECORD = """
import select, socket, struct, sys, time

def checksum(data):
    if len(data) % 2:
        data += b"\\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total & 0xFFFF) or 0xFFFF

port, src, out, seconds = sys.argv[1], socket.inet_aton(sys.argv[2]), sys.argv[3], float(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((port, 0))
end = time.monotonic() + seconds
with open(out, "wb") as fh:
    while (left := end - time.monotonic()) > 0:
        if not select.select([s], [], [], left)[0]:
            continue
        frame = s.recv(65535)
        ihl = (frame[14] & 0x0F) * 4 if len(frame) > 14 else 0
        if frame[12:14] == b"\\x08\\x00" and frame[23] == 17 and frame[26:30] == src:
            if struct.unpack("!H", frame[14 + ihl + 2 : 14 + ihl + 4])[0] == 539:
                ip, udp = frame[14 : 14 + ihl], bytearray(frame[14 + ihl :])
                udp[6:8] = b"\\0\\0"
                pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(udp))
                udp[6:8] = struct.pack("!H", checksum(pseudo + bytes(udp)))
                frame = frame[: 14 + ihl] + bytes(udp)
                fh.write(struct.pack("!H", len(frame)) + frame)
                fh.flush()
"""

# Run in the client's namespace: the recorded frames, verbatim, ROUNDS times.
REPLAY = """
import socket, struct, sys, time
ifname, path, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(path, "rb").read()
frames, at = [], 0
while at < len(data):
    (n,) = struct.unpack_from("!H", data, at)
    frames.append(data[at + 2 : at + 2 + n])
    at += 2 + n
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
for _ in range(rounds):
    for f in frames:
        s.send(f)
        time.sleep(0.005)
print(len(frames) * rounds)
"""


def frames(path: Path) -> list[bytes]:
    data, out, at = path.read_bytes(), [], 0
    while at < len(data):
        (n,) = struct.unpack_from("!H", data, at)
        out.append(data[at + 2 : at + 2 + n])
        at += 2 + n
    return out


def beat_of(frame: bytes) -> Beat:
    ihl = (frame[14] & 0x0F) * 4
    got = decode(frame[14 + ihl + 8 :], KEY.encode())
    assert isinstance(got, Beat)
    return got


def counters(bed: Testbed, name: str) -> dict[str, int]:
    res = bed.ask(name, "status", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["counters"]


def test_recorded_beats_replayed_after_both_restart_change_nothing(lab: Any, tmp_path: Path) -> None:
    bed = Testbed(lab, tmp_path, keepalive=KEEPALIVE, deadtime=DEADTIME)
    key = tmp_path / "beat.key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    bed.save_config(dataclasses.replace(bed.cfg, heartbeat_key=str(key)))
    bed.start("a")
    bed.start("b")
    assert bed.wait_holders({"a"}, 15) == {"a"}, bed.log("a")
    assert wait_until(lambda: "standby" in bed.log("b"), 10)

    # 1. Record a's beats on its bridge port, and its LEAVING beat when it stops cleanly.
    recording = tmp_path / "a-beats.bin"
    port = bed.a.interfaces["eth0"][3]
    argv = ["ip", "netns", "exec", lab.switch_ns, sys.executable, "-c", RECORD]
    recorder = subprocess.Popen([*argv, port, bed.a.ip, str(recording), "4"])
    try:
        time.sleep(1.5)
        assert bed.stop("a") == 0
        assert bed.wait_holders({"b"}, 10) == {"b"}, "b took over from the leaving primary"
        recorder.wait(15)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait(5)
    recorded = frames(recording)
    beats = [beat_of(f) for f in recorded]
    assert len(beats) > 5 and any(b.leaving for b in beats), "the recording holds the LEAVING beat"
    assert bed.stop("b") == 0

    # 2. Both nodes start again; a serves.
    bed.start("a")
    assert bed.wait_holders({"a"}, 15) == {"a"}, bed.log("a")
    bed.start("b")
    assert wait_until(lambda: bed.log("b").count("-> standby") >= 2, 10), bed.log("b")
    b_log_before = len(bed.log("b"))
    dropped_before = counters(bed, "b").get("dropped-replay", 0)

    # 3. The recording, verbatim, from the client's namespace, three times over; then a deadtime more.
    holders: set[frozenset[str]] = set()
    replay = bed.client.popen([sys.executable, "-c", REPLAY, bed.client.ifname, str(recording), "3"])
    try:
        end = time.monotonic() + 30
        while replay.poll() is None and time.monotonic() < end:
            holders.add(frozenset(bed.holders()))
            time.sleep(0.05)
        for _ in range(int(2 * DEADTIME / 0.05)):
            holders.add(frozenset(bed.holders()))
            time.sleep(0.05)
    finally:
        if replay.poll() is None:
            replay.kill()
        replay.wait(5)
    assert holders == {frozenset({"a"})}, f"the VIP left the primary: {holders}"
    after = bed.log("b")[b_log_before:]
    assert "-> active" not in after, after
    dropped = counters(bed, "b").get("dropped-replay", 0) - dropped_before
    assert dropped >= len(recorded), f"every replayed frame is dropped and counted: {counters(bed, 'b')}"
