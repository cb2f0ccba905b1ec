"""The GUI's LVS pages through Flask's test client: VIRTUAL SERVERS, REAL SERVERS, the LVS global
settings and the routing table on CONTROL/MONITORING, on a copy of etc/lvs.cf.lvs.example."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
from guirig import PASSWORD, REPO, csrf_of, settings_in

from pyrhfos.config import load
from pyrhfos.config.runnable import lvs_refusals
from pyrhfos.web import app as webapp
from pyrhfos.web import auth, edits
from pyrhfos.web import control as webcontrol

LVS_EXAMPLE = REPO / "etc" / "lvs.cf.lvs.example"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    settings = settings_in(tmp_path)
    settings.config.write_text(LVS_EXAMPLE.read_text())
    app = webapp.create_app(settings, auth.Throttle())
    app.config["TESTING"] = True
    client = app.test_client()
    page = client.get("/piranha/login").get_data(as_text=True)
    login = {"csrf_token": csrf_of(page), "username": "piranha", "password": PASSWORD}
    done = client.post("/piranha/login", data=login)
    assert done.status_code == 302
    return {"client": client, "cfg": settings.config, "tmp": tmp_path}


def post_form(client: Any, url: str, data: dict[str, str]) -> Any:
    token = csrf_of(client.get(url).get_data(as_text=True))
    return client.post(url, data={"csrf_token": token, **data})


def post_op(client: Any, page_url: str, url: str) -> Any:
    return client.post(url, data={"csrf_token": csrf_of(client.get(page_url).get_data(as_text=True))})


def save(client: Any, resp: Any) -> str:
    """Confirm a proposal (the redirect ``resp``): returns the diff page's text."""
    assert resp.status_code == 302, resp.get_data(as_text=True)
    url = resp.headers["Location"]
    page = client.get(url).get_data(as_text=True)
    sha = re.search(r'name="base_sha256" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    saved = client.post(url, data={"csrf_token": csrf_of(page), "base_sha256": sha, "save": "1"})
    assert saved.status_code == 200 and "Saved" in saved.get_data(as_text=True)
    return page


def virtual_form(**changes: str) -> dict[str, str]:
    base = {
        "name": "smtp",
        "active": "1",
        "vip": "192.0.2.102",
        "device": "eth0:3",
        "vip_nmask": "255.255.255.0",
        "port": "25",
        "fwmark": "",
        "protocol": "tcp",
        "scheduler": "rr",
        "persistent": "",
        "pmask": "255.255.255.255",
        "send": "",
        "expect": "220",
        "use_regex": "",
        "send_program": "",
        "timeout": "6",
        "reentry": "15",
        "quiesce_server": "1",
        "sorry_server": "",
    }
    return {k: v for k, v in (base | changes).items() if v is not None}


def server_form(**changes: str) -> dict[str, str]:
    return {"name": "mx1", "active": "1", "address": "198.51.100.25", "port": "", "weight": "2"} | changes


STATUS: dict[str, Any] = {
    "node": {"state": "active", "role": "primary", "since": 1.0, "reason": "r", "pid": 7, "mode": "lvs"},
    "partner": {"state": "standby", "alive": True, "paths": {}},
    "services": [
        {"name": "vip 192.0.2.100", "vip": "192.0.2.100", "label": "eth0:1", "port": None, "held": True,
         "probe": "unknown", "probe_reason": None, "probe_latency": None, "last_change": 1.0},
    ],
    "counters": {},
    "events": [],
    "virtuals": [
        {
            "name": "http", "active": True, "vip": "192.0.2.100", "label": "eth0:1", "port": 80,
            "fwmark": None, "protocol": "tcp", "scheduler": "wlc", "persistent": None,
            "sorry_server": "198.51.100.250", "sorry_in_use": False,
            "servers": [
                {"name": "web1", "address": "198.51.100.21", "port": 80, "active": True, "health": "up",
                 "weight": 1, "weight_in_effect": 1, "active_connections": 4, "inactive_connections": 1},
                {"name": "web2", "address": "198.51.100.22", "port": 80, "active": True, "health": "down",
                 "probe_reason": "connection refused", "weight": 2, "weight_in_effect": None,
                 "active_connections": 0, "inactive_connections": 0},
                {"name": "web3", "address": "198.51.100.23", "port": 80, "active": False,
                 "health": "inactive", "weight": 0, "weight_in_effect": None,
                 "active_connections": 0, "inactive_connections": 0},
            ],
        },
        {"name": "https", "active": False, "vip": "192.0.2.100", "port": 443, "fwmark": None,
         "protocol": "tcp", "scheduler": "wlc", "persistent": 300, "servers": []},
    ],
}  # fmt: skip


@pytest.fixture
def running(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pulse answering on the control socket with STATUS."""
    monkeypatch.setattr(webcontrol.pulse_control, "request", lambda *a, **k: {"ok": True, "status": STATUS})


# ------------------------------------------------------------------ menu and list


def test_menu_shows_virtual_servers_for_lvs_and_failover_services_for_fos(env: dict[str, Any]) -> None:
    client, cfg = env["client"], env["cfg"]
    page = client.get("/piranha/control").get_data(as_text=True)
    assert "VIRTUAL SERVERS" in page and "FAILOVER SERVICES" not in page
    cfg.write_text((REPO / "etc" / "lvs.cf.example").read_text())
    page = client.get("/piranha/control").get_data(as_text=True)
    assert "FAILOVER SERVICES" in page and "VIRTUAL SERVERS" not in page


def test_list_without_pulse_says_not_running(env: dict[str, Any]) -> None:
    page = env["client"].get("/piranha/virtual").get_data(as_text=True)
    for name in ("http", "https", "dns"):
        assert f'id="virtual-{name}"' in page
    assert page.count("not running") >= 3 and "192.0.2.101" in page and "(fwmark 5)" in page
    servers = env["client"].get("/piranha/virtual/http/servers").get_data(as_text=True)
    assert "web1" in servers and "198.51.100.22" in servers and "not running" in servers


def test_list_with_pulse_shows_running_state(env: dict[str, Any], running: None) -> None:
    page = env["client"].get("/piranha/virtual").get_data(as_text=True)
    row = page[page.index('id="virtual-http"') :]
    assert "up, 1 of 3 servers up" in row.split("</tr>")[0]
    assert "inactive" in page[page.index('id="virtual-https"') :].split("</tr>")[0]
    assert "not loaded (reload pulse)" in page[page.index('id="virtual-dns"') :].split("</tr>")[0]
    servers = env["client"].get("/piranha/virtual/http/servers").get_data(as_text=True)
    assert ">down<" in servers[servers.index('id="server-web2"') :].split("</tr>")[0]


def test_unknown_virtual_or_server_is_404(env: dict[str, Any]) -> None:
    client = env["client"]
    assert client.get("/piranha/virtual/nope/edit").status_code == 404
    assert client.get("/piranha/virtual/nope/servers").status_code == 404
    assert client.get("/piranha/virtual/http/server/nope/edit").status_code == 404
    assert post_op(client, "/piranha/virtual", "/piranha/virtual/http/explode").status_code == 404


# ------------------------------------------------------------------ virtual servers


def test_add_virtual_diff_then_save(env: dict[str, Any]) -> None:
    client, cfg = env["client"], env["cfg"]
    before = cfg.read_text()
    resp = post_form(client, "/piranha/virtual/new", virtual_form(send="EHLO x\\r\\n"))
    assert resp.status_code == 302
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "+virtual smtp {" in page and "+    address = 192.0.2.102 eth0:3" in page
    assert "+    send = &#34;EHLO x\\r\\n&#34;" in page and "+serial_no = 2" in page
    assert "has no active server" in page  # pulse --check's warning, before saving
    assert cfg.read_text() == before
    save(client, resp)
    new, _ = load(cfg)
    smtp = new.virtuals[-1]
    assert (smtp.name, smtp.port, smtp.scheduler, smtp.send, smtp.quiesce_server, smtp.load_monitor) == (
        "smtp",
        25,
        "rr",
        "EHLO x\r\n",
        True,
        "none",
    )
    assert lvs_refusals(new) == []


def test_edit_virtual_keeps_servers_and_other_keys(env: dict[str, Any]) -> None:
    client, cfg = env["client"], env["cfg"]
    form = client.get("/piranha/virtual/https/edit").get_data(as_text=True)
    assert 'value="300"' in form and 'value="255.255.255.0"' in form
    values = dict(re.findall(r'name="([a-z_]+)" type="(?:text|checkbox)"[^>]*value="([^"]*)"', form))
    assert values["vip"] == "192.0.2.100" and values["device"] == "eth0:1"
    resp = post_form(
        client, "/piranha/virtual/https/edit",
        virtual_form(name="tls", vip="192.0.2.100", device="eth0:1", port="443", scheduler="wlc",
                     persistent="600", pmask="255.255.255.0", expect="", quiesce_server=""),
    )  # fmt: skip
    page = save(client, resp)
    assert "-virtual https {" in page and "+virtual tls {" in page and "+    persistent = 600" in page
    new, _ = load(cfg)
    tls = next(v for v in new.virtuals if v.name == "tls")
    assert [s.name for s in tls.servers] == ["web1", "web2"] and tls.persistent == 600


def test_virtual_field_errors_next_to_fields_write_nothing(env: dict[str, Any]) -> None:
    client, cfg = env["client"], env["cfg"]
    before = cfg.read_bytes()
    resp = post_form(
        client, "/piranha/virtual/new",
        virtual_form(port="70000", vip="192.0.2.300", scheduler="fastest", timeout="x", sorry_server="a.b"),
    )  # fmt: skip
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert "out of range (1-65535)" in re.search(r'id="error-port">([^<]*)', page).group(1)  # type: ignore[union-attr]
    for key in ("vip", "scheduler", "timeout", "sorry_server"):
        assert f'id="error-{key}"' in page, key
    # The reader's own checks land on their field too: fwmark 5 is the dns virtual's.
    resp = post_form(client, "/piranha/virtual/new", virtual_form(fwmark="5", protocol="udp"))
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "already used by virtual" in page.split('id="error-fwmark"')[1]
    resp = post_form(client, "/piranha/virtual/new", virtual_form(name="http"))
    assert "exists already" in resp.get_data(as_text=True).split('id="error-name"')[1]
    resp = post_form(client, "/piranha/virtual/new", virtual_form(use_regex="1", expect="(unclosed"))
    assert "not a valid regular expression" in resp.get_data(as_text=True).split('id="error-expect"')[1]
    assert cfg.read_bytes() == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "smtp\nvirtual evil {"),
        ("name", "smtp}"),
        ("name", "smtp {"),
        ("device", "eth0:3\n}"),
        ("send", "HELO\nfwmark = 9"),
        ("send_program", "/bin/true\r\n}"),
        ("expect", "220\u2028x"),
        ("sorry_server", "198.51.100.9 }"),
    ],
)
def test_no_value_adds_a_line_or_a_block(env: dict[str, Any], field: str, value: str) -> None:
    client, cfg = env["client"], env["cfg"]
    before = cfg.read_bytes()
    resp = post_form(client, "/piranha/virtual/new", virtual_form(**{field: value}))
    assert resp.status_code == 422 and f'id="error-{field}"' in resp.get_data(as_text=True)
    assert cfg.read_bytes() == before


def test_quoted_text_keeps_braces_as_characters(env: dict[str, Any]) -> None:
    """A '}' or '"' in send is text inside the writer's quotes: no block ends, none starts."""
    client, cfg = env["client"], env["cfg"]
    save(client, post_form(client, "/piranha/virtual/new", virtual_form(send='x } "y" {', expect="}")))
    new, _ = load(cfg)
    assert [v.name for v in new.virtuals] == ["http", "https", "dns", "smtp"]
    assert (new.virtuals[-1].send, new.virtuals[-1].expect, new.virtuals[-1].servers) == (
        'x } "y" {',
        "}",
        (),
    )


def test_virtual_activate_deactivate_delete(env: dict[str, Any]) -> None:
    client, cfg = env["client"], env["cfg"]
    page = save(client, post_op(client, "/piranha/virtual", "/piranha/virtual/dns/deactivate"))
    assert "deactivated" in page
    new, _ = load(cfg)
    assert [v.active for v in new.virtuals] == [True, True, False]
    save(client, post_op(client, "/piranha/virtual", "/piranha/virtual/dns/activate"))
    assert load(cfg)[0].virtuals[2].active
    save(client, post_op(client, "/piranha/virtual", "/piranha/virtual/https/delete"))
    assert [v.name for v in load(cfg)[0].virtuals] == ["http", "dns"]


# ------------------------------------------------------------------ real servers


def test_add_edit_server(env: dict[str, Any]) -> None:
    client, cfg = env["client"], env["cfg"]
    page = save(client, post_form(client, "/piranha/virtual/dns/server/new", server_form(port="5353")))
    assert "+    server mx1 {" in page and "+        weight = 2" in page
    dns = load(cfg)[0].virtuals[2]
    assert [(s.name, str(s.address), s.port, s.weight) for s in dns.servers][-1] == (
        "mx1",
        "198.51.100.25",
        5353,
        2,
    )
    form = client.get("/piranha/virtual/dns/server/ns1/edit").get_data(as_text=True)
    assert 'value="198.51.100.53"' in form
    save(client, post_form(client, "/piranha/virtual/dns/server/ns1/edit",
                           server_form(name="ns1", address="198.51.100.53", weight="5")))  # fmt: skip
    dns = load(cfg)[0].virtuals[2]
    assert [(s.name, s.weight, s.port) for s in dns.servers] == [
        ("ns1", 5, None),
        ("ns2", 1, None),
        ("mx1", 2, 5353),
    ]


BAD_WEIGHTS = [
    ("-1", "out of range (>= 0)"),
    ("heavy", "is not an integer"),
    ("", "required"),
    ("1\n}", "must not contain newline"),
]


@pytest.mark.parametrize(("weight", "message"), BAD_WEIGHTS)
def test_bad_weight_error_next_to_field_writes_nothing(
    env: dict[str, Any], weight: str, message: str
) -> None:
    client, cfg = env["client"], env["cfg"]
    before = cfg.read_bytes()
    resp = post_form(client, "/piranha/virtual/http/server/web1/edit", server_form(weight=weight))
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert message in html.unescape(re.search(r'id="error-weight">([^<]*)', page).group(1))  # type: ignore[union-attr]
    assert cfg.read_bytes() == before


def test_server_name_taken_and_bad_address(env: dict[str, Any]) -> None:
    client = env["client"]
    resp = post_form(client, "/piranha/virtual/http/server/new", server_form(name="web2", address="1.2.3"))
    page = resp.get_data(as_text=True)
    assert "exists already" in page.split('id="error-name"')[1]
    assert "not an IPv4 address" in page.split('id="error-address"')[1]


def test_server_deactivate_activate_delete(env: dict[str, Any]) -> None:
    client, cfg = env["client"], env["cfg"]
    servers = "/piranha/virtual/http/servers"
    page = save(client, post_op(client, servers, "/piranha/virtual/http/server/web2/deactivate"))
    assert "real server &#39;web2&#39; of virtual server &#39;http&#39; deactivated" in page
    assert "-        active = 1" in page and "+        active = 0" in page
    assert [s.active for s in load(cfg)[0].virtuals[0].servers] == [True, False, False]
    save(client, post_op(client, servers, "/piranha/virtual/http/server/web3/activate"))
    assert [s.active for s in load(cfg)[0].virtuals[0].servers] == [True, False, True]
    save(client, post_op(client, servers, "/piranha/virtual/http/server/web1/delete"))
    assert [s.name for s in load(cfg)[0].virtuals[0].servers] == ["web2", "web3"]


def test_block_of_knows_server_blocks() -> None:
    lines = ["serial_no = 1", "virtual web {", "    port = 80", "    server a {", "        weight = x",
             "    }", "    active = 1", "}", "primary = 1.2.3.4"]  # fmt: skip
    assert [edits._block_of(lines, n) for n in range(1, 10)] == [
        (),
        ("web",),
        ("web",),
        ("web", "a"),
        ("web", "a"),
        ("web", "a"),
        ("web",),
        ("web",),
        (),
    ]


# ------------------------------------------------------------------ global settings


def test_global_settings_lvs_keys(env: dict[str, Any]) -> None:
    client, cfg = env["client"], env["cfg"]
    form = client.get("/piranha/global").get_data(as_text=True)
    assert 'value="198.51.100.254"' in form and 'value="eth1:1"' in form and 'value="900"' in form
    data = {
        "primary": "192.0.2.10", "network": "nat", "service": "lvs", "nat_router": "198.51.100.1",
        "nat_router_device": "eth1:2", "nat_nmask": "255.255.255.0", "syncdaemon": "1",
        "syncd_iface": "eth1", "syncd_id": "3", "tcp_timeout": "600", "tcpfin_timeout": "",
        "udp_timeout": "60",
    }  # fmt: skip
    page = save(client, post_form(client, "/piranha/global", data))
    assert "+nat_router = 198.51.100.1 eth1:2" in page and "-tcpfin_timeout = 120" in page
    new, _ = load(cfg)
    assert (new.syncdaemon, new.syncd_iface, new.syncd_id, new.tcp_timeout, new.tcpfin_timeout) == (
        True,
        "eth1",
        3,
        600,
        None,
    )
    before = cfg.read_bytes()
    bad = data | {"nat_router": "198.51.100.999", "udp_timeout": "-5", "primary": "x"}
    resp = post_form(client, "/piranha/global", bad)
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422
    for key in ("nat_router", "udp_timeout", "primary"):
        assert f'id="error-{key}"' in page, key
    resp = post_form(client, "/piranha/global", data | {"nat_router_device": ""})
    assert 'id="error-nat_router_device"' in resp.get_data(as_text=True)
    assert cfg.read_bytes() == before


def test_fos_global_settings_have_no_lvs_keys(env: dict[str, Any]) -> None:
    env["cfg"].write_text((REPO / "etc" / "lvs.cf.example").read_text())
    form = env["client"].get("/piranha/global").get_data(as_text=True)
    assert 'id="f-primary"' in form and "nat_router" not in form and "syncdaemon" not in form


# ------------------------------------------------------------------ CSRF and monitoring


@pytest.mark.parametrize(
    "url",
    [
        "/piranha/virtual/new",
        "/piranha/virtual/http/edit",
        "/piranha/virtual/http/delete",
        "/piranha/virtual/http/deactivate",
        "/piranha/virtual/http/server/new",
        "/piranha/virtual/http/server/web1/edit",
        "/piranha/virtual/http/server/web1/deactivate",
        "/piranha/virtual/http/server/web1/delete",
        "/piranha/global",
    ],
)
def test_post_without_csrf_token_refused(env: dict[str, Any], url: str) -> None:
    client, cfg = env["client"], env["cfg"]
    before = cfg.read_bytes()
    resp = client.post(url, data=virtual_form() | server_form())
    assert resp.status_code == 400 and "CSRF" in resp.get_data(as_text=True)
    resp = client.post(url, data={"csrf_token": "forged", **server_form()})
    assert resp.status_code == 400
    assert cfg.read_bytes() == before


def test_monitoring_shows_routing_table(env: dict[str, Any], running: None) -> None:
    page = env["client"].get("/piranha/control").get_data(as_text=True)
    table = page[page.index('id="routing"') :].split("</table>")[0]
    web1 = table[table.index('id="route-http-web1"') :].split("</tr>")[0]
    assert "198.51.100.21:80" in web1 and "<td>4</td><td>1</td>" in web1 and ">up<" in web1
    web2 = table[table.index('id="route-http-web2"') :].split("</tr>")[0]
    assert "<td>-</td>" in web2 and "down (connection refused)" in web2
    assert "TCP 192.0.2.100:80 wlc" in table and "sorry server 198.51.100.250" in table
    assert "persistent 300" in table and "inactive" in table
    # The addresses a director holds have no port and no probe of their own (docs/status.md).
    held = page[page.index('id="services"') :].split("</table>")[0]
    assert "192.0.2.100 eth0:1</td>" in held and "None" not in held and "real servers" in held


def test_monitoring_without_virtuals_has_no_routing_table(env: dict[str, Any], monkeypatch: Any) -> None:
    fos = {k: v for k, v in STATUS.items() if k != "virtuals"}
    monkeypatch.setattr(webcontrol.pulse_control, "request", lambda *a, **k: {"ok": True, "status": fos})
    page = env["client"].get("/piranha/control").get_data(as_text=True)
    assert 'id="status"' in page and 'id="routing"' not in page
