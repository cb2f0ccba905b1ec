"""Who can be locked out, and what keeps a login alive: the login throttle (issue 13, item 6) and the
monitoring page's refresh against the idle limit (item 7).
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
from guirig import PASSWORD, Clock, csrf_of, settings_in

from pyrhfos.web import app as webapp
from pyrhfos.web import auth

ADMIN, NEIGHBOUR = "2001:db8:5:7::10", "2001:db8:5:7::66"  # one /64


@pytest.fixture
def gui(tmp_path: Path) -> dict[str, Any]:
    clock = Clock()
    app = webapp.create_app(settings_in(tmp_path), auth.Throttle(clock=clock), auth.Sessions(clock=clock))
    app.config["TESTING"] = True
    return {"app": app, "clock": clock}


def login(client: Any, addr: str, password: str = PASSWORD) -> Any:
    env = {"REMOTE_ADDR": addr}
    page = client.get("/piranha/login", environ_base=env).get_data(as_text=True)
    form = {"csrf_token": csrf_of(page), "username": "piranha", "password": password}
    return client.post("/piranha/login", data=form, environ_base=env)


def logout(client: Any, addr: str) -> None:
    env = {"REMOTE_ADDR": addr}
    page = client.get("/piranha/control", environ_base=env).get_data(as_text=True)
    resp = client.post("/piranha/logout", data={"csrf_token": csrf_of(page)}, environ_base=env)
    assert resp.status_code == 302


# ------------------------------------------------------------------ the throttle itself


def test_full_table_evicts_unlocked_clients_before_locked_ones() -> None:
    """Filling the table with one-off failures must not free the clients that are locked out."""
    t = auth.Throttle(clock=lambda: 0.0, free=2, max_entries=3, per_minute=1000)
    for addr in ("192.0.2.1", "192.0.2.2"):
        t.failure(addr)
        t.failure(addr)
    assert t.wait("192.0.2.1") > 0 and t.wait("192.0.2.2") > 0
    for i in range(10, 60):
        t.failure(f"192.0.2.{i}")
    assert t.wait("192.0.2.1") > 0 and t.wait("192.0.2.2") > 0


def test_at_most_so_many_failures_a_minute_from_everyone() -> None:
    clock = Clock()
    t = auth.Throttle(clock=clock, per_minute=30)
    for i in range(30):  # each address well under its own limit
        assert t.wait(f"198.51.100.{i}") == 0
        t.failure(f"198.51.100.{i}")
        clock.t += 1
    assert t.wait("203.0.113.5") == pytest.approx(30)  # a stranger waits until the first drops out
    assert t.wait("127.0.0.1") == 0  # the node itself: its own limit only
    assert t.wait("203.0.113.5", device="d1") == 0  # a browser that logged in before: likewise
    clock.t += 30
    assert t.wait("203.0.113.5") == 0


def test_ipv4_mapped_counts_as_ipv4_and_loopback_as_one() -> None:
    t = auth.Throttle(clock=lambda: 0.0, free=2)
    assert t.key("::ffff:192.0.2.7") == t.key("192.0.2.7") == "192.0.2.7"
    assert t.key("127.0.0.1") == t.key("127.3.2.1") == t.key("::1") == t.key("::ffff:127.0.0.1")
    t.failure("::ffff:192.0.2.7")
    t.failure("192.0.2.7")
    assert t.wait("192.0.2.7") > 0 and t.wait("::ffff:192.0.2.7") > 0
    t.failure("127.0.0.2")  # a local user picking source addresses from 127/8 is still one client
    t.failure("127.0.0.3")
    assert t.wait("127.0.0.1") > 0


# ------------------------------------------------------------------ through the login page


def test_a_64_neighbour_cannot_keep_the_admin_locked_out(gui: dict[str, Any]) -> None:
    """The neighbour keeps its /64 locked, for ever; the admin's browser, which logged in from there
    once, is throttled on its own (device cookie) and still gets in."""
    app, clock = gui["app"], gui["clock"]
    admin = app.test_client()
    assert login(admin, ADMIN).status_code == 302
    assert admin.get_cookie("piranha_device", path="/piranha") is not None
    logout(admin, ADMIN)
    neighbour = app.test_client()
    for _ in range(5):
        assert login(neighbour, NEIGHBOUR, "guess guess").status_code == 403
    for _ in range(20):  # past each lock-out, another failure: the /64 stays locked
        clock.t += 900
        assert login(neighbour, NEIGHBOUR, "guess guess").status_code == 403
        assert login(app.test_client(), ADMIN).status_code == 429  # a browser without the cookie
        assert login(admin, ADMIN).status_code == 302
        logout(admin, ADMIN)


def test_many_addresses_fill_the_global_cap_but_not_for_the_admins_browser(gui: dict[str, Any]) -> None:
    app, clock = gui["app"], gui["clock"]
    admin = app.test_client()
    assert login(admin, "192.0.2.10").status_code == 302
    logout(admin, "192.0.2.10")
    for i in range(30):
        assert login(app.test_client(), f"198.51.100.{i}", "guess guess").status_code == 403
    stranger = login(app.test_client(), "203.0.113.5")
    assert stranger.status_code == 429 and "Too many failed logins" in stranger.get_data(as_text=True)
    assert login(admin, "192.0.2.10").status_code == 302
    clock.t += 61
    assert login(app.test_client(), "203.0.113.5").status_code == 302


def test_the_device_cookie_is_throttled_too_and_cannot_be_made_up(gui: dict[str, Any]) -> None:
    app = gui["app"]
    admin = app.test_client()
    assert login(admin, "192.0.2.10").status_code == 302
    logout(admin, "192.0.2.10")
    for _ in range(5):  # someone at the admin's browser, guessing
        assert login(admin, "192.0.2.10", "guess guess").status_code == 403
    assert login(admin, "192.0.2.10").status_code == 429
    forger = app.test_client()
    for _ in range(5):
        assert login(forger, "192.0.2.99", "guess guess").status_code == 403
    forger.set_cookie("piranha_device", "made-up.value.here", path="/piranha")
    assert login(forger, "192.0.2.99").status_code == 429  # an unsigned cookie is no device


# ------------------------------------------------------------------ the idle limit (item 7)


def refresh_target(page: str, current: str) -> str:
    """Where the page's meta refresh goes, as a browser reads it (no url=: the same page again)."""
    m = re.search(r'<meta http-equiv="refresh" content="([^"]+)"', page)
    assert m, page
    _, _, url = html.unescape(m.group(1)).partition("url=")
    return url or current


def test_the_monitoring_pages_refresh_is_not_activity(gui: dict[str, Any]) -> None:
    app, clock = gui["app"], gui["clock"]
    client = app.test_client()
    assert login(client, "192.0.2.10").status_code == 302
    url = "/piranha/control"
    start = clock.t
    while clock.t - start < 1800 + 60:  # the page left open on a screen: it refreshes, nobody clicks
        clock.t += 5
        resp = client.get(url)
        if resp.status_code != 200:
            break
        url = refresh_target(resp.get_data(as_text=True), url)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/piranha/login")
    # Logged out at the idle limit after the page was opened (start + 5), not kept alive by refreshes.
    assert clock.t - start <= 5 + 1800 + 5


def test_a_click_is_activity(gui: dict[str, Any]) -> None:
    app, clock = gui["app"], gui["clock"]
    client = app.test_client()
    assert login(client, "192.0.2.10").status_code == 302
    for _ in range(5):
        clock.t += 1500
        assert client.get("/piranha/control").status_code == 200  # the admin opens the page
    clock.t += 1500
    assert client.get("/piranha/control?auto=1").status_code == 200  # alive: refreshes still show it
    clock.t += 301
    assert client.get("/piranha/control?auto=1").status_code == 302  # 30 min since the last click
