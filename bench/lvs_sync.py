"""Connection sync (syncdaemon = 1) on the NAT LVS lab: how many new connections per second the backup's
conntrackd follows, and the gap a long connection sees when the backup takes over.

Rewrites only its own block (``<!-- lvs:sync -->``) of bench/RESULTS.md's LVS section, appended at the
end when absent; raw data in bench/results/lvs-sync-*.json. Run as root (network namespaces).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyrhfos_lab.lab import lab_available  # noqa: E402
from pyrhfos_lab.lvslab import DEADTIME, NAT_ROUTER, PORT, REAL_SERVERS, VIP, LvsLab, in_netns  # noqa: E402
from pyrhfos_lab.testbed import wait_until  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"
KEY = "sync"
TCP_LOOSE = "net.netfilter.nf_conntrack_tcp_loose"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def spread(values: list[float], digits: int = 0) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


# -- the pair -------------------------------------------------------------------------------------------
def conf(lab: LvsLab, name: str) -> str:
    return str(lab.pulse.state_dir(name) / "conntrackd" / "conntrackd.conf")


def status(lab: LvsLab, name: str) -> dict[str, Any]:
    done = lab.pulse.ask(name, "status", "--json")
    if done.returncode != 0:
        raise RuntimeError(f"pulse status on {name}: {done.stderr}")
    return json.loads(done.stdout)


def start_pair(lab: LvsLab, sync: bool) -> None:
    # Each run from empty tables: a flow left by an earlier run (committed on the backup, or the bursts'
    # TIME_WAIT entries) could match a new session's tuple and carry it without any sync.
    for name in ("primary", "backup"):
        lab.node(name).run("conntrack", "-F", check=False)
    lab.write_config(lab.lvs_cf(syncdaemon=sync, syncd_iface="eth0" if sync else None))
    for name in lab.rs:
        lab.start_rs(name)
    lab.start_pulse("primary")
    lab.start_pulse("backup")
    if lab.wait_holders({"primary"}, 20) != {"primary"} or not lab.holds("primary", NAT_ROUTER):
        raise RuntimeError("the primary did not take the VIP and nat_router")

    def ready() -> bool:
        (web,) = status(lab, "primary")["virtuals"]
        up = all(s["health"] == "up" for s in web["servers"] if s["name"] in REAL_SERVERS)
        synced = all((status(lab, n)["sync"] or {}).get("running") for n in ("primary", "backup"))
        return up and (synced or not sync)

    if not wait_until(ready, 20, 0.2):
        raise RuntimeError("real servers not up or conntrackd not running on both directors")
    if not sync:  # as the sync run has it (ConntrackdProcess sets it): the runs differ in the sync only
        for name in ("primary", "backup"):
            lab.node(name).sysctl(TCP_LOOSE, 0)


def stop_pair(lab: LvsLab) -> None:
    lab.primary.link_up("eth0")
    for name in ("backup", "primary"):
        if name in lab.pulse.pulses:
            lab.stop_pulse(name)
    for held in lab._held:
        held.close()
    lab._held.clear()


# -- connections per second ------------------------------------------------------------------------------
def kernel_flows(lab: LvsLab) -> int:
    """The primary's conntrack entries of clients to VIP:80."""
    done = lab.primary.run("conntrack", "-L", "-p", "tcp", "-d", VIP, "--dport", str(PORT), check=False)
    return sum(1 for line in done.stdout.splitlines() if f"dst={VIP} " in line)


def external_flows(lab: LvsLab) -> int:
    """The backup's external cache entries of clients to VIP:80 (what a takeover would commit)."""
    done = lab.backup.run("conntrackd", "-C", conf(lab, "backup"), "-e", check=False, timeout=30)
    return sum(1 for line in done.stdout.splitlines() if f"dst={VIP} " in line and f"dport={PORT} " in line)


