"""``make demo``: a two-node pulse cluster and a client in network namespaces, and one failover.

Everything is built inside namespaces this run creates and removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from .lab import Lab, lab_available
from .testbed import LABEL, VIP, Testbed, outage, wait_until

KEEPALIVE, DEADTIME = 1.0, 3.0


def step(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def show_ifconfig(bed: Testbed, name: str) -> None:
    """The eth0 stanzas of ``ifconfig -a`` on one node, as an administrator would look."""
    out = bed.nodes[name].ifconfig()
    stanzas = [s for s in out.split("\n\n") if s.startswith("eth0")]
    print(f"--- ifconfig -a on node {name} ({bed.nodes[name].ip}):")
    print("\n\n".join(stanzas).rstrip() or "(no eth0)")


_MAIN_PID = os.getpid()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # pyroute2 forks netns helpers that inherit this handler and are ended with SIGTERM:
    # only the demo itself turns SIGTERM into a clean-up; a helper just exits.
    if os.getpid() != _MAIN_PID:
        os._exit(0)
    raise KeyboardInterrupt


def run(workdir: Path) -> int:
    with Lab() as lab:
        step("building the lab: nodes a (primary) and b (backup) and a client on one bridge")
        bed = Testbed(lab, workdir, keepalive=KEEPALIVE, deadtime=DEADTIME)
        for node in (bed.a, bed.b, bed.client):
            print(f"  {node.name:<7} namespace {node.ns:<28} {node.ip}")
        step(f"lvs.cf for both nodes (etc/lvs.cf.example with lab addresses): {bed.config_path}")
        print(bed.config_path.read_text())

        step("starting pulse on both nodes")
        bed.start("a")
        bed.start("b")
        if not wait_until(lambda: bed.holders() == {"a"}, 15, 0.1):
            print("the primary did not take the VIP; its log:\n" + bed.log("a"), file=sys.stderr)
            return 1
        wait_until(lambda: "standby" in bed.log("b"), 10)
        show_ifconfig(bed, "a")
        show_ifconfig(bed, "b")
        answer = wait_until(bed.fetch, 5)
        print(f"--- client: GET http://{VIP}/ answered by node {answer}")

        step(f"failing the primary: its link goes down (keepalive {KEEPALIVE:g}s, deadtime {DEADTIME:g}s)")
        prober = bed.start_prober(interval=0.01, limit=0.05)
        time.sleep(1.0)
        fault = time.time()
        bed.a.link_down()
        took = wait_until(lambda: bed.holds_vip("b"), 15, 0.05)
        wait_until(lambda: bed.fetch(0.2) == "b", 5)
        time.sleep(0.5)
        prober.terminate()
        out, _ = prober.communicate(timeout=5)
        samples = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        if not took:
            print("the backup did not take over; its log:\n" + bed.log("b"), file=sys.stderr)
            return 1
        show_ifconfig(bed, "b")
        print(f"--- client: GET http://{VIP}/ answered by node {bed.fetch()}")
        gap = outage(samples, fault, "b")
        failed = sum(1 for s in samples if s["t"] >= fault and s["who"] is None)
        print(
            f"--- outage seen by the client (a try every 10 ms): {gap * 1000:.0f} ms, {failed} failed tries"
            if gap is not None
            else "--- the client never reached node b"
        )
        print("--- the backup's log of the takeover:")
        for line in bed.log("b").splitlines():
            if "->" in line or "added" in line:
                print("   ", line)
        step(f"done: VIP {VIP} on {LABEL} moved from a to b; removing the lab")
    return 0


def main() -> int:
    problem = lab_available()
    if problem:
        print(f"demo: {problem}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="pyrhfos-demo-") as tmp:
            return run(Path(tmp))
    except KeyboardInterrupt:
        print("\ninterrupted: the lab has been removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
