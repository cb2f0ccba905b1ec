"""The LVS ruleset builder: what the nftables JSON says for each feature (pure; loaded for real in
tests/net/test_nft_lab.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any

import pytest

from pyrhfos.config.model import Config, DeviceAddress, NetworkMode, Server, Virtual
from pyrhfos.core import ruleset
from pyrhfos.core.ruleset import TABLE, Backend, VirtualTable, build, describe

A = IPv4Address
SERVERS = (
    Server("s1", A("198.51.100.11"), weight=3),
    Server("s2", A("198.51.100.12"), port=8080),
    Server("s3", A("198.51.100.13")),
)
WEB = Virtual("web", DeviceAddress(A("192.0.2.10"), "eth0:1"), scheduler="rr", servers=SERVERS)


def table(v: Virtual, shares: tuple[int, ...] = (1, 1, 1)) -> VirtualTable:
    return VirtualTable(v, tuple(ruleset.backend_of(v, s, n) for s, n in zip(v.servers, shares, strict=True)))


def nat(*tables: VirtualTable, **cfg: Any) -> list[dict[str, Any]]:
    return build(Config(network=NetworkMode.NAT, **cfg), tables)


def direct(*tables: VirtualTable, **cfg: Any) -> list[dict[str, Any]]:
    return build(Config(network=NetworkMode.DIRECT, **cfg), tables)


def added(commands: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [c["add"][kind] for c in commands if kind in c.get("add", {})]


def rules(commands: list[dict[str, Any]], chain: str) -> list[list[dict[str, Any]]]:
    return [r["expr"] for r in added(commands, "rule") if r["chain"] == chain]


def vmap(commands: list[dict[str, Any]], chain: str = "v-web") -> dict[str, Any]:
    maps = [e["vmap"] for expr in rules(commands, chain) for e in expr if "vmap" in e]
    assert len(maps) == 1
    return maps[0]


def ranges(m: dict[str, Any]) -> list[tuple[Any, str]]:
    return [
        (k if isinstance(k, int) else tuple(k["range"]), d["goto"]["target"]) for k, d in m["data"]["set"]
    ]


def test_swap_idiom_first_for_both_families_then_the_ip_table() -> None:
    cmds = nat(table(WEB))
    ip = {"table": {"family": "ip", "name": TABLE}}
    nd = {"table": {"family": "netdev", "name": TABLE}}
    assert cmds[:5] == [{"add": ip}, {"delete": ip}, {"add": nd}, {"delete": nd}, {"add": ip}]
    assert {c["family"] for c in added(cmds[4:], "chain")} == {"ip"}


def test_nat_dispatch_and_round_robin() -> None:
    cmds = nat(table(WEB))
    pre = [c for c in added(cmds, "chain") if c["name"] == "prerouting"]
    assert pre == [
        {"family": "ip", "table": TABLE, "name": "prerouting", "type": "nat", "hook": "prerouting"}
        | {"prio": -100, "policy": "accept"}
    ]
    assert rules(cmds, "prerouting") == [
        [
            {
                "match": {
                    "op": "==",
                    "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                    "right": "192.0.2.10",
                }
            },
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}},
            {"jump": {"target": "v-web"}},
        ]
    ]
    m = vmap(cmds)
    assert m["key"] == {"numgen": {"mode": "inc", "mod": 3, "offset": 0}}
    assert ranges(m) == [(0, "b-web-s1"), (1, "b-web-s2"), (2, "b-web-s3")]
    # the server's own port, else the virtual's
    assert rules(cmds, "b-web-s2")[-1][-1] == {"dnat": {"addr": "198.51.100.12", "port": 8080}}
    assert rules(cmds, "b-web-s1") == [
        [
            {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
            {"dnat": {"addr": "198.51.100.11", "port": 80}},
        ]
    ]
    assert added(cmds, "set") == []  # no persistence, no pins in NAT


def test_weighted_ranges_are_as_wide_as_the_shares() -> None:
    m = vmap(nat(table(replace(WEB, scheduler="wrr"), (3, 1, 1))))
    assert m["key"]["numgen"]["mod"] == 5
    assert ranges(m) == [((0, 2), "b-web-s1"), (3, "b-web-s2"), (4, "b-web-s3")]


@pytest.mark.parametrize("scheduler, field", [("sh", "saddr"), ("dh", "daddr")])
def test_hash_schedulers(scheduler: str, field: str) -> None:
    m = vmap(nat(table(replace(WEB, scheduler=scheduler))))
    assert m["key"] == {
        "jhash": {"mod": 3, "seed": 0, "expr": {"payload": {"protocol": "ip", "field": field}}}
    }


@pytest.mark.parametrize("scheduler", ["wlc", "lc", "sed", "nq", "lblc", "lblcr"])
def test_least_connection_schedulers_use_the_numgen_map(scheduler: str) -> None:
    assert "numgen" in vmap(nat(table(replace(WEB, scheduler=scheduler), (2, 5, 1))))["key"]


def test_share_zero_takes_no_range_but_keeps_its_chain_and_persistence() -> None:
    v = replace(WEB, persistent=300)
    cmds = nat(table(v, (1, 0, 1)))
    assert ranges(vmap(cmds)) == [(0, "b-web-s1"), (1, "b-web-s3")]
    assert "b-web-s2" in {c["name"] for c in added(cmds, "chain")}
    assert "per-web-s2" in {s["name"] for s in added(cmds, "set")}
    lookups = [e[-1]["goto"]["target"] for e in rules(cmds, "v-web") if "goto" in e[-1]]
    assert lookups == ["b-web-s1", "b-web-s2", "b-web-s3"]


def test_absent_backend_has_no_chain_and_no_set() -> None:
    v = replace(WEB, persistent=300)
    cmds = nat(VirtualTable(v, (ruleset.backend_of(v, SERVERS[0], 1),)))
    names = {c["name"] for c in added(cmds, "chain")} | {s["name"] for s in added(cmds, "set")}
    assert not {n for n in names if "s2" in n or "s3" in n}
    direct_names = {s["name"] for s in added(direct(VirtualTable(v, ())), "set")}
    assert direct_names == set()


def test_persistence_with_pmask() -> None:
    v = replace(WEB, persistent=600, pmask=A("255.255.255.0"))
    cmds = nat(table(v))
    s1 = [s for s in added(cmds, "set") if s["name"] == "per-web-s1"]
    assert s1 == [{"family": "ip", "table": TABLE, "name": "per-web-s1", "type": "ipv4_addr"} | {
        "flags": ["timeout"], "timeout": 600}]  # fmt: skip
    masked = {"&": [{"payload": {"protocol": "ip", "field": "saddr"}}, "255.255.255.0"]}
    first = rules(cmds, "v-web")[0]
    assert first == [
        {"match": {"op": "==", "left": masked, "right": "@per-web-s1"}},
        {"goto": {"target": "b-web-s1"}},
    ]
    assert rules(cmds, "b-web-s1")[0] == [{"set": {"op": "update", "elem": masked, "set": "@per-web-s1"}}]
    # the lookups come before the scheduler
    assert "vmap" in rules(cmds, "v-web")[-1][0]
    # a /32 pmask keys on the bare address
    plain = rules(nat(table(replace(WEB, persistent=60))), "v-web")[0][0]["match"]["left"]
    assert plain == {"payload": {"protocol": "ip", "field": "saddr"}}


def test_fwmark_virtual_matches_the_mark_and_keeps_the_port() -> None:
    v = replace(WEB, fwmark=7)
    cmds = nat(table(v))
    assert rules(cmds, "prerouting") == [
        [
            {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 7}},
            {"jump": {"target": "v-web"}},
        ]
    ]
    assert rules(cmds, "b-web-s1") == [[{"dnat": {"addr": "198.51.100.11"}}]]


def test_udp_virtual() -> None:
    v = replace(WEB, protocol="udp", port=53)
    cmds = nat(table(v))
    assert rules(cmds, "prerouting")[0][1]["match"]["left"] == {
        "payload": {"protocol": "udp", "field": "dport"}
    }
    assert rules(cmds, "b-web-s1")[0][0]["match"]["right"] == "udp"


def test_sorry_server_only_when_no_backend_takes_new_connections() -> None:
    v = replace(WEB, sorry_server=A("198.51.100.9"))
    cmds = nat(table(v, (0, 0, 0)))
    assert rules(cmds, "v-web")[-1][-1] == {"dnat": {"addr": "198.51.100.9", "port": 80}}
    assert not [e for expr in rules(cmds, "v-web") for e in expr if "vmap" in e]
    assert "198.51.100.9" not in json.dumps(nat(table(v)))
    # no sorry server: nothing in the virtual's chain; the director itself answers (a reset)
    assert rules(nat(table(WEB, (0, 0, 0))), "v-web") == []


FLOW = {
    "concat": [
        {"payload": {"protocol": "ip", "field": "saddr"}},
        {"payload": {"protocol": "th", "field": "sport"}},
    ]
}
MARK = {"meta": {"key": "mark"}}


def test_direct_routing_ingress_pins_and_fwd() -> None:
    v = replace(WEB, persistent=120)
    cmds = direct(table(v, (1, 0, 2)), tcp_timeout=1200)
    assert cmds[4] == {"add": {"table": {"family": "netdev", "name": TABLE}}}
    (chain,) = [c for c in added(cmds, "chain") if "hook" in c]
    assert chain == {"family": "netdev", "table": TABLE, "name": "in-eth0", "type": "filter"} | {
        "hook": "ingress", "dev": "eth0", "prio": 0, "policy": "accept"}  # fmt: skip
    assert rules(cmds, "in-eth0")[0][-1] == {"jump": {"target": "v-web"}}
    # no chain per backend: the virtual's chain and its one forwarding chain
    assert [c["name"] for c in added(cmds, "chain") if "hook" not in c] == ["v-web", "fwd-web"]
    # one pin set and one persistence set per virtual, the backend's id the key's last part
    sets = {s["name"]: s for s in added(cmds, "set")}
    assert set(sets) == {"pin-web", "per-web"}
    pin = {"family": "netdev", "table": TABLE, "name": "pin-web"}
    assert sets["pin-web"] == pin | {
        "type": ["ipv4_addr", "inet_service", "mark"], "flags": ["timeout"], "timeout": 1200}  # fmt: skip
    assert (sets["per-web"]["type"], sets["per-web"]["timeout"]) == (["ipv4_addr", "mark"], 120)
    ids = ruleset.backend_ids(["s1", "s2", "s3"])
    # every backend in the table (s2 too, at share 0: its pinned flows continue), named by comment
    (addr,) = added(cmds, "map")
    assert (addr["name"], addr["type"], addr["map"]) == ("addr-web", "mark", "ipv4_addr")
    assert addr["elem"] == [
        [{"elem": {"val": ids[s.name], "comment": s.name}}, str(s.address)] for s in SERVERS
    ]
    go = {"goto": {"target": "fwd-web"}}
    saddr = {"payload": {"protocol": "ip", "field": "saddr"}}
    sport = {"payload": {"protocol": "th", "field": "sport"}}

    def set_mark(value: Any) -> dict[str, Any]:
        return {"mangle": {"key": MARK, "value": value}}

    def hit(parts: list[Any], name: str, server: str) -> list[dict[str, Any]]:
        key = {"concat": [*parts, {"|": [{"&": [MARK, 0]}, ids[server]]}]}
        return [{"match": {"op": "==", "left": key, "right": f"@{name}"}}, set_mark(ids[server]), go]

    # pins, then persistence, then the scheduler; a lookup that misses leaves the mark as it was
    numgen = {"numgen": {"mode": "inc", "mod": 3, "offset": 0}}
    sched = {"map": {"key": numgen, "data": {"set": [[0, ids["s1"]], [{"range": [1, 2]}, ids["s3"]]]}}}
    assert rules(cmds, "v-web") == [
        *(hit([saddr, sport], "pin-web", s.name) for s in SERVERS),
        *(hit([saddr], "per-web", s.name) for s in SERVERS),
        [set_mark(sched), go],
    ]
    by_id = {"map": {"key": MARK, "data": "@addr-web"}}
    assert rules(cmds, "fwd-web") == [
        [{"set": {"op": "update", "elem": {"concat": [saddr, sport, MARK]}, "set": "@pin-web"}}],
        [{"set": {"op": "update", "elem": {"concat": [saddr, MARK]}, "set": "@per-web"}}],
        [{"fwd": {"dev": "eth0", "family": "ip", "addr": by_id}}],
    ]


def test_direct_pin_timeouts_default_per_protocol() -> None:
    def timeouts(v: Virtual, **cfg: Any) -> set[int]:
        return {m["timeout"] for m in added(direct(table(v), **cfg), "set") if "timeout" in m}

    assert timeouts(WEB) == {900}
    assert timeouts(replace(WEB, protocol="udp")) == {300}
    assert timeouts(replace(WEB, protocol="udp"), udp_timeout=45) == {45}


def test_backend_ids_come_from_names_not_positions() -> None:
    ids = ruleset.backend_ids(["s1", "s2", "s3"])
    assert ruleset.backend_ids(["s3", "s1", "s2"]) == ids
    assert {k: ids[k] for k in ("s1", "s3")} == ruleset.backend_ids(["s1", "s3"])
    assert len(set(ids.values())) == 3 and all(0 < i < 2**32 for i in ids.values())
    many = ruleset.backend_ids(f"rs{i}" for i in range(2000))
    assert len(set(many.values())) == 2000

    # a reload that reorders the servers writes the same id for each server
    def addresses(v: Virtual) -> dict[int, str]:
        (m,) = [m for m in added(direct(table(v)), "map") if m["name"] == "addr-web"]
        return {k["elem"]["val"]: addr for k, addr in m["elem"]}

    assert addresses(replace(WEB, servers=SERVERS[::-1])) == addresses(WEB)


def test_direct_without_backends_has_no_sets_and_a_fwmark_virtual_is_pinned_too() -> None:
    empty = direct(VirtualTable(WEB, ()))
    assert added(empty, "map") == [] and added(empty, "set") == []
    sorry = direct(VirtualTable(replace(WEB, sorry_server=A("198.51.100.9")), ()))
    assert rules(sorry, "v-web") == [[{"fwd": {"dev": "eth0", "family": "ip", "addr": "198.51.100.9"}}]]
    cmds = direct(table(replace(WEB, fwmark=5)))
    assert rules(cmds, "in-eth0")[0][0] == {"match": {"op": "==", "left": MARK, "right": 5}}
    assert {m["name"] for m in added(cmds, "map")} == {"addr-web"}
    assert {s["name"] for s in added(cmds, "set")} == {"pin-web"}


def test_live_ids_are_the_ids_of_the_new_tables_backends() -> None:
    cmds = direct(table(replace(WEB, persistent=30), (1, 0, 1)))
    ids = ruleset.backend_ids(["s1", "s2", "s3"])
    assert ruleset.live_ids(cmds) == {
        ("netdev", "pin-web"): frozenset(ids.values()),
        ("netdev", "per-web"): frozenset(ids.values()),
    }
    one = direct(VirtualTable(WEB, (ruleset.backend_of(WEB, SERVERS[0], 1),)))
    assert ruleset.live_ids(one)[("netdev", "pin-web")] == frozenset({ids["s1"]})
    assert ruleset.live_ids(nat(table(replace(WEB, persistent=30)))) == {}
    # a listed element's id: the last part of its key, with or without its timeout
    listed = {"elem": {"val": {"concat": ["10.0.0.1", 5, ids["s2"]]}, "timeout": 30, "expires": 9}}
    assert ruleset.element_id(listed) == ids["s2"]
    assert ruleset.element_id({"concat": ["10.0.0.1", ids["s3"]]}) == ids["s3"]


def test_backend_counts_name_each_backend_from_the_address_map() -> None:
    ids = ruleset.backend_ids(["s1", "s2"])
    named = [[{"elem": {"val": ids[s], "comment": s}}, "10.1.1.1"] for s in ids]
    pins = [
        {"elem": {"val": {"concat": ["10.0.0.1", 5, ids["s2"]]}, "expires": 3}},
        {"concat": ["10.0.0.2", 6, ids["s2"]]},
        {"concat": ["10.0.0.3", 6, 99]},  # an id no backend has: not counted
    ]
    listed: list[dict[str, Any]] = [
        {"name": "addr-web", "map": "ipv4_addr", "elem": named},
        {"name": "pin-web", "elem": pins},
        {"name": "per-web"},
        {"name": "per-other-s1", "elem": ["10.0.0.9"]},  # NAT's: the engine counts it by name
    ]
    counts = ruleset.backend_counts(listed)
    assert counts == {"pin-web-s1": 0, "pin-web-s2": 2, "per-web-s1": 0, "per-web-s2": 0}
    assert counts["pin-web-s2"] == 2 and ruleset.pin_set("web", "s2") == "pin-web-s2"


def _statements(e: Any) -> list[dict[str, Any]]:
    """Every JSON object nested in ``e``."""
    if isinstance(e, dict):
        return [e, *(x for v in e.values() for x in _statements(v))]
    if isinstance(e, list):
        return [x for v in e for x in _statements(v)]
    return []


def test_only_json_that_libnftables_1_0_6_parses() -> None:
    """No map update statement (``{"map": {"op": ...}}``, JSON from nftables 1.0.9 on) anywhere."""
    for cmds in (
        direct(table(replace(WEB, persistent=60), (1, 1, 0))),
        nat(table(replace(WEB, persistent=60))),
        direct(table(replace(WEB, scheduler="sh"))),
    ):
        assert not [o for o in _statements(cmds) if isinstance(o.get("map"), dict) and "op" in o["map"]]
    assert not hasattr(ruleset, "script")


@pytest.mark.parametrize("device", ['eth0"', "eth 0", "eth0;", "eth{0}", "eth#0"])
def test_describe_refuses_what_is_not_a_plain_token(device: str) -> None:
    v = replace(WEB, address=DeviceAddress(A("192.0.2.10"), f"{device}:1"))
    with pytest.raises(ValueError, match="plain token"):
        describe(direct(table(v)))


def test_direct_one_ingress_chain_per_vip_device() -> None:
    other = replace(WEB, name="mail", address=DeviceAddress(A("192.0.2.20"), "eth1:0"), port=25)
    third = replace(WEB, name="smtps", address=DeviceAddress(A("192.0.2.10"), "eth0:1"), port=465)
    cmds = direct(table(WEB), table(other), table(third))
    hooked = [c["name"] for c in added(cmds, "chain") if "hook" in c]
    assert hooked == ["in-eth0", "in-eth1"]
    assert len(rules(cmds, "in-eth0")) == 2


def test_ct_timeouts_only_on_request() -> None:
    cfg = {"tcp_timeout": 900, "tcpfin_timeout": 30, "udp_timeout": 60}
    assert added(nat(table(WEB), **cfg), "ct timeout") == []
    cmds = build(Config(network=NetworkMode.NAT, **cfg), [table(WEB)], ct_timeouts=True)
    objs = added(cmds, "ct timeout")
    assert [(o["name"], o["protocol"]) for o in objs] == [("t-tcp", "tcp"), ("t-udp", "udp")]
    assert objs[0]["policy"] == {
        "established": 900,
        "fin_wait": 30,
        "close_wait": 30,
        "last_ack": 30,
        "time_wait": 30,
    }
    assert "timeouts" not in {c["name"] for c in added(cmds, "chain")}
    # set by the dispatch rule: the first packet, after conntrack made the entry, before it is confirmed
    assert rules(cmds, "prerouting")[0][-2:] == [{"ct timeout": "t-tcp"}, {"jump": {"target": "v-web"}}]
    udp = build(
        Config(network=NetworkMode.NAT, **cfg),
        [table(replace(WEB, fwmark=3, protocol="udp"))],
        ct_timeouts=True,
    )
    assert rules(udp, "prerouting") == [
        [
            {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 3}},
            {"ct timeout": "t-udp"},
            {"jump": {"target": "v-web"}},
        ]
    ]
    only_fin = build(Config(network=NetworkMode.NAT, tcpfin_timeout=20), [table(WEB)], ct_timeouts=True)
    assert [o["name"] for o in added(only_fin, "ct timeout")] == ["t-tcp"]


def test_names_stable_and_digested_when_not_plain() -> None:
    odd = Virtual("web site", WEB.address, servers=(Server("rs-1", A("198.51.100.11")),))
    first = nat(table(odd, (1,)))
    assert first == nat(table(odd, (1,)))
    chains = [c["name"] for c in added(first, "chain") if "hook" not in c]
    assert len(chains) == 2 and all(" " not in c and c.count("-") == len(c.split("-")) - 1 for c in chains)
    assert chains[0] == ruleset.virtual_chain("web site") and chains[0].startswith("v-h")
    assert ruleset.backend_chain("web site", "rs-1") == chains[1]
    # no collision across the separator: a_b + c against a + b_c
    assert ruleset.backend_chain("a_b", "c") != ruleset.backend_chain("a", "b_c")


def test_deterministic_json() -> None:
    tabs = [table(replace(WEB, persistent=30)), table(replace(WEB, name="dns", protocol="udp", port=53))]
    one = json.dumps(direct(*tabs), sort_keys=False)
    assert one == json.dumps(direct(*tabs), sort_keys=False)
    assert json.dumps(nat(*tabs)) == json.dumps(nat(*tabs))


def test_inactive_virtual_left_out_and_tunnel_refused() -> None:
    cmds = nat(table(replace(WEB, active=False)))
    assert rules(cmds, "prerouting") == []
    with pytest.raises(ValueError, match="tunnel"):
        build(Config(network=NetworkMode.TUNNEL), [table(WEB)])


def test_dynamic_sets_lists_what_the_engine_carries_over() -> None:
    cmds = direct(table(replace(WEB, persistent=30), (1, 0, 1)))
    keys = ruleset.dynamic_sets(cmds)
    assert sorted(keys) == [("netdev", "per-web"), ("netdev", "pin-web")]  # not the constant id map
    nat_keys = ruleset.dynamic_sets(nat(table(replace(WEB, persistent=30), (1, 0, 1))))
    assert sorted(nat_keys) == [("ip", f"per-web-s{i}") for i in (1, 2, 3)]


def test_backend_of_uses_server_port_else_virtual() -> None:
    assert ruleset.backend_of(WEB, SERVERS[1], 2) == Backend("s2", A("198.51.100.12"), 8080, 2)
    assert ruleset.backend_of(WEB, SERVERS[0], 0).port == 80
    with pytest.raises(ValueError):
        ruleset.backend_of(WEB, Server("x"), 1)


def test_describe_reads_like_nft() -> None:
    v = replace(WEB, scheduler="wrr", persistent=300, pmask=A("255.255.255.0"))
    text = describe(nat(table(v, (3, 1, 0))))
    assert text.startswith("table ip pyrhfos {\n")
    assert "netdev" not in text  # added then deleted by the swap idiom: not shown
    for line in (
        "\tset per-web-s1 {",
        "\t\ttype ipv4_addr",
        "\t\ttimeout 300s",
        "\t\ttype nat hook prerouting priority -100; policy accept;",
        "\t\tip daddr 192.0.2.10 tcp dport 80 jump v-web",
        "\t\tip saddr & 255.255.255.0 @per-web-s1 goto b-web-s1",
        "\t\tnumgen inc mod 4 vmap { 0-2 : goto b-web-s1, 3 : goto b-web-s2 }",
        "\t\tupdate @per-web-s3 { ip saddr & 255.255.255.0 }",
        "\t\tmeta l4proto tcp dnat to 198.51.100.12:8080",
    ):
        assert line in text.splitlines(), line
    dr = describe(direct(table(replace(WEB, scheduler="sh"))))
    assert '\t\ttype filter hook ingress device "eth0" priority 0; policy accept;' in dr.splitlines()
    ids = ruleset.backend_ids(["s1", "s2", "s3"])
    s1 = ids["s1"]
    for line in (
        '\t\tfwd ip to meta mark map @addr-web device "eth0"',
        f"\t\tip saddr . th sport . meta mark & 0 | {s1} @pin-web meta mark set {s1} goto fwd-web",
        "\t\tupdate @pin-web { ip saddr . th sport . meta mark }",
        "\t\ttype ipv4_addr . inet_service . mark",
        "\t\ttype mark : ipv4_addr",
    ):
        assert line in dr.splitlines(), line
    assert f'{ids["s1"]} comment "s1" : 198.51.100.11' in dr
    assert "meta mark set jhash ip saddr mod 3 seed 0x0 map {" in dr
    assert describe([]) == ""
