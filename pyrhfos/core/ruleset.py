"""The LVS director's nftables ruleset: config model + backends in effect -> libnftables JSON commands.
Pure: builds the whole of our table(s) as data (``build``); core/nftext.py shows it in nft syntax.

Layout (docs: lvs-design.md):
- ``network = nat``: ``table ip pyrhfos``; chain ``prerouting`` (nat, dstnat) jumps per virtual (VIP +
  protocol + port, or ``meta mark`` for a fwmark virtual) to ``v-NAME``: persistence lookups first (one
  dynamic set of masked sources per backend), then the scheduler (``numgen inc`` / ``jhash`` ``mod S``
  vmap, ranges as wide as ``Backend.share``) to ``b-NAME-SERVER``, which refreshes its persistence set and
  ``dnat``s. Conntrack keeps the choice for the rest of the connection.
- ``network = direct``: ``table netdev pyrhfos``, one ingress chain ``in-DEV`` per VIP device. netdev has
  no conntrack, so each virtual has one dynamic set ``pin-NAME`` of ``ip saddr . th sport . ID`` (the
  flow and its backend's id) and, with ``persistent``, ``per-NAME`` of ``(masked) ip saddr . ID``. The
  virtual's chain puts an id in the mark and goes to ``fwd-NAME``: a pin hit (per backend one rule,
  ``ip saddr . th sport . ID @pin-NAME meta mark set ID``), else a persistence hit, else the
  scheduler (``numgen``/``jhash`` ``mod S map { range : id }``). ``fwd-NAME`` writes ``flow . meta
  mark`` into the sets (``update``: adds it, or restarts the timeout of the one there) and ends in
  ``fwd ip to meta mark map @addr-NAME device DEV``: no chain and no set per backend. The mark is a
  scratch register here: the packet is forwarded out at once and never enters the IP stack (a fwmark
  virtual was already matched by its mark), and a lookup that misses leaves it as it was.
  ``addr-NAME`` holds the backends of the table (share 0 too, so a quiesced server's pins hold), each
  element's comment naming it for ``NftEngine.set_sizes`` (``backend_counts``). A swap carries over
  only the elements whose id is a backend of the new table (``live_ids``): a server that left the
  table (down) loses its clients, who are scheduled afresh. A backend's id comes from its name
  (``backend_ids``), not its position, so a reload that reorders the servers keeps the pins right.
  Why the id is in the key, not a map's value: libnftables' JSON parser has no map update statement
  before nftables 1.0.9 (Debian's is 1.0.6), and the table goes through JSON only; it does take set
  updates, map lookups and ``fwd`` to a map lookup. The cost: a pinned packet does one lookup per
  backend listed before its own (a map would do one in all).
- Conntrack timeouts (NAT), with ``build(..., ct_timeouts=True)``: ``tcp_timeout``/``tcpfin_timeout``/
  ``udp_timeout`` become ``ct timeout`` objects set by the virtual's dispatch rule in ``prerouting``.
  Checked on this kernel: the kernel applies a ct timeout only to an entry that exists and is not yet
  confirmed, so after conntrack (priority -200) on a connection's first packet: the nat chain is such a
  place, a raw-priority chain is not (it loads and does nothing). The kernel takes them (loaded with
  nft's text parser in a namespace, conntrack -L shows the timeout), but Debian's libnftables 1.0.6 JSON
  parser drops a ct timeout's ``policy`` (upstream fix "parser_json: Wrong check in
  json_parse_ct_timeout_policy()", not in 1.0.6), so through JSON the object loads empty there
  (tests/net/test_nft_lab.py, xfail on such a library). The default is False: the director sets these
  as its namespace's sysctls (net.netfilter.nf_conntrack_tcp_timeout_established, ..._fin_wait/
  _close_wait/_last_ack/_time_wait, nf_conntrack_udp_timeout and ..._stream); turning it on is the
  director's choice.
- A fwmark virtual's backends keep the packet's destination port (``dnat to ADDR``), as IPVS does.
- Persistence lasts ``persistent`` seconds after the client's last new connection in NAT (the nat chain
  sees first packets only) and after its last packet in direct routing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from ..config.model import Config, NetworkMode, Server, Virtual
from .nftext import describe as describe  # pulse -t's text: core/nftext.py

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
_ID_SPAN = 2**32 - 1  # backend ids are marks; 0 is the unmarked packet
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
    """NAT: the dynamic set of (masked) client addresses persistent to this backend. Direct routing:
    the name under which ``NftEngine.set_sizes`` counts this backend's clients in ``dr_persist_set``."""
    return f"per-{_part(virtual)}-{_part(server)}"


def pin_set(virtual: str, server: str) -> str:
    """Direct routing: the name under which ``NftEngine.set_sizes`` counts the flows pinned to this
    backend (they live in the virtual's ``dr_pin_set``)."""
    return f"pin-{_part(virtual)}-{_part(server)}"


