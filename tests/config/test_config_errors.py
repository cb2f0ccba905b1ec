"""Every class of error, each at its FILE:LINE:COL, and every semantic rule."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pyrhfos.config import ConfigError, load, loads, write

GOOD = """\
primary = 192.168.1.10
service = fos
backup_active = 1
backup = 192.168.1.11
keepalive = 2
deadtime = 10
failover web {
    address = 192.168.2.11 eth0:1
    active = 1
    port = 80
    send = "GET / HTTP/1.0\\r\\n\\r\\n"
    expect = "HTTP"
    start_cmd = "/etc/rc.d/init.d/httpd start"
    stop_cmd = "/etc/rc.d/init.d/httpd stop"
}
"""

LVS = """\
primary = 192.168.1.10
virtual www {
    address = 192.168.2.11 eth0:1
    port = 80
    server s1 {
        address = 192.168.3.1
    }
}
"""


def errors(text: str) -> list[str]:
    """Every error as 'LINE:COL: message'."""
    with pytest.raises(ConfigError) as exc:
        loads(textwrap.dedent(text), "t.cf")
    for d in exc.value.diagnostics:
        assert str(d) == f"t.cf:{d.line}:{d.col}: {d.message}"
    return [f"{d.line}:{d.col}: {d.message}" for d in exc.value.diagnostics]


def warnings(text: str) -> list[str]:
    _, found = loads(textwrap.dedent(text), "t.cf")
    return [f"{d.line}:{d.col}: {d.message}" for d in found]


def edit(old: str, new: str, base: str = GOOD) -> str:
    assert old in base
    return base.replace(old, new, 1)


def test_good_file_is_clean():
    cfg, found = loads(GOOD)
    assert found == [] and cfg.failovers[0].name == "web"


# ---------------------------------------------------------------- syntax / structure


def test_unknown_key_with_did_you_mean():
    assert errors(edit("keepalive = 2", "keepalve = 2")) == [
        "5:1: unknown key 'keepalve' in the global settings; did you mean 'keepalive'?"
    ]
    assert errors(edit("    port = 80", "    prot = 80")) == [
        "10:5: unknown key 'prot' in a failover block; did you mean 'port'?"
    ]


def test_unknown_key_without_a_near_miss():
    assert errors(edit("keepalive = 2", "frobnicate = 2")) == [
        "5:1: unknown key 'frobnicate' in the global settings"
    ]


def test_key_in_the_wrong_section():
    assert errors(edit("deadtime = 10", 'deadtime = 10\nstart_cmd = "x"')) == [
        "7:1: 'start_cmd' is not allowed in the global settings (it belongs in a failover block)"
    ]
    assert errors(edit("    port = 80", "    port = 80\n    keepalive = 1")) == [
        "11:5: 'keepalive' is not allowed in a failover block (it belongs in the global settings)"
    ]
    assert errors(edit("    port = 80", "    port = 80\n    weight = 1")) == [
        "11:5: 'weight' is not allowed in a failover block (it belongs in a server block)"
    ]


def test_duplicate_key():
    assert errors(edit("deadtime = 10", "deadtime = 10\ndeadtime = 12")) == [
        "7:1: duplicate key 'deadtime' (first set on line 6)"
    ]


def test_duplicate_block_name():
    block = GOOD[GOOD.index("failover") :].replace("192.168.2.11 eth0:1", "192.168.2.12 eth0:2")
    assert errors(GOOD + block) == ["16:10: duplicate failover name 'web' (first on line 7)"]


def test_duplicate_server_name_and_its_contents_still_checked():
    text = edit("    }\n}", "    }\n    server s1 {\n        address = 1.2.3\n    }\n}", LVS)
    assert errors(text) == [
        "8:12: duplicate server name 's1' (first on line 5)",
        "9:19: bad value for 'address': '1.2.3' is not an IPv4 address",
    ]


def test_unterminated_string():
    assert errors(edit('expect = "HTTP"', 'expect = "HTTP')) == [
        '12:14: unterminated string: no closing " on this line'
    ]


def test_unterminated_brace():
    assert errors(GOOD[: GOOD.rindex("}")]) == ["7:1: 'failover web {' is never closed: missing '}'"]


def test_missing_brace_between_blocks_is_one_error():
    second = "failover ftp {\n    address = 192.168.2.12 eth0:2\n    port = 21\n"
    second += '    start_cmd = "a"\n    stop_cmd = "b"\n}\n'
    assert errors(GOOD[: GOOD.rindex("}")] + second) == ["7:1: 'failover web {' is never closed: missing '}'"]


def test_stray_brace():
    assert errors(GOOD + "}\n") == ["16:1: '}' without an open block"]
    assert errors("}\n" + GOOD) == ["1:1: '}' without an open block"]


def test_line_without_equals():
    assert errors(edit("keepalive = 2", "keepalive 2")) == ["5:1: expected '=' after 'keepalive'"]
    assert errors(edit("keepalive = 2", "keepalive")) == ["5:1: expected '=' and a value after 'keepalive'"]


def test_block_header_without_brace():
    text = GOOD + "failover ftp\n"
    assert errors(text) == ["16:1: expected 'failover NAME {' (one name, then '{' on the same line)"]


def test_garbage_line():
    assert errors(edit("keepalive = 2", "= 2")) == [
        "5:1: expected 'key = value', 'failover NAME {', 'virtual NAME {' or '}'"
    ]


def test_unknown_block_type_with_did_you_mean():
    assert errors(GOOD + "failver x {\n}\n") == [
        "16:1: unknown block type 'failver'; did you mean 'failover'?"
    ]


def test_blocks_in_the_wrong_place():
    assert errors(GOOD.replace("}", "    server s {\n    }\n}")) == [
        "15:5: 'server' blocks belong inside a virtual block"
    ]
    assert errors(LVS + "server s2 {\n    address = 192.168.3.2\n}\n") == [
        "9:1: 'server' blocks belong inside a virtual block"
    ]


def test_key_used_as_block_keyword():
    assert errors(edit("keepalive = 2", "failover = 2")) == [
        "5:1: 'failover' opens a block: write 'failover NAME {'"
    ]


def test_three_mistakes_three_diagnostics():
    text = GOOD.replace("keepalive = 2", "keepalive = two")
    text = text.replace("    port = 80", "    port = 80\n    prot = 81")
    text = text.replace('expect = "HTTP"', 'expect = "HTTP')
    with pytest.raises(ConfigError) as exc:
        loads(text, "/etc/sysconfig/ha/lvs.cf")
    assert str(exc.value).splitlines() == [
        "/etc/sysconfig/ha/lvs.cf:5:13: bad value for 'keepalive': 'two' is not a number of seconds",
        "/etc/sysconfig/ha/lvs.cf:11:5: unknown key 'prot' in a failover block; did you mean 'port'?",
        '/etc/sysconfig/ha/lvs.cf:13:14: unterminated string: no closing " on this line',
    ]
    assert [d.severity for d in exc.value.diagnostics] == ["error"] * 3


def test_errors_are_sorted_and_all_reported():
    text = "\n".join(f"bogus{i} = 1" for i in range(20)) + "\n" + GOOD + "}\n"
    found = errors(text)
    assert len(found) == 21
    assert found[0].startswith("1:1: unknown key 'bogus0'") and found[-1] == "36:1: '}' without an open block"


# ---------------------------------------------------------------- semantic rules


def test_primary_required():
    assert errors(edit("primary = 192.168.1.10\n", "")) == [
        "1:1: 'primary' is missing: the primary node's address is required"
    ]


def test_primary_differs_from_backup():
    assert errors(edit("backup = 192.168.1.11", "backup = 192.168.1.10")) == [
        "4:10: 'backup' is the same address as 'primary'"
    ]


def test_backup_required_when_active():
    assert errors(edit("backup = 192.168.1.11\n", "")) == [
        "3:17: 'backup_active = 1' needs a 'backup' address"
    ]
    assert errors(edit("backup = 192.168.1.11", "backup = 0.0.0.0")) == [
        "4:10: 'backup = 0.0.0.0' with 'backup_active = 1': give the backup's address"
    ]


def test_no_backup_is_fine_when_inactive():
    text = edit("backup_active = 1", "backup_active = 0").replace("192.168.1.11", "0.0.0.0")
    cfg, _ = loads(text)
    assert cfg.backup_active is False and str(cfg.backup) == "0.0.0.0"


def test_deadtime_greater_than_keepalive():
    assert errors(edit("deadtime = 10", "deadtime = 2")) == [
        "6:12: 'deadtime' (2) must be greater than 'keepalive' (2)"
    ]
    assert errors(edit("deadtime = 10\n", "").replace("keepalive = 2", "keepalive = 20")) == [
        "5:13: 'deadtime' (18) must be greater than 'keepalive' (20)"
    ]


def test_deadtime_under_twice_keepalive_is_a_warning():
    assert warnings(edit("deadtime = 10", "deadtime = 3.5")) == [
        "6:12: 'deadtime' (3.5) is less than twice 'keepalive' (2):"
        " one late heartbeat declares the partner dead"
    ]


def test_metrics_address_without_metrics_port_is_a_warning():
    assert warnings(edit("deadtime = 10", "deadtime = 10\nmetrics_address = 0.0.0.0")) == [
        "7:19: 'metrics_address' has no effect without 'metrics_port'"
    ]
    both = edit("deadtime = 10", "deadtime = 10\nmetrics_port = 9539\nmetrics_address = 192.168.1.10")
    cfg, found = loads(both)
    assert found == [] and str(cfg.metrics_address) == "192.168.1.10"
    assert "metrics_address = 192.168.1.10\n" in write(cfg)
    assert loads(GOOD)[0].metrics_address is None and "metrics_address" not in write(loads(GOOD)[0])


def test_keepalive_minimum():
    assert errors(edit("keepalive = 2", "keepalive = 0.04")) == [
        "5:13: bad value for 'keepalive': 0.04 is too small (minimum 0.05)"
    ]
    cfg, _ = loads(edit("keepalive = 2", "keepalive = 0.05"))
    assert cfg.keepalive == 0.05


def test_fos_needs_an_active_failover():
    assert errors(edit("    active = 1", "    active = 0")) == [
        "2:11: 'service = fos' needs at least one active failover block"
    ]


def test_fos_with_virtual_blocks():
    virtual = LVS[LVS.index("virtual") :]
    assert errors(GOOD + virtual) == ["16:1: virtual blocks are not allowed with 'service = fos'"]


def test_lvs_with_failover_blocks():
    assert errors(edit("service = fos", "service = lvs")) == [
        "7:1: failover blocks need 'service = fos' in the global settings (this file is 'service = lvs')"
    ]
    assert errors(edit("service = fos\n", "")) == [
        "6:1: failover blocks need 'service = fos' in the global settings (this file is 'service = lvs')"
    ]


@pytest.mark.parametrize(
    "line",
    ["    address = 192.168.2.11 eth0:1", "    port = 80", '    start_cmd = "/etc', '    stop_cmd = "/etc'],
)
def test_failover_mandatory_keys(line):
    text = "\n".join(x for x in GOOD.splitlines() if not x.startswith(line)) + "\n"
    key = line.split()[0]
    assert errors(text) == [f"7:1: failover 'web' has no '{key}' (it is mandatory)"]


def test_vips_unique_across_blocks():
    block = (
        GOOD[GOOD.index("failover") :].replace("failover web", "failover web2").replace("eth0:1", "eth0:2")
    )
    assert errors(GOOD + block) == ["17:15: VIP 192.168.2.11 is already used by failover 'web' (line 8)"]


def test_placeholder_vip_only_on_inactive_blocks():
    assert errors(edit("192.168.2.11 eth0:1", "0.0.0.0 eth0:1")) == [
        "8:15: 0.0.0.0 is a placeholder, not a usable VIP for an active service"
    ]
    block = GOOD[GOOD.index("failover") :].replace("failover web", "failover [server_name]")
    block = block.replace("192.168.2.11", "0.0.0.0").replace("active = 1", "active = 0")
    loads(GOOD + block + block.replace("[server_name]", "[server_name2]"))  # what the GUI's "add" writes


def test_virtual_services_unique():
    second = LVS[LVS.index("virtual") :].replace("virtual www", "virtual www2")
    assert errors(LVS + second) == [
        "10:15: 192.168.2.11 tcp port 80 is already used by virtual 'www' (line 2)"
    ]
    loads(LVS + second.replace("port = 80", "port = 443"))  # same VIP, other port: fine


def test_send_expect_length():
    assert errors(edit('"HTTP"', '"' + "x" * 256 + '"')) == [
        "12:14: bad value for 'expect': is 256 characters long; at most 255 are allowed"
    ]
    loads(edit('"HTTP"', '"' + "\\x41" * 255 + '"'))  # counted after decoding


def test_use_regex_needs_a_valid_regex():
    text = edit('expect = "HTTP"', 'expect = "HTTP/1\\.[01"\n    use_regex = 1')
    [message] = errors(text)
    assert message.startswith("12:14: 'expect' is not a valid regular expression: ")
    text = "\n".join(x for x in GOOD.splitlines() if "expect" not in x) + "\n"
    assert errors(text.replace("    port = 80", "    port = 80\n    use_regex = 1")) == [
        "11:17: 'use_regex = 1' needs an 'expect' pattern"
    ]
    cfg, _ = loads(edit('expect = "HTTP"', 'expect = "^HTTP/1\\.[01] 200"\n    use_regex = 1'))
    assert cfg.failovers[0].expect == "^HTTP/1\\.[01] 200"


def test_use_regex_is_re2_without_backtracking_features():
    """expect patterns are RE2's (issue 13 item 13): Python-only constructs are refused with the reason."""
    for pattern in ["HTTP(?=/1)", "(a)\\\\1", "OK\\\\Z"]:
        text = edit('expect = "HTTP"', f'expect = "{pattern}"\n    use_regex = 1')
        [message] = errors(text)
        assert message.startswith("12:14: 'expect' is not a valid regular expression: ")
        assert "RE2 has no backreferences or look-around" in message, message
    ok = 'expect = "(?i)^http/1\\.[01] (200|30[12])\\s"\n    use_regex = 1'
    cfg, _ = loads(edit('expect = "HTTP"', ok))
    assert cfg.failovers[0].use_regex


