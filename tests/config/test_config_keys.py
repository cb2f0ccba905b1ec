"""Every key of every section: a good value reads to the right typed value, a bad one is
reported at the line and column of the value."""

from __future__ import annotations

from ipaddress import IPv4Address as A

import pytest

from pyrhfos.config import ConfigError, loads
from pyrhfos.config.keys import KEYS
from pyrhfos.config.model import Config, DeviceAddress, NetworkMode, RshCommand, ServiceKind

# Minimal valid files. "@" marks where the line under test goes; a key already in the
# base file is dropped from it first, so each key can be tested in its own section.
FOS_BASE = """\
primary = 192.168.1.10
service = fos
@global
failover web {
    address = 192.168.2.11 eth0:1
    port = 80
    start_cmd = "start"
    stop_cmd = "stop"
@failover
}
"""
LVS_BASE = """\
primary = 192.168.1.10
virtual www {
    address = 192.168.2.11 eth0:1
@virtual
    server s1 {
        address = 192.168.3.1
@server
    }
}
"""
INDENT = {"global": "", "failover": "    ", "virtual": "    ", "server": "        "}


def make(section: str, key: str, value: str) -> tuple[str, int, int]:
    """The file with ``key = value`` in ``section``; and the value's line and column."""
    base = FOS_BASE if section in ("global", "failover") else LVS_BASE
    lines, at = [], 0
    for raw in base.splitlines():
        if raw.startswith("@"):
            if raw[1:] == section:
                lines.append(f"{INDENT[section]}{key} = {value}")
                at = len(lines)
            continue
        if raw.strip().startswith(f"{key} =") and raw.startswith(INDENT[section] + key):
            continue  # the base's own value for this key
        lines.append(raw)
    return "\n".join(lines) + "\n", at, len(INDENT[section]) + len(key) + 4


def pick(cfg, section: str):
    return {
        "global": cfg,
        "failover": cfg.failovers[0] if cfg.failovers else None,
        "virtual": cfg.virtuals[0] if cfg.virtuals else None,
        "server": cfg.virtuals[0].servers[0] if cfg.virtuals else None,
    }[section]