def burst(lab: LvsLab, rate: float | None, seconds: float, threads: int) -> tuple[int, int, float]:
    """New connections to VIP:80 (connect, read the server's name, close) at ``rate`` per second in all
    (None: as fast as ``threads`` client threads can) for ``seconds``; (made, failed, seconds taken)."""
    each = None if rate is None else rate / threads

    def run() -> tuple[int, int, float]:
        rate = each
        made = failed = 0
        start = time.monotonic()
        i = 0
        while (now := time.monotonic()) - start < seconds:
            if rate is not None:
                due = start + i / rate
                if due > now:
                    time.sleep(due - now)
            i += 1
            try:
                with socket.create_connection((VIP, PORT), timeout=2.0) as s:
                    ok = s.recv(64).endswith(b"\n")
            except OSError:
                ok = False
            made += ok
            failed += not ok
        return made, failed, time.monotonic() - start

    got: list[tuple[int, int, float]] = []
    workers = [
        threading.Thread(target=lambda: got.append(in_netns(lab.client.ns, run)), daemon=True)
        for _ in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(seconds + 30)
    return sum(g[0] for g in got), sum(g[1] for g in got), max((g[2] for g in got), default=seconds)


def follow(lab: LvsLab, rate: float | None, seconds: float, threads: int) -> dict[str, Any]:
    lab.primary.run("conntrack", "-F", check=False)
    time.sleep(1.0)
    lab.backup.run("conntrackd", "-C", conf(lab, "backup"), "-f", "external", check=False)
    load = loadavg()
    made, failed, took = burst(lab, rate, seconds, threads)
    ended = time.monotonic()
    kernel = kernel_flows(lab)
    caught_up: float | None = None
    synced = external_flows(lab)
    while time.monotonic() - ended < 15:
        if synced >= kernel:
            caught_up = time.monotonic() - ended
            break
        time.sleep(0.2)
        synced = external_flows(lab)
    # What a takeover with this cache would wait for: conntrackd -c of it on the (standby) backup, then
    # its kernel emptied again.
    t = time.monotonic()
    lab.backup.run("conntrackd", "-C", conf(lab, "backup"), "-c", check=False, timeout=60)
    commit = time.monotonic() - t
    lab.backup.run("conntrack", "-F", check=False)
    row = {
        "commit_ms": commit * 1000,
        "rate": rate,
        "made": made,
        "failed": failed,
        "per_second": made / took,
        "kernel": kernel,
        "synced": synced,
        "caught_up": caught_up,
        "load": load,
    }
    say(f"rate {rate}: {row}")
    return row


# -- the gap at failover ---------------------------------------------------------------------------------
def session_failover(lab: LvsLab, sync: bool, interval: float) -> dict[str, Any]:
    """A held echo session sending a line every ``interval``; the primary's public link down; the session
    followed for 4 s after the backup took the VIP."""
    held = lab.hold()
    sock = held.sock
    sent: list[float] = []
    echoed: list[tuple[float, bytes]] = []
    error: list[str] = []
    error_at: list[float] = []
    stop = threading.Event()

    def send() -> None:
        n = 0
        while not stop.is_set() and not error:
            try:
                sock.sendall(f"line {n}\n".encode())
            except OSError as e:
                error.append(type(e).__name__)
                return
            sent.append(time.monotonic())
            n += 1
            stop.wait(interval)

    def read() -> None:
        buf = b""
        sock.settimeout(0.5)
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if stop.is_set():
                    return
                continue
            except OSError as e:
                error.append(type(e).__name__)
                error_at.append(time.monotonic())
                return
            if not chunk:
                error.append("EOF")
                return
            buf += chunk
            now = time.monotonic()
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                echoed.append((now, line))

    threads = [threading.Thread(target=f, daemon=True) for f in (send, read)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    if sync:
        sport = f"sport={sock.getsockname()[1]} "
        cache = lambda: lab.backup.run("conntrackd", "-C", conf(lab, "backup"), "-e", check=False).stdout  # noqa: E731
        if not wait_until(lambda: sport in cache(), 5, 0.1):
            raise RuntimeError("the session never reached the backup's external cache")
    load = loadavg()
    fault = time.monotonic()
    lab.primary.link_down("eth0")
    wait_until(lambda: lab.holds("backup", VIP), DEADTIME + 10, 0.02)
    took = time.monotonic() - fault
    wait_until(lambda: bool(error), 4.0, 0.05)
    stop.set()
    for t in threads:
        t.join(5)
    times = [t for t, _ in echoed]
    # The longest silence between two echoes (the session is steady at ``interval`` otherwise); None when
    # the session ended, as its last echo then has no successor.
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    gap = max(gaps) if gaps and not error else None
    lines_ok = [line for _, line in echoed] == [f"line {i}".encode() for i in range(len(echoed))]
    commit = (status(lab, "backup")["sync"] or {}).get("last_commit_ms") if sync else None
    ended_after = error_at[0] - fault if error_at else None  # seconds from the fault to the reset
    row = {
        "sync": sync,
        "takeover": took,
        "gap": gap,
        "sent": len(sent),
        "echoed": len(echoed),
        "lost": len(sent) - len(echoed),
        "in_order": lines_ok,
        "error": error[0] if error else None,
        "ended_after": ended_after,
        "commit_ms": commit,
        "load": load,
    }
    say(f"failover sync={sync}: {row}")
    return row


# -- RESULTS.md -----------------------------------------------------------------------------------------
def write_block(lines: list[str]) -> None:
    """Replace this script's block of RESULTS.md, or append it at the end (the LVS section is last); the
    rest of the file, the other engineers' blocks included, is left as it is."""
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else ""
    block = f"<!-- lvs:{KEY} -->\n" + "\n".join(lines).rstrip("\n") + f"\n<!-- /lvs:{KEY} -->\n"
    pattern = re.compile(rf"<!-- lvs:{KEY} -->\n.*?<!-- /lvs:{KEY} -->\n", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    RESULTS_MD.write_text(text)


def report(results: dict[str, Any], took: float) -> list[str]:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(results["started"]))
    lines = [
        "### Connection sync between the directors (`syncdaemon = 1`, issue 16)",
        "",
        f"`bench/lvs_sync.py` on {when}, {took:.0f} s, {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}; raw data `bench/results/{results['file']}`.",
        "",
        "NAT lab, rr over rs1..rs3, keepalive 0.5, deadtime 2; conntrackd 1.4.7 (FTFW over UDP on the public "
        "link) started by pulse on both directors. **Following new connections**: the primary's conntrack "
        "and the backup's external cache emptied, then the client makes new connections to VIP:80 (connect, "
        f"read the server's name, close) from {results['threads']} threads at the offered rate for "
        f'{results["seconds"]:.0f} s; "synced": the backup\'s external cache entries to VIP:80 (what a '
        "takeover commits) against the primary's conntrack entries, and how long after the burst the "
        "backup had them all; then the time `conntrackd -c` takes to commit that cache into the backup's "
        "kernel (run on the standby by hand, its kernel emptied after): what a takeover waits for before "
        "the table and the VIPs (measured by the `conntrackd -C ... -c` command line, process start "
        "included).",
        "",
        "| offered conn/s | made conn/s | failed | primary's entries | in the backup's cache | synced | "
        "caught up after the burst s | conntrackd -c of that cache ms | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["follow"]:
        frac = f"{100 * r['synced'] / r['kernel']:.1f} %" if r["kernel"] else "-"
        caught = "-" if r["caught_up"] is None else f"{r['caught_up']:.1f}"
        offered = "as fast as it can" if r["rate"] is None else f"{r['rate']:.0f}"
        lines.append(
            f"| {offered} | {r['per_second']:.0f} | {r['failed']} | {r['kernel']} | {r['synced']} | {frac} | "
            f"{caught} | {r['commit_ms']:.0f} | {r['load']} |"
        )
    lines += [
        "",
        f"**A long connection at failover**: a held echo session sends a line every "
        f"{results['interval'] * 1000:.0f} ms; once the backup's cache has it, the primary's public switch "
        "port goes down; the backup takes over after deadtime. Gap: the longest silence between two echoes "
        "(the client's TCP retransmits on its own back-off, so the gap is the takeover plus "
        "the wait for the next retransmission). Without sync the new director resets the session "
        "(nf_conntrack_tcp_loose = 0 on both, as with sync).",
        "",
        "| sync | runs | takeover s: median (min–max) | echo gap s: median (min–max) | lines lost | "
        "session ended | commit ms | load (min–max) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for sync in (True, False):
        runs = [r for r in results["failover"] if r["sync"] is sync]
        if not runs:
            continue
        gaps = [r["gap"] for r in runs if r["gap"] is not None and r["error"] is None]
        ended = sum(1 for r in runs if r["error"] is not None)
        whens = [r["ended_after"] for r in runs if r["ended_after"] is not None]
        ended_text = f"{ended}/{len(runs)}" + (
            f" ({', '.join(sorted({r['error'] for r in runs if r['error']}))}, {spread(whens, 2)} s after the"
            " fault)"
            if ended
            else ""
        )
        kept = [r for r in runs if r["error"] is None]
        lost = sum(r["lost"] for r in kept) if kept else "-"
        commits = [r["commit_ms"] for r in runs if r["commit_ms"] is not None]
        loads = [r["load"] for r in runs]
        lines.append(
            f"| {'yes' if sync else 'no'} | {len(runs)} | {spread([r['takeover'] for r in runs], 2)} | "
            f"{spread(gaps, 2)} | {lost} | {ended_text} | "
            f"{spread(commits, 1)} | {min(loads)}–{max(loads)} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,300,1000,0", help="offered conn/s; 0: as fast as can be")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each burst")
    parser.add_argument("--threads", type=int, default=8, help="client threads making the connections")
    parser.add_argument("--runs", type=int, default=5, help="failovers with sync")
    parser.add_argument("--control-runs", type=int, default=2, help="failovers without sync")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between the session's lines")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    args = parser.parse_args()
    reason = lab_available()
    if reason:
        say(f"cannot run: {reason}")
        return 2
    if subprocess.run(["which", "conntrackd"], capture_output=True).returncode != 0:
        say("cannot run: conntrackd not installed (tools/host-deps.sh)")
        return 2
    started = time.time()
    t0 = time.monotonic()
    results: dict[str, Any] = {
        "started": started,
        "seconds": args.seconds,
        "threads": args.threads,
        "interval": args.interval,
        "follow": [],
        "failover": [],
    }
    with LvsLab("nat") as lab:
        start_pair(lab, sync=True)
        try:
            for r in args.rates.split(","):
                rate = float(r) or None
                results["follow"].append(follow(lab, rate, args.seconds, args.threads))
        finally:
            stop_pair(lab)
        for i in range(args.runs + args.control_runs):
            sync = i < args.runs
            start_pair(lab, sync=sync)
            try:
                results["failover"].append(session_failover(lab, sync, args.interval))
            finally:
                stop_pair(lab)
    took = time.monotonic() - t0
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    results["file"] = f"lvs-sync-{stamp}.json"
    lines = report(results, took)
    print("\n".join(lines))
    if not args.no_write:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / results["file"]).write_text(json.dumps(results, indent=1) + "\n")
        write_block(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