def test_send_and_send_program_not_both():
    assert errors(edit("    port = 80", '    port = 80\n    send_program = "/bin/probe %h"')) == [
        "11:20: 'send' and 'send_program' are both set: the program's output replaces 'send'"
    ]
    text = edit("    port = 80", '    port = 80\n    send = "x"\n    send_program = "/bin/t %h"', LVS)
    assert warnings(text) == [
        "6:20: 'send' and 'send_program' are both set: the program's output replaces 'send'"
    ]


@pytest.mark.parametrize("key", ["timeout", "reentry"])
def test_timeouts_positive(key):
    assert errors(edit("    port = 80", f"    port = 80\n    {key} = 0")) == [
        f"11:{len(key) + 8}: bad value for '{key}': 0 is too small (minimum above 0)"
    ]


def test_weights_not_negative():
    assert errors(edit("192.168.3.1", "192.168.3.1\n        weight = -2", LVS)) == [
        "7:18: bad value for 'weight': -2 is out of range (>= 0)"
    ]


@pytest.mark.parametrize("mask", ["255.0.255.0", "0.0.0.255", "255.255.255.253"])
def test_netmask_contiguous(mask):
    assert errors(edit("    port = 80", f"    port = 80\n    vip_nmask = {mask}")) == [
        f"11:17: bad value for 'vip_nmask': '{mask}' is not a valid netmask (its one-bits must be contiguous)"
    ]