LONG = '"' + "x" * 256 + '"'
# section, key, good text, its typed value, bad text, part of the error message
CASES = [
    ("global", "serial_no", "42", 42, "4x2", "'4x2' is not an integer"),
    ("global", "primary", "192.168.1.20", A("192.168.1.20"), "192.168.1.256", "not an IPv4 address"),
    ("global", "primary_private", "10.0.0.1", A("10.0.0.1"), "10.0.0", "not an IPv4 address"),
    ("global", "service", "fos", ServiceKind.FOS, "fox", "did you mean 'fos'?"),
    ("global", "backup_active", "0", False, "2", "'2' is not 0 or 1"),
    ("global", "backup", "192.168.1.11", A("192.168.1.11"), "backup.example", "not an IPv4 address"),
    ("global", "backup_private", "10.0.0.2", A("10.0.0.2"), "10.0.0.2.1", "not an IPv4 address"),
    ("global", "heartbeat", "0", False, "yes", "'yes' is not 0 or 1"),
    ("global", "heartbeat_port", "1539", 1539, "0", "0 is out of range (1-65535)"),
    ("global", "keepalive", "2.5", 2.5, "0.01", "too small (minimum 0.05)"),
    ("global", "deadtime", "20", 20.0, "-3", "'-3' is not a number of seconds"),
    (
        "global",
        "network",
        "direct",
        NetworkMode.DIRECT,
        "bridge",
        "'bridge' is not one of: nat, direct, tunnel",
    ),
    (
        "global",
        "nat_router",
        "192.168.122.254 eth2",
        DeviceAddress(A("192.168.122.254"), "eth2"),
        "192.168.122.254",
        "needs its device too",
    ),
    ("global", "nat_nmask", "255.255.255.0", A("255.255.255.0"), "255.0.255.0", "not a valid netmask"),
    ("global", "debug_level", "LOW", "LOW", "LOUD", "'LOUD' is not one of: NONE, LOW, HIGH"),
    ("global", "monitor_links", "1", True, "true", "not 0 or 1"),
    ("global", "syncdaemon", "1", True, "on", "not 0 or 1"),
    ("global", "syncd_iface", "eth2", "eth2", '"eth 2"', "not an interface name"),
    ("global", "syncd_id", "3", 3, "-1", "-1 is out of range (>= 0)"),
    ("global", "rsh_command", "ssh", RshCommand.SSH, "scp", "not one of: rsh, ssh"),
    ("global", "tcp_timeout", "900", 900, "1.5", "'1.5' is not an integer"),
    ("global", "tcpfin_timeout", "120", 120, "x", "not an integer"),
    ("global", "udp_timeout", "300", 300, "-5", "out of range"),
    ("global", "reservation_conflict_action", "preempt", "preempt", "panic", "not one of: nothing, preempt"),
    ("global", "hard_shutdown", "1", True, "2", "not 0 or 1"),
    ("global", "primary_shared", "10.1.0.1", A("10.1.0.1"), "10.1.0.999", "not an IPv4 address"),
    ("global", "backup_shared", "10.1.0.2", A("10.1.0.2"), "::1", "not an IPv4 address"),
    (
        "global",
        "active_cmd",
        '"/usr/local/bin/up --now"',
        "/usr/local/bin/up --now",
        "/bin/up --now",
        "quotes",
    ),
    ("global", "inactive_cmd", "/usr/local/bin/down", "/usr/local/bin/down", '"\\x4"', "two hex digits"),
    ("global", "ipvsadm", '"/sbin/ipvsadm"', "/sbin/ipvsadm", "/sbin/ipvsadm -n", "put it in double quotes"),
    ("global", "sync", "0", False, "no", "not 0 or 1"),
    ("global", "heartbeat_key", '"/etc/sysconfig/ha/key"', "/etc/sysconfig/ha/key", "a b", "double quotes"),
    ("global", "metrics_port", "9539", 9539, "65536", "65536 is out of range (1-65535)"),
    ("global", "metrics_address", "0.0.0.0", A("0.0.0.0"), "localhost", "not an IPv4 address"),
    (
        "failover",
        "address",
        "192.168.2.20 eth1:3",
        DeviceAddress(A("192.168.2.20"), "eth1:3"),
        "192.168.2 eth0",
        "not an IPv4 address",
    ),
    ("failover", "vip_nmask", "255.255.255.0", A("255.255.255.0"), "255.255.255.1", "not a valid netmask"),
    ("failover", "active", "1", True, "x", "not 0 or 1"),
    ("failover", "port", "8080", 8080, "http", "'http' is not an integer"),
    ("failover", "timeout", "2.5", 2.5, "0", "too small"),
    ("failover", "heartbeat", "1", True, "2", "not 0 or 1"),
    ("failover", "send", '"HELO x\\r\\n"', "HELO x\r\n", LONG, "256 characters long; at most 255"),
    ("failover", "expect", '"220"', "220", LONG, "at most 255"),
    ("failover", "use_regex", "0", False, "2", "not 0 or 1"),
    ("failover", "send_program", '"/bin/check %h"', "/bin/check %h", "/bin/check %h", "double quotes"),
    ("failover", "expect_program", '"/bin/x"', "/bin/x", '"a\\x"', "two hex digits"),
    ("failover", "reentry", "30", 30.0, "0", "too small"),
    ("failover", "start_cmd", '"/etc/init.d/x start"', "/etc/init.d/x start", "x start", "double quotes"),
    ("failover", "stop_cmd", "'/etc/init.d/x stop'", "/etc/init.d/x stop", "x stop", "double quotes"),
    ("virtual", "active", "0", False, "-", "not 0 or 1"),
    ("virtual", "address", "10.1.1.1 eth0:9", DeviceAddress(A("10.1.1.1"), "eth0:9"), "10.1.1.1", "device"),
    ("virtual", "sorry_server", "10.1.1.9", A("10.1.1.9"), "10.1.1.", "not an IPv4 address"),
    ("virtual", "vip_nmask", "255.255.0.0", A("255.255.0.0"), "0.255.255.255", "not a valid netmask"),
    ("virtual", "fwmark", "5", 5, "mark5", "not an integer"),
    ("virtual", "port", "443", 443, "99999", "out of range"),
    ("virtual", "persistent", "300", 300, "5m", "not an integer"),
    ("virtual", "pmask", "255.255.255.0", A("255.255.255.0"), "255.255.255.2", "not a valid netmask"),
    ("virtual", "send", '"GET / HTTP/1.0\\r\\n\\r\\n"', "GET / HTTP/1.0\r\n\r\n", LONG, "at most 255"),
    ("virtual", "expect", '"HTTP"', "HTTP", LONG, "at most 255"),
    ("virtual", "use_regex", "0", False, "x", "not 0 or 1"),
    ("virtual", "send_program", '"/bin/testlink %h"', "/bin/testlink %h", "/bin/testlink %h", "quotes"),
    ("virtual", "expect_program", '"/bin/e"', "/bin/e", "a b", "quotes"),
    ("virtual", "load_monitor", "ruptime", "ruptime", "rupt", "did you mean 'rup"),
    ("virtual", "scheduler", "lblcr", "lblcr", "wlcx", "did you mean 'wlc'?"),
    ("virtual", "protocol", "udp", "udp", "sctp", "not one of: tcp, udp"),
    ("virtual", "timeout", "6", 6.0, "six", "not a number of seconds"),
    ("virtual", "reentry", "15", 15.0, "0.0", "too small"),
    ("virtual", "quiesce_server", "1", True, "3", "not 0 or 1"),
    ("virtual", "client_monitor", '"/usr/sbin/nanny"', "/usr/sbin/nanny", "a b", "quotes"),
    ("server", "address", "192.168.3.7", A("192.168.3.7"), "192.168.3.7 eth0", "unexpected 'eth0'"),
    ("server", "nmask", "255.255.255.255", A("255.255.255.255"), "255.255.254.255", "not a valid netmask"),
    ("server", "active", "0", False, "off", "not 0 or 1"),
    ("server", "port", "8080", 8080, "-80", "out of range"),
    ("server", "weight", "0", 0, "-1", "-1 is out of range (>= 0)"),
]
IDS = [f"{c[0]}.{c[1]}" for c in CASES]


