"""``pip install .`` (not editable) into a fresh venv: a ``pulse`` that works from any directory, and a
package without the lab, the testbed, the demo or the tests (issue 12, property 5).

``pip install .`` in its two steps, so the wheel itself is checked too: build the wheel, install it.
Offline: the wheel is built with this venv's setuptools (--no-build-isolation, --no-index). Then a .pth
file lends the fresh venv this venv's site-packages for the dependencies only: directories named in
a .pth join sys.path, but their own .pth files are not run, so the editable pyrhfos stays out.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyrhfos import __version__
from pyrhfos_lab.lab import Lab, stop_process
from pyrhfos_lab.testbed import wait_until

ROOT = Path(__file__).resolve().parents[2]
# What a checkout has beside the sources: not copied (a stale build/ would leak old files into the wheel).
NOT_SOURCES = shutil.ignore_patterns(
    ".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
    ".hypothesis",
)  # fmt: skip
DEPS_PTH = "_pyrhfos_test_deps.pth"
NOT_INSTALLED = ("pyrhfos_lab", "tests", "bench")
LAB_MODULES = ("lab.py", "testbed.py", "demo.py")


@dataclass(frozen=True)
class Fresh:
    venv: Path
    site: Path  # the fresh venv's site-packages
    wheel: Path
    elsewhere: Path  # a directory with a decoy pyrhfos/: nothing may import from the current directory

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def pulse(self) -> Path:
        return self.venv / "bin" / "pulse"


def run(argv: Sequence[str | Path], cwd: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=120
    )


def clean_env() -> dict[str, str]:
    """The environment an administrator's shell would give: no PYTHONPATH, no venv of ours."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSAFEPATH"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def must(res: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert res.returncode == 0, f"{res.args}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fresh]:
    base = tmp_path_factory.mktemp("install")
    try:
        # pip builds in the source tree (build/, egg-info): build a copy, not the shared checkout.
        src = base / "src"
        shutil.copytree(ROOT, src, ignore=NOT_SOURCES)
        wheels = base / "wheels"
        offline = ["--no-deps", "--no-index", "--quiet"]
        must(
            run(
                [sys.executable, "-m", "pip", "wheel", *offline, "--no-build-isolation", "-w", wheels, src],
                base,
            )
        )
        (wheel,) = wheels.glob("pyrhfos-*.whl")
        venv = base / "fresh"
        python = venv / "bin" / "python"
        must(run([sys.executable, "-m", "venv", "--without-pip", venv], base))
        # This venv's pip installs into the fresh one, run by the fresh interpreter (pip --python).
        must(run([sys.executable, "-m", "pip", "--python", python, "install", *offline, wheel], base))
        where = "import sysconfig; print(sysconfig.get_path('purelib'))"
        site = Path(must(run([python, "-c", where], base)).stdout.strip())
        # Written after the install: pip must not see (and offer to replace) the editable pyrhfos.
        ours = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
        (site / DEPS_PTH).write_text("".join(f"{p}\n" for p in ours))
        elsewhere = base / "elsewhere"
        (elsewhere / "pyrhfos").mkdir(parents=True)
        (elsewhere / "pyrhfos" / "__init__.py").write_text("raise ImportError('decoy from the cwd')\n")
        yield Fresh(venv, site, wheel, elsewhere)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_fresh_venv_runs_its_own_copy(fresh: Fresh) -> None:
    code = "import pyrhfos, pyrhfos.cli.pulse, pyroute2; print(pyrhfos.__file__)"
    where = Path(must(run([fresh.python, "-c", code], "/")).stdout.strip())
    assert where.is_relative_to(fresh.site), f"pyrhfos came from {where}, not the fresh venv"
    for name in NOT_INSTALLED:
        res = run([fresh.python, "-c", f"import {name}"], "/")
        assert res.returncode != 0 and "ModuleNotFoundError" in res.stderr, f"{name} importable: {res}"


def test_the_wheel_holds_the_package_and_no_test_code(fresh: Fresh) -> None:
    with zipfile.ZipFile(fresh.wheel) as whl:
        names = whl.namelist()
    dist = f"pyrhfos-{__version__}"
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"pyrhfos", f"{dist}.dist-info", f"{dist}.data"}, tops
    assert not [n for n in names if n.rsplit("/", 1)[-1] in LAB_MODULES], "lab modules in the wheel"
    data = f"{dist}.data/data/share"
    needed = ["pyrhfos/cli/pulse.py", "pyrhfos/core/machine.py", "pyrhfos/web/templates/base.html",
              f"{data}/doc/pyrhfos/lvs.cf.example", f"{data}/man/man8/pulse.8"]  # fmt: skip
    assert not [n for n in needed if n not in names], "missing from the wheel"


