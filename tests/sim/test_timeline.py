"""The timeline file of `pulse simulate`: what a line may say, and the FILE:LINE errors when it is wrong."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pyrhfos.cli.main import main
from pyrhfos.core.vocab import Role
from pyrhfos.sim.timeline import EVENTS, Step, TimelineError, parse

CONF = Path(__file__).resolve().parents[2] / "etc" / "lvs.cf.example"


def test_events_arguments_and_comments() -> None:
    text = """# maintenance
0 primary start
0 backup start   # both
5.5 backup freeze 2.5
7 primary link-down private
8 primary link-up
9 backup partition one-way
10 backup heal
11 primary service-fail web1
12 primary service-ok web1
13 backup takeover
14 backup release
15 primary stop
16 primary crash
"""
    steps = parse(text, ["web1"])
    assert steps[0] == Step(0.0, Role.PRIMARY, "start", None, 2)
    assert steps[2] == Step(5.5, Role.BACKUP, "freeze", "2.5", 4)
    assert [s.event for s in steps] == [
        "start", "start", "freeze", "link-down", "link-up", "partition", "heal",
        "service-fail", "service-ok", "takeover", "release", "stop", "crash",
    ]  # fmt: skip
    assert steps[3].arg == "private" and steps[4].arg is None and steps[5].arg == "one-way"
    assert parse("") == []


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("0 primary start\n1 primary\n", 2, "expected SECONDS NODE EVENT [ARG]"),
        ("soon primary start", 1, "time 'soon' is not a number of seconds"),
        ("-1 primary start", 1, "must be zero or more seconds"),
        ("5 primary start\n\n3 backup start", 3, "time 3 is before the previous line's 5"),
        ("1 tertiary start", 1, "node 'tertiary': expected primary or backup"),
        ("1 primary explode", 1, "unknown event 'explode'"),
        ("1 primary freeze", 1, "freeze needs SECONDS"),
        ("1 primary freeze x", 1, "freeze 'x' is not a number of seconds"),
        ("1 primary stop now", 1, "stop takes no argument"),
        ("1 primary service-fail", 1, "service-fail needs a service NAME"),
        ("1 primary service-fail ftp", 1, "no failover service 'ftp' in the configuration (it has web1)"),
        ("1 primary link-down eth0", 1, "expected public or private"),
        ("1 primary partition both", 1, "expected one-way"),
    ],
)
def test_bad_lines_name_their_line(text: str, line: int, message: str) -> None:
    with pytest.raises(TimelineError) as e:
        parse(text, ["web1"])
    assert e.value.line == line
    assert message in e.value.message
    assert e.value.render("t.txt").startswith(f"t.txt:{line}: ")


def test_cli_reports_a_bad_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    timeline = tmp_path / "maint.txt"
    timeline.write_text("0 primary start\n3 primary reboot\n")
    assert main(["simulate", "-c", str(CONF), str(timeline)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{timeline}:2: unknown event 'reboot'")


def test_cli_prints_state_changes_and_holders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    timeline = tmp_path / "crash.txt"
    timeline.write_text("30 primary crash\n")
    assert main(["simulate", "-c", str(CONF), str(timeline)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "primary starting -> active: partner is standby: the primary takes the services" in lines[1]
    # The primary believes the backup's STANDBY two beat intervals (2 x 0.8 s) after its first beat.
    assert lines[2].split() == ["1.601", "vip", "web1", "192.168.2.11:", "primary"]
    # lvs.cf.example: keepalive 2, deadtime 10: deadtime after a beat within the last keepalive.
    takeover = next(line for line in lines if "backup standby -> active" in line)
    assert 38.0 < float(takeover.split()[0]) <= 40.01
    assert takeover.endswith("no heartbeat from partner for 10.00 s")
    assert lines[-1].split()[-1] == "backup"
    assert main(["simulate", "-c", str(CONF), str(timeline), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {"kind": "vip", "service": "web1", "ip": "192.168.2.11", "holders": ["backup"]}.items() <= records[
        -1
    ].items()
    assert records[0] == {
        "t": 0.0, "kind": "state", "node": "backup", "old": "starting", "new": "standby",
        "reason": "backup waits for the primary",
    }  # fmt: skip


def test_pulse_8_documents_every_simulate_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", capsys.readouterr().out)) - {"--help"}
    assert {"--json", "--until", "--start-seconds", "--stop-seconds", "--configfile"} <= options
    page = (CONF.parents[1] / "man" / "pulse.8").read_text().replace("\\-", "-")
    section = page.split(".SS pulse simulate", 1)[1].split(".SH ", 1)[0]
    assert not [o for o in options if o not in section]
    for event in EVENTS:
        assert event in section
