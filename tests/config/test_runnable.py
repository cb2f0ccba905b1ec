"""config/runnable.py: what of a valid LVS file this host cannot run, at FILE:LINE:COL. Refusals stop the
director (exit 2); warnings only tell; neither makes a file that reads today invalid."""

from __future__ import annotations

import textwrap

import pytest

from pyrhfos.config import loads
from pyrhfos.config.grammar import Diagnostic
from pyrhfos.config.runnable import check_diagnostics, lvs_refusals, lvs_warnings

HEAD = """\
primary = 192.0.2.10
service = lvs
backup_active = 1
backup = 192.0.2.11
network = nat
nat_router = 198.51.100.254 eth1:1
"""

WEB = """\
virtual web {
    active = 1
    address = 192.0.2.100 eth0:1
    port = 80
    scheduler = wlc
    protocol = tcp
    server rs1 {
        address = 198.51.100.1
        active = 1
    }
}
"""


def load(text: str) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """(refusals, warnings) of a file that must read without error."""
    cfg, _ = loads(textwrap.dedent(text), "lvs.cf")
    return lvs_refusals(cfg), lvs_warnings(cfg)


def test_a_plain_nat_file_is_runnable_without_a_word() -> None:
    assert load(HEAD + WEB) == ([], [])


def test_fos_files_are_not_this_modules_business() -> None:
    text = HEAD.replace("service = lvs", "service = fos").replace("network = nat\n", "network = tunnel\n")
    text += 'failover f {\n address = 192.0.2.100 eth0:1\n port = 80\n start_cmd = "a"\n stop_cmd = "b"\n}\n'
    assert load(text) == ([], [])


def test_tunnel_is_refused_at_its_value() -> None:
    text = HEAD.replace("network = nat", "network = tunnel") + WEB
    refusals, warnings = load(text)
    assert [(d.line, d.col, d.severity) for d in refusals] == [(5, 11, "error")]
    assert "not built" in refusals[0].message and "tunnel" in refusals[0].message
    assert str(refusals[0]).startswith("lvs.cf:5:11: 'network = tunnel'")
    assert warnings == []
    # --check shows it as a warning: the file stays valid (exit 0).
    (shown,) = check_diagnostics(loads(text, "lvs.cf")[0])
    assert shown.severity == "warning" and shown.message == refusals[0].message


def test_zero_addresses_a_director_cannot_use_are_refused() -> None:
    text = (
        HEAD.replace("198.51.100.254 eth1:1", "0.0.0.0 eth1:1")
        + WEB.replace("192.0.2.100", "0.0.0.0").replace("198.51.100.1", "0.0.0.0")
        + WEB.replace("web", "off")
        .replace("active = 1", "active = 0", 1)
        .replace("192.0.2.100 eth0:1\n    port = 80", "0.0.0.0 eth0:1\n    port = 81")
    )
    refusals, _ = load(text)
    assert [d.line for d in refusals] == [6, 9, 14]  # nat_router, the active VIP, the active server
    assert all("0.0.0.0" in d.message for d in refusals)


def test_locality_schedulers_run_as_wlc() -> None:
    for sched in ("lblc", "lblcr"):
        text = HEAD + WEB.replace("scheduler = wlc", f"scheduler = {sched}")
        refusals, (w,) = load(text)
        assert refusals == [] and (w.line, w.col, w.severity) == (11, 17, "warning")
        assert f"'scheduler = {sched}'" in w.message and "run as wlc" in w.message
    for sched in ("rr", "wrr", "lc", "wlc", "sh", "dh", "sed", "nq"):
        assert load(HEAD + WEB.replace("scheduler = wlc", f"scheduler = {sched}")) == ([], [])


def test_load_monitor_is_warned_only_when_written() -> None:
    for monitor in ("uptime", "rup", "ruptime"):
        _, (w,) = load(
            HEAD + WEB.replace("    port = 80\n", f"    port = 80\n    load_monitor = {monitor}\n")
        )
        assert (w.line, w.col) == (11, 20) and "not supported: treated as none" in w.message
    assert load(HEAD + WEB.replace("    port = 80\n", "    port = 80\n    load_monitor = none\n")) == ([], [])
    assert load(HEAD + WEB) == ([], []), "the default (uptime) is not written: nothing to warn about"


def test_nat_without_nat_router_warns_that_real_servers_need_a_route_back() -> None:
    _, (w,) = load(HEAD.replace("nat_router = 198.51.100.254 eth1:1\n", "") + WEB)
    assert (w.line, w.col) == (5, 11) and "nat_router" in w.message and "route back" in w.message
    # Network not written (nat is the default): the warning goes to line 1.
    head = HEAD.replace("network = nat\n", "").replace("nat_router = 198.51.100.254 eth1:1\n", "")
    _, (w,) = load(head + WEB)
    assert (w.line, w.col) == (1, 1)
    # direct routing needs no nat_router.
    assert load(head.replace("service = lvs", "service = lvs\nnetwork = direct") + WEB) == ([], [])


