"""The LVS director's nftables ruleset: config model + backends in effect -> libnftables JSON commands.
Pure: builds the whole of our table(s) as data (``build``) and renders it as nft-like text (``describe``).

Layout (docs: lvs-design.md):
- ``network = nat``: ``table ip pyrhfos``; chain ``prerouting`` (nat, dstnat) jumps per virtual (VIP +
  protocol + port, or ``meta mark`` for a fwmark virtual) to ``v-NAME``: persistence lookups first (one
  dynamic set of masked sources per backend), then the scheduler (``numgen inc`` / ``jhash`` ``mod S``
  vmap, ranges as wide as ``Backend.share``) to ``b-NAME-SERVER``, which refreshes its persistence set and
  ``dnat``s. Conntrack keeps the choice for the rest of the connection.
- ``network = direct``: ``table netdev pyrhfos``, one ingress chain ``in-DEV`` per VIP device. netdev has
  no conntrack, so each backend also has a pin set keyed on ``ip saddr . th sport``, looked up first for
  every packet and refreshed by every packet; the backend chain ends in ``fwd ip to ADDR device DEV``.
- Conntrack timeouts (NAT), with ``build(..., ct_timeouts=True)``: ``tcp_timeout``/``tcpfin_timeout``/
  ``udp_timeout`` become ``ct timeout`` objects set by the virtual's dispatch rule in ``prerouting``.
  Checked on this kernel: the kernel applies a ct timeout only to an entry that exists and is not yet
  confirmed, so after conntrack (priority -200) on a connection's first packet: the nat chain is such a
  place, a raw-priority chain is not (it loads and does nothing). The kernel takes them (loaded with
  nft's text parser in a namespace, conntrack -L shows the timeout), but Debian's libnftables 1.0.6 JSON
  parser drops a ct timeout's ``policy`` (upstream fix "parser_json: Wrong check in
  json_parse_ct_timeout_policy()", not in 1.0.6), so through JSON the object loads empty. TODO: hence
  the default False; on 1.0.6 the director sets these as its namespace's sysctls
  (net.netfilter.nf_conntrack_tcp_timeout_established, ..._fin_wait/_close_wait/_last_ack/_time_wait,
  nf_conntrack_udp_timeout and ..._stream); turn it on where libnftables keeps the policy.
- A fwmark virtual's backends keep the packet's destination port (``dnat to ADDR``), as IPVS does.
- Persistence lasts ``persistent`` seconds after the client's last new connection in NAT (the nat chain
  sees first packets only) and after its last packet in direct routing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from ..config.model import Config, NetworkMode, Server, Virtual

TABLE = "pyrhfos"  # the one table name, in family ip (NAT) and/or netdev (direct routing)
FAMILIES = ("ip", "netdev")
PIN_TCP = 900  # direct routing: a pin outlives this much silence (tcp_timeout / udp_timeout override)
PIN_UDP = 300
JHASH_SEED = 0  # fixed, so a replaced table hashes every client as before
NAT_PRIORITY = -100  # dstnat
INGRESS_PRIORITY = 0
NUMGEN_SCHEDULERS = frozenset({"rr", "wrr", "wlc", "lc", "sed", "nq", "lblc", "lblcr"})
_PLAIN = re.compile(r"[A-Za-z0-9_]{1,40}")
_ALL_ONES = IPv4Address("255.255.255.255")
Json = dict[str, Any]


@dataclass(frozen=True)
class Backend:
    name: str  # the server block's name
    address: IPv4Address
    port: int  # the server's port, else the virtual's
    share: int  # width of its range in the scheduler's map; 0 = takes no new connection
    # (quiesced or weight 0) but its pinned/persistent flows continue


@dataclass(frozen=True)
class VirtualTable:
    virtual: Virtual  # config model block (active)
    backends: tuple[Backend, ...]  # in config order; a server that is down (not quiesced) is absent


def backend_of(virtual: Virtual, server: Server, share: int) -> Backend:
    """A server block as a Backend (its port, else the virtual's); the server must have an address."""
    if server.address is None:
        raise ValueError(f"server {server.name} of virtual {virtual.name} has no address")
    return Backend(server.name, server.address, server.port or virtual.port, share)


# -- names ----------------------------------------------------------------------------------------------
def _part(name: str) -> str:
    """A block name as it stands in chain and set names; '-' separates parts, so none can collide."""
    if _PLAIN.fullmatch(name):
        return name
    return "h" + hashlib.sha256(name.encode()).hexdigest()[:12]


def virtual_chain(virtual: str) -> str:
    return f"v-{_part(virtual)}"


def backend_chain(virtual: str, server: str) -> str:
    return f"b-{_part(virtual)}-{_part(server)}"


def persist_set(virtual: str, server: str) -> str:
    """The dynamic set of (masked) client addresses persistent to this backend."""
    return f"per-{_part(virtual)}-{_part(server)}"


def pin_set(virtual: str, server: str) -> str:
    """Direct routing: the dynamic set of ``client . source port`` flows pinned to this backend."""
    return f"pin-{_part(virtual)}-{_part(server)}"


def ingress_chain(device: str) -> str:
    return f"in-{_part(device)}"


def family_of(cfg: Config) -> str:
    if cfg.network is NetworkMode.NAT:
        return "ip"
    if cfg.network is NetworkMode.DIRECT:
        return "netdev"
    raise ValueError(f"network = {cfg.network.value} has no nftables ruleset (tunnel is not built)")


# -- expressions ------------------------------------------------------------------------------------------
def _payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def _match(left: Any, right: Any) -> Json:
    return {"match": {"op": "==", "left": left, "right": right}}


def _meta(key: str) -> Json:
    return {"meta": {"key": key}}


def _source(pmask: IPv4Address) -> Any:
    """The client address as persistence keys it: masked by pmask (none for a /32 mask)."""
    saddr = _payload("ip", "saddr")
    return saddr if pmask == _ALL_ONES else {"&": [saddr, str(pmask)]}


def _flow() -> Json:
    return {"concat": [_payload("ip", "saddr"), _payload("th", "sport")]}


def _selector(v: Virtual) -> list[Json]:
    """What picks a virtual's packets: its mark, else VIP, protocol and port."""
    if v.fwmark is not None:
        return [_match(_meta("mark"), v.fwmark)]
    if v.address is None:
        raise ValueError(f"virtual {v.name} has neither address nor fwmark")
    return [
        _match(_payload("ip", "daddr"), str(v.address.ip)),
        _match(_payload(v.protocol, "dport"), v.port),
    ]


def _scheduler_key(v: Virtual, modulus: int) -> Json:
    if v.scheduler in ("sh", "dh"):
        field = "saddr" if v.scheduler == "sh" else "daddr"
        return {"jhash": {"mod": modulus, "seed": JHASH_SEED, "expr": _payload("ip", field)}}
    if v.scheduler not in NUMGEN_SCHEDULERS:
        raise ValueError(f"virtual {v.name}: scheduler {v.scheduler!r} has no nftables form")
    return {"numgen": {"mode": "inc", "mod": modulus, "offset": 0}}


def _ranges(v: Virtual, backends: Sequence[Backend]) -> tuple[int, list[list[Any]]]:
    """The scheduler map: each backend with share > 0 gets a key range as wide as its share."""
    entries: list[list[Any]] = []
    start = 0
    for b in backends:
        if b.share <= 0:
            continue
        end = start + b.share - 1
        key: Any = start if end == start else {"range": [start, end]}
        entries.append([key, {"goto": {"target": backend_chain(v.name, b.name)}}])
        start = end + 1
    return start, entries


# -- the builder --------------------------------------------------------------------------------------------
class _Table:
    """Collects one family's objects in load order: timeouts, sets, chains, then rules."""

    def __init__(self, family: str) -> None:
        self.family = family
        self.objects: list[Json] = []
        self.chains: list[Json] = []
        self.rules: list[Json] = []

    def _ref(self) -> Json:
        return {"family": self.family, "table": TABLE}

    def chain(self, name: str, **hook: Any) -> None:
        self.chains.append({"add": {"chain": {**self._ref(), "name": name, **hook}}})

    def dynamic_set(self, name: str, type_: str | list[str], timeout: int) -> None:
        body = {**self._ref(), "name": name, "type": type_, "flags": ["timeout"], "timeout": timeout}
        self.objects.append({"add": {"set": body}})

    def ct_timeout(self, name: str, protocol: str, policy: dict[str, int]) -> None:
        body = {**self._ref(), "name": name, "protocol": protocol, "l3proto": "ip", "policy": policy}
        self.objects.append({"add": {"ct timeout": body}})

    def rule(self, chain: str, *expr: Json) -> None:
        self.rules.append({"add": {"rule": {**self._ref(), "chain": chain, "expr": list(expr)}}})

    def commands(self) -> list[Json]:
        head = {"add": {"table": {"family": self.family, "name": TABLE}}}
        return [head, *self.objects, *self.chains, *self.rules]


def _ct_timeouts(cfg: Config) -> dict[str, dict[str, int]]:
    """protocol -> ct timeout policy from tcp_timeout / tcpfin_timeout / udp_timeout (IPVS's three)."""
    out: dict[str, dict[str, int]] = {}
    tcp: dict[str, int] = {}
    if cfg.tcp_timeout:
        tcp["established"] = cfg.tcp_timeout
    if cfg.tcpfin_timeout:  # IPVS's FIN_WAIT covers conntrack's states after the first FIN
        for state in ("fin_wait", "close_wait", "last_ack", "time_wait"):
            tcp[state] = cfg.tcpfin_timeout
    if tcp:
        out["tcp"] = tcp
    if cfg.udp_timeout:
        out["udp"] = {"unreplied": cfg.udp_timeout, "replied": cfg.udp_timeout}
    return out


def ct_timeout_name(protocol: str) -> str:
    return f"t-{protocol}"


def _virtual(t: _Table, cfg: Config, vt: VirtualTable, device: str | None) -> None:
    """The virtual's chain and one chain (and dynamic sets) per backend."""
    v = vt.virtual
    chain = virtual_chain(v.name)
    t.chain(chain)
    for b in vt.backends:
        t.chain(backend_chain(v.name, b.name))
    pin_timeout = (cfg.udp_timeout or PIN_UDP) if v.protocol == "udp" else (cfg.tcp_timeout or PIN_TCP)
    if device is not None:  # direct routing: the flow's pin decides first, for every packet
        for b in vt.backends:
            name = pin_set(v.name, b.name)
            t.dynamic_set(name, ["ipv4_addr", "inet_service"], pin_timeout)
            t.rule(chain, _match(_flow(), f"@{name}"), {"goto": {"target": backend_chain(v.name, b.name)}})
    if v.persistent:
        for b in vt.backends:
            name = persist_set(v.name, b.name)
            t.dynamic_set(name, "ipv4_addr", v.persistent)
            target = {"goto": {"target": backend_chain(v.name, b.name)}}
            t.rule(chain, _match(_source(v.pmask), f"@{name}"), target)
    modulus, entries = _ranges(v, vt.backends)
    if modulus:
        t.rule(chain, {"vmap": {"key": _scheduler_key(v, modulus), "data": {"set": entries}}})
    elif v.sorry_server is not None:
        t.rule(chain, *_deliver(v, v.sorry_server, v.port, device))
    # else: nothing matches; the packet reaches the director itself, which answers with a reset.
    for b in vt.backends:
        bchain = backend_chain(v.name, b.name)
        if device is not None:  # an update of its own: a full set must not stop the forward
            t.rule(bchain, {"set": {"op": "update", "elem": _flow(), "set": f"@{pin_set(v.name, b.name)}"}})
        if v.persistent:
            elem = _source(v.pmask)
            t.rule(bchain, {"set": {"op": "update", "elem": elem, "set": f"@{persist_set(v.name, b.name)}"}})
        t.rule(bchain, *_deliver(v, b.address, b.port, device))


def _deliver(v: Virtual, address: IPv4Address, port: int, device: str | None) -> list[Json]:
    """The final statement(s) toward a real server: dnat (NAT) or fwd out of the VIP's device (direct)."""
    if device is not None:
        return [{"fwd": {"dev": device, "family": "ip", "addr": str(address)}}]
    if v.fwmark is not None:
        return [{"dnat": {"addr": str(address)}}]
    return [_match(_meta("l4proto"), v.protocol), {"dnat": {"addr": str(address), "port": port}}]


def _nat(cfg: Config, tables: Sequence[VirtualTable], ct_timeouts: bool) -> _Table:
    t = _Table("ip")
    timeouts = _ct_timeouts(cfg) if ct_timeouts else {}
    for proto, policy in timeouts.items():
        t.ct_timeout(ct_timeout_name(proto), proto, policy)
    t.chain("prerouting", type="nat", hook="prerouting", prio=NAT_PRIORITY, policy="accept")
    for vt in tables:
        v = vt.virtual
        # first packet, entry not yet confirmed: where the kernel applies it (it skips other protocols)
        timeout = [{"ct timeout": ct_timeout_name(v.protocol)}] if v.protocol in timeouts else []
        t.rule("prerouting", *_selector(v), *timeout, {"jump": {"target": virtual_chain(v.name)}})
        _virtual(t, cfg, vt, None)
    return t


def _direct(cfg: Config, tables: Sequence[VirtualTable]) -> _Table:
    t = _Table("netdev")
    devices: list[str] = []
    for vt in tables:
        if vt.virtual.address is None:
            raise ValueError(f"virtual {vt.virtual.name}: direct routing needs its address (the VIP device)")
        if vt.virtual.address.interface not in devices:
            devices.append(vt.virtual.address.interface)
    for dev in devices:
        t.chain(
            ingress_chain(dev), type="filter", hook="ingress", dev=dev, prio=INGRESS_PRIORITY, policy="accept"
        )
    for vt in tables:
        v = vt.virtual
        assert v.address is not None
        dev = v.address.interface
        t.rule(ingress_chain(dev), *_selector(v), {"jump": {"target": virtual_chain(v.name)}})
        _virtual(t, cfg, vt, dev)
    return t


def build(cfg: Config, tables: Sequence[VirtualTable], *, ct_timeouts: bool = False) -> list[dict[str, Any]]:
    """The JSON command list ({"nftables": [...]} content) that replaces our table(s) whole.

    Both families' tables are first added and deleted (so a missing one is no error, and a change of
    ``network`` leaves no table of the other), then the one in use is added with its contents.
    Inactive virtuals are left out. Same input, same list. ``ct_timeouts``: see the module docstring.
    """
    family = family_of(cfg)
    active = [vt for vt in tables if vt.virtual.active]
    commands: list[Json] = []
    for fam in FAMILIES:
        ref = {"table": {"family": fam, "name": TABLE}}
        commands += [{"add": ref}, {"delete": ref}]
    table = _nat(cfg, active, ct_timeouts) if family == "ip" else _direct(cfg, active)
    return commands + table.commands()


def dynamic_sets(commands: Iterable[dict[str, Any]]) -> dict[tuple[str, str], Json]:
    """(family, set name) -> the set's body, for every set with timeouts the commands add."""
    found: dict[tuple[str, str], Json] = {}
    for cmd in commands:
        body = cmd.get("add", {}).get("set")
        if body and body.get("table") == TABLE and "timeout" in body.get("flags", ()):
            found[(body["family"], body["name"])] = body
    return found


# -- nft-like text (pulse -t): read from the JSON, never loaded --------------------------------------------
def _expr(e: Any) -> str:
    if not isinstance(e, dict):
        return str(e)
    (kind, val), *_ = e.items()
    if kind == "match":
        op = "" if val["op"] == "==" else f"{val['op']} "
        return f"{_expr(val['left'])} {op}{_expr(val['right'])}"
    if kind == "payload":
        return f"{val['protocol']} {val['field']}"
    if kind == "meta":
        return f"meta {val['key']}"
    if kind == "&":
        return " & ".join(_expr(x) for x in val)
    if kind == "concat":
        return " . ".join(_expr(x) for x in val)
    if kind == "range":
        return f"{val[0]}-{val[1]}"
    if kind in ("goto", "jump"):
        return f"{kind} {val['target']}"
    if kind == "numgen":
        offset = f" offset {val['offset']}" if val.get("offset") else ""
        return f"numgen {val['mode']} mod {val['mod']}{offset}"
    if kind == "jhash":
        return f"jhash {_expr(val['expr'])} mod {val['mod']} seed {val.get('seed', 0):#x}"
    if kind == "vmap":
        entries = ", ".join(f"{_expr(k)} : {_expr(d)}" for k, d in val["data"]["set"])
        return f"{_expr(val['key'])} vmap {{ {entries} }}"
    if kind == "dnat":
        port = f":{val['port']}" if "port" in val else ""
        return f"dnat to {val['addr']}{port}"
    if kind == "fwd":
        return f'fwd {val.get("family", "ip")} to {val["addr"]} device "{val["dev"]}"'
    if kind == "set":
        return f"{val['op']} {val['set']} {{ {_expr(val['elem'])} }}"
    if kind == "ct timeout":
        return f'ct timeout set "{val}"'
    if kind == "elem":
        timeout = f" timeout {val['timeout']}s" if "timeout" in val else ""
        return f"{_expr(val['val'])}{timeout}"
    return f"{kind} {val}"


def _chain_head(c: Json) -> list[str]:
    if "hook" not in c:
        return []
    dev = f' device "{c["dev"]}"' if "dev" in c else ""
    policy = c.get("policy", "accept")
    return [f"type {c['type']} hook {c['hook']}{dev} priority {c['prio']}; policy {policy};"]


def describe(commands: Sequence[dict[str, Any]]) -> str:
    """The tables the commands add, as nft-like text (deletes are the swap idiom and not shown)."""
    tables: dict[tuple[str, str], dict[str, dict[str, list[str]]]] = {}
    for cmd in commands:
        if "delete" in cmd and "table" in cmd["delete"]:
            gone = cmd["delete"]["table"]
            tables.pop((gone["family"], gone["name"]), None)
        if "add" not in cmd:
            continue
        (kind, body), *_ = cmd["add"].items()
        if kind == "table":
            tables.setdefault((body["family"], body["name"]), {"ct timeout": {}, "set": {}, "chain": {}})
            continue
        parts = tables.setdefault((body["family"], body["table"]), {"ct timeout": {}, "set": {}, "chain": {}})
        if kind == "ct timeout":
            policy = ", ".join(f"{k} : {v}" for k, v in body["policy"].items())
            lines = [f"protocol {body['protocol']}", f"l3proto {body['l3proto']}", f"policy = {{ {policy} }}"]
            parts["ct timeout"][body["name"]] = lines
        elif kind == "set":
            type_ = body["type"] if isinstance(body["type"], str) else " . ".join(body["type"])
            lines = [f"type {type_}", f"flags {','.join(body.get('flags', ()))}"]
            if "timeout" in body:
                lines.append(f"timeout {body['timeout']}s")
            parts["set"][body["name"]] = lines
        elif kind == "element":
            elems = ", ".join(_expr(e) for e in body["elem"])
            parts["set"].setdefault(body["name"], []).append(f"elements = {{ {elems} }}")
        elif kind == "chain":
            parts["chain"][body["name"]] = _chain_head(body)
        elif kind == "rule":
            parts["chain"].setdefault(body["chain"], []).append(" ".join(_expr(e) for e in body["expr"]))
    out: list[str] = []
    for (family, name), parts in tables.items():
        out.append(f"table {family} {name} {{")
        blocks = [(f"{kind} {n}", lines) for kind, objs in parts.items() for n, lines in objs.items()]
        for i, (head, lines) in enumerate(blocks):
            out += ([""] if i else []) + [f"\t{head} {{", *(f"\t\t{line}" for line in lines), "\t}"]
        out.append("}")
    return "\n".join(out) + ("\n" if out else "")
