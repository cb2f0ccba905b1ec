"""Failover outage and idle cost of pulse (pyrhfos) and keepalived, side by side, in one run.

Run as root (``make bench`` installs keepalived and matplotlib first; this script installs nothing).
Each repetition builds a fresh namespace lab (pyrhfos_lab.lab): nodes a (primary, 192.0.2.100) and
b (backup, 192.0.2.200), a client (192.0.2.50) on one bridge, VIP 192.0.2.11/24 on eth0:1, the lab's
tiny TCP service on port 80 of both nodes answering with the node's name. A prober on the client
opens a new connection to VIP:80 every 10 ms with a 50 ms limit and records who answered.
Outage = fault -> first answer from b.

Examples:
    python bench/failover.py                         # everything, 5 repetitions (about 20 min)
    python bench/failover.py --quick                 # 1 repetition, 5 s idle windows (about 3 min)
    python bench/failover.py --drivers pyrhfos --modes sigterm --timers 0.1 --reps 3 --services 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyrhfos.config.model import DeviceAddress  # noqa: E402
from pyrhfos_lab.lab import Lab, lab_available  # noqa: E402
from pyrhfos_lab.testbed import VIP, Testbed, wait_until  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PLOT_NAME = "timeline.png"
DRIVER_NAMES = ("pyrhfos", "keepalived")
MODES = ("linkdown", "kill9", "sigterm", "service")
# keepalived advert_int -> pulse (keepalive, deadtime): the same detection budget.
TIMERS = {"1": (1.0, 3.0), "0.1": (0.1, 0.3)}
PROBE_INTERVAL, PROBE_LIMIT = 0.01, 0.05
HOLD_AFTER = 1.0  # seconds of probes kept after b's first answer (flaps show up there)
MAIN_PID = os.getpid()

KEEPALIVED_CONF = """\
global_defs {{
    router_id node_{name}
    {version}
    script_user root
    enable_script_security
}}
{script}
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int {advert}
    unicast_src_ip {me}
    unicast_peer {{
        {peer}
    }}
    virtual_ipaddress {{
        {vip}/24 dev eth0 label eth0:1
    }}
    {track}
}}
"""

# keepalived runs track scripts at whole-second intervals only (``interval <INTEGER>``): the
# fairest equivalent of pulse's send/expect probe is a TCP connect to the local service every
# second (advert_int rounded up), one failure enough (fall 1) and one success to recover (rise 1).
# Without a weight a failing script puts the instance in FAULT: it drops the VIP and sends a
# priority-0 advert, so the backup takes over after its skew time.
TRACK_SCRIPT = """\
vrrp_script chk_service {
    script "/bin/bash -c '</dev/tcp/127.0.0.1/80'"
    interval 1
    timeout 1
    fall 1
    rise 1
}
"""
TRACK = "track_script {\n        chk_service\n    }"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- drivers ---------------------------------------------------------------------------------------


class Driver:
    """Starts one failover daemon on both nodes of a Testbed and injects faults into it."""

    name = ""

    def __init__(self, bed: Testbed, advert: str, mode: str) -> None:
        self.bed, self.advert, self.mode = bed, advert, mode
        self.procs: dict[str, Any] = {}

    def start(self) -> None:
        raise NotImplementedError

    def settled(self) -> bool:
        raise NotImplementedError

    def logs(self) -> dict[str, str]:
        raise NotImplementedError

    def tree(self, node: str) -> list[psutil.Process]:
        """The daemon process on ``node`` and all its children (``ip netns exec`` execs: same pid)."""
        try:
            root = psutil.Process(self.procs[node].pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def fault(self) -> None:
        bed = self.bed
        if self.mode == "linkdown":
            bed.a.link_down()
        elif self.mode == "kill9":
            # Link first: a dying daemon must get no last word out (keepalived's VRRP child
            # notices its parent's death and would send a priority-0 advert).
            bed.a.link_down()
            for p in self.tree("a"):
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
        elif self.mode == "sigterm":
            os.kill(self.procs["a"].pid, signal.SIGTERM)
        elif self.mode == "service":
            if bed.kill_service("a") is None:
                raise RuntimeError("no service process to kill on a")
        else:
            raise ValueError(self.mode)


class Pulse(Driver):
    name = "pyrhfos"

    def start(self) -> None:
        self.procs["a"] = self.bed.start("a")
        self.procs["b"] = self.bed.start("b")

    def settled(self) -> bool:
        return self.bed.holders() == {"a"} and "standby" in self.bed.log("b")

    def logs(self) -> dict[str, str]:
        return {n: self.bed.log(n) for n in ("a", "b")}


class Keepalived(Driver):
    name = "keepalived"

    def start(self) -> None:
        bed = self.bed
        service = self.mode == "service"
        for name, node, peer, prio in (("a", bed.a, bed.b, 150), ("b", bed.b, bed.a, 100)):
            conf = bed.workdir / f"keepalived-{name}.conf"
            conf.write_text(
                KEEPALIVED_CONF.format(
                    name=name,
                    version="vrrp_version 3" if float(self.advert) < 1 else "vrrp_version 2",
                    script=TRACK_SCRIPT if service else "",
                    track=TRACK if service else "",
                    priority=prio,
                    advert=self.advert,
                    me=node.ip,
                    peer=peer.ip,
                    vip=VIP,
                )
            )
            log = open(bed.workdir / f"keepalived-{name}.log", "ab")  # noqa: SIM115 - the child owns it
            # Foreground, log to the console, VRRP only, pid files of its own (never the host's).
            argv = [
                "keepalived", "--dont-fork", "--log-console", "--vrrp", "-f", str(conf),
                "--pid", str(bed.workdir / f"ka-{name}.pid"),
                "--vrrp_pid", str(bed.workdir / f"ka-vrrp-{name}.pid"),
            ]  # fmt: skip
            self.procs[name] = node.popen(argv, stdout=log, stderr=log)
            log.close()

    def settled(self) -> bool:
        return self.bed.holders() == {"a"} and "Entering BACKUP STATE" in self.logs()["b"]

    def logs(self) -> dict[str, str]:
        out = {}
        for n in ("a", "b"):
            try:
                out[n] = (self.bed.workdir / f"keepalived-{n}.log").read_text(errors="replace")
            except OSError:
                out[n] = ""
        return out


DRIVERS: dict[str, type[Driver]] = {"pyrhfos": Pulse, "keepalived": Keepalived}


# -- the client prober -----------------------------------------------------------------------------


class Prober:
    """bed.start_prober's output read live on a thread, so the run ends when b has answered a while."""

    def __init__(self, bed: Testbed) -> None:
        self.proc = bed.start_prober(PROBE_INTERVAL, PROBE_LIMIT)
        self.samples: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                with self.lock:
                    self.samples.append(json.loads(line))

    def first(self, who: str, after: float) -> float | None:
        with self.lock:
            return next((s["t"] for s in self.samples if s["t"] >= after and s["who"] == who), None)

    def wait_answers(self, count: int, timeout: float) -> bool:
        return bool(wait_until(lambda: sum(1 for s in self.snapshot() if s["who"]) >= count, timeout, 0.05))

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.samples)

    def stop(self) -> list[dict[str, Any]]:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:  # the lab kills its group at teardown anyway
            self.proc.kill()
        self.thread.join(5)
        return self.snapshot()


