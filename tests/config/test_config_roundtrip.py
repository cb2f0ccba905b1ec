"""parse(write(parse(f))) == parse(f): on the example files and on random valid models."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrhfos.config import digest, load, loads, write
from pyrhfos.config.keys import (
    KEYS,
    Bool,
    Choice,
    DebugLevel,
    DevAddr,
    Int,
    IPv4,
    Netmask,
    Seconds,
    Str,
    Word,
)
from pyrhfos.config.model import Config, DeviceAddress, Failover, Server, ServiceKind, Virtual

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "tests" / "data").glob("*.cf")) + [ROOT / "etc" / "lvs.cf.example"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_files_round_trip(path):
    cfg, _ = load(path)
    text = write(cfg)
    again, _ = loads(text, "rewritten.cf")
    assert again == cfg
    assert write(again) == text  # the canonical text is a fixed point
    assert digest(again) == digest(cfg)


def test_example_files_cover_the_language():
    cfgs = [load(p)[0] for p in FILES]
    assert any(c.service is ServiceKind.FOS for c in cfgs)
    assert {c.network.value for c in cfgs if c.virtuals} >= {"nat", "direct"}
    assert any(s.port is None for c in cfgs for v in c.virtuals for s in v.servers)
    assert any(not c.backup_active and c.backup == IPv4Address(0) for c in cfgs)


def test_canonical_text_style():
    cfg, _ = load(ROOT / "tests" / "data" / "messy_fos.cf")
    text = write(cfg)
    assert text.startswith("serial_no = 7\nprimary = 192.168.1.10\nservice = fos\nbackup_active = 1\n")
    assert "failover mail {\n    address = 192.168.2.25 eth1:0\n" in text
    assert '    send = ""\n' in text and "keepalive = 0.5\n" in text and "timeout = 3.5\n" in text
    assert "    timeout = 10\n" in text  # whole seconds without ".0", as Piranha wrote them
    assert "heartbeat_key" not in text  # unset optional keys are omitted
    lvs = write(load(ROOT / "tests" / "data" / "lvs_nat.cf")[0])
    assert "\n    server node1 {\n        address = 192.168.122.224\n        active = 1\n" in lvs


def test_writer_follows_the_table_order():
    cfg, _ = load(ROOT / "tests" / "data" / "fos.cf")
    written = [line.split(" = ")[0] for line in write(cfg).splitlines() if " = " in line and line[0] != " "]
    order = [k.name for k in KEYS if k.section == "global"]
    assert written == sorted(written, key=order.index)


@pytest.mark.parametrize(
    "value,text",
    [
        (6.0, "6"),
        (0.1, "0.1"),
        (2.5, "2.5"),
        (1e-05, "0.00001"),
        (1234567.125, "1234567.125"),
        (0.05, "0.05"),
    ],
)
def test_seconds_written_shortest(value, text):
    assert Seconds().write(value) == text


def test_strings_re_escaped():
    cfg, _ = loads(
        "primary = 192.168.1.10\nservice = fos\nfailover a {\n"
        "    address = 192.168.2.1 eth0:1\n    port = 1\n"
        '    send = "q\\"\\\\\\r\\n\\t\\x01\\x7f\\xe9\\\'"\n    start_cmd = "x"\n    stop_cmd = "y"\n}\n'
    )
    assert cfg.failovers[0].send == "q\"\\\r\n\t\x01\x7f\xe9'"
    assert '    send = "q\\"\\\\\\r\\n\\t\\x01\\x7f\xe9\'"\n' in write(cfg)


# ---------------------------------------------------------------- random valid models

ips = st.integers(1, 2**32 - 2).map(IPv4Address)
devices = st.from_regex(r"(eth|bond|ens|em)[0-9]{1,2}(\.[0-9]{1,3})?(:[0-9]{1,3})?", fullmatch=True)
names = st.from_regex(r"[A-Za-z0-9_.\[\]-]{1,16}", fullmatch=True)
regexes = st.sampled_from(["^220 ", "HTTP/1\\.[01] 200", ".*", "OK|READY", "(?i)welcome"])


def values(vtype) -> st.SearchStrategy:
    """Any value the key's type can hold: one strategy per type, driven by the key table."""
    if isinstance(vtype, Bool):
        return st.booleans()
    if isinstance(vtype, Int):
        return st.integers(vtype.lo, vtype.hi if vtype.hi is not None else 2**31)
    if isinstance(vtype, Seconds):
        return st.floats(max(vtype.minimum, 0.001), vtype.MAXIMUM, allow_nan=False, allow_infinity=False)
    if isinstance(vtype, Netmask):
        return st.integers(0, 32).map(lambda n: IPv4Network(f"0.0.0.0/{n}").netmask)
    if isinstance(vtype, IPv4):
        return ips
    if isinstance(vtype, DevAddr):
        return st.builds(DeviceAddress, ips, devices)
    if isinstance(vtype, DebugLevel):
        return st.sampled_from(vtype.words) | st.integers(0, 9).map(str)
    if isinstance(vtype, Choice):
        return st.sampled_from(vtype.words).map(vtype.enum or str)
    if isinstance(vtype, Word):
        return devices
    if isinstance(vtype, Str):
        alphabet = st.characters(max_codepoint=0xFF) if vtype.latin1 else st.characters()
        return st.text(alphabet, max_size=min(vtype.max_len or 60, 60))
    raise AssertionError(vtype)


