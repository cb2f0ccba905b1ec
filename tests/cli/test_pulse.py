"""The `pulse` command line: Piranha's options, --check, start-up refusals. No network needed."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from pyrhfos import __version__
from pyrhfos.cli.pulse import setup_logging

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "etc" / "lvs.cf.example"


def pulse(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyrhfos.cli", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_version_help_usage() -> None:
    assert __version__ in pulse("--version").stdout
    out = pulse("--help").stdout
    for opt in (
        "--configfile",
        "--nodaemon",
        "--verbose",
        "--forceactive",
        "--test-start",
        "--norun",
        "--lvs",
        "--fos",
        "--check",
        "--pidfile",
    ):
        assert opt in out
    assert pulse("-?").returncode == 0
    assert pulse("--usage").stdout.startswith("usage: pulse")


def test_check_example_exits_0_with_summary() -> None:
    res = pulse("--check", "-c", str(EXAMPLE))
    assert res.returncode == 0, res.stderr
    assert "192.168.2.11" in res.stdout and "eth0:1" in res.stdout


def test_check_reports_three_mistakes_as_three_lines(tmp_path: Path) -> None:
    bad = tmp_path / "lvs.cf"
    bad.write_text(
        "primary = 192.0.2.1\nservice = fos\nbackup_active = 1\nbackup = 192.0.2.2\n"
        "keepalve = 2\n"  # near-miss key
        "heartbeat_port = 70000\n"  # out of range
        "failover web {\n    address = 192.0.2.11 eth0:1\n    port = 80\n"
        '    send = "unterminated\n'  # unterminated string
        '    start_cmd = "true"\n    stop_cmd = "true"\n}\n'
    )
    res = pulse("--check", "-c", str(bad))
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 3, res.stderr
    assert all(re.match(rf"{re.escape(str(bad))}:\d+:\d+: ", ln) for ln in lines)
    assert "did you mean 'keepalive'" in res.stderr


def test_missing_file_exits_2() -> None:
    res = pulse("--check", "-c", "/nonexistent/lvs.cf")
    assert res.returncode == 2 and "/nonexistent/lvs.cf" in res.stderr


def test_daemon_refuses_tunnel_mode_at_its_line(tmp_path: Path) -> None:
    """LVS runs now; network = tunnel is not built, so the daemon stops with file:line:col and exit 2."""
    cf = tmp_path / "lvs.cf"
    text = (ROOT / "tests" / "data" / "lvs_nat.cf").read_text()
    cf.write_text(text.replace("network = nat", "network = tunnel"))
    line = next(i for i, s in enumerate(cf.read_text().splitlines(), 1) if "network = tunnel" in s)
    res = pulse("-n", "-c", str(cf), "--pidfile", str(tmp_path / "p"))
    assert res.returncode == 2
    assert f"{cf}:{line}:" in res.stderr and "tunnel" in res.stderr
    assert not (tmp_path / "p").exists()


def test_test_start_prints_the_lvs_table(tmp_path: Path) -> None:
    """pulse -t on an LVS file prints the nftables table an active director would load (before the
    host check, which this host then fails: it is neither director of the file)."""
    res = pulse(
        "-t", "-n", "-c", str(ROOT / "tests" / "data" / "lvs_nat.cf"), "--pidfile", str(tmp_path / "p")
    )
    assert "table ip pyrhfos" in res.stdout and "dnat to" in res.stdout
    assert "chain prerouting" in res.stdout


def test_daemon_refuses_bad_file_with_positions(tmp_path: Path) -> None:
    bad = tmp_path / "lvs.cf"
    bad.write_text("primary = 192.0.2.300\n")
    res = pulse("-n", "-c", str(bad), "--pidfile", str(tmp_path / "p"))
    assert res.returncode == 2
    assert f"{bad}:1:11:" in res.stderr


def test_no_second_log_copy_when_stderr_is_the_journal(tmp_path, monkeypatch) -> None:
    """Under systemd, stderr is the journal: the syslog line is enough, a stderr copy doubles it."""
    log = tmp_path / "log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as fake_syslog, open(tmp_path / "err", "w") as err:
        fake_syslog.bind(str(log))
        monkeypatch.setattr(sys, "stderr", err)
        st = os.fstat(err.fileno())
        kinds = {}
        for journal in (None, f"{st.st_dev}:{st.st_ino}"):
            if journal is None:
                monkeypatch.delenv("JOURNAL_STREAM", raising=False)
            else:
                monkeypatch.setenv("JOURNAL_STREAM", journal)
            setup_logging(nodaemon=True, verbose=False, syslog_address=str(log))
            kinds[journal is not None] = sorted(type(h).__name__ for h in logging.getLogger("pulse").handlers)
        setup_logging(nodaemon=True, verbose=False, syslog_address=str(tmp_path / "no-syslog"))
        alone = [type(h).__name__ for h in logging.getLogger("pulse").handlers]
    logging.getLogger("pulse").handlers.clear()
    assert kinds == {False: ["StreamHandler", "SysLogHandler"], True: ["SysLogHandler"]}
    assert alone == ["StreamHandler"]  # no syslog at all: stderr is the only witness, journal or not
