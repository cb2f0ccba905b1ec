"""Failover outage and idle cost of pulse (pyrhfos) and keepalived, side by side, in one run.

Run as root (``make bench`` installs keepalived and matplotlib first). Each repetition builds
a fresh namespace lab: nodes a (primary, 192.0.2.100) and b (backup, 192.0.2.200), a client
(192.0.2.50), VIP 192.0.2.11/24 on eth0:1, the lab's tiny TCP service on port 80 of both nodes
answering with the node's name. A prober on the client opens a connection to VIP:80 every
10 ms with a 50 ms limit. Outage = fault -> first answer from b.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyrhfos.config.model import DeviceAddress  # noqa: E402
from pyrhfos.lab import Lab, lab_available  # noqa: E402
from pyrhfos.testbed import VIP, Testbed, wait_until  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MODES = ("linkdown", "kill9", "sigterm", "service")
TIMERS = {"1": (1.0, 3.0), "0.1": (0.1, 0.3)}  # advert_int -> pulse (keepalive, deadtime)
GOALS_NOTE = "medians; goals from issue 5"

KEEPALIVED_CONF = """global_defs {{
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

# keepalived runs track scripts at whole-second intervals at best: the fairest equivalent
# of pulse's probe is a TCP connect to the local service every second, failing at once.
TRACK_SCRIPT = """vrrp_script chk_service {
    script "/bin/bash -c '</dev/tcp/127.0.0.1/80'"
    interval 1
    timeout 1
    fall 1
    rise 1
}
"""


class Driver:
    """Starts one failover daemon on both nodes and injects faults into it."""

    name = ""

    def __init__(self, bed: Testbed, advert: str, mode: str) -> None:
        self.bed, self.advert, self.mode = bed, advert, mode
        self.procs: dict[str, Any] = {}

    def start(self) -> None:
        raise NotImplementedError

    def daemon_pid(self, node: str) -> int:
        return self.procs[node].pid

    def tree(self, node: str) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.daemon_pid(node))
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def fault(self) -> None:
        bed = self.bed
        if self.mode == "linkdown":
            bed.a.link_down()
        elif self.mode == "kill9":
            # Link first: a dying daemon must not get a last word out (keepalived's children
            # notice their parent's death and would send a priority-0 advert).
            bed.a.link_down()
            for p in self.tree("a"):
                p.kill()
        elif self.mode == "sigterm":
            os.kill(self.daemon_pid("a"), signal.SIGTERM)
        elif self.mode == "service":
            bed.kill_service("a")


class Pulse(Driver):
    name = "pyrhfos"

    def start(self) -> None:
        self.procs["a"] = self.bed.start("a", "--garp-count", "5")
        self.procs["b"] = self.bed.start("b", "--garp-count", "5")

    def settled(self) -> bool:
        return self.bed.holders() == {"a"} and "standby" in self.bed.log("b")


class Keepalived(Driver):
    name = "keepalived"

    def start(self) -> None:
        bed = self.bed
        for name, node, peer, prio in (("a", bed.a, bed.b, 150), ("b", bed.b, bed.a, 100)):
            conf = bed.workdir / f"keepalived-{name}.conf"
            conf.write_text(
                KEEPALIVED_CONF.format(
                    name=name,
                    version="vrrp_version 3" if float(self.advert) < 1 else "",
                    script=TRACK_SCRIPT if self.mode == "service" else "",
                    track="track_script {\n        chk_service\n    }" if self.mode == "service" else "",
                    priority=prio,
                    advert=self.advert,
                    me=node.ip,
                    peer=peer.ip,
                    vip=VIP,
                )
            )
            log = open(bed.workdir / f"keepalived-{name}.log", "ab")  # noqa: SIM115 - the child owns it
            argv = [
                "keepalived", "--dont-fork", "--log-console", "--vrrp", "-f", str(conf),
                "-p", str(bed.workdir / f"ka-{name}.pid"), "-r", str(bed.workdir / f"ka-vrrp-{name}.pid"),
            ]  # fmt: skip
            self.procs[name] = node.popen(argv, stdout=log, stderr=log)
            log.close()

    def settled(self) -> bool:
        return self.bed.holders() == {"a"}


DRIVERS: dict[str, type[Driver]] = {"pyrhfos": Pulse, "keepalived": Keepalived}


def read_samples(proc: Any) -> list[dict[str, Any]]:
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def analyse(samples: list[dict[str, Any]], fault: float) -> dict[str, Any]:
    after = [s for s in samples if s["t"] >= fault]
    first_b = next((s["t"] for s in after if s["who"] == "b"), None)
    failed = sum(1 for s in after if s["who"] is None and (first_b is None or s["t"] < first_b))
    flaps = sum(1 for s in after if first_b is not None and s["t"] > first_b and s["who"] == "a")
    return {
        "outage_ms": None if first_b is None else (first_b - fault) * 1000,
        "failed_probes": failed,
        "flaps": flaps,
    }


def one_failover(driver_cls: type[Driver], advert: str, mode: str, keep_timeline: bool) -> dict[str, Any]:
    keepalive, deadtime = TIMERS[advert]
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="pyrhfos-bench-") as tmp:
        bed = Testbed(
            lab, Path(tmp), keepalive=keepalive, deadtime=deadtime, service_settings={"timeout": 1.0}
        )
        driver = driver_cls(bed, advert, mode)
        driver.start()
        if not wait_until(driver.settled, 20, 0.1):  # type: ignore[attr-defined]
            raise RuntimeError(f"{driver.name} did not settle with a as holder: {bed.holders()}")
        time.sleep(max(1.0, 2 * deadtime))
        prober = bed.start_prober(0.01, 0.05)
        time.sleep(1.0)
        fault = time.time()
        driver.fault()
        wait_until(lambda: bed.holds_vip("b"), 20, 0.02)
        wait_until(lambda: bed.fetch(0.2) == "b", 10, 0.05)
        time.sleep(1.0)
        samples = read_samples(prober)
        result = analyse(samples, fault)
        if keep_timeline:
            result["timeline"] = [[round(s["t"] - fault, 4), s["who"]] for s in samples]
        return result