def analyse(samples: list[dict[str, Any]], fault: float) -> dict[str, Any]:
    """Outage (fault -> first answer from b), failed probes after the fault, answers from a after b's."""
    after = [s for s in samples if s["t"] >= fault]
    first_b = next((s["t"] for s in after if s["who"] == "b"), None)
    return {
        "outage_ms": None if first_b is None else round((first_b - fault) * 1000, 1),
        "failed_probes": sum(1 for s in after if s["who"] is None),
        "flaps": sum(1 for s in after if first_b is not None and s["t"] > first_b and s["who"] == "a"),
        "probes": len(after),
    }


# -- one failover ------------------------------------------------------------------------------------


def one_failover(drv: str, advert: str, mode: str, keep_timeline: bool) -> dict[str, Any]:
    """One fault in a fresh lab; a daemon that misbehaves gives a result that says so."""
    keepalive, deadtime = TIMERS[advert]
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="pyrhfos-bench-") as tmp:
        # The service runs on both nodes all the time, for both drivers: the daemons only move the VIP.
        bed = Testbed(
            lab, Path(tmp), keepalive=keepalive, deadtime=deadtime, service_settings={"timeout": 1.0}
        )
        driver = DRIVERS[drv](bed, advert, mode)
        driver.start()
        result: dict[str, Any] = {}
        try:
            if not wait_until(driver.settled, 30, 0.1):
                raise RuntimeError(f"did not settle with a holding the VIP (holders {sorted(bed.holders())})")
            # Steady state: pulse gives a new holder `deadtime` of grace before its probes count.
            time.sleep(deadtime + 1.0)
            prober = Prober(bed)
            if not prober.wait_answers(20, 10):
                prober.stop()
                raise RuntimeError("the client got no answers from the VIP before the fault")
            # A random phase: the fault must not always fall at the same point of the beat/advert cycle.
            time.sleep(0.5 + random.uniform(0.0, keepalive))
            fault = time.time()
            driver.fault()
            budget = 10 * deadtime + 10.0
            wait_until(lambda: prober.first("b", fault), budget, 0.05)
            first_b = prober.first("b", fault)
            if first_b is not None:
                time.sleep(max(0.0, first_b + HOLD_AFTER - time.time()))
            samples = prober.stop()
            result = analyse(samples, fault)
            if keep_timeline:
                result["timeline"] = [[round(s["t"] - fault, 4), s["who"]] for s in samples]
        except RuntimeError as e:
            result = {"outage_ms": None, "failed_probes": 0, "flaps": 0, "error": str(e)}
        if result.get("outage_ms") is None or result.get("flaps") or result.get("error"):
            result["logs"] = {n: text[-4000:] for n, text in driver.logs().items()}
        return result