def dr_pin_set(virtual: str) -> str:
    """Direct routing: the virtual's dynamic set of ``client . source port . backend id``."""
    return f"pin-{_part(virtual)}"


def dr_persist_set(virtual: str) -> str:
    """Direct routing: the virtual's dynamic set of ``(masked) client . backend id`` (persistence)."""
    return f"per-{_part(virtual)}"


def address_map(virtual: str) -> str:
    """Direct routing: the virtual's constant map ``backend id -> address`` (its backends in the table,
    share 0 too)."""
    return f"addr-{_part(virtual)}"


def forward_chain(virtual: str) -> str:
    """Direct routing: the virtual's one chain that refreshes the pin and persistence sets and forwards
    by the id."""
    return f"fwd-{_part(virtual)}"


def backend_ids(servers: Iterable[str]) -> dict[str, int]:
    """server name -> its id (a mark, 1 .. 2**32-1) within one virtual: a digest of the name, so the id
    does not depend on the servers' order or number; the rare collision moves the later name (in
    sorted order) to the next free id."""
    ids: dict[str, int] = {}
    taken: set[int] = set()
    for name in sorted(set(servers)):
        n = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % _ID_SPAN + 1
        while n in taken:
            n = n % _ID_SPAN + 1
        ids[name] = n
        taken.add(n)
    return ids


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


def _ranges(
    v: Virtual, backends: Sequence[Backend], value: Callable[[Backend], Any] | None = None
) -> tuple[int, list[list[Any]]]:
    """The scheduler map: each backend with share > 0 gets a key range as wide as its share, mapped to
    ``value(backend)`` (default: goto its chain)."""
    entries: list[list[Any]] = []
    start = 0
    for b in backends:
        if b.share <= 0:
            continue
        end = start + b.share - 1
        key: Any = start if end == start else {"range": [start, end]}
        data = value(b) if value else {"goto": {"target": backend_chain(v.name, b.name)}}
        entries.append([key, data])
        start = end + 1
    return start, entries


# -- the builder --------------------------------------------------------------------------------------------
class _Table:
    """Collects one family's objects in load order: timeouts, sets and maps, chains, then rules."""

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

    def constant_map(self, name: str, type_: str, data: str, elems: list[list[Any]]) -> None:
        body = {**self._ref(), "name": name, "type": type_, "map": data, "elem": elems}
        self.objects.append({"add": {"map": body}})

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
    """NAT: the virtual's chain, one chain and persistence set per backend. Direct: ``_pinned``."""
    v = vt.virtual
    chain = virtual_chain(v.name)
    t.chain(chain)
    if device is not None:
        _pinned(t, cfg, vt, device)
        return
    for b in vt.backends:
        t.chain(backend_chain(v.name, b.name))
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
        t.rule(chain, *_deliver(v, v.sorry_server, v.port, None))
    # else: nothing matches; the packet reaches the director itself, which answers with a reset.
    for b in vt.backends:
        bchain = backend_chain(v.name, b.name)
        if v.persistent:
            elem = _source(v.pmask)
            t.rule(bchain, _update(elem, persist_set(v.name, b.name)))
        t.rule(bchain, *_deliver(v, b.address, b.port, None))


def _pinned(t: _Table, cfg: Config, vt: VirtualTable, device: str) -> None:
    """Direct routing: each step puts a backend's id in the mark and goes to ``fwd-NAME``: a hit of
    ``flow . ID`` in the pin set (one rule per backend), else of ``source . ID`` in the persistence
    set, else the scheduler's map. ``fwd-NAME`` writes ``flow . mark`` (and ``source . mark``) into
    the sets and forwards to ``addr-NAME``'s address for the mark."""
    v = vt.virtual
    chain, forward = virtual_chain(v.name), forward_chain(v.name)
    ids = backend_ids(b.name for b in vt.backends)
    modulus, ranges = _ranges(v, vt.backends, lambda b: ids[b.name])
    if vt.backends:
        t.chain(forward)
        pin_timeout = (cfg.udp_timeout or PIN_UDP) if v.protocol == "udp" else (cfg.tcp_timeout or PIN_TCP)
        # every backend of the table (share 0 too: its pins hold); the comment names it for
        # NftEngine.set_sizes (backend_counts)
        named = [
            [{"elem": {"val": ids[b.name], "comment": _part(b.name)}}, str(b.address)] for b in vt.backends
        ]
        t.constant_map(address_map(v.name), "mark", "ipv4_addr", named)
        go = {"goto": {"target": forward}}
        keyed = [(dr_pin_set(v.name), _flow_parts(), ["ipv4_addr", "inet_service", "mark"], pin_timeout)]
        if v.persistent:
            keyed.append((dr_persist_set(v.name), [_source(v.pmask)], ["ipv4_addr", "mark"], v.persistent))
        for name, parts, type_, timeout in keyed:
            t.dynamic_set(name, type_, timeout)
            for b in vt.backends:
                key = {"concat": [*parts, _constant_mark(ids[b.name])]}
                t.rule(chain, _match(key, f"@{name}"), _set_mark(ids[b.name]), go)
        if modulus:
            scheduled = {"map": {"key": _scheduler_key(v, modulus), "data": {"set": ranges}}}
            t.rule(chain, _set_mark(scheduled), go)
        for name, parts, _, _ in keyed:  # each update a rule of its own: a full set must not stop the rest
            t.rule(forward, _update({"concat": [*parts, _meta("mark")]}, name))
        by_id = {"map": {"key": _meta("mark"), "data": f"@{address_map(v.name)}"}}
        t.rule(forward, {"fwd": {"dev": device, "family": "ip", "addr": by_id}})
    if not modulus and v.sorry_server is not None:
        t.rule(chain, *_deliver(v, v.sorry_server, v.port, device))
    # else: nothing matches; the packet reaches the director itself, which answers with a reset.


