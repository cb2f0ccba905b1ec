"""The canonical lvs.cf text of a model: Piranha GUI order and style, strings re-escaped.

Driven by keys.KEYS, so reading and writing can never disagree on a key or its format;
``loads(write(cfg))`` gives back ``cfg``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .keys import KEYS
from .model import Config

_INDENT = "    "


def _keys(obj: Any, section: str, indent: str) -> list[str]:
    lines = []
    for key in KEYS:
        if key.section != section:
            continue
        value = getattr(obj, key.field)
        if value is not None:  # optional keys that are unset are omitted
            lines.append(f"{indent}{key.name} = {key.vtype.write(value)}")
    return lines


def write(cfg: Config) -> str:
    """The whole file: global settings, then failover blocks, then virtual blocks."""
    lines = _keys(cfg, "global", "")
    for f in cfg.failovers:
        lines.append(f"failover {f.name} {{")
        lines += _keys(f, "failover", _INDENT)
        lines.append("}")
    for v in cfg.virtuals:
        lines.append(f"virtual {v.name} {{")
        lines += _keys(v, "virtual", _INDENT)
        for s in v.servers:
            lines.append(f"{_INDENT}server {s.name} {{")
            lines += _keys(s, "server", _INDENT * 2)
            lines.append(f"{_INDENT}}}")
        lines.append("}")
    return "\n".join(lines) + "\n"


def digest(cfg: Config) -> bytes:
    """8-byte digest of the canonical text: equal configs, equal digests.

    Sent in every heartbeat so the nodes notice when their files differ.
    """
    return hashlib.sha256(write(cfg).encode("utf-8")).digest()[:8]
