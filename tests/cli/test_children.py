"""What pulse's helper processes import (issue 13, item 14): nothing from the working directory or
PYTHONPATH. A decoy planted there must not run as root in the ARP frame child, and the daemon leaves
the directory it was started in when it daemonizes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pyrhfos.net.arp import build_frames_in_child, frames_stdlib

MAC, VIP = "02:00:00:00:00:0a", IPv4Address("192.0.2.10")


def plant_decoys(where: Path, marker: Path) -> None:
    """A scapy and a pyrhfos that leave ``marker`` behind when imported, and then fail."""
    code = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\nraise ImportError('decoy')\n"
    for package in ("scapy", "pyrhfos"):
        (where / package).mkdir()
        (where / package / "__init__.py").write_text(code)


def test_the_arp_child_imports_no_decoy_from_the_cwd_or_pythonpath(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd, path, marker = tmp_path / "cwd", tmp_path / "path", tmp_path / "imported"
    for d in (cwd, path):
        d.mkdir()
        plant_decoys(d, marker)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("PYTHONPATH", str(path))
    frames = build_frames_in_child([(MAC, VIP)], fallback=False)  # raises if the child failed
    assert frames == {(MAC, VIP): frames_stdlib(MAC, VIP)}  # built by the real scapy
    assert not marker.exists(), marker.read_text()


def test_daemonize_leaves_the_start_directory(tmp_path: Path) -> None:
    start, report = tmp_path / "start", tmp_path / "report"
    start.mkdir()
    code = (
        "import os, sys\n"
        "from pyrhfos.cli.pulse import daemonize\n"
        "ready = daemonize()\n"
        f"open({str(report)!r} + '.tmp', 'w').write(os.getcwd())\n"
        f"os.rename({str(report)!r} + '.tmp', {str(report)!r})\n"
        "ready(True)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=start, timeout=60, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + 30
    while not report.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert report.read_text() == "/"
    assert os.getcwd() != "/"  # sanity: this process did not move


def test_the_starter_waits_for_the_daemon_and_reports_its_failure(tmp_path: Path) -> None:
    """pulse's starting process exits only when the daemon is ready (its pid written), with its status."""
    code = (
        "import os, sys, time\n"
        "from pyrhfos.cli.pulse import daemonize\n"
        "ready = daemonize()\n"
        "time.sleep(0.5)\n"
        "ready(sys.argv[1] == 'ok')\n"
    )
    for word, status in (("ok", 0), ("fail", 1)):
        started = time.monotonic()
        res = subprocess.run([sys.executable, "-c", code, word], timeout=60, capture_output=True, text=True)
        assert res.returncode == status, res.stderr
        assert time.monotonic() - started >= 0.5, "the starter waited for the daemon"
    dies = "from pyrhfos.cli.pulse import daemonize\ndaemonize()\n"
    assert subprocess.run([sys.executable, "-c", dies], timeout=60).returncode == 1, "died before ready"