def _flow_parts() -> list[Json]:
    return [_payload("ip", "saddr"), _payload("th", "sport")]


def _constant_mark(n: int) -> Json:
    """The constant ``n`` as a mark-typed part of a lookup key, written ``meta mark & 0 | n``:
    libnftables 1.0.6's JSON parser refuses a bare number in a concatenation ("Can't parse symbolic
    invalid expressions"); the kernel computes it as one bitwise operation, the mark left as it is."""
    return {"|": [{"&": [_meta("mark"), 0]}, n]}


def _set_mark(value: Any) -> Json:
    """``meta mark set VALUE``; a map lookup that misses ends the rule (the mark unchanged)."""
    return {"mangle": {"key": _meta("mark"), "value": value}}


def _update(key: Json, set_name: str) -> Json:
    """``update @SET { KEY }``: adds the element, or restarts the timeout of the one there."""
    return {"set": {"op": "update", "elem": key, "set": f"@{set_name}"}}


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
    """(family, name) -> the body, for every set or map with timeouts the commands add."""
    found: dict[tuple[str, str], Json] = {}
    for cmd in commands:
        add = cmd.get("add", {})
        body = add.get("set") or add.get("map")
        if body and body.get("table") == TABLE and "timeout" in body.get("flags", ()):
            found[(body["family"], body["name"])] = body
    return found


def _named_ids(m: Json) -> dict[int, str]:
    """An address map's ``id -> backend name part`` (the elements' comments)."""
    out: dict[int, str] = {}
    for key, _ in m.get("elem", ()):
        if isinstance(key, dict) and "elem" in key:
            out[key["elem"]["val"]] = key["elem"].get("comment", "")
    return out


def live_ids(commands: Iterable[dict[str, Any]]) -> dict[tuple[str, str], frozenset[int]]:
    """(family, set name) -> the backend ids of the new table for each virtual's pin and persistence
    set (the keys of its address map): only elements ending in one of them are worth carrying over;
    one holding another id would point at no backend."""
    found: dict[tuple[str, str], frozenset[int]] = {}
    for cmd in commands:
        body = cmd.get("add", {}).get("map")
        if body and body.get("table") == TABLE and body["name"].startswith("addr-"):
            ids = frozenset(_named_ids(body))
            virtual = body["name"].removeprefix("addr-")
            for prefix in ("pin", "per"):
                found[(body["family"], f"{prefix}-{virtual}")] = ids
    return found


def element_id(elem: Any) -> Any:
    """A listed direct-routing pin or persistence element's backend id: its key's last part."""
    val = elem["elem"]["val"] if isinstance(elem, dict) and "elem" in elem else elem
    return val["concat"][-1] if isinstance(val, dict) and "concat" in val else None


def backend_counts(sets: Iterable[Json]) -> dict[str, int]:
    """From listed sets and maps (libnftables JSON, elements included): elements per backend of each
    direct-routing pin and persistence set, named as ``pin_set``/``persist_set`` name them
    (``pin-V-S``, ``per-V-S``), every backend of the virtual's address map counted (0 if none)."""
    sets = list(sets)
    named = {m["name"].removeprefix("addr-"): _named_ids(m) for m in sets if m["name"].startswith("addr-")}
    out: dict[str, int] = {}
    for m in sets:
        prefix, _, virtual = m["name"].partition("-")
        if "map" in m or prefix not in ("pin", "per") or virtual not in named:
            continue
        names = {i: f"{prefix}-{virtual}-{part}" for i, part in named[virtual].items()}
        out.update(dict.fromkeys(names.values(), 0))
        for elem in m.get("elem", ()):
            if element_id(elem) in names:
                out[names[element_id(elem)]] += 1
    return out