def fields(section: str, cls) -> st.SearchStrategy[dict]:
    """Every key of a section: optional ones may be unset (None) as in a real file."""
    out = {}
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for key in KEYS:
        if key.section == section:
            strategy = values(key.vtype)
            out[key.field] = st.none() | strategy if defaults[key.field] is None else strategy
    return st.fixed_dictionaries(out)


def probe_rules(kw: dict) -> dict:
    if kw["use_regex"]:
        kw["expect"] = kw["expect_regex"]
    del kw["expect_regex"]
    return kw


@st.composite
def failovers(draw, name: str, vip: IPv4Address) -> Failover:
    kw = draw(fields("failover", Failover))
    kw["expect_regex"] = draw(regexes)
    kw = probe_rules(kw)
    kw["address"] = DeviceAddress(vip, draw(devices))
    kw["port"] = kw["port"] or 80
    kw["start_cmd"] = kw["start_cmd"] if kw["start_cmd"] is not None else "start"
    kw["stop_cmd"] = kw["stop_cmd"] if kw["stop_cmd"] is not None else "stop"
    if kw["send"] is not None:
        kw["send_program"] = None
    return Failover(name=name, **kw)


@st.composite
def servers(draw, name: str) -> Server:
    kw = draw(fields("server", Server))
    kw["address"] = kw["address"] or IPv4Address("192.168.3.1")
    return Server(name=name, **kw)


@st.composite
def virtuals(draw, name: str, index: int) -> Virtual:
    kw = draw(fields("virtual", Virtual))
    kw["expect_regex"] = draw(regexes)
    kw = probe_rules(kw)
    kw["address"] = kw["address"] or DeviceAddress(IPv4Address("192.168.2.1"), "eth0:1")
    kw["fwmark"] = None if kw["fwmark"] is None else index + 1  # fwmarks unique
    kw["port"] = 1 + index  # (VIP, protocol, port) unique
    server_names = draw(st.lists(names, max_size=3, unique=True))
    kw["servers"] = tuple(draw(servers(n)) for n in server_names)
    return Virtual(name=name, **kw)


@st.composite
def configs(draw) -> Config:
    kw = draw(fields("global", Config))
    kw["primary"] = draw(ips)
    others = ips.filter(lambda ip: ip != kw["primary"])
    if kw["backup_active"]:
        kw["backup"] = draw(others)
    elif kw["backup"] == kw["primary"]:
        kw["backup"] = IPv4Address(0)
    kw["keepalive"] = min(kw["keepalive"], Seconds.MAXIMUM / 9.5)
    kw["deadtime"] = kw["keepalive"] * draw(st.sampled_from([1.5, 2, 3, 9.5]))
    block_names = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    if kw["service"] is ServiceKind.FOS:
        vips = draw(st.lists(ips, min_size=len(block_names), max_size=len(block_names), unique=True))
        blocks = [draw(failovers(n, ip)) for n, ip in zip(block_names, vips, strict=True)]
        blocks[0] = dataclasses.replace(blocks[0], active=True)
        kw["failovers"] = tuple(blocks)
    else:
        kw["virtuals"] = tuple(draw(virtuals(n, i)) for i, n in enumerate(block_names))
    return Config(**kw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_random_models_round_trip(cfg):
    text = write(cfg)
    again, _ = loads(text, "random.cf")
    assert again == cfg
    assert write(again) == text
