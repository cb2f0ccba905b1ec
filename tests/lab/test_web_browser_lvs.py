"""piranha-gui's LVS pages in a real browser (Debian's Chromium, Playwright) on an LVS lab director.

pyrhfos_lab.lvslab.LvsLab (NAT) runs a real pulse on its primary director; piranha-gui runs beside it in
the primary's namespace (on 203.0.113.2:3636, the lab's public side) and edits that pulse's own lvs.cf, so
the GUI's Reload button makes the running director take the saved file. Chromium runs in the client's
namespace as in test_web_browser.py (same wrapper, same pipe to Playwright): nothing touches this host's
interfaces. PYRHFOS_SCREENSHOTS=1 (``make screenshots``) keeps the screenshots in docs/screenshots/.
"""

from __future__ import annotations

import hashlib
import json
import os
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
from pyrhfos_lab.lvslab import PRIMARY_IP, VIP, VIPS, LvsLab
from pyrhfos_lab.testbed import wait_until

pytestmark = pytest.mark.lab

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "docs" / "screenshots" if os.environ.get("PYRHFOS_SCREENSHOTS") else None
PASSWORD = "lab password 1"
LISTEN = f"{PRIMARY_IP}:3636"  # the primary director's lab address (RFC 5737), never the host's
BASE = f"http://{LISTEN}/piranha"
VIEWPORT = {"width": 1100, "height": 760}


@dataclass
class Gui:
    lvs: LvsLab
    config: Path
    browser: Any
    log: Path

    def logged_in(self) -> Any:
        context = self.browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.goto(f"{BASE}/login")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{BASE}/control")
        return page

    def status(self) -> dict[str, Any]:
        """``pulse status --json`` of the running primary."""
        done = self.lvs.pulse.ask("primary", "status", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]


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

    tmp = tmp_path_factory.mktemp("gui-lvs")
    proc: subprocess.Popen[Any] | None = None
    (tmp / "lab").mkdir()
    with LvsLab("nat", workdir=tmp / "lab") as lvs:
        try:
            lvs.start_pulse("primary")  # alone: it takes the VIPs after deadtime
            assert lvs.wait_holders({"primary"}, 15) == {"primary"}, lvs.pulse.log("primary")
            config = lvs.pulse.config_file("primary")  # the file the running pulse reloads
            pw = tmp / "piranha.passwd"
            passwd.set_password(pw, PASSWORD)
            log = tmp / "gui.log"
            with open(log, "wb") as errf:
                proc = lvs.primary.popen(
                    [sys.executable, "-m", "pyrhfos.web.app", "--config", str(config), "--passwd-file",
                     str(pw), "--listen", LISTEN, "--socket", str(lvs.pulse.socket_path("primary")),
                     "--initscript", "/bin/false"],
                    stdout=subprocess.PIPE, stderr=errf,
                )  # fmt: skip
            _wait_ready(proc, log)
            wrapper = tmp / "chromium-in-client-ns"
            wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {lvs.client.ns} {CHROMIUM} "$@"\n')
            wrapper.chmod(0o755)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(wrapper), timeout=30_000)
                try:
                    yield Gui(lvs, config, browser, log)
                finally:
                    browser.close()
        finally:
            if proc is not None:
                labmod.stop_process(proc)


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
    png = page.screenshot(full_page=True)
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        (SHOTS / f"{name}.png").write_bytes(png)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def confirm(page: Any, *expected: str, name: str | None = None) -> str:
    """On the diff page: the diff shows ``expected`` lines; Save; returns the diff."""
    diff = page.inner_text("#diff")
    for line in expected:
        assert line in diff, diff
    if name:
        shot(page, name)
    page.click("#save")
    assert "Saved" in page.inner_text("#saved")
    return str(diff)


def add_server(gui: Gui, page: Any, virtual: str, name: str, weight: str) -> None:
    page.goto(f"{BASE}/virtual/{virtual}/servers")
    page.click("#add-server")
    page.fill("#f-name", name)
    page.fill("#f-address", gui.lvs.rs_addresses[name])
    page.fill("#f-weight", weight)
    page.click("text=Review changes")
    confirm(page, f"+    server {name} {{", f"+        weight = {weight}")


