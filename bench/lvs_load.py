"""Ruleset load time: ruleset.build + NftEngine.replace of 100 virtuals x 10 real servers, in a lab namespace.

Cases: NAT, NAT with persistence, direct routing (each whole-table swap, median of --reps), the same
table with one server changed (what a real server going down or up costs), and the persistence / pin sets
holding 10,000 live clients that the swap carries over. Goal (issue 15): a full load <= 100 ms.

    python bench/lvs_load.py [--reps 10] [--no-markdown]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lvs_common import (  # noqa: E402
    bounded,
    fmt,
    loadavg,
    md_table,
    median,
    need_root,
    print_table,
    say,
    stamp_line,
    write_block,
)

from pyrhfos.config.model import Config, DeviceAddress, NetworkMode, Server, Virtual  # noqa: E402
from pyrhfos.core.ruleset import TABLE, Backend, VirtualTable, build, dynamic_sets, live_ids  # noqa: E402

VIRTUALS, SERVERS = 100, 10
CLIENTS = 10_000  # live clients spread over the dynamic sets in the "carried" cases
GOAL_MS = 100.0
CASES = ("nat", "nat-persistent", "direct")


# The method paragraph of RESULTS.md's block.
METHOD = " ".join(
    """
`ruleset.build` (config model → libnftables JSON) then `NftEngine.replace` (one transaction: the whole
table deleted and added, the elements of dynamic sets and maps read first and re-added), in a lab
namespace of its own; median of {reps} swaps after a first load. Virtuals wlc on VIP:80, servers
weights 1–3; "one server changed" alternates v50/rs3 out and in (a real server going down or coming
back: the director swaps the whole table for it). "Clients carried": {clients} elements spread evenly
over the dynamic sets and maps (persistence in NAT, flow pins in direct routing), each one read and
re-added by every swap. "Reading the sets": listing our sets and maps with their elements (what
`replace` starts with), timed on its own. CPU ms: user + system time of the process for build +
replace (the kernel's commit runs in its system call), less sensitive to the machine's load than the
wall clock; the goal is judged on the wall clock. First load into an empty namespace: {first}.
""".split()
)


def config(case: str) -> Config:
    """100 virtuals (VIPs 10.1.0.1.., port 80, wlc) x 10 servers (10.2.V.S:8080) on eth0."""
    virtuals = []
    for v in range(VIRTUALS):
        servers = tuple(
            Server(f"rs{s}", address=IPv4Address(f"10.2.{v}.{s + 1}"), weight=1 + s % 3)
            for s in range(SERVERS)
        )
        virtuals.append(
            Virtual(
                f"v{v}",
                address=DeviceAddress(IPv4Address(f"10.1.{v // 250}.{v % 250 + 1}"), f"eth0:{v + 1}"),
                port=80,
                scheduler="wlc",
                persistent=300 if case == "nat-persistent" else None,
                pmask=IPv4Address("255.255.255.0")
                if case == "nat-persistent"
                else IPv4Address("255.255.255.255"),
                servers=servers,
            )
        )
    network = NetworkMode.DIRECT if case == "direct" else NetworkMode.NAT
    return Config(network=network, virtuals=tuple(virtuals), tcp_timeout=900)


def tables(cfg: Config, absent: tuple[int, str] | None = None) -> list[VirtualTable]:
    """Every server up at its weight as its share; ``absent`` = (virtual index, server) taken out."""
    out = []
    for i, v in enumerate(cfg.virtuals):
        backends = tuple(
            Backend(s.name, s.address, 80, s.weight)  # type: ignore[arg-type]  # every server has one
            for s in v.servers
            if absent != (i, s.name)
        )
        out.append(VirtualTable(v, backends))
    return out


def clients(commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Commands adding CLIENTS elements, spread evenly over the dynamic sets and maps ``commands``
    add, each key built from its type (a client address, a source port, a backend id: the ids
    cycle over those of the virtual's backends, the ones a swap carries over); a map's value is
    such an id too."""
    dynamic = dynamic_sets(commands)
    ids = live_ids(commands)
    per = max(1, CLIENTS // max(1, len(dynamic)))
    out = []
    n = 0
    for (family, name), body in dynamic.items():
        values = sorted(ids.get((family, name), ())) or [1]
        types = body["type"] if isinstance(body["type"], list) else [body["type"]]
        elems: list[Any] = []
        for k in range(per):
            n += 1
            part = {
                "ipv4_addr": f"172.{16 + n // 65536}.{n // 256 % 256}.{n % 256}",
                "inet_service": 1024 + n % 60000,
                "mark": values[k % len(values)],
            }
            key: Any = [part[t] for t in types]
            key = key[0] if len(key) == 1 else {"concat": key}
            elems.append([key, values[k % len(values)]] if "map" in body else key)
        out.append({"add": {"element": {"family": family, "table": TABLE, "name": name, "elem": elems}}})
    return out


def inner(reps: int) -> dict[str, Any]:
    """Run in the director's namespace: every case, timed; JSON on stdout."""
    from pyrhfos.net.nft import NftEngine

    engine = NftEngine()
    out: dict[str, Any] = {}

    cpu: list[float] = []  # CPU ms (user + system, this process) of each timed swap, in order

    def timed(cfg: Config, tbl: list[VirtualTable]) -> tuple[float, float, int]:
        c0, t0 = time.process_time(), time.perf_counter()
        cmds = build(cfg, tbl)
        t1 = time.perf_counter()
        carried = engine.replace(cmds)
        t2 = time.perf_counter()
        cpu.append((time.process_time() - c0) * 1000)
        return (t1 - t0) * 1000, (t2 - t1) * 1000, carried

    def series(cfg: Config, flip: bool) -> dict[str, Any]:
        """``reps`` swaps; with ``flip`` every other one takes v50/rs3 out (one server changed)."""
        builds, replaces, carried, reads, cpus = [], [], [], [], []
        for r in range(reps):
            absent = (50, "rs3") if flip and r % 2 == 0 else None
            t0 = time.perf_counter()
            engine.set_sizes()  # the same `list sets` replace starts with: its share of the cost
            reads.append((time.perf_counter() - t0) * 1000)
            b, rp, c = timed(cfg, tables(cfg, absent))
            cpus.append(cpu[-1])
            builds.append(b)
            replaces.append(rp)
            carried.append(c)
        return {
            "build_ms": builds,
            "replace_ms": replaces,
            "carried": carried,
            "read_ms": reads,
            "cpu_ms": cpus,
        }

    for case in CASES:
        cfg = config(case)
        engine.remove()
        cmds = build(cfg, tables(cfg))
        first = timed(cfg, tables(cfg))
        entry: dict[str, Any] = {
            "commands": len(cmds),
            "rules": sum(1 for c in cmds if "rule" in c.get("add", {})),
            "sets": len(dynamic_sets(cmds)),
            "first_ms": first[0] + first[1],
            "full": series(cfg, False),
            "one_changed": series(cfg, True),
        }
        if case != "nat":  # the same with live clients in the dynamic sets
            full = build(cfg, tables(cfg))
            engine.replace(full + clients(full))
            entry["clients_full"] = series(cfg, False)
            entry["clients_one_changed"] = series(cfg, True)
            entry["clients_left"] = sum(engine.set_sizes().values())
        out[case] = entry
        engine.remove()
    return out


def outer(reps: int) -> dict[str, Any]:
    from pyrhfos_lab.lab import Lab

    with Lab() as lab:
        node = lab.add_node("director", "192.0.2.2")
        res = node.run(
            sys.executable,
            str(Path(__file__).resolve()),
            "--inner",
            "--reps",
            str(reps),
            timeout=170,
            check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(f"the run in the namespace failed: {res.stderr[-3000:]}")
        return json.loads(res.stdout)


def rows(data: dict[str, Any], load: float) -> list[list[str]]:
    out = []
    labels = {"nat": "NAT", "nat-persistent": "NAT + persistent 300, pmask /24", "direct": "direct routing"}
    for case in CASES:
        e = data[case]
        for key, what in (
            ("full", "whole table"),
            ("one_changed", "one server changed"),
            ("clients_full", f"whole table, {CLIENTS:,} clients carried"),
            ("clients_one_changed", f"one server changed, {CLIENTS:,} clients carried"),
        ):
            if key not in e:
                continue
            s = e[key]
            total = [b + r for b, r in zip(s["build_ms"], s["replace_ms"], strict=True)]
            t = median(total)
            ok = "met" if key in ("full", "one_changed") and t is not None and t <= GOAL_MS else ""
            if key in ("full", "one_changed") and not ok:
                ok = "NOT met"
            rng = f"{fmt(min(total))}–{fmt(max(total))}"
            out.append(
                [
                    labels[case],
                    what,
                    f"{e['rules']} / {e['sets']}",
                    fmt(median(s["build_ms"])),
                    fmt(median(s["replace_ms"])),
                    fmt(median(s["read_ms"])),
                    f"{fmt(t)} ({rng})",
                    fmt(median(s["cpu_ms"])),
                    str(int(median(s["carried"]) or 0)),
                    ok,
                    f"{load:.2f}",
                ]
            )
    return out


HEADERS = (
    "case",
    "swap",
    "rules / dynamic sets and maps",
    "build ms",
    "replace ms",
    "of which reading the sets ms",
    "total ms: median (min–max)",
    "CPU ms",
    "elements carried",
    "goal ≤ 100 ms",
    "load",
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-markdown", action="store_true")
    args = ap.parse_args()
    if args.inner:
        print(json.dumps(inner(args.reps)))
        return 0
    problem = need_root()
    if problem:
        say(f"bench: {problem}")
        return 1
    began = time.monotonic()
    load = loadavg()
    data = bounded(175, lambda: outer(args.reps))
    load = max(load, loadavg())
    table = rows(data, load)
    first = ", ".join(f"{c} {fmt(data[c]['first_ms'])} ms" for c in CASES)
    print_table("Ruleset load (100 virtuals x 10 real servers)", HEADERS, table)
    print(f"first load into an empty namespace: {first}")
    if not args.no_markdown:
        lines = [
            "### Ruleset load: 100 virtuals × 10 real servers",
            "",
            stamp_line("lvs_load.py", time.monotonic() - began, f", load {load:.2f}"),
            "",
            METHOD.format(reps=args.reps, clients=f"{CLIENTS:,}", first=first),
            "",
            *md_table(HEADERS, table),
            "",
        ]
        write_block("load", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