def test_a_virtual_without_an_active_server_or_sorry_server() -> None:
    no_server = WEB.replace("        active = 1\n", "        active = 0\n")
    _, (w,) = load(HEAD + no_server)
    assert (w.line, w.col) == (7, 1) and "no active server and no 'sorry_server'" in w.message
    with_sorry = no_server.replace("    port = 80\n", "    port = 80\n    sorry_server = 198.51.100.9\n")
    assert load(HEAD + with_sorry) == ([], [])
    # An inactive virtual runs nothing: nothing to say about it.
    assert load(HEAD + no_server.replace("    active = 1\n", "    active = 0\n", 1)) == ([], [])
    _, (w,) = load(HEAD + WEB.replace("        active = 1\n", "        active = 1\n        weight = 0\n"))
    assert "weight = 0" in w.message and w.line == 7


def test_a_virtual_without_port_or_fwmark_gets_port_80() -> None:
    _, (w,) = load(HEAD + WEB.replace("    port = 80\n", ""))
    assert w.line == 7 and "port 80" in w.message
    fwmark = WEB.replace("    port = 80\n", "    fwmark = 7\n")
    assert load(HEAD + fwmark) == ([], [])


def test_syncdaemon_runs_and_other_unbuilt_globals_warn() -> None:
    text = HEAD + "syncdaemon = 1\nhard_shutdown = 1\nreservation_conflict_action = preempt\n" + WEB
    refusals, warnings = load(text)
    assert refusals == []
    # syncdaemon = 1 runs conntrackd (net/conntrackd.py): no warning for it since issue 16.
    assert [(w.line, w.col) for w in warnings] == [(8, 17), (9, 31)]
    assert load(HEAD + "syncdaemon = 0\n" + WEB) == ([], [])


def test_udp_without_a_program_can_only_fail_open() -> None:
    udp = WEB.replace("protocol = tcp", "protocol = udp")
    _, (w,) = load(HEAD + udp)
    assert w.line == 12 and "send_program" in w.message
    program = udp.replace("    port = 80\n", '    port = 80\n    send_program = "/bin/true %h"\n')
    assert load(HEAD + program) == ([], [])
    asked = udp.replace("    port = 80\n", '    port = 80\n    send = "ping"\n    expect = "pong"\n')
    assert load(HEAD + asked) == ([], []), "a UDP question with an expected answer is a real probe"


def test_direct_routing_cannot_change_ports_nor_see_prerouting_marks() -> None:
    head = HEAD.replace("network = nat", "network = direct")
    ported = WEB.replace("        active = 1\n", "        active = 1\n        port = 8080\n")
    _, (w,) = load(head + ported)
    assert (w.line, w.col) == (16, 16) and "8080" in w.message and "port 80" in w.message
    assert load(HEAD + ported) == ([], []), "NAT rewrites the port: fine"
    same = WEB.replace("        active = 1\n", "        active = 1\n        port = 80\n")
    assert load(head + same) == ([], [])
    _, (w,) = load(head + WEB.replace("    port = 80\n", "    port = 80\n    fwmark = 3\n"))
    assert "ingress" in w.message and w.line == 11


def test_the_same_real_server_twice() -> None:
    twice = WEB.replace(
        "    server rs1 {",
        "    server rs0 {\n        address = 198.51.100.1\n        port = 80\n    }\n    server rs1 {",
    )
    _, (w,) = load(HEAD + twice)
    assert "same real server as 'rs0' (line 13)" in w.message and w.line == 18


def test_duplicate_services_stay_validate_errors_not_repeated_here() -> None:
    from pyrhfos.config import ConfigError

    with pytest.raises(ConfigError, match="already used by virtual 'web'"):
        loads(HEAD + WEB + WEB.replace("virtual web", "virtual web2"), "lvs.cf")


def test_diagnostics_are_sorted_and_say_file_line_col() -> None:
    text = (
        HEAD.replace("network = nat", "network = tunnel")
        + "syncdaemon = 1\n"
        + WEB.replace("scheduler = wlc", "scheduler = lblc")
    )
    shown = check_diagnostics(loads(text, "/etc/sysconfig/ha/lvs.cf")[0])
    assert [(d.line, d.severity) for d in shown] == [(5, "warning"), (12, "warning")]
    assert str(shown[0]).startswith("/etc/sysconfig/ha/lvs.cf:5:11: warning: ")
