"""Director failover outage: the primary director fails -> the client is answered through the VIP again.

A fresh LVS lab per run. pyrhfos: pulse on both directors (keepalive 1, deadtime 3), rr over rs1..rs3.
keepalived (if installed): a VRRP pair (advert_int 1, as bench/failover.py pairs it with deadtime 3)
holding the VIP (and nat_router in NAT mode) on the same directors, with the same nftables table loaded
on both from pulse's own ruleset (pulse -t's commands) and forwarding on. Faults: ``linkdown`` (the
primary's public switch port down) and ``kill9`` (link down, then SIGKILL of the daemon's processes).
The client makes a new connection to VIP:80 every 10 ms (50 ms limit). Outage = fault -> the first
answer. Goal (issue 15): median <= deadtime + 100 ms.

    python bench/lvs_failover.py [--reps 5] [--drivers pyrhfos,keepalived] [--faults linkdown|kill9]
                                 [--modes nat] [--no-markdown]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lvs_common import (  # noqa: E402
    Prober,
    bounded,
    fmt,
    loadavg,
    md_table,
    median,
    need_root,
    print_table,
    say,
    spread,
    stamp_line,
    start_pair,
    write_block,
)

from pyrhfos.daemon.director import planned_commands  # noqa: E402
from pyrhfos_lab.lvslab import (  # noqa: E402
    BACKUP_IP,
    NAT_ROUTER,
    PORT,
    PRIMARY_IP,
    VIP,
    LvsLab,
)
from pyrhfos_lab.testbed import wait_until  # noqa: E402

KEEPALIVE, DEADTIME = 1.0, 3.0
GOAL_MS = DEADTIME * 1000 + 100
HOLD_AFTER = 1.0  # seconds of probes kept after the first answer (failures there are flaps)
BUDGET = 160.0  # no new run starts after this many seconds (the script stays under 3 min)
DRIVERS = ("pyrhfos", "keepalived")
FAULTS = ("linkdown", "kill9")
MODES = ("nat", "direct")
RAW = Path(__file__).resolve().parent / "results" / "lvs-failover.json"  # every cell's latest runs

# The method paragraph of RESULTS.md's block.
METHOD = " ".join(
    """