def idle_cost(driver_cls: type[Driver], advert: str, seconds: float, services: int = 1) -> dict[str, Any]:
    keepalive, deadtime = TIMERS[advert]
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="pyrhfos-bench-") as tmp:
        bed = Testbed(lab, Path(tmp), keepalive=keepalive, deadtime=deadtime)
        if services > 1:
            many_services(bed, services)
        driver = driver_cls(bed, advert, "idle")
        driver.start()
        if not wait_until(driver.settled, 60, 0.2):  # type: ignore[attr-defined]
            raise RuntimeError(f"{driver.name} did not settle: {bed.holders()}")
        time.sleep(max(2.0, 3 * deadtime))
        out: dict[str, Any] = {}
        start = {n: sum(sum(p.cpu_times()[:2]) for p in driver.tree(n)) for n in ("a", "b")}
        time.sleep(seconds)
        for n in ("a", "b"):
            tree = driver.tree(n)
            cpu = sum(sum(p.cpu_times()[:2]) for p in tree) - start[n]
            mem = [p.memory_full_info() for p in tree]
            out[n] = {
                "cpu_percent": 100 * cpu / seconds,
                "rss_mb": sum(m.rss for m in mem) / 2**20,
                "pss_mb": sum(m.pss for m in mem) / 2**20,
                "processes": len(tree),
            }
        return out


def many_services(bed: Testbed, count: int) -> None:
    """``count`` failover services, VIPs 192.0.2.x (x not a node) on eth0:1..eth0:count, port 80."""
    hosts = [h for h in range(1, 255) if h not in (50, 100, 200)][:count]
    base = bed.cfg.failovers[0]
    failovers = tuple(
        dataclasses.replace(
            base,
            name=f"svc{i}",
            address=DeviceAddress(IPv4Address(f"192.0.2.{h}"), f"eth0:{i}"),
            start_cmd="true",
            stop_cmd="true",
        )
        for i, h in enumerate(hosts, start=1)
    )
    bed.save_config(dataclasses.replace(bed.cfg, failovers=failovers))