def test_the_installed_files_hold_no_test_code(fresh: Fresh) -> None:
    dist = f"pyrhfos-{__version__}"
    assert {p.name for p in fresh.site.iterdir()} == {"pyrhfos", f"{dist}.dist-info", DEPS_PTH}
    record = (fresh.site / f"{dist}.dist-info" / "RECORD").read_text().splitlines()
    files = [line.rsplit(",", 2)[0] for line in record if line]
    bad = [f for f in files if f.split("/", 1)[0] in NOT_INSTALLED or f.rsplit("/", 1)[-1] in LAB_MODULES]
    assert not bad, f"installed test code: {bad}"
    assert (fresh.venv / "share" / "doc" / "pyrhfos" / "lvs.cf.example").is_file()


@pytest.mark.parametrize("where", ["/", "elsewhere"])
def test_version_and_check_from_any_directory(fresh: Fresh, where: str) -> None:
    cwd = fresh.elsewhere if where == "elsewhere" else Path(where)
    res = must(run([fresh.pulse, "--version"], cwd))
    assert res.stdout.strip() == f"pulse (pyrhfos) {__version__}"
    example = fresh.venv / "share" / "doc" / "pyrhfos" / "lvs.cf.example"  # the installed copy
    res = must(run([fresh.pulse, "--check", "-c", example], cwd))
    assert "192.168.2.11" in res.stdout and "eth0:1" in res.stdout
    bad = fresh.elsewhere / "bad.cf"
    bad.write_text("primary = 192.0.2.300\n")
    res = run([fresh.pulse, "--check", "-c", bad], cwd)
    assert res.returncode == 2 and f"{bad}:1:11:" in res.stderr, res.stderr


@pytest.mark.lab
def test_test_start_runs_and_stops_cleanly(fresh: Fresh, lab: Lab, tmp_path: Path) -> None:
    """``pulse -t`` in a lab node, started from /: it logs its start, takes nothing, exits 0 on SIGTERM."""
    node = lab.add_node("a", "192.0.2.100")
    config = tmp_path / "lvs.cf"
    config.write_text(
        "serial_no = 1\nprimary = 192.0.2.100\nservice = fos\nbackup_active = 1\nbackup = 192.0.2.200\n"
        "heartbeat = 1\nheartbeat_port = 539\nkeepalive = 1\ndeadtime = 3\n"
        "failover web {\n    active = 1\n    address = 192.0.2.11 eth0:1\n    port = 80\n    timeout = 2\n"
        '    send = "GET / HTTP/1.0\\r\\n\\r\\n"\n    expect = "HTTP"\n'
        f'    start_cmd = "touch {tmp_path}/started"\n    stop_cmd = "touch {tmp_path}/stopped"\n}}\n'
    )
    log = tmp_path / "pulse.log"
    argv = [
        "env", "--chdir=/", str(fresh.pulse), "-t", "-n", "-c", str(config),
        "--pidfile", str(tmp_path / "pulse.pid"), "--socket", str(tmp_path / "pulse.sock"),
    ]  # fmt: skip
    with open(log, "wb") as out:
        # node.popen puts the checkout on PYTHONPATH; an empty one is no PYTHONPATH at all.
        proc = node.popen(argv, stdout=out, stderr=out, env={"PYTHONPATH": ""})
    try:
        started = wait_until(lambda: "starting as primary" in log.read_text() or proc.poll() is not None, 30)
        assert started and proc.poll() is None, log.read_text()
        # It decides as for real (the partner is silent: take over) and only logs what it would do.
        assert wait_until(lambda: "test-start: would add" in log.read_text(), 30), log.read_text()
        os.kill(proc.pid, signal.SIGTERM)  # ours, by pid
        assert proc.wait(30) == 0, log.read_text()
    finally:
        stop_process(proc)
    assert not [a for a in node.addresses() if a[0] == "192.0.2.11"], "test-start took the VIP"
    assert not (tmp_path / "started").exists() and not (tmp_path / "stopped").exists()
    assert not (tmp_path / "pulse.pid").exists()