def test_add_virtual_with_two_real_servers(gui: Gui) -> None:
    page = gui.logged_in()
    menu = page.inner_text("nav")
    assert "VIRTUAL SERVERS" in menu and "FAILOVER SERVICES" not in menu
    page.click("text=GLOBAL SETTINGS")
    assert page.input_value("#f-nat_router") == "198.51.100.1"
    assert page.input_value("#f-nat_router_device") == "eth1:1"
    shot(page, "lvs-global-settings")
    page.click("text=VIRTUAL SERVERS")

    def all_up() -> bool:  # the running pulse's word, once reentry has passed on every server
        page.reload()
        return "up, 3 of 3 servers up" in page.inner_text("#virtual-web")

    assert wait_until(all_up, 15, 0.5), page.inner_text("main")
    page.click("#add")
    page.fill("#f-name", "app")
    page.fill("#f-vip", VIPS[1])
    page.fill("#f-device", "eth0:2")
    page.fill("#f-port", "80")
    page.select_option("#f-scheduler", "wrr")
    page.fill("#f-send", "PING\\r\\n")
    page.fill("#f-expect", "PONG")
    page.fill("#f-timeout", "1")
    page.fill("#f-reentry", "3")
    shot(page, "virtual-edit")
    before = gui.config.read_text()
    page.click("text=Review changes")
    assert gui.config.read_text() == before  # shown, not yet written
    confirm(page, "+virtual app {", f"+    address = {VIPS[1]} eth0:2", "+    scheduler = wrr")
    add_server(gui, page, "app", "rs1", "1")
    page.goto(f"{BASE}/virtual/app/servers")
    page.click("#add-server")
    page.fill("#f-name", "rs2")
    page.fill("#f-address", gui.lvs.rs_addresses["rs2"])
    page.fill("#f-weight", "3")
    page.click("text=Review changes")
    confirm(page, "+    server rs2 {", "+        weight = 3", name="lvs-confirm-diff")
    cfg, _ = load(gui.config)
    app = next(v for v in cfg.virtuals if v.name == "app")
    assert [(s.name, s.weight) for s in app.servers] == [("rs1", 1), ("rs2", 3)]
    check = gui.lvs.pulse.run_pulse("primary", "--check")
    assert check.returncode == 0 and not check.stderr, check.stdout + check.stderr
    page.goto(f"{BASE}/virtual")
    assert "not loaded (reload pulse)" in page.inner_text("#virtual-app")
    shot(page, "virtual-servers")
    page.goto(f"{BASE}/virtual/app/servers")
    assert "rs2" in page.inner_text("#servers")
    shot(page, "real-servers")
    page.context.close()


def test_bad_weight_shows_error_writes_nothing(gui: Gui) -> None:
    page = gui.logged_in()
    before = digest(gui.config)
    page.goto(f"{BASE}/virtual/web/server/rs1/edit")
    page.fill("#f-weight", "-2")
    page.click("text=Review changes")
    assert "out of range (>= 0)" in page.inner_text("#error-weight")
    shot(page, "real-server-error")
    assert digest(gui.config) == before
    page.context.close()


def test_form_post_without_csrf_token_refused(gui: Gui) -> None:
    page = gui.logged_in()
    before = digest(gui.config)
    page.goto(f"{BASE}/virtual/web/edit")
    page.fill("#f-port", "8080")
    page.locator("input[name=csrf_token]").evaluate_all("els => els.forEach(e => e.remove())")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click("text=Review changes")
    assert posted.value.status == 400 and "CSRF" in page.inner_text("#message")
    assert digest(gui.config) == before
    page.context.close()


def test_deactivated_server_leaves_running_table_after_reload(gui: Gui) -> None:
    lvs = gui.lvs
    assert {"rs1", "rs2", "rs3"} <= set(lvs.connect_many(VIP, n=9))  # rr over all three
    page = gui.logged_in()
    page.goto(f"{BASE}/virtual/web/servers")
    page.click("#deactivate-rs2")
    confirm(page, "+        active = 0")
    page.goto(f"{BASE}/control")
    page.click("#action-reload")
    result = page.inner_text("#result")
    assert "exit status 0" in result and "reloaded" in result, result

    def rs2_out() -> bool:
        web = next(v for v in gui.status()["virtuals"] if v["name"] == "web")
        rs2 = next(s for s in web["servers"] if s["name"] == "rs2")
        return rs2["health"] == "inactive" and rs2["weight_in_effect"] is None

    assert wait_until(rs2_out, 10, 0.2), gui.status()
    assert "rs2" not in lvs.connect_many(VIP, n=9)
    # The added virtual runs too: its two servers, once their first probes are good.
    assert wait_until(lambda: set(lvs.connect_many(VIPS[1], n=6)) == {"rs1", "rs2"}, 15, 0.5)

    def table_shows() -> bool:
        page.goto(f"{BASE}/control")
        row = page.inner_text("#route-web-rs2")
        return "inactive" in row and "up" in page.inner_text("#route-app-rs2")

    assert wait_until(table_shows, 10, 0.5), page.inner_text("main")
    row = page.inner_text("#route-web-rs1")
    assert "198.51.100.11:80" in row and "up" in row
    time.sleep(0.2)
    shot(page, "lvs-monitoring")
    page.goto(f"{BASE}/virtual")
    assert "up, 2 of 3 servers up" in page.inner_text("#virtual-web")
    page.context.close()