def summarize(values: list[float | None]) -> dict[str, float | None]:
    got = [v for v in values if v is not None]
    if not got:
        return {"min": None, "median": None, "max": None, "missing": len(values)}
    return {
        "min": min(got),
        "median": statistics.median(got),
        "max": max(got),
        "missing": len(values) - len(got),
    }


def fmt(v: float | None, unit: str = "") -> str:
    return "—" if v is None else f"{v:.0f}{unit}"


def table(results: dict[str, Any]) -> str:
    rows = [
        "| timers | mode | driver | outage median (min–max) ms | failed probes | flaps "
        "| pyrhfos/keepalived |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, entry in results["failover"].items():
        advert, mode = key.split("/")
        for drv, r in entry.items():
            if drv == "ratio":
                continue
            o = r["outage"]
            rows.append(
                f"| {advert} | {mode} | {drv} | {fmt(o['median'])} ({fmt(o['min'])}–{fmt(o['max'])})"
                f"{' +' + str(o['missing']) + ' none' if o['missing'] else ''} | {r['failed_probes']} | "
                f"{r['flaps']} | {'' if drv == 'keepalived' else fmt_ratio(entry.get('ratio'))} |"
            )
    rows += [
        "",
        "| timers | driver | node | CPU % of a core | RSS MB | PSS MB | processes |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, entry in results["idle"].items():
        for node, m in entry.items():
            rows.append(
                f"| {key.split('/')[0]} | {key.split('/')[1]} | {node} | {m['cpu_percent']:.3f} | "
                f"{m['rss_mb']:.1f} | {m['pss_mb']:.1f} | {m['processes']} |"
            )
    return "\n".join(rows)


def fmt_ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}"


def goals(results: dict[str, Any]) -> list[str]:
    out = []
    for key, entry in results["failover"].items():
        advert, mode = key.split("/")
        pulse = entry.get("pyrhfos", {}).get("outage", {}).get("median")
        ka = entry.get("keepalived", {}).get("outage", {}).get("median")
        if pulse is None:
            continue
        keepalive, deadtime = TIMERS[advert]
        if mode in ("linkdown", "kill9"):
            limit = deadtime * 1000 + 100
            if advert == "0.1":
                limit = min(limit, 350.0, ka if ka is not None else limit)
            out.append(check(f"{mode} @ {advert}: ≤ {limit:.0f} ms", pulse, limit))
        elif mode == "sigterm":
            out.append(check(f"sigterm @ {advert}: ≤ 50 ms", pulse, 50.0))
    for key, entry in results["idle"].items():
        advert, drv = key.split("/")
        if drv.startswith("pyrhfos"):
            for node, m in entry.items():
                if drv == "pyrhfos" and advert == "1":
                    out.append(check(f"idle CPU {node} @ 1: ≤ 0.5 %", m["cpu_percent"], 0.5))
                if drv == "pyrhfos":
                    out.append(check(f"RSS {node} @ {advert}: ≤ 45 MB", m["rss_mb"], 45.0))
                if drv.startswith("pyrhfos-"):
                    out.append(check(f"{drv} idle CPU {node}: ≤ 5 %", m["cpu_percent"], 5.0))
    return out


def check(label: str, value: float, limit: float) -> str:
    return f"- {'met' if value <= limit else '**missed**'}: {label} (measured {value:.2f})"


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    timelines = results.get("timelines", {})
    if not timelines:
        return False
    fig, axes = plt.subplots(
        len(timelines), 1, figsize=(10, 2.2 * len(timelines)), sharex=True, squeeze=False
    )
    colors = {"a": "tab:blue", "b": "tab:green", None: "tab:red"}
    for ax, (label, timeline) in zip(axes[:, 0], sorted(timelines.items()), strict=True):
        for who, y in (("a", 2), ("b", 1), (None, 0)):
            xs = [t * 1000 for t, w in timeline if w == who]
            ax.scatter(xs, [y] * len(xs), s=6, color=colors[who], label=who or "failed")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks([0, 1, 2], ["failed", "b", "a"])
        ax.set_title(label, fontsize=9)
    axes[-1, 0].set_xlabel("ms since the fault (client tries VIP:80 every 10 ms, 50 ms limit)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_markdown(results: dict[str, Any], png: str | None, args: argparse.Namespace) -> None:
    lines = [
        "# Failover benchmark: pyrhfos vs keepalived",
        "",
        f"Generated by `make bench` (`bench/failover.py`) on {results['when']}, {results['host']}.",
        f"{args.reps} repetitions per cell, each in a fresh namespace lab; idle cost over "
        f"{args.idle_seconds:g} s. Equal detection budgets: pulse keepalive 1 / deadtime 3 vs keepalived "
        "advert_int 1 (VRRPv2), pulse keepalive 0.1 / deadtime 0.3 vs keepalived advert_int 0.1 (VRRPv3). "
        "keepalived: unicast peers, priorities 150/100, `service` mode with a track_script doing a TCP "
        "connect every second (its finest interval).",
        "",
        table(results),
        "",
        "## Goals (issue 5)",
        "",
        *goals(results),
        "",
    ]
    if png:
        lines += ["## One failover, probe by probe", "", f"![timelines](results/{png})", ""]
    (HERE / "RESULTS.md").write_text("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drivers", default="pyrhfos,keepalived")
    ap.add_argument("--timers", default="1,0.1", help="advert_int values: 1 and/or 0.1")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--idle-seconds", type=float, default=30.0)
    ap.add_argument(
        "--services", type=int, default=200, help="services in the many-services idle run (0: skip)"
    )
    ap.add_argument("--quick", action="store_true", help="1 repetition, 5 s idle, 50 services")
    args = ap.parse_args()
    if args.quick:
        args.reps, args.idle_seconds, args.services = 1, 5.0, 50
    problem = lab_available()
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 1
    drivers = [d for d in args.drivers.split(",") if d]
    if "keepalived" in drivers and not any(
        os.access(os.path.join(p, "keepalived"), os.X_OK) for p in os.environ.get("PATH", "").split(":")
    ):
        print(
            "bench: keepalived not installed (make bench installs it); running pyrhfos only", file=sys.stderr
        )
        drivers.remove("keepalived")
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        "failover": {},
        "idle": {},
        "timelines": {},
    }
    say: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    for advert in args.timers.split(","):
        for mode in args.modes.split(","):
            cell: dict[str, Any] = {}
            for drv in drivers:
                runs = []
                for rep in range(args.reps):
                    keep = mode == "linkdown" and rep == 0
                    r = one_failover(DRIVERS[drv], advert, mode, keep)
                    if keep:
                        results["timelines"][f"{drv}, advert {advert}, linkdown"] = r.pop("timeline")
                    runs.append(r)
                    say(f"{advert} {mode} {drv} #{rep + 1}: {fmt(r['outage_ms'], ' ms')}")
                cell[drv] = {
                    "outage": summarize([r["outage_ms"] for r in runs]),
                    "failed_probes": sum(r["failed_probes"] for r in runs),
                    "flaps": sum(r["flaps"] for r in runs),
                    "runs": runs,
                }
            p, k = (cell.get(d, {}).get("outage", {}).get("median") for d in ("pyrhfos", "keepalived"))
            cell["ratio"] = p / k if p and k else None
            results["failover"][f"{advert}/{mode}"] = cell
        for drv in drivers:
            results["idle"][f"{advert}/{drv}"] = idle_cost(DRIVERS[drv], advert, args.idle_seconds)
            say(f"idle {advert} {drv}: {results['idle'][f'{advert}/{drv}']}")
    if args.services > 1 and "pyrhfos" in drivers:
        key = f"1/pyrhfos-{args.services}-services"
        results["idle"][key] = idle_cost(Pulse, "1", args.idle_seconds, args.services)
        say(f"idle {key}: {results['idle'][key]}")
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=1))
    png = "timeline.png" if plot(results, RESULTS / "timeline.png") else None
    write_markdown(results, png, args)
    print(table(results))
    print("\n".join(["", *goals(results)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
