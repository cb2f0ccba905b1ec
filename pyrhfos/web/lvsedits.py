"""Form values -> a new Config for the LVS pages: virtual servers, their real servers and the LVS keys
of the global settings; the same typed reading as edits.py (whose Form and checks every field passes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from ipaddress import IPv4Address
from typing import Any

from ..config.keys import BY_SECTION, BadValue, escape
from ..config.model import Config, DeviceAddress, Server, Virtual
from .edits import NAME_RE, Form, _read

VIRTUAL_FIELDS = (
    "name",
    "active",
    "vip",
    "device",
    "vip_nmask",
    "port",
    "fwmark",
    "protocol",
    "scheduler",
    "persistent",
    "pmask",
    "send",
    "expect",
    "use_regex",
    "send_program",
    "timeout",
    "reentry",
    "quiesce_server",
    "sorry_server",
)
SERVER_FIELDS = ("name", "active", "address", "port", "weight")
# nat_router is one lvs.cf key ("IP DEV:N") shown as two fields, as Piranha's GUI did.
LVS_GLOBAL_FIELDS = (
    "nat_router",
    "nat_router_device",
    "nat_nmask",
    "syncdaemon",
    "syncd_iface",
    "syncd_id",
    "tcp_timeout",
    "tcpfin_timeout",
    "udp_timeout",
)
SCHEDULERS: tuple[str, ...] = BY_SECTION["virtual"]["scheduler"].vtype.words  # type: ignore[attr-defined]
PROTOCOLS = ("tcp", "udp")

NEW_VIRTUAL = {
    "active": "1",
    "device": "eth0:1",
    "port": "80",
    "protocol": "tcp",
    "scheduler": "wlc",
    "pmask": "255.255.255.255",
    "send": "GET / HTTP/1.0\\r\\n\\r\\n",
    "expect": "HTTP",
    "timeout": "6",
    "reentry": "15",
}
NEW_SERVER = {"active": "1", "weight": "1"}


def _name(f: Form, what: str, taken: set[str]) -> str:
    name = f.raw("name")
    if "name" in f.errors:
        return name
    if not NAME_RE.fullmatch(name):
        f.errors["name"] = "letters, digits, '_', '.', '-' (at most 64, not starting with '.' or '-')"
    elif name in taken:
        f.errors["name"] = f"a {what} named '{name}' exists already"
    return name


def _dev_address(f: Form, ip_field: str, dev_field: str, section: str, key: str, required: bool) -> Any:
    """``IP DEV`` from two fields, read by the reader's own DevAddr; None when both are empty."""
    ip, device = f.raw(ip_field), f.raw(dev_field)
    if ip_field in f.errors or dev_field in f.errors:
        return None
    if not ip and not device and not required:
        return None
    if not ip:
        f.errors[ip_field] = "required"
    elif not device:
        f.errors[dev_field] = "required, e.g. eth0:1"
    else:
        try:
            return _read(section, key, f"{ip} {device}")
        except BadValue as e:
            f.errors[dev_field if e.index else ip_field] = e.message
    return None


def _probe_text(f: Form, values: dict[str, Any]) -> None:
    for key in ("send", "expect"):
        max_len = BY_SECTION["virtual"][key].vtype.max_len  # type: ignore[attr-defined]
        if values[key] is not None and len(values[key]) > max_len:
            f.errors[key] = f"at most {max_len} characters"


def virtual_values(data: Mapping[str, str], taken: set[str]) -> dict[str, Any]:
    """The typed fields of the virtual server form (FieldErrors if any is wrong)."""
    f = Form(data)
    values: dict[str, Any] = {
        "name": _name(f, "virtual server", taken),
        "active": f.flag("active"),
        "address": _dev_address(f, "vip", "device", "virtual", "address", required=True),
        "vip_nmask": f.typed("vip_nmask", "virtual", optional=True),
        "port": f.typed("port", "virtual"),
        "fwmark": f.typed("fwmark", "virtual", optional=True),
        "protocol": f.choice("protocol", PROTOCOLS),
        "scheduler": f.choice("scheduler", SCHEDULERS),
        "persistent": f.typed("persistent", "virtual", optional=True),
        "pmask": f.typed("pmask", "virtual", optional=True) or IPv4Address("255.255.255.255"),
        "send": f.string("send", escapes=True),
        "expect": f.string("expect", escapes=True),
        "use_regex": f.flag("use_regex"),
        "send_program": f.string("send_program"),
        "timeout": f.typed("timeout", "virtual"),
        "reentry": f.typed("reentry", "virtual"),
        "quiesce_server": f.flag("quiesce_server"),
        "sorry_server": f.typed("sorry_server", "virtual", optional=True),
    }
    if values["fwmark"] == 0:
        f.errors["fwmark"] = "a mark above 0, or empty for none"
    _probe_text(f, values)
    f.done()
    return values


def edit_virtual(cfg: Config, old_name: str | None, data: Mapping[str, str]) -> Config:
    """Add (old_name None) or change a virtual block; its servers and keys the form lacks are kept."""
    taken = {v.name for v in cfg.virtuals if v.name != old_name}
    values = virtual_values(data, taken)
    if old_name is None:
        # load_monitor: weights from rsh'd uptime are not run here (pulse --check warns); none is what runs.
        new = Virtual(**values, load_monitor="none")
        return dataclasses.replace(cfg, virtuals=(*cfg.virtuals, new))
    old = find_virtual(cfg, old_name)
    return _replace_virtual(cfg, old, dataclasses.replace(old, **values))


def find_virtual(cfg: Config, name: str) -> Virtual:
    for v in cfg.virtuals:
        if v.name == name:
            return v
    raise KeyError(name)


