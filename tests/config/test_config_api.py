"""The public API others code against: load/loads/write, Diagnostic, ConfigError, positions,
and the pulse --check summary."""

from __future__ import annotations

import os
from ipaddress import IPv4Address as A
from pathlib import Path

import pyparsing as pp
import pytest

from pyrhfos.config import ConfigError, Diagnostic, digest, load, loads, write
from pyrhfos.config.grammar import _Lines, parse
from pyrhfos.config.keys import KEYS
from pyrhfos.config.model import Position
from pyrhfos.config.summary import format_summary, role
from pyrhfos.net.host import local_ipv4_addresses

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "etc" / "lvs.cf.example"
DATA = ROOT / "tests" / "data"


def test_load_returns_config_and_warnings():
    cfg, warnings = load(EXAMPLE)
    assert warnings == []
    assert cfg.path == str(EXAMPLE)
    assert cfg.primary == A("192.168.1.10") and cfg.backup == A("192.168.1.11")
    assert cfg.heartbeat_port == 539 and (cfg.keepalive, cfg.deadtime) == (2.0, 10.0)
    [web] = cfg.failovers
    assert (web.name, str(web.address), web.port, web.timeout) == ("web1", "192.168.2.11 eth0:1", 80, 10.0)
    assert web.send == "GET / HTTP/1.0\r\n\r\n" and web.expect == "HTTP"
    assert web.start_cmd == "/etc/rc.d/init.d/httpd start" and web.stop_cmd == "/etc/rc.d/init.d/httpd stop"


def test_load_accepts_pathlike_and_str(tmp_path):
    path = tmp_path / "lvs.cf"
    path.write_text(EXAMPLE.read_text())
    assert load(path)[0] == load(str(path))[0]
    assert load(path)[0].path == str(path)


def test_loads_default_path():
    with pytest.raises(ConfigError) as exc:
        loads("bogus = 1\n")
    assert str(exc.value).startswith("<string>:1:1: unknown key 'bogus'")


def test_missing_file():
    with pytest.raises(ConfigError) as exc:
        load("/nonexistent/lvs.cf")
    [d] = exc.value.diagnostics
    assert (d.path, d.line, d.col, d.severity) == ("/nonexistent/lvs.cf", 0, 0, "error")
    assert str(exc.value) == "/nonexistent/lvs.cf:0:0: cannot read file: No such file or directory"


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load(tmp_path)  # a directory
    assert exc.value.diagnostics[0].line == 0 and "cannot read file" in str(exc.value)


def test_diagnostic_format():
    assert str(Diagnostic("a.cf", 3, 7, "boom")) == "a.cf:3:7: boom"
    assert str(Diagnostic("a.cf", 3, 7, "hmm", "warning")) == "a.cf:3:7: warning: hmm"


def test_config_error_lists_every_error_sorted():
    errors = [Diagnostic("f", 9, 1, "late"), Diagnostic("f", 2, 5, "early"), Diagnostic("f", 2, 1, "first")]
    e = ConfigError(errors)
    assert [d.message for d in e.diagnostics] == ["first", "early", "late"]
    assert str(e) == "f:2:1: first\nf:2:5: early\nf:9:1: late"


def test_warnings_come_back_with_the_model():
    cfg, warnings = load(DATA / "lvs_nat.cf")
    assert [str(w) for w in warnings] == [
        f"{DATA / 'lvs_nat.cf'}:29:20: warning: 'send' and 'send_program' are both set:"
        " the program's output replaces 'send'"
    ]
    assert cfg.virtuals[0].send_program == "/bin/testlink %h"


def test_positions_of_values_and_blocks():
    cfg, _ = load(DATA / "messy_fos.cf")
    assert cfg.positions["primary"] == Position(4, 10)
    assert cfg.positions["service"] == Position(5, 11)  # after a tab: columns count characters
    mail, imap = cfg.failovers
    assert mail.positions[""] == Position(14, 1)
    assert mail.positions["address"] == Position(16, 11)
    assert imap.positions[""] == Position(28, 4)
    assert imap.positions["address"] == Position(29, 13)
    cfg, _ = load(DATA / "lvs_nat.cf")
    assert cfg.virtuals[0].servers[1].positions[""] == Position(46, 5)
    assert cfg.virtuals[0].servers[1].positions["address"] == Position(48, 19)


def test_positions_do_not_affect_equality():
    a, _ = load(DATA / "messy_fos.cf")
    b, _ = loads(write(a))
    assert a == b and a.positions != b.positions
    assert digest(a) == digest(b)