# -- idle cost -----------------------------------------------------------------------------------------


def tree_cpu(procs: list[psutil.Process]) -> float:
    """User + system CPU seconds of the processes and their reaped children."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def many_services(bed: Testbed, count: int) -> list[str]:
    """``count`` failover services on port 80, VIPs 192.0.2.20.. (then 203.0.113.x), eth0:1..eth0:count."""
    nodes = {bed.a.ip, bed.b.ip, bed.client.ip}
    pool = [f"192.0.2.{h}" for h in range(20, 255)] + [f"203.0.113.{h}" for h in range(1, 255)]
    vips = [ip for ip in pool if ip not in nodes][:count]
    base = bed.cfg.failovers[0]
    failovers = tuple(
        dataclasses.replace(
            base,
            name=f"svc{i}",
            address=DeviceAddress(IPv4Address(ip), f"eth0:{i}"),
            vip_nmask=None,
            start_cmd="true",
            stop_cmd="true",
        )
        for i, ip in enumerate(vips, start=1)
    )
    bed.save_config(dataclasses.replace(bed.cfg, failovers=failovers))
    check = bed.run_pulse("a", "--check")
    if check.returncode != 0:
        raise RuntimeError(f"pulse --check refused {count} services: {check.stdout}{check.stderr}")
    return vips


def idle_cost(drv: str, advert: str, seconds: float, services: int = 1) -> dict[str, Any]:
    keepalive, deadtime = TIMERS[advert]
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="pyrhfos-bench-") as tmp:
        bed = Testbed(lab, Path(tmp), keepalive=keepalive, deadtime=deadtime)
        vips = many_services(bed, services) if services > 1 else [VIP]
        driver = DRIVERS[drv](bed, advert, "idle")
        driver.start()

        def settled() -> bool:
            held = {ip for ip, _, _ in bed.a.addresses()}
            return set(vips) <= held and "standby" in bed.log("b")

        check = settled if services > 1 else driver.settled
        if not wait_until(check, 120, 0.5):
            raise RuntimeError(f"{drv} did not settle; logs: {driver.logs()}")
        time.sleep(max(3.0, deadtime + 2.0))
        out: dict[str, Any] = {}
        trees = {n: driver.tree(n) for n in ("a", "b")}
        start = {n: tree_cpu(trees[n]) for n in trees}
        wall = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - wall
        for n, tree in trees.items():
            mem = []
            for p in tree:
                try:
                    mem.append(p.memory_full_info())
                except psutil.NoSuchProcess:
                    pass
            out[n] = {
                "cpu_percent": round(100 * (tree_cpu(tree) - start[n]) / elapsed, 3),
                "rss_mb": round(sum(m.rss for m in mem) / 2**20, 1),
                "pss_mb": round(sum(m.pss for m in mem) / 2**20, 1),
                "processes": len(mem),
            }
        if drv == "pyrhfos":
            for n in ("a", "b"):
                status = bed.ask(n, "status", "--json")
                try:
                    st = json.loads(status.stdout)
                    out[n]["state"] = st["node"]["state"]
                    out[n]["services_held"] = sum(1 for s in st["services"] if s.get("held"))
                    out[n]["probes_ok"] = sum(1 for s in st["services"] if s.get("probe") == "ok")
                except (ValueError, KeyError, TypeError):
                    out[n]["status_error"] = (status.stdout + status.stderr)[-500:]
                log = bed.log(n).splitlines()
                out[n]["log"] = {
                    "state_changes": [line for line in log if " -> " in line][:10],
                    "vip_vanished": sum(1 for line in log if "had vanished" in line),
                    "garp_not_ready": sum(1 for line in log if "not ready yet" in line),
                }
        return out


# -- reporting ----------------------------------------------------------------------------------------


def summarize(values: list[float | None]) -> dict[str, float | int | None]:
    got = [v for v in values if v is not None]
    missing = len(values) - len(got)
    if not got:
        return {"min": None, "median": None, "max": None, "missing": missing}
    return {"min": min(got), "median": statistics.median(got), "max": max(got), "missing": missing}


def fmt(v: float | None, digits: int = 0) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def failover_table(results: dict[str, Any]) -> list[str]:
    rows = [
        "| timers | mode | driver | outage ms: median (min–max) | failed probes / run: median (max) "
        "| flapping answers (runs) | pyrhfos / keepalived |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, cell in results["failover"].items():
        advert, mode = key.split("/")
        for drv in DRIVER_NAMES:
            if drv not in cell:
                continue
            r = cell[drv]
            o = r["outage"]
            missing = f", {o['missing']} never" if o["missing"] else ""
            outage = f"{fmt(o['median'])} ({fmt(o['min'])}–{fmt(o['max'])}{missing})"
            fp = r["failed_probes"]
            ratio = fmt(cell.get("ratio"), 2) if drv == "pyrhfos" else ""
            rows.append(
                f"| {advert} | {mode} | {drv} | {outage} "
                f"| {fmt(fp['median'])} ({fmt(fp['max'])}) | {r['flaps']} ({r['flap_runs']}) | {ratio} |"
            )
    return rows


def idle_table(results: dict[str, Any]) -> list[str]:
    rows = [
        "| timers | driver | node | CPU % of one core | RSS MB | PSS MB | processes |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, entry in results["idle"].items():
        advert, drv = key.split("/")
        if "error" in entry:
            rows.append(f"| {advert} | {drv} | — | error: {entry['error'][:80]} | | | |")
            continue
        for node in ("a", "b"):
            m = entry[node]
            rows.append(
                f"| {advert} | {drv} | {node} | {m['cpu_percent']:.3f} | {m['rss_mb']:.1f} | "
                f"{m['pss_mb']:.1f} | {m['processes']} |"
            )
    return rows


def check(label: str, value: float | None, limit: float | None, unit: str) -> dict[str, Any]:
    ok = value is not None and limit is not None and value <= limit
    return {"label": label, "value": value, "limit": limit, "unit": unit, "met": ok}


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The speed goals of issue 5, evaluated on this run's medians."""
    out = []
    for key, cell in results["failover"].items():
        advert, mode = key.split("/")
        if "pyrhfos" not in cell:
            continue
        pulse = cell["pyrhfos"]["outage"]["median"]
        ka = cell.get("keepalived", {}).get("outage", {}).get("median")
        _, deadtime = TIMERS[advert]
        if mode in ("linkdown", "kill9"):
            limit = deadtime * 1000 + 100
            out.append(check(f"{mode} @ {advert}: outage ≤ deadtime + 100 ms", pulse, limit, "ms"))
            if advert == "0.1":
                out.append(check(f"{mode} @ 0.1: outage ≤ 350 ms", pulse, 350.0, "ms"))
                if ka is not None:
                    out.append(check(f"{mode} @ 0.1: outage ≤ keepalived's (same run)", pulse, ka, "ms"))
        elif mode == "sigterm":
            out.append(check(f"sigterm @ {advert}: planned handover ≤ 50 ms", pulse, 50.0, "ms"))
    for key, entry in results["idle"].items():
        advert, drv = key.split("/")
        if not drv.startswith("pyrhfos"):
            continue
        if "error" in entry:
            out.append(check(f"{drv} @ {advert}: idle run", None, None, ""))
            continue
        for node in ("a", "b"):
            m = entry[node]
            if drv == "pyrhfos" and advert == "1":
                out.append(check(f"idle CPU node {node} @ keepalive 1: ≤ 0.5 %", m["cpu_percent"], 0.5, "%"))
            if drv == "pyrhfos":
                out.append(check(f"RSS node {node} @ keepalive {advert}: ≤ 45 MB", m["rss_mb"], 45.0, "MB"))
            else:
                out.append(check(f"{drv} idle CPU node {node}: ≤ 5 %", m["cpu_percent"], 5.0, "%"))
    return out