def test_every_key_has_a_case():
    assert {(k.section, k.name) for k in KEYS} == {(c[0], c[1]) for c in CASES}


@pytest.mark.parametrize("section,key,good,expected,bad,message", CASES, ids=IDS)
def test_good_value(section, key, good, expected, bad, message):
    text, _, _ = make(section, key, good)
    cfg, _warnings = loads(text, "t.cf")
    obj = pick(cfg, section)
    assert getattr(obj, key) == expected
    assert type(getattr(obj, key)) is type(expected)


@pytest.mark.parametrize("section,key,good,expected,bad,message", CASES, ids=IDS)
def test_bad_value(section, key, good, expected, bad, message):
    text, line, col = make(section, key, bad)
    with pytest.raises(ConfigError) as exc:
        loads(text, "t.cf")
    hits = [d for d in exc.value.diagnostics if message in d.message]
    assert hits, str(exc.value)
    d = hits[0]
    extra = 0 if "unexpected" not in message else len(bad.split()[0]) + 1  # points at the extra word
    assert (d.path, d.line, d.col) == ("t.cf", line, col + extra)
    assert d.message.startswith(f"bad value for '{key}': ")
    assert len(exc.value.diagnostics) == 1, str(exc.value)


@pytest.mark.parametrize("section,key,good,expected,bad,message", CASES, ids=IDS)
def test_missing_value(section, key, good, expected, bad, message):
    text, line, _ = make(section, key, "")
    with pytest.raises(ConfigError) as exc:
        loads(text, "t.cf")
    d = exc.value.diagnostics[0]
    assert (d.line, d.col, d.message) == (
        line,
        len(INDENT[section]) + 1,
        f"bad value for '{key}': missing value",
    )