def test_virtual_and_server_need_an_address():
    text = LVS.replace("    address = 192.168.2.11 eth0:1\n", "").replace(
        "        address = 192.168.3.1\n", ""
    )
    assert errors(text) == [
        "2:1: virtual 'www' has no 'address' (it is mandatory)",
        "4:5: server 's1' has no 'address' (it is mandatory)",
    ]


def test_a_bad_value_does_not_also_count_as_missing():
    assert errors(edit("    port = 80", "    port = eighty")) == [
        "10:12: bad value for 'port': 'eighty' is not an integer"
    ]
    assert errors(edit("primary = 192.168.1.10", "primary = 192.168.1")) == [
        "1:11: bad value for 'primary': '192.168.1' is not an IPv4 address"
    ]


def test_near_miss_with_punctuation():
    assert errors(edit("    port = 80", '    port = 80\n    send-program = "x"')) == [
        "11:5: unknown key 'send-program' in a failover block; did you mean 'send_program'?"
    ]


def test_seconds_have_an_upper_bound():
    """A day at most: a lease of ceil(deadtime) s must stay below the kernel's "forever" lifetime."""
    text = write(load(Path(__file__).resolve().parents[2] / "etc" / "lvs.cf.example")[0])
    for key in ("deadtime", "keepalive"):
        lines = text.split("\n")
        bad = "\n".join(f"{key} = 4294967295" if ln.startswith(f"{key} =") else ln for ln in lines)
        with pytest.raises(ConfigError, match="too large"):
            loads(bad)