def find_server(v: Virtual, name: str) -> Server:
    for s in v.servers:
        if s.name == name:
            return s
    raise KeyError(name)


def _replace_virtual(cfg: Config, old: Virtual, new: Virtual | None) -> Config:
    virtuals = tuple(new if v is old else v for v in cfg.virtuals)
    return dataclasses.replace(cfg, virtuals=tuple(v for v in virtuals if v is not None))


def delete_virtual(cfg: Config, name: str) -> Config:
    return _replace_virtual(cfg, find_virtual(cfg, name), None)


def set_virtual_active(cfg: Config, name: str, active: bool) -> Config:
    old = find_virtual(cfg, name)
    return _replace_virtual(cfg, old, dataclasses.replace(old, active=active))


def server_values(data: Mapping[str, str], taken: set[str]) -> dict[str, Any]:
    f = Form(data)
    values = {
        "name": _name(f, "real server", taken),
        "active": f.flag("active"),
        "address": f.typed("address", "server"),
        "port": f.typed("port", "server", optional=True),
        "weight": f.typed("weight", "server"),
    }
    f.done()
    return values


def _replace_server(cfg: Config, vname: str, old: Server | None, new: Server | None) -> Config:
    v = find_virtual(cfg, vname)
    servers = tuple(new if s is old else s for s in v.servers) if old is not None else (*v.servers, new)
    kept = tuple(s for s in servers if s is not None)
    return _replace_virtual(cfg, v, dataclasses.replace(v, servers=kept))


def edit_server(cfg: Config, vname: str, old_name: str | None, data: Mapping[str, str]) -> Config:
    """Add (old_name None) or change a real server of virtual ``vname``; its nmask is kept."""
    v = find_virtual(cfg, vname)
    values = server_values(data, {s.name for s in v.servers if s.name != old_name})
    if old_name is None:
        return _replace_server(cfg, vname, None, Server(**values))
    old = find_server(v, old_name)
    return _replace_server(cfg, vname, old, dataclasses.replace(old, **values))


def delete_server(cfg: Config, vname: str, name: str) -> Config:
    return _replace_server(cfg, vname, find_server(find_virtual(cfg, vname), name), None)


def set_server_active(cfg: Config, vname: str, name: str, active: bool) -> Config:
    old = find_server(find_virtual(cfg, vname), name)
    return _replace_server(cfg, vname, old, dataclasses.replace(old, active=active))


def edit_lvs_global(cfg: Config, data: Mapping[str, str]) -> Config:
    """The LVS keys of GLOBAL SETTINGS, on a Config whose primary/network/service are already set."""
    f = Form(data)
    values = {
        "nat_router": _dev_address(f, "nat_router", "nat_router_device", "global", "nat_router", False),
        "nat_nmask": f.typed("nat_nmask", "global", optional=True),
        "syncdaemon": f.flag("syncdaemon"),
        "syncd_iface": f.typed("syncd_iface", "global", optional=True),
        "syncd_id": f.typed("syncd_id", "global", optional=True),
        "tcp_timeout": f.typed("tcp_timeout", "global", optional=True),
        "tcpfin_timeout": f.typed("tcpfin_timeout", "global", optional=True),
        "udp_timeout": f.typed("udp_timeout", "global", optional=True),
    }
    f.done()
    return dataclasses.replace(cfg, **values)


# --------------------------------------------------------------- what the forms show


def _shown(section: str, key: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else ""
    if key in ("send", "expect"):
        return escape(value)  # as lvs.cf writes it: \r\n, not a line break
    if isinstance(value, str | IPv4Address):
        return str(value)
    return str(BY_SECTION[section][key].vtype.write(value))


def virtual_form(v: Virtual) -> dict[str, str]:
    out = {k: _shown("virtual", k, getattr(v, k)) for k in VIRTUAL_FIELDS if k not in ("vip", "device")}
    out["vip"] = str(v.address.ip) if v.address else ""
    out["device"] = v.address.device if v.address else ""
    return out


def server_form(s: Server) -> dict[str, str]:
    return {k: _shown("server", k, getattr(s, k)) for k in SERVER_FIELDS}


def lvs_global_form(cfg: Config) -> dict[str, str]:
    keys = [k for k in LVS_GLOBAL_FIELDS if not k.startswith("nat_router")]
    out = {k: _shown("global", k, getattr(cfg, k)) for k in keys}
    router: DeviceAddress | None = cfg.nat_router
    out["nat_router"] = str(router.ip) if router else ""
    out["nat_router_device"] = router.device if router else ""
    return out


# --------------------------------------------------------------- the running table, for the pages


def virtual_state(name: str, status: Mapping[str, Any] | None) -> str:
    """The list page's status column: what the running pulse says of virtual ``name``."""
    if status is None:
        return "not running"
    for v in status.get("virtuals") or ():
        if isinstance(v, dict) and v.get("name") == name:
            if not v.get("active"):
                return "inactive"
            servers = [s for s in v.get("servers") or () if isinstance(s, dict)]
            up = sum(1 for s in servers if s.get("health") == "up")
            state = f"up, {up} of {len(servers)} servers up" if up else "down, no server up"
            return state + (", sorry server in use" if v.get("sorry_in_use") else "")
    return "not loaded (reload pulse)"


def server_state(vname: str, sname: str, status: Mapping[str, Any] | None) -> str:
    if status is None:
        return "not running"
    for v in status.get("virtuals") or ():
        if isinstance(v, dict) and v.get("name") == vname:
            for s in v.get("servers") or ():
                if isinstance(s, dict) and s.get("name") == sname:
                    return str(s.get("health") or "unknown")
    return "not loaded (reload pulse)"