def test_crlf_and_missing_final_newline():
    text = EXAMPLE.read_text()
    cfg, _ = loads(text.replace("\n", "\r\n"))
    assert cfg == load(EXAMPLE)[0]
    assert loads(text.rstrip("\n"))[0] == cfg


def test_latin1_file(tmp_path):
    path = tmp_path / "lvs.cf"
    text = EXAMPLE.read_text().replace('expect = "HTTP"', 'expect = "Bienvenue \xe0 bord"')
    path.write_bytes(text.encode("latin-1"))
    assert load(path)[0].failovers[0].expect == "Bienvenue \xe0 bord"


def test_line_and_column_match_pyparsing():
    text = "a = 1\n\n\tb = 2\n  failover x {\n}\n"
    where = _Lines(text)
    for loc in range(len(text)):
        if text[loc] != "\n":
            assert where(loc) == (pp.lineno(loc, text), pp.col(loc, text))


def test_grammar_never_raises_and_keeps_statements():
    root, diags = parse("a = 1 2 'x' \"y\"  # c\nfailover f {\n  k=v\n}\n", "g.cf")
    assert diags == []
    assert [(v.kind, v.raw, v.col) for v in root.assigns[0].values] == [
        ("word", "1", 5),
        ("word", "2", 7),
        ("sq", "'x'", 9),
        ("dq", '"y"', 13),
    ]
    [block] = root.blocks
    assert (block.kind, block.name, block.line, block.name_col) == ("failover", "f", 2, 10)
    assert block.assigns[0].key == "k" and block.assigns[0].values[0].raw == "v"


def test_docs_describe_every_key():
    docs = (ROOT / "docs" / "lvs.cf.md").read_text()
    for key in KEYS:
        assert f"`{key.name}`" in docs, key.name


# ---------------------------------------------------------------- summary


def test_role_from_local_addresses():
    cfg, _ = load(DATA / "fos.cf")
    assert role(cfg, [A("127.0.0.1"), A("192.168.1.10")]) == "primary"
    assert role(cfg, [A("10.0.0.2")]) == "backup"  # the private address counts too
    assert role(cfg, [A("192.0.2.1")]) == "none"
    cfg, _ = load(DATA / "lvs_direct.cf")
    assert role(cfg, [A("0.0.0.0")]) == "none"  # backup = 0.0.0.0 is nobody


def test_summary_on_the_primary():
    cfg, _ = load(EXAMPLE)
    text = format_summary(cfg, [A("192.168.1.10")])
    assert text.splitlines() == [
        f"file:       {EXAMPLE}",
        "service:    fos (failover services)",
        "this host:  primary",
        "partner:    backup 192.168.1.11",
        "heartbeat:  UDP port 539, keepalive 2 s, deadtime 10 s",
        "failovers:  1 (1 active)",
        "  failover web1: active, VIP 192.168.2.11 on eth0:1, port 80, timeout 10 s",
        '      probe: send "GET / HTTP/1.0\\r\\n\\r\\n", expect "HTTP"',
        "      start: /etc/rc.d/init.d/httpd start",
        "      stop:  /etc/rc.d/init.d/httpd stop",
    ]


def test_summary_on_the_backup_and_elsewhere():
    cfg, _ = load(DATA / "fos.cf")
    text = format_summary(cfg, [A("10.0.0.2")])
    assert "this host:  backup\n" in text and "partner:    primary 192.168.1.10 (private 10.0.0.1)\n" in text
    assert "failovers:  3 (2 active)" in text
    assert "  failover [server_name]: inactive," in text
    assert 'expect "^220 " (regex)' in text and "VIP 192.168.2.11 on eth0:1 /24" in text
    text = format_summary(cfg, [])
    assert "this host:  none" in text
    assert (
        "partner:    primary 192.168.1.10 (private 10.0.0.1), backup 192.168.1.11 (private 10.0.0.2)" in text
    )


def test_summary_of_an_lvs_file():
    cfg, _ = load(DATA / "lvs_direct.cf")
    text = format_summary(cfg, [A("192.168.142.160")])
    assert "service:    lvs (virtual servers)" in text
    assert "heartbeat:  UDP port 539 (none sent: backup_active = 0), keepalive 30 s, deadtime 90 s" in text
    assert "virtuals:   2 (network direct)" in text
    assert "  virtual dns: active, VIP 192.168.142.101 on eth0:2, fwmark 5, scheduler sh" in text


def test_local_ipv4_addresses():
    found = local_ipv4_addresses()
    assert all(isinstance(a, A) for a in found)
    if os.path.exists("/proc/net/dev"):
        assert A("127.0.0.1") in found or found == []  # lo may be absent in odd sandboxes
