"""Our nftables table(s) in this network namespace, through libnftables (Debian python3-nftables).
Owns replacing them in one transaction (keeping dynamic set elements), removing and reading them.

The commands come from pyrhfos.core.ruleset.build as libnftables JSON and go to its JSON API only
(``json_cmd``, one call per transaction); nothing here builds a rule or writes nft text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..core.ruleset import FAMILIES, TABLE, backend_counts, dynamic_sets, element_id, live_ids

Json = dict[str, Any]


class NftError(RuntimeError):
    """libnftables refused a command; the message is libnftables' own."""


def _library() -> Any:
    import nftables  # type: ignore[import-untyped, import-not-found, unused-ignore]  # Debian's, no stubs

    return nftables.Nftables()


def available() -> str | None:
    """None when this process can load and list nftables rulesets here, else why not."""
    try:
        nft = _library()
    except ImportError as exc:
        return f"python3-nftables is not importable ({exc}): run tools/host-deps.sh and make venv-nftables"
    except OSError as exc:  # ctypes could not load libnftables.so.1
        return f"libnftables cannot be loaded: {exc}"
    rc, _, err = nft.json_cmd({"nftables": [{"list": {"tables": {}}}]})
    if rc != 0:
        return f"nftables cannot be listed here: {str(err).strip() or rc}"
    return None


class NftEngine:
    """Our table (``pyrhfos``, family ip and/or netdev) in the namespace this process runs in."""

    def __init__(self, nft: Any | None = None) -> None:
        self._nft = nft if nft is not None else _library()

    def _run(self, commands: Sequence[Json]) -> Any:
        rc, out, err = self._nft.json_cmd({"nftables": list(commands)})
        if rc != 0:
            raise NftError(str(err).strip() or f"libnftables failed ({rc})")
        return out

    def _families(self) -> list[str]:
        """The families in which our table exists now."""
        out = self._run([{"list": {"tables": {}}}])
        found = {o["table"]["family"] for o in _objects(out, "table") if o["table"]["name"] == TABLE}
        return [f for f in FAMILIES if f in found]

    def _listed(self, kinds: tuple[str, ...] = ("set", "map")) -> list[Json]:
        """Our tables' sets and/or maps as listed, elements included."""
        # `list sets` and `list maps` (elements included; one answer each, 10-20 ms for 100 x 10)
        # cost a quarter of listing the rules as well.
        found = [o[k] for k in kinds for o in _objects(self._run([{"list": {f"{k}s": {}}}]), k)]
        return [b for b in found if b.get("table") == TABLE and b.get("family") in FAMILIES]

    def _sets(self, listed: list[Json]) -> dict[tuple[str, str], Json]:
        """(family, name) -> set or map as listed, for those with timeouts (the dynamic ones)."""
        return {(b["family"], b["name"]): b for b in listed if "timeout" in b.get("flags", ())}

    def present(self) -> bool:
        """Whether one of our tables exists."""
        return bool(self._families())

    def remove(self) -> bool:
        """Delete our tables; True if one was there."""
        families = self._families()
        if families:
            self._run([{"delete": {"table": {"family": f, "name": TABLE}}} for f in families])
        return bool(families)

    def set_sizes(self) -> dict[str, int]:
        """Elements per backend: NAT's persistence sets by name; in direct routing, the virtual's pin
        and persistence sets counted per backend id, as ``pin_set``/``persist_set`` name them."""
        listed = self._listed()
        counted = backend_counts(listed)
        virtual_sets = {n.rsplit("-", 1)[0] for n in counted}  # pin-V-S -> pin-V
        sizes = {
            name: len(body.get("elem", ()))
            for (_, name), body in self._sets(listed).items()
            if "map" not in body and name not in virtual_sets
        }
        return sizes | counted

    def dynamic_elements(self) -> dict[str, list[Any]]:
        """Set name -> elements as listed, for each dynamic set of our tables (net/tablesync.py)."""
        return {name: list(b.get("elem", ())) for (_, name), b in self._sets(self._listed(("set",))).items()}

    def replace(self, commands: Sequence[Json], seed: Mapping[str, Sequence[Any]] | None = None) -> int:
        """Apply ``commands`` (ruleset.build's whole-table swap) in one transaction, re-adding the
        elements of dynamic sets that exist before and after with their remaining time (at most the
        new set's timeout). ``seed``: more elements by set name, as listed (the partner's, on takeover:
        net/tablesync.py), treated like carried ones. Returns how many elements were carried over."""
        dynamic = dynamic_sets(commands)
        # only the kinds the new table has dynamic ones of: nothing else could be carried over
        kinds = tuple(
            k for k in ("set", "map") if any(("map" in b) == (k == "map") for b in dynamic.values())
        )
        old = self._sets(self._listed(kinds)) if kinds else {}
        live = live_ids(commands)
        carried: list[Json] = []
        count = 0
        for key, new in dynamic.items():
            listed = [*old.get(key, {}).get("elem", ()), *(seed or {}).get(key[1], ())]
            if key in live:  # direct routing: only the elements ending in the id of a backend still there
                listed = [x for x in listed if element_id(x) in live[key]]
            elems = [e for e in (_carry(x, new.get("timeout")) for x in listed) if e]
            if elems:
                family, name = key
                carried.append(
                    {"add": {"element": {"family": family, "table": TABLE, "name": name, "elem": elems}}}
                )
                count += len(elems)
        self._run([*commands, *carried])
        return count


def _objects(out: Any, kind: str) -> list[Json]:
    """The listed objects of one kind in a libnftables JSON answer."""
    if not isinstance(out, dict):
        return []
    return [o for o in out.get("nftables", ()) if kind in o]


def _carry(elem: Any, limit: int | None) -> Any:
    """A listed element as one to add again with its remaining time; None if it has (about) expired.
    A map's element is ``[key, value]``: the key carries the time."""
    if isinstance(elem, list):
        key = _carry(elem[0], limit)
        return None if key is None else [key, elem[1]]
    if not (isinstance(elem, dict) and "elem" in elem):
        return {"elem": {"val": elem}}  # listed without expiry: the new set's timeout applies
    body = elem["elem"]
    left = body.get("expires", body.get("timeout"))
    if left is None:
        return {"elem": {"val": body["val"]}}
    if left <= 0:
        return None
    return {"elem": {"val": body["val"], "timeout": min(left, limit) if limit else left}}