def test_defaults_come_from_the_model():
    cfg, _ = loads(make("global", "serial_no", "1")[0])
    assert cfg.keepalive == Config().keepalive == 6.0  # the model's default
    assert cfg.deadtime == 18.0 and cfg.heartbeat_port == 539 and cfg.heartbeat is True
    assert cfg.network is NetworkMode.NAT and cfg.rsh_command is RshCommand.RSH
    assert cfg.debug_level == "NONE" and cfg.backup_active is False
    f = cfg.failovers[0]
    assert (f.active, f.timeout, f.reentry, f.use_regex, f.send, f.vip_nmask) == (
        True,
        10.0,
        180.0,
        False,
        None,
        None,
    )
    cfg, _ = loads(LVS_BASE.replace("@virtual\n", "").replace("@server\n", "").replace("@global\n", ""))
    v = cfg.virtuals[0]
    assert (v.port, v.scheduler, v.load_monitor, v.protocol, v.timeout, v.reentry) == (
        80,
        "wlc",
        "uptime",
        "tcp",
        10,
        180,
    )
    assert v.pmask == A("255.255.255.255")
    s = v.servers[0]
    assert (s.weight, s.active, s.port) == (1, True, None)


@pytest.mark.parametrize(
    "raw,decoded",
    [
        ('"a\\r\\n\\t\\\\\\"b"', 'a\r\n\t\\"b'),
        ('"it\\\'s"', "it's"),
        ('"\\x41\\x7e\\xff"', "A~\xff"),
        ('"HTTP/1\\.[01]"', "HTTP/1\\.[01]"),  # unknown escapes stay as written (regexes)
        ('""', ""),
        ("'single'", "single"),
        ("'a\\'b'", "a'b"),
        ('"# not a comment"', "# not a comment"),
    ],
)
def test_string_escapes(raw, decoded):
    text, _, _ = make("failover", "send", raw)
    cfg, _ = loads(text)
    assert cfg.failovers[0].send == decoded


@pytest.mark.parametrize("level", ["NONE", "LOW", "HIGH", "0", "3"])
def test_debug_level_words_and_numbers(level):
    cfg, _ = loads(make("global", "debug_level", level)[0])
    assert cfg.debug_level == level


@pytest.mark.parametrize("value", ["192.168.2.11 eth0", "192.168.2.11 eth0:1", "192.168.2.11 bond0.100:12"])
def test_device_forms(value):
    cfg, _ = loads(make("failover", "address", value)[0])
    ip, dev = value.split()
    assert cfg.failovers[0].address == DeviceAddress(A(ip), dev)
    assert cfg.failovers[0].address.interface == dev.split(":")[0]


def test_bad_device_points_at_the_device():
    text, line, col = make("failover", "address", "192.168.2.11 eth0:!")
    with pytest.raises(ConfigError) as exc:
        loads(text)
    d = exc.value.diagnostics[0]
    assert (d.line, d.col) == (line, col + len("192.168.2.11 "))
    assert "not an interface name" in d.message


@pytest.mark.parametrize(
    "value,seconds", [("6", 6.0), ("0.5", 0.5), ("2.", 2.0), (".25", 0.25), ("1.05", 1.05)]
)
def test_decimal_seconds(value, seconds):
    cfg, _ = loads(make("failover", "timeout", value)[0])
    assert cfg.failovers[0].timeout == seconds


def test_quoted_numbers_are_taken_as_piranha_did():
    cfg, _ = loads(make("failover", "timeout", '"5"')[0])
    assert cfg.failovers[0].timeout == 5.0