def side_by_side(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (timers, mode): is pyrhfos's median outage at most keepalived's (same run)?"""
    out = []
    for key, cell in results["failover"].items():
        if cell.get("ratio") is not None:
            out.append(
                check(
                    f"{key.replace('/', ' ')}: pyrhfos ≤ keepalived",
                    cell["pyrhfos"]["outage"]["median"],
                    cell["keepalived"]["outage"]["median"],
                    "ms",
                )
            )
    return out


def goal_lines(items: list[dict[str, Any]]) -> list[str]:
    lines = []
    for g in items:
        if g["value"] is None:
            lines.append(f"- **missed**: {g['label']} (no measurement)")
            continue
        word = "met" if g["met"] else "**missed**"
        lines.append(
            f"- {word}: {g['label']} — measured {g['value']:.2f} {g['unit']} (limit {g['limit']:.2f})"
        )
    return lines


def plot(results: dict[str, Any], path: Path) -> bool:
    """One linkdown failover per driver and timers: who answered each probe, on a time axis."""
    timelines = results.get("timelines", {})
    if not timelines:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("bench: matplotlib missing, no plot (make bench installs it)")
        return False
    keys = [k.split("|") for k in timelines]
    adverts = [a for a in TIMERS if any(k[1] == a for k in keys)]
    drivers = [d for d in DRIVER_NAMES if any(k[0] == d for k in keys)]
    fig, axes = plt.subplots(
        len(adverts), len(drivers), figsize=(6 * len(drivers), 2.6 * len(adverts)), squeeze=False
    )
    colors = {"a": "tab:blue", "b": "tab:green", None: "tab:red"}
    for i, advert in enumerate(adverts):
        first_bs = [
            next((t for t, w in tl if t >= 0 and w == "b"), 0.0)
            for k, tl in timelines.items()
            if k.split("|")[1] == advert
        ]
        span = max(first_bs, default=1.0)
        for j, drv in enumerate(drivers):
            ax = axes[i][j]
            tl = timelines.get(f"{drv}|{advert}")
            ka, dt = TIMERS[advert]
            timers = f"advert_int {advert}" if drv == "keepalived" else f"keepalive {ka:g}, deadtime {dt:g}"
            if tl is None:
                ax.set_axis_off()
                continue
            for who, y in (("a", 2), ("b", 1), (None, 0)):
                xs = [t * 1000 for t, w in tl if w == who]
                ax.scatter(xs, [y] * len(xs), s=5, color=colors[who], marker="|" if who else "x")
            first_b = next((t for t, w in tl if t >= 0 and w == "b"), None)
            ax.axvline(0, color="black", linewidth=0.8)
            if first_b is not None:
                ax.axvline(first_b * 1000, color="tab:green", linewidth=0.6, linestyle="--")
                ax.set_title(f"{drv} ({timers}): link down on a, outage {first_b * 1000:.0f} ms", fontsize=9)
            ax.set_yticks([0, 1, 2], ["failed", "b", "a"])
            ax.set_ylim(-0.5, 2.5)
            lead = 1000 if advert == "1" else 200
            ax.set_xlim(-lead, span * 1000 + lead)
            ax.set_xlabel("ms since the fault", fontsize=8)
    fig.suptitle("Client probes of VIP:80 (new connection every 10 ms, 50 ms limit)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_markdown(results: dict[str, Any], png: str | None, args: argparse.Namespace, took: float) -> None:
    load = results["load"]
    lines = [
        "# Failover benchmark: pyrhfos vs keepalived",
        "",
        f"Generated by `make bench` (`bench/failover.py`, {took / 60:.1f} min) on {results['when']}: "
        f"{results['host']}, keepalived {results.get('keepalived_version') or 'not run'}. "
        f"Load average at start {load['start']:.2f}, at end {load['end']:.2f} "
        "(other jobs on this 2-core machine make the figures noisier when it is high). "
        f"Raw data: `bench/results/{results['json']}`.",
        "",
        "## Method",
        "",
        f"- {args.reps} repetition(s) per cell, each in a fresh namespace lab (`pyrhfos_lab.lab`): a "
        "(primary, 192.0.2.100), b (backup, 192.0.2.200), client (192.0.2.50) on one bridge; VIP "
        f"{VIP}/24 on `eth0:1`; the lab's tiny TCP service on port 80 of **both** nodes all the time, for "
        "both drivers (the daemons only move the VIP; pulse's start/stop_cmd leave a trace).",
        "- The client opens a new connection to VIP:80 every 10 ms with a 50 ms limit. Outage = fault → "
        "first answer from b. Failed probes = probes after the fault that got no answer (a refused "
        "connection fails at once, a silent VIP only after 50 ms, so counts differ by fault). Flapping "
        "answers = answers from a after b's first one (runs where it happened in brackets). The fault "
        "comes at a random phase of the heartbeat/advert cycle (0.5 s + uniform(0, interval) after "
        "the client's 20th answer).",
        "- Equal detection budgets: pulse `keepalive 1, deadtime 3` vs keepalived `advert_int 1` "
        "(VRRPv2); pulse `keepalive 0.1, deadtime 0.3` vs keepalived `advert_int 0.1` (VRRPv3).",
        "- keepalived: one `vrrp_instance` per node, `state BACKUP` on both, priorities 150/100 "
        "(no `nopreempt`), unicast peers (`unicast_src_ip`/`unicast_peer`, the usual choice where "
        "multicast is filtered; on one bridge it makes no timing difference), the same VIP and label "
        "(`192.0.2.11/24 dev eth0 label eth0:1`), run with `--dont-fork --log-console --vrrp` and its "
        "own pid files.",
        "- Faults: `linkdown` = a's switch port down (a crash as the network sees it); `kill9` = link "
        "down, then SIGKILL of the daemon's process tree; `sigterm` = planned stop of a's daemon; "
        "`service` = SIGKILL of a's service process. pulse notices with its send/expect probe (each "
        "keepalive, confirmed by 2 more at min(keepalive/4, 0.1 s)) and hands over; keepalived with a "
        "`track_script` doing a TCP connect to 127.0.0.1:80, `interval 1` (its whole-second minimum, "
        "i.e. advert_int rounded up), `fall 1`, `rise 1`, no weight (fail → FAULT → priority-0 advert). "
        "At 0.1 keepalived's script interval stays 1 s: that is keepalived's limit, not a choice.",
        f"- Idle cost: {args.idle_seconds:g} s of steady state after settling; CPU (user+system, "
        "including reaped children) of the daemon's process tree as % of one core; RSS summed over the "
        "tree (double-counts shared pages) and PSS (`psutil.memory_full_info`).",
        "",
        "## Failover",
        "",
        *failover_table(results),
        "",
        "## Idle cost",
        "",
        *idle_table(results),
        "",
    ]
    for key, entry in results["idle"].items():
        if not key.split("/")[1].startswith("pyrhfos") or "error" in entry:
            continue
        states = "; ".join(
            f"{n}: {entry[n].get('state', '?')}, {entry[n].get('services_held', '?')} VIPs held, "
            f"{entry[n].get('probes_ok', '?')} probes ok, "
            f"{entry[n].get('log', {}).get('vip_vanished', '?')} 'VIP had vanished' and "
            f"{entry[n].get('log', {}).get('garp_not_ready', '?')} 'gratuitous ARP not ready' log lines"
            for n in ("a", "b")
        )
        lines += [f"- `{key}` when measured: {states}."]
    lines.append("")
    lines += [
        "## Goals (issue 5, medians of this run)",
        "",
        *goal_lines(results["goals"]),
        "",
        "Side by side (pyrhfos median outage ≤ keepalived's, same run):",
        "",
        *goal_lines(results["side_by_side"]),
        "",
    ]
    if png:
        lines += [
            "## One failover, probe by probe",
            "",
            "First `linkdown` repetition of each driver and timers: a blue tick is an answer from a, "
            "green from b, a red cross a probe that failed (no answer within 50 ms); the black line is "
            "the fault, the dashed green line b's first answer.",
            "",
            f"![probe timelines](results/{png})",
            "",
        ]
    errors = [
        f"- {key} {drv} run {i + 1}: {r.get('error') or 'b never answered'}"
        for key, cell in results["failover"].items()
        for drv in DRIVER_NAMES
        for i, r in enumerate(cell.get(drv, {}).get("runs", []))
        if r.get("error") or r.get("outage_ms") is None
    ]
    if errors:
        lines += ["## Runs that failed (daemon logs in the JSON)", "", *errors, ""]
    # bench/lvs_*.py keep their own section at the end: it stays as it is.
    previous = (HERE / "RESULTS.md").read_text() if (HERE / "RESULTS.md").exists() else ""
    lvs = previous.find("\n## LVS mode (issue 15)")
    (HERE / "RESULTS.md").write_text("\n".join(lines) + (previous[lvs:] if lvs >= 0 else ""))


# -- main ---------------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != MAIN_PID:
        # A forked helper inherited this handler (pyroute2 forks to open netlink sockets in a
        # namespace and stops that child with SIGTERM): it must die, not unwind into our code.
        os._exit(128 + signum)
    raise KeyboardInterrupt


class Watchdog(Exception):
    """One lab run took far longer than it can take when things work."""


def _watchdog(signum: int, frame: FrameType | None) -> None:
    raise Watchdog("watchdog: the run did not finish in time")


def bounded(limit: int, fn: Any, *args: Any) -> Any:
    """fn(*args) with SIGALRM after ``limit`` seconds (the Lab context manager then cleans up)."""
    previous = signal.signal(signal.SIGALRM, _watchdog)
    signal.alarm(limit)
    try:
        return fn(*args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def csv(value: str, allowed: tuple[str, ...] | list[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise SystemExit(f"bench: unknown {what} {bad or value!r}; choose from {', '.join(allowed)}")
    return items


def keepalived_version() -> str | None:
    try:
        out = subprocess.run(["keepalived", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout + out.stderr).split()
    return text[1] if len(text) > 1 else None


def run(args: argparse.Namespace, drivers: list[str], adverts: list[str], modes: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        "keepalived_version": keepalived_version() if "keepalived" in drivers else None,
        "args": vars(args),
        "load": {"start": os.getloadavg()[0]},
        "failover": {},
        "idle": {},
        "timelines": {},
    }
    for advert in adverts:
        for mode in modes:
            cell: dict[str, Any] = {}
            for drv in drivers:
                runs = []
                for rep in range(args.reps):
                    keep = mode == "linkdown" and rep == 0
                    try:
                        r = bounded(180, one_failover, drv, advert, mode, keep)
                    except Exception as e:  # one broken run must not lose the others
                        r = {"outage_ms": None, "failed_probes": 0, "flaps": 0, "error": repr(e)}
                    if "timeline" in r:
                        results["timelines"][f"{drv}|{advert}"] = r.pop("timeline")
                    runs.append(r)
                    extra = f" ERROR {r['error']}" if r.get("error") else ""
                    say(
                        f"  {advert:>3} {mode:<8} {drv:<10} #{rep + 1}: outage {fmt(r['outage_ms'])} ms, "
                        f"{r['failed_probes']} failed, {r['flaps']} flaps{extra}"
                    )
                cell[drv] = {
                    "outage": summarize([r["outage_ms"] for r in runs]),
                    "failed_probes": summarize([r["failed_probes"] for r in runs if r.get("probes")]),
                    "flaps": sum(r["flaps"] for r in runs),
                    "flap_runs": sum(1 for r in runs if r["flaps"]),
                    "runs": runs,
                }
            p, k = (cell.get(d, {}).get("outage", {}).get("median") for d in ("pyrhfos", "keepalived"))
            cell["ratio"] = round(p / k, 3) if p and k else None
            results["failover"][f"{advert}/{mode}"] = cell
    if args.idle_seconds > 0:
        limit = int(args.idle_seconds) + 300
        for advert in adverts:
            for drv in drivers:
                key = f"{advert}/{drv}"
                try:
                    results["idle"][key] = bounded(limit, idle_cost, drv, advert, args.idle_seconds)
                except Exception as e:  # reported in the results
                    results["idle"][key] = {"error": repr(e)[-2000:]}
                say(f"  idle {key}: {results['idle'][key]}")
        if args.services > 1 and "pyrhfos" in drivers:
            key = f"1/pyrhfos-{args.services}-services"
            try:
                results["idle"][key] = bounded(
                    limit, idle_cost, "pyrhfos", "1", args.idle_seconds, args.services
                )
            except Exception as e:  # reported in the results
                results["idle"][key] = {"error": repr(e)[-2000:]}
            say(f"  idle {key}: {results['idle'][key]}")
    results["load"]["end"] = os.getloadavg()[0]
    results["goals"] = goals(results)
    results["side_by_side"] = side_by_side(results)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--drivers", default=",".join(DRIVER_NAMES), help="pyrhfos,keepalived")
    ap.add_argument("--timers", default=",".join(TIMERS), help="keepalived advert_int values: 1,0.1")
    ap.add_argument("--modes", default=",".join(MODES), help=",".join(MODES))
    ap.add_argument("--reps", type=int, default=5, help="repetitions per driver x timers x mode (default 5)")
    ap.add_argument("--idle-seconds", type=float, default=30.0, help="idle window (0: skip idle cost)")
    ap.add_argument(
        "--services", type=int, default=200, help="failover services in the many-services idle run (0: skip)"
    )
    ap.add_argument("--quick", action="store_true", help="1 repetition, 5 s idle windows")
    ap.add_argument("--no-markdown", action="store_true", help="do not rewrite bench/RESULTS.md")
    args = ap.parse_args()
    if args.quick:
        args.reps, args.idle_seconds = 1, 5.0
    if not 1 <= args.reps <= 100 or not 0 <= args.idle_seconds <= 3600 or not 0 <= args.services <= 480:
        ap.error("--reps 1..100, --idle-seconds 0..3600, --services 0..480")
    drivers = csv(args.drivers, DRIVER_NAMES, "driver")
    adverts = csv(args.timers, list(TIMERS), "timers")
    modes = csv(args.modes, MODES, "mode")
    problem = lab_available()
    if problem:
        say(f"bench: {problem}")
        return 1
    if "keepalived" in drivers and shutil.which("keepalived") is None:
        say("bench: keepalived is not installed (`make bench` installs it); running pyrhfos only")
        drivers.remove("keepalived")
        if not drivers:
            return 1
    signal.signal(signal.SIGTERM, _interrupt)
    began = time.monotonic()
    try:
        results = run(args, drivers, adverts, modes)
    except KeyboardInterrupt:
        say("bench: interrupted; the labs have been removed")
        return 130
    took = time.monotonic() - began
    results["seconds"] = round(took, 1)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results["json"] = f"{stamp}.json"
    (RESULTS / results["json"]).write_text(json.dumps(results, indent=1) + "\n")
    png = PLOT_NAME if plot(results, RESULTS / PLOT_NAME) else None
    if not args.no_markdown:
        write_markdown(results, png, args, took)
    print("\n".join(["", *failover_table(results), "", *idle_table(results), ""]))
    print("\n".join(["Goals (issue 5):", *goal_lines(results["goals"]), ""]))
    print("\n".join(["Side by side:", *goal_lines(results["side_by_side"])]))
    print(f"\n{took / 60:.1f} min; JSON in bench/results/{results['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
