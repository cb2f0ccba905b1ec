"""nft's syntax for the ruleset's libnftables JSON commands: ``describe``, pulse -t's text, one block
per table. Display only: the table itself goes to libnftables as JSON (net/nft.py), never as text.

Pure: reads the commands core/ruleset.py builds; refuses any string that is not a plain token.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

Json = dict[str, Any]


_TOKEN = re.compile(r"[A-Za-z0-9_.:/@-]{1,64}")
_OPS = frozenset({"==", "!=", "<", ">", "<=", ">=", "add", "update", "delete"})


@functools.lru_cache(maxsize=8192)
def _t(value: Any) -> str:
    """A value as it stands in the text, refused unless it is a plain token (a name, an address, a
    device, a type, a number): the text reads as nft's own. Every string written passes here (cached:
    a table repeats few distinct ones)."""
    text = str(value)
    if not _TOKEN.fullmatch(text):
        raise ValueError(f"not a plain token for nft: {text!r}")
    return text


def _types(type_: str | Sequence[str]) -> str:
    return _t(type_) if isinstance(type_, str) else " . ".join(_t(x) for x in type_)


def _elements(elems: Sequence[Any]) -> str:
    return ", ".join(f"{_expr(e[0])} : {_expr(e[1])}" if isinstance(e, list) else _expr(e) for e in elems)


def _policy(body: Json) -> str:
    return "policy = { " + ", ".join(f"{_t(k)} : {_t(v)}" for k, v in body["policy"].items()) + " }"


# -- expressions ------------------------------------------------------------------------------------------
def _expr(e: Any) -> str:
    if not isinstance(e, dict):
        return _t(e)
    (kind, val), *_ = e.items()
    if kind == "match":
        if val["op"] not in _OPS:
            raise ValueError(f"not an nft operator: {val['op']!r}")
        op = "" if val["op"] == "==" else f"{val['op']} "
        return f"{_expr(val['left'])} {op}{_expr(val['right'])}"
    if kind == "payload":
        return f"{_t(val['protocol'])} {_t(val['field'])}"
    if kind == "meta":
        return f"meta {_t(val['key'])}"
    if kind in ("&", "|"):
        return f" {kind} ".join(_expr(x) for x in val)
    if kind == "concat":
        return " . ".join(_expr(x) for x in val)
    if kind == "range":
        return f"{_t(val[0])}-{_t(val[1])}"
    if kind in ("goto", "jump"):
        return f"{kind} {_t(val['target'])}"
    if kind == "numgen":
        offset = f" offset {_t(val['offset'])}" if val.get("offset") else ""
        return f"numgen {_t(val['mode'])} mod {_t(val['mod'])}{offset}"
    if kind == "jhash":
        return f"jhash {_expr(val['expr'])} mod {_t(val['mod'])} seed {int(val.get('seed', 0)):#x}"
    if kind == "vmap":
        if isinstance(val["data"], str):  # a named verdict map
            return f"{_expr(val['key'])} vmap {_t(val['data'])}"
        entries = ", ".join(f"{_expr(k)} : {_expr(d)}" for k, d in val["data"]["set"])
        return f"{_expr(val['key'])} vmap {{ {entries} }}"
    if kind == "mangle":
        return f"{_expr(val['key'])} set {_expr(val['value'])}"
    if kind == "map":  # a lookup, in a named map or an anonymous one
        data = val["data"]
        if isinstance(data, dict):
            return f"{_expr(val['key'])} map {{ {_elements(data['set'])} }}"
        return f"{_expr(val['key'])} map {_t(data)}"
    if kind == "dnat":
        port = f":{_t(val['port'])}" if "port" in val else ""
        return f"dnat to {_t(val['addr'])}{port}"
    if kind == "fwd":
        return f'fwd {_t(val.get("family", "ip"))} to {_expr(val["addr"])} device "{_t(val["dev"])}"'
    if kind == "set":
        if val["op"] not in _OPS:
            raise ValueError(f"not an nft set statement: {val['op']!r}")
        return f"{val['op']} {_t(val['set'])} {{ {_expr(val['elem'])} }}"
    if kind == "ct timeout":
        return f'ct timeout set "{_t(val)}"'
    if kind == "elem":
        timeout = f" timeout {_t(val['timeout'])}s" if "timeout" in val else ""
        comment = f' comment "{_t(val["comment"])}"' if "comment" in val else ""
        return f"{_expr(val['val'])}{timeout}{comment}"
    raise ValueError(f"no nft syntax for expression {kind!r}")


def _chain_head(c: Json) -> list[str]:
    if "hook" not in c:
        return []
    dev = f' device "{_t(c["dev"])}"' if "dev" in c else ""
    policy = _t(c.get("policy", "accept"))
    return [f"type {_t(c['type'])} hook {_t(c['hook'])}{dev} priority {_t(c['prio'])}; policy {policy};"]


def describe(commands: Sequence[dict[str, Any]]) -> str:
    """The tables the commands add, as nft-like text (deletes are the swap idiom and not shown)."""
    tables: dict[tuple[str, str], dict[str, dict[str, list[str]]]] = {}

    def fresh() -> dict[str, dict[str, list[str]]]:
        return {"ct timeout": {}, "set": {}, "map": {}, "chain": {}}

    for cmd in commands:
        if "delete" in cmd and "table" in cmd["delete"]:
            gone = cmd["delete"]["table"]
            tables.pop((gone["family"], gone["name"]), None)
        if "add" not in cmd:
            continue
        (kind, body), *_ = cmd["add"].items()
        if kind == "table":
            tables.setdefault((body["family"], body["name"]), fresh())
            continue
        parts = tables.setdefault((body["family"], body["table"]), fresh())
        if kind == "ct timeout":
            lines = [f"protocol {_t(body['protocol'])}", f"l3proto {_t(body['l3proto'])}", _policy(body)]
            parts["ct timeout"][body["name"]] = lines
        elif kind in ("set", "map"):
            lines = [f"type {_types(body['type'])}" + (f" : {_t(body['map'])}" if kind == "map" else "")]
            if body.get("flags"):
                lines.append(f"flags {','.join(body['flags'])}")
            if "timeout" in body:
                lines.append(f"timeout {body['timeout']}s")
            if body.get("elem"):
                lines.append(f"elements = {{ {_elements(body['elem'])} }}")
            parts[kind][body["name"]] = lines
        elif kind == "element":
            holder = "map" if body["name"] in parts["map"] else "set"
            parts[holder].setdefault(body["name"], []).append(f"elements = {{ {_elements(body['elem'])} }}")
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
