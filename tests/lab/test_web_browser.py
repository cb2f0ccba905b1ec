"""piranha-gui in a real browser: Debian's Chromium driven by Playwright, all inside the namespace lab.

Nothing listens on, or talks to, this machine's own interfaces: piranha-gui (waitress) listens on node
a's lab address 192.0.2.100:3636 inside a's namespace, next to a real pulse pair (pyrhfos_lab.testbed),
and Chromium runs inside the client node's namespace. Playwright's driver talks to Chromium over a
pipe (--remote-debugging-pipe, file descriptors 3 and 4), not over the network, so the browser can be
started through a wrapper script that does ``exec ip netns exec <client-ns> /usr/bin/chromium "$@"``:
``ip netns exec`` keeps the inherited descriptors and execs Chromium with the same pid.
Screenshots of each page are taken in every run; ``make screenshots`` (PYRHFOS_SCREENSHOTS=1) keeps
them in docs/screenshots/ for the README, so an ordinary test run leaves the work tree clean.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pyrhfos.config import load
from pyrhfos.web import passwd
from pyrhfos_lab import lab as labmod
from pyrhfos_lab.testbed import Testbed, wait_until

pytestmark = pytest.mark.lab

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "docs" / "screenshots" if os.environ.get("PYRHFOS_SCREENSHOTS") else None
PASSWORD = "lab password 1"
LISTEN = "192.0.2.100:3636"  # node a's address in the lab (RFC 5737), never the host's
BASE = f"http://{LISTEN}/piranha"
VIEWPORT = {"width": 1000, "height": 700}


@dataclass
class Gui:
    bed: Testbed
    config: Path
    browser: Any
    log: Path

    def page(self) -> Any:
        context = self.browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.set_default_timeout(10_000)
        return page

    def logged_in(self) -> Any:
        page = self.page()
        page.goto(f"{BASE}/login")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{BASE}/control")
        return page


def _skip_reason() -> str | None:
    reason = labmod.lab_available()
    if reason:
        return reason
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing: run tools/host-deps.sh (Debian package chromium)"
    return None


@pytest.fixture(scope="module")
def gui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gui]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("gui")
    lab = labmod.Lab()
    proc: subprocess.Popen[Any] | None = None
    try:
        bed = Testbed(lab, tmp, keepalive=0.5, deadtime=3.0)
        bed.start("a")
        bed.start("b")
        # The GUI edits its own copy: the running pair keeps the file it was started with.
        config = tmp / "gui" / "lvs.cf"
        config.parent.mkdir()
        config.write_text(bed.config_path.read_text())
        pw = tmp / "gui" / "piranha.passwd"
        passwd.set_password(pw, PASSWORD)
        log = tmp / "gui.log"
        with open(log, "wb") as errf:
            proc = bed.a.popen(
                [sys.executable, "-m", "pyrhfos.web.app", "--config", str(config), "--passwd-file", str(pw),
                 "--listen", LISTEN, "--socket", str(bed.socket_path("a")), "--initscript", "/bin/false"],
                stdout=subprocess.PIPE, stderr=errf,
            )  # fmt: skip
        _wait_ready(proc, log)
        wrapper = tmp / "chromium-in-client-ns"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {bed.client.ns} {CHROMIUM} "$@"\n')
        wrapper.chmod(0o755)
        with sync_playwright() as p:
            # chromium_sandbox=False (the default) adds --no-sandbox: as root Chromium runs only so.
            browser = p.chromium.launch(executable_path=str(wrapper), timeout=30_000)
            try:
                yield Gui(bed, config, browser, log)
            finally:
                browser.close()
    finally:
        if proc is not None:
            labmod.stop_process(proc)
        lab.teardown()


def _wait_ready(proc: subprocess.Popen[Any], log: Path, timeout: float = 20) -> None:
    """Until piranha-gui says it serves (it prints that after binding); bounded in time."""
    assert proc.stdout is not None
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not line or b"serving" not in line[0]:
        raise AssertionError(f"piranha-gui did not start: {log.read_text(errors='replace')}")


def shot(page: Any, name: str) -> None:
    png = page.screenshot()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        (SHOTS / f"{name}.png").write_bytes(png)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_wrong_password_refused(gui: Gui) -> None:
    page = gui.page()
    page.goto(f"{BASE}/")  # not logged in: sent to the login page
    assert page.url == f"{BASE}/login"
    shot(page, "login")
    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    assert "Wrong user name or password" in page.inner_text("#login-error")
    page.goto(f"{BASE}/failover")
    assert page.url == f"{BASE}/login"
    page.context.close()


def test_add_failover_see_diff_save(gui: Gui) -> None:
    page = gui.logged_in()
    before = gui.config.read_text()
    page.click("text=GLOBAL SETTINGS")
    assert page.input_value("#f-primary") == "192.0.2.100"
    shot(page, "global-settings")
    page.click("text=REDUNDANCY")
    assert page.input_value("#f-backup") == "192.0.2.200"
    shot(page, "redundancy")
    page.click("text=FAILOVER SERVICES")
    page.click("#add")
    page.fill("#f-name", "db1")
    page.fill("#f-vip", "192.0.2.12")
    page.fill("#f-device", "eth0:2")
    page.fill("#f-port", "5432")
    page.fill("#f-send", "")
    page.fill("#f-expect", "*")
    page.fill("#f-timeout", "3")
    page.fill("#f-start_cmd", "/etc/rc.d/init.d/postgresql start")
    page.fill("#f-stop_cmd", "/etc/rc.d/init.d/postgresql stop")
    page.click("text=Review changes")
    diff = page.inner_text("#diff")
    assert (
        "+failover db1 {" in diff and "+    address = 192.0.2.12 eth0:2" in diff and "+serial_no = 2" in diff
    )
    assert gui.config.read_text() == before  # shown, not yet written
    shot(page, "confirm-diff")
    page.click("#save")
    assert "Saved" in page.inner_text("#saved")
    cfg, _ = load(gui.config)  # valid for the project's own reader
    assert cfg.serial_no == 2 and [f.name for f in cfg.failovers] == ["web1", "db1"]
    assert len(list(gui.config.parent.glob("lvs.cf.2*"))) == 1  # the timestamped backup
    page.click("text=FAILOVER SERVICES")
    assert "db1" in page.inner_text("#failovers")
    shot(page, "failover-services")
    page.context.close()


def test_bad_port_shows_error_writes_nothing(gui: Gui) -> None:
    page = gui.logged_in()
    before = digest(gui.config)
    page.goto(f"{BASE}/failover/web1/edit")
    page.fill("#f-port", "70000")
    page.click("text=Review changes")
    assert "out of range (1-65535)" in page.inner_text("#error-port")
    shot(page, "failover-error")
    assert digest(gui.config) == before
    page.context.close()


def test_form_post_without_csrf_token_refused(gui: Gui) -> None:
    page = gui.logged_in()
    before = digest(gui.config)
    page.goto(f"{BASE}/failover/web1/edit")
    page.fill("#f-port", "8080")
    # The form without its token, as a forged cross-site post would arrive.
    page.locator("input[name=csrf_token]").evaluate_all("els => els.forEach(e => e.remove())")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click("text=Review changes")
    assert posted.value.status == 400
    assert "CSRF" in page.inner_text("#message")
    assert digest(gui.config) == before
    page.context.close()


def test_monitoring_shows_active_node(gui: Gui) -> None:
    bed = gui.bed
    assert bed.wait_holders({"a"}, 15) == {"a"}, bed.log("a")
    page = gui.logged_in()

    def shows_pair() -> bool:
        page.reload()
        return page.inner_text("#node-state") == "active" and page.inner_text("#partner-state") == "standby"

    assert wait_until(shows_pair, 15, 0.5), page.inner_text("main")
    services = page.inner_text("#services")
    assert "192.0.2.11" in services and "this node" in services
    assert "-> active" in page.inner_text("#events")  # the daemon's own recent log lines
    time.sleep(0.2)
    shot(page, "monitoring")
    # The reload button asks the running pulse (pulse reload over its control socket).
    page.click("#action-reload")
    result = page.inner_text("#result")
    assert "exit status 0" in result and "reloaded" in result, result
    page.context.close()


def test_init_script_start_status_stop(gui: Gui, tmp_path: Path) -> None:
    """init.d/piranha-gui on node b (its lab address): start, serve the login page, status, stop."""
    node = gui.bed.b
    pidfile = tmp_path / "piranha-gui.pid"
    env = [
        "env",
        f"PIRANHA_GUI={sys.executable} -m pyrhfos.web.app",
        f"GUI_OPTS=--listen 192.0.2.200:3636 --config {gui.config} --passwd-file {tmp_path / 'none'}",
        f"PIDFILE={pidfile}",
        f"LOGFILE={tmp_path / 'gui.log'}",
        "sh",
        str(REPO / "init.d" / "piranha-gui"),
    ]
    try:
        started = node.run(*env, "start", check=False, timeout=20)
        log = tmp_path / "gui.log"
        why = started.stdout + started.stderr + (log.read_text() if log.exists() else "")
        assert started.returncode == 0, why
        assert node.run(*env, "status", check=False).returncode == 0
        # A second one on another pid file finds the port taken: it dies and start says so.
        # It dies only once its imports are done (seconds on a loaded host): start waits for that.
        second = [f"PIDFILE={tmp_path / 'second.pid'}" if a.startswith("PIDFILE=") else a for a in env]
        refused = node.run(*second, "start", check=False, timeout=20)
        assert refused.returncode == 1 and "exited right after starting" in refused.stderr, refused
        assert not (tmp_path / "second.pid").exists()
        fetch = "import urllib.request as u; print(u.urlopen('http://192.0.2.200:3636/piranha/login').read().decode())"
        page = wait_until(lambda: gui.bed.client.run_python(fetch, check=False).stdout, 10, 0.2)
        assert "No password has been set" in page  # no password file: nobody gets in
        assert node.run(*env, "stop", check=False, timeout=20).returncode == 0
        assert node.run(*env, "status", check=False).returncode == 3
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)  # only if stop failed