A fresh LVS lab per run; runs interleaved over the drivers; one fault and mode per invocation (`make
bench-lvs` runs linkdown and kill9 in NAT, linkdown in direct routing), each cell from its latest
invocation. pyrhfos: pulse on both directors, keepalive 1, deadtime 3, rr over rs1..rs3. keepalived: a
VRRP pair on the same directors (`state BACKUP` both, priorities 150/100, `advert_int 1`, unicast peers,
`--vrrp` only) holding the VIP on eth0:1 and, in NAT mode, nat_router on eth1:1 in the same instance,
forwarding on; its `notify_master` loads pulse's own nftables table (every real server up, as `pulse -t`
builds it: the same JSON, through `nft -j -f`), `notify_backup`/`notify_fault` delete it: the same data
path, no real-server checks (a standby that kept the table would, in direct routing, forward the frames
the switch floods to every port while the old master's port is down: with the table on both directors
keepalived's "outage" came out at 14 ms). `linkdown`: the primary's public switch port down (eth0 loses
carrier; the private link stays up); `kill9`: the same, then SIGKILL of the daemon's processes. The
client makes a new connection to VIP:80 every 10 ms (50 ms limit); outage = fault (before `ip link set
... down`) → the first answer to a try started after that command returned, at a random phase of the
heartbeat cycle. Failures after the first answer (within 1 s) would be a split gateway: the old primary
still answering for nat_router on the private side. "Old primary still holds": its addresses at the end
of the run (about 1 s after the first answer).
""".split()
)

KEEPALIVED_CONF = """\
global_defs {{
    router_id {name}
    script_user root
    enable_script_security
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int 1
    unicast_src_ip {me}
    unicast_peer {{
        {peer}
    }}
    virtual_ipaddress {{
        {vips}
    }}
    notify_master "{nft} -j -f {table}"
    notify_backup "{nft} delete table {family} pyrhfos"
    notify_fault "{nft} delete table {family} pyrhfos"
}}
"""


class Pulse:
    name = "pyrhfos"

    def __init__(self, lab: LvsLab) -> None:
        self.lab = lab

    def start(self) -> None:
        start_pair(self.lab, keepalive=KEEPALIVE, deadtime=DEADTIME)
        if not wait_until(lambda: "standby" in self.lab.pulse.log("backup"), 10, 0.1):
            raise RuntimeError("the backup director did not reach standby")

    def pids(self) -> list[int]:
        return [self.lab.pulse.pulses["primary"].pid]

    def logs(self) -> dict[str, str]:
        return {n: self.lab.pulse.log(n)[-3000:] for n in ("primary", "backup")}


class Keepalived:
    name = "keepalived"

    def __init__(self, lab: LvsLab) -> None:
        self.lab = lab
        self.procs: dict[str, subprocess.Popen[Any]] = {}

    def start(self) -> None:
        lab = self.lab
        cfg = lab.config(keepalive=KEEPALIVE, deadtime=DEADTIME)
        # pulse's own table with every real server up (pulse -t's), the same JSON pulse loads; the
        # master loads it, a backup or a fault removes it (a standby must not forward: in direct
        # routing it sees the frames the switch floods while the old master's port is down).
        table = lab.workdir / "table.json"
        table.write_text(json.dumps({"nftables": planned_commands(cfg)}))
        nft = shutil.which("nft") or "/usr/sbin/nft"
        family = "ip" if lab.mode == "nat" else "netdev"
        vips = [f"{VIP}/24 dev eth0 label eth0:1"]
        if lab.mode == "nat":
            vips.append(f"{NAT_ROUTER}/24 dev eth1 label eth1:1")
        for name, me, peer, prio in (
            ("primary", PRIMARY_IP, BACKUP_IP, 150),
            ("backup", BACKUP_IP, PRIMARY_IP, 100),
        ):
            node = lab.directors[name]
            node.sysctl("net.ipv4.ip_forward", 1)
            conf = lab.workdir / f"keepalived-{name}.conf"
            conf.write_text(
                KEEPALIVED_CONF.format(
                    name=name,
                    priority=prio,
                    me=me,
                    peer=peer,
                    vips="\n        ".join(vips),
                    nft=nft,
                    table=table,
                    family=family,
                )
            )
            log = open(lab.workdir / f"keepalived-{name}.log", "ab")  # noqa: SIM115 - the child owns it
            argv = [
                "keepalived", "--dont-fork", "--log-console", "--vrrp", "-f", str(conf),
                "--pid", str(lab.workdir / f"ka-{name}.pid"),
                "--vrrp_pid", str(lab.workdir / f"ka-vrrp-{name}.pid"),
            ]  # fmt: skip
            self.procs[name] = node.popen(argv, stdout=log, stderr=log)
            log.close()
        if lab.wait_holders({"primary"}, 20) != {"primary"}:
            raise RuntimeError(f"keepalived: the primary did not take the VIP (holders {lab.holders()})")
        if not wait_until(lambda: "Entering BACKUP STATE" in self.logs()["backup"], 10, 0.1):
            raise RuntimeError("keepalived: the backup did not enter BACKUP state")
        wanted = set(lab.rs)
        if not wait_until(lambda: wanted <= set(lab.connect_many(VIP, PORT, 6, timeout=0.5)), 10, 0.2):
            raise RuntimeError("keepalived: the real servers do not answer through the VIP")

    def pids(self) -> list[int]:
        try:
            root = psutil.Process(self.procs["primary"].pid)
            return [root.pid, *(c.pid for c in root.children(recursive=True))]
        except psutil.Error:
            return []

    def logs(self) -> dict[str, str]:
        out = {}
        for n in ("primary", "backup"):
            try:
                out[n] = (self.lab.workdir / f"keepalived-{n}.log").read_text(errors="replace")[-3000:]
            except OSError:
                out[n] = ""
        return out


def one(mode: str, driver_name: str, fault: str) -> dict[str, Any]:
    with LvsLab(mode) as lab:  # type: ignore[arg-type]  # checked against MODES
        driver = Pulse(lab) if driver_name == "pyrhfos" else Keepalived(lab)
        load = loadavg()
        try:
            driver.start()
            time.sleep(1.0)
            prober = Prober(lab)
            try:
                if not wait_until(lambda: sum(1 for _, w in prober.snapshot() if w) >= 20, 10, 0.05):
                    raise RuntimeError("no answers through the VIP before the fault")
                time.sleep(0.5 + random.uniform(0.0, KEEPALIVE))  # a random phase of the beat cycle
                fault_at = time.monotonic()
                lab.primary.link_down()
                # `ip link set` returns once the port is down: an answer to a try started before that
                # may still have come through the old primary, so only later tries count as answers.
                down_at = time.monotonic()
                if fault == "kill9":
                    for pid in driver.pids():
                        psutil.Process(pid).kill()
                first = wait_until(
                    lambda: next((t for t, w in prober.snapshot() if t >= down_at and w), None),
                    10 * DEADTIME,
                    0.05,
                )
                if first is not None:
                    time.sleep(max(0.0, first + HOLD_AFTER - time.monotonic()))
                samples = prober.stop()
            finally:
                prober.stop()
        except (RuntimeError, psutil.Error) as e:
            return {"outage_ms": None, "error": str(e), "load": load, "logs": driver.logs()}
        after = [(t, w) for t, w in samples if t >= fault_at]
        flaps = sum(1 for t, w in after if first is not None and t > first and w is None)
        result: dict[str, Any] = {
            "outage_ms": None if first is None else round((first - fault_at) * 1000, 1),
            "failed": sum(1 for t, w in after if w is None and (first is None or t < first)),
            "down_ms": round((down_at - fault_at) * 1000, 1),
            "flaps": flaps,
            "load": load,
            "old_primary_keeps": sorted(ip for ip in (VIP, NAT_ROUTER) if lab.holds("primary", ip)),
        }
        result["logs"] = {n: text[-1500:] for n, text in driver.logs().items()}
        return result


def run(args: argparse.Namespace, modes: list[str], drivers: list[str], faults: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {m: {f: {d: [] for d in drivers} for f in faults} for m in modes}
    began = time.monotonic()
    for rep in range(args.reps):
        for mode in modes:
            for fault in faults:
                for drv in drivers:  # interleaved: the machine's load falls on both drivers alike
                    if time.monotonic() - began > BUDGET:
                        say("  time budget used up: the remaining runs are skipped")
                        return results
                    r = one(mode, drv, fault)
                    results[mode][fault][drv].append(r)
                    extra = f" ERROR {r['error']}" if r.get("error") else ""
                    say(
                        f"  {mode} {fault} {drv} #{rep + 1}: outage {fmt(r.get('outage_ms'))} ms, "
                        f"{r.get('failed')} failed, {r.get('flaps')} flaps, load {r['load']}{extra}"
                    )
    return results


HEADERS = (
    "mode",
    "fault",
    "driver",
    "runs",
    "outage ms: median (min–max)",
    "failed probes / run: median",
    "failures after the first answer (runs)",
    "old primary still holds",
    "goal ≤ deadtime + 100 ms",
    "load (min–max)",
    "measured",
)


def merge(results: dict[str, Any]) -> dict[str, Any]:
    """This run's cells over the ones kept from earlier runs (RAW): each invocation stays under
    3 minutes, so ``make bench-lvs`` measures the faults in separate runs. Returns every cell."""
    try:
        cells: dict[str, Any] = json.loads(RAW.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        cells = {}
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for mode, faults in results.items():
        for fault, drivers in faults.items():
            for drv, runs in drivers.items():
                if runs:
                    cells[f"{mode}/{fault}/{drv}"] = {"when": when, "runs": runs}
    RAW.parent.mkdir(exist_ok=True)
    RAW.write_text(json.dumps({"cells": cells}, indent=1) + "\n")
    return cells


def rows(cells: dict[str, Any]) -> list[list[str]]:
    out = []
    for mode in MODES:
        for fault in FAULTS:
            for drv in DRIVERS:
                cell = cells.get(f"{mode}/{fault}/{drv}")
                if not cell:
                    continue
                runs = cell["runs"]
                vals = [r["outage_ms"] for r in runs if r.get("outage_ms") is not None]
                med = median(vals)
                goal = "-" if med is None or drv != "pyrhfos" else ("met" if med <= GOAL_MS else "NOT met")
                kept = sorted({ip for r in runs for ip in r.get("old_primary_keeps", ())})
                loads = [r["load"] for r in runs]
                flaps = [r.get("flaps", 0) for r in runs]
                out.append(
                    [
                        "NAT" if mode == "nat" else "direct routing",
                        fault,
                        drv if drv == "pyrhfos" else "keepalived (VRRP advert_int 1)",
                        f"{len(vals)}/{len(runs)}",
                        spread(vals, 0),
                        fmt(median([r["failed"] for r in runs if "failed" in r]), 0),
                        f"{sum(flaps)} ({sum(1 for f in flaps if f)})",
                        ", ".join(kept) or "nothing",
                        goal,
                        f"{min(loads):.2f}–{max(loads):.2f}",
                        cell["when"],
                    ]
                )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--drivers", default=",".join(DRIVERS))
    ap.add_argument("--faults", default="linkdown", help="linkdown,kill9 (one per run keeps it under 3 min)")
    ap.add_argument("--modes", default="nat")
    ap.add_argument("--no-markdown", action="store_true")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m in MODES]
    faults = [f for f in args.faults.split(",") if f in FAULTS]
    drivers = [d for d in args.drivers.split(",") if d in DRIVERS]
    problem = need_root()
    if problem:
        say(f"bench: {problem}")
        return 1
    if "keepalived" in drivers and shutil.which("keepalived") is None:
        say("bench: keepalived is not installed (apt-get install keepalived); running pyrhfos only")
        drivers.remove("keepalived")
    began = time.monotonic()
    results = bounded(178, lambda: run(args, modes, drivers, faults))
    table = rows(merge(results))
    print_table("Director failover outage", HEADERS, table)
    if not args.no_markdown:
        lines = [
            "### Director failover outage",
            "",
            stamp_line(
                "lvs_failover.py",
                time.monotonic() - began,
                f" (the last run); raw data `bench/results/{RAW.name}`",
            ),
            "",
            METHOD,
            "",
            *md_table(HEADERS, table),
            "",
        ]
        write_block("failover", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
