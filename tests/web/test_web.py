"""piranha-passwd and piranha-gui logic through Flask's test client (no socket, no browser)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import html
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from guirig import EXAMPLE, FAST, PASSWORD, REPO, Clock, csrf_of, settings_in

from pyrhfos.config import load, loads, write
from pyrhfos.web import app as webapp
from pyrhfos.web import auth, edits, passwd
from pyrhfos.web import control as webcontrol

# ------------------------------------------------------------------ piranha-passwd


def test_passwd_file_mode_format_and_verify(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "sub" / "piranha.passwd"
    old = os.umask(0)  # even with a permissive umask the file must be 0600
    try:
        assert passwd.main(["--passwd-file", str(path), PASSWORD]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    record = path.read_text().strip()
    assert PASSWORD not in record
    scheme, n, r, p, salt, digest = record.split("$")
    assert (scheme, int(n), len(bytes.fromhex(salt)), len(bytes.fromhex(digest))) == ("scrypt", 2**14, 16, 32)
    assert passwd.verify(path, PASSWORD)
    assert not passwd.verify(path, PASSWORD + "x")
    assert not passwd.verify(path, "")
    # Salted: the same password twice gives different records.
    assert passwd.hash_password(PASSWORD, **FAST) != passwd.hash_password(PASSWORD, **FAST)
    assert [p.name for p in path.parent.iterdir()] == ["piranha.passwd"]  # no temporary file left


def test_passwd_replaced_atomically_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "piranha.passwd"
    passwd.set_password(path, PASSWORD)
    inode = path.stat().st_ino
    passwd.set_password(path, "another password")
    assert path.stat().st_ino != inode  # a new file renamed over the old one, not rewritten in place
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert passwd.verify(path, "another password") and not passwd.verify(path, PASSWORD)


def test_passwd_refusals(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "piranha.passwd"
    assert passwd.main(["--passwd-file", str(path), "short"]) == 1
    assert passwd.main(["--passwd-file", str(path), "bad\nline here"]) == 1
    assert not path.exists()
    assert "nothing changed" in capsys.readouterr().err
    assert not passwd.verify(path, "anything")  # no file: no password works, there is no default
    path.write_text("scrypt$2$1$1$zz$zz\n")
    assert not passwd.verify(path, "anything")  # a malformed record never matches


def test_passwd_prompts_twice(tmp_path: Path) -> None:
    path = tmp_path / "piranha.passwd"
    code = "import sys, getpass; getpass.getpass = lambda p='': sys.stdin.readline().rstrip('\\n');"
    code += "from pyrhfos.web.passwd import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "--passwd-file", str(path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    differ = subprocess.run(
        argv, input="one password\nother password\n", text=True, capture_output=True, env=env
    )
    assert differ.returncode == 1 and "differ" in differ.stderr and not path.exists()
    same = subprocess.run(argv, input=f"{PASSWORD}\n{PASSWORD}\n", text=True, capture_output=True, env=env)
    assert same.returncode == 0, same.stderr
    assert passwd.verify(path, PASSWORD)


# ------------------------------------------------------------------ the app


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    settings = settings_in(tmp_path, initscript=str(tmp_path / "initscript"))
    cfg, pw = settings.config, settings.passwd_file
    cfg.chmod(0o640)
    clock = Clock()
    app = webapp.create_app(settings, auth.Throttle(clock=clock))
    app.config["TESTING"] = True
    return {"app": app, "client": app.test_client(), "cfg": cfg, "pw": pw, "clock": clock, "tmp": tmp_path}


def login(client: Any, password: str = PASSWORD, user: str = "piranha") -> Any:
    page = client.get("/piranha/login")
    token = csrf_of(page.get_data(as_text=True))
    return client.post("/piranha/login", data={"csrf_token": token, "username": user, "password": password})


def post_form(client: Any, url: str, data: dict[str, str]) -> Any:
    token = csrf_of(client.get(url).get_data(as_text=True))
    return client.post(url, data={"csrf_token": token, **data})


def failover_form(**changes: str) -> dict[str, str]:
    base = {
        "name": "db1",
        "active": "1",
        "vip": "192.168.2.12",
        "device": "eth0:2",
        "vip_nmask": "",
        "port": "5432",
        "send": "",
        "expect": "",
        "timeout": "5",
        "start_cmd": "/etc/rc.d/init.d/postgresql start",
        "stop_cmd": "/etc/rc.d/init.d/postgresql stop",
    }
    return {**base, **changes}


def redundancy_form(backup: str, keepalive: str, deadtime: str) -> dict[str, str]:
    return {
        "backup_active": "1",
        "backup": backup,
        "keepalive": keepalive,
        "deadtime": deadtime,
        "heartbeat_port": "539",
    }


def test_no_password_set_nobody_gets_in(env: dict[str, Any]) -> None:
    env["pw"].unlink()
    client = env["client"]
    page = client.get("/piranha/login").get_data(as_text=True)
    assert "No password has been set" in page and "piranha-passwd" in page
    for guess in ("", "piranha", "q", "password"):
        resp = login(client, guess)
        assert resp.status_code == 403
    assert client.get("/piranha/control").status_code == 302  # still to the login page


def test_login_wrong_then_right_and_pages_need_login(env: dict[str, Any]) -> None:
    client = env["client"]
    for url in ("/piranha/control", "/piranha/global", "/piranha/redundancy", "/piranha/failover"):
        resp = client.get(url)
        assert resp.status_code == 302 and resp.headers["Location"].endswith("/piranha/login")
    assert login(client, "wrong password").status_code == 403
    assert login(client, PASSWORD, user="root").status_code == 403
    resp = login(client)
    assert resp.status_code == 302
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/piranha" in cookie
    page = client.get("/piranha/control")
    assert page.status_code == 200
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert "<script" not in page.get_data(as_text=True)
    assert "No pulse answers" in page.get_data(as_text=True)  # no daemon: said plainly


def test_login_throttled_after_failures(env: dict[str, Any]) -> None:
    client, clock = env["client"], env["clock"]
    for _ in range(5):
        assert login(client, "nope nope").status_code == 403
    refused = login(client)  # the right password, but locked out now
    assert refused.status_code == 429 and "Too many failed logins" in refused.get_data(as_text=True)
    clock.t += 6  # past the first lock-out (5 s)
    assert login(client, "nope nope").status_code == 403
    clock.t += 6  # the next one is 10 s: still locked
    assert login(client).status_code == 429
    clock.t += 5
    assert login(client).status_code == 302
    assert env["app"].extensions["piranha"]["throttle"].wait("127.0.0.1") == 0


def test_throttle_grows_and_is_per_address() -> None:
    clock = Clock()
    t = auth.Throttle(clock=clock, free=2, base=1, cap=8)
    for _ in range(2):
        t.failure("a")
    assert t.wait("a") == 1 and t.wait("b") == 0
    waits = []
    for _ in range(5):
        t.failure("a")
        waits.append(t.wait("a"))
    assert waits == [2, 4, 8, 8, 8]
    t.success("a")
    assert t.wait("a") == 0


def test_post_without_csrf_token_refused(env: dict[str, Any]) -> None:
    client = env["client"]
    before = env["cfg"].read_bytes()
    # Even the login form: a forged cross-site login is refused.
    assert (
        client.post("/piranha/login", data={"username": "piranha", "password": PASSWORD}).status_code == 400
    )
    assert login(client).status_code == 302
    resp = client.post("/piranha/failover/new", data=failover_form())
    assert resp.status_code == 400 and "CSRF" in resp.get_data(as_text=True)
    assert client.post("/piranha/failover/web1/delete", data={}).status_code == 400
    assert client.post("/piranha/control/stop", data={"csrf_token": "forged"}).status_code == 400
    assert env["cfg"].read_bytes() == before


def test_add_failover_diff_then_save_backup_and_serial(env: dict[str, Any]) -> None:
    client, cfg = env["client"], env["cfg"]
    login(client)
    before = cfg.read_text()
    resp = post_form(client, "/piranha/failover/new", failover_form(send="PING\\r\\n", expect="PONG"))
    assert resp.status_code == 302, resp.get_data(as_text=True)
    confirm_url = resp.headers["Location"]
    page = client.get(confirm_url).get_data(as_text=True)
    assert "+failover db1 {" in page and "+    port = 5432" in page
    assert "-serial_no = 1" in page and "+serial_no = 2" in page
    assert cfg.read_text() == before  # nothing written before the confirmation
    token = csrf_of(page)
    sha = re.search(r'name="base_sha256" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    saved = client.post(confirm_url, data={"csrf_token": token, "base_sha256": sha, "save": "1"})
    assert saved.status_code == 200 and "Saved" in saved.get_data(as_text=True)
    new, _ = load(cfg)
    assert new.serial_no == 2
    db1 = next(f for f in new.failovers if f.name == "db1")
    assert (str(db1.address), db1.port, db1.send, db1.expect) == (
        "192.168.2.12 eth0:2",
        5432,
        "PING\r\n",
        "PONG",
    )
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o640  # the original mode kept
    # lvs.cf.lock is the save's lock (shared with pulse sync), no backup.
    backups = [p for p in env["tmp"].iterdir() if p.name.startswith("lvs.cf.") and p.name != "lvs.cf.lock"]
    assert len(backups) == 1 and re.fullmatch(r"lvs\.cf\.\d{8}-\d{6}", backups[0].name)
    assert backups[0].read_text() == before and stat.S_IMODE(backups[0].stat().st_mode) == 0o640
    # The same confirmation cannot be replayed.
    again = client.post(confirm_url, data={"csrf_token": token, "base_sha256": sha, "save": "1"})
    assert again.status_code == 404


def test_concurrent_change_is_refused_not_overwritten(env: dict[str, Any]) -> None:
    client, cfg = env["client"], env["cfg"]
    login(client)
    resp = post_form(client, "/piranha/redundancy", redundancy_form("192.168.1.11", "3", "12"))
    assert resp.status_code == 302, resp.get_data(as_text=True)
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "+keepalive = 3" in page
    cfg.write_text(cfg.read_text().replace("deadtime = 10", "deadtime = 11"))  # someone else's edit
    other = cfg.read_text()
    sha = re.search(r'name="base_sha256" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    saved = client.post(resp.headers["Location"], data={"csrf_token": csrf_of(page), "base_sha256": sha})
    assert saved.status_code == 409 and "changed since" in saved.get_data(as_text=True)
    assert cfg.read_text() == other


def test_bad_port_shows_error_and_writes_nothing(env: dict[str, Any]) -> None:
    client, cfg = env["client"], env["cfg"]
    login(client)
    before = cfg.read_bytes()
    resp = post_form(client, "/piranha/failover/new", failover_form(port="99999"))
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    assert 'id="error-port"' in page and "99999 is out of range (1-65535)" in page
    resp = post_form(client, "/piranha/failover/web1/edit", failover_form(name="web1", port="http"))
    assert resp.status_code == 422 and "is not an integer" in resp.get_data(as_text=True)
    assert cfg.read_bytes() == before
    assert [p.name for p in env["tmp"].iterdir() if p.name.startswith("lvs.cf")] == ["lvs.cf"]


@pytest.mark.parametrize(
    "field,value",
    [
        ("start_cmd", "/bin/true\nfailover evil {"),
        ("stop_cmd", 'x"\nprimary = 6.6.6.6'),
        ("start_cmd", "/bin/true\u2028primary = 6.6.6.6"),  # a line break for splitlines()
        ("stop_cmd", "a\x85b"),  # NEL
        ("expect", "ok\u200b"),  # zero-width space: text the admin cannot see
        ("name", "evil {"),
        ("start_cmd", "run\rthis"),
        ("stop_cmd", "nul\x00byte"),
        ("device", "eth0:1 }"),
        ("vip", '192.168.2.12"'),
    ],
)
def test_no_field_can_add_a_line_or_block(env: dict[str, Any], field: str, value: str) -> None:
    client, cfg = env["client"], env["cfg"]
    login(client)
    before = cfg.read_bytes()
    resp = post_form(client, "/piranha/failover/new", failover_form(**{field: value}))
    assert resp.status_code == 422
    assert f'id="error-{field}"' in resp.get_data(as_text=True)
    assert cfg.read_bytes() == before


def test_escapes_in_values_stay_inside_their_quotes() -> None:
    cfg, _ = load(EXAMPLE)
    new = edits.edit_failover(
        cfg, None, failover_form(send="a\\nfailover x \\x7b", start_cmd="echo 'hi' \\ there")
    )
    text = write(new)
    # web1 and db1 open blocks; the smuggled "failover x {" stays escaped inside send's quotes.
    assert [line for line in text.splitlines() if line.startswith("failover ")] == [
        "failover web1 {",
        "failover db1 {",
    ]
    assert 'send = "a\\nfailover x {"' in text
    again = next(f for f in loads(text)[0].failovers if f.name == "db1")
    assert again.send == "a\nfailover x {" and again.start_cmd == "echo 'hi' \\ there"


def test_reader_errors_placed_next_to_fields(env: dict[str, Any]) -> None:
    client = env["client"]
    login(client)
    # keepalive >= deadtime: the reader's rule, reported at the deadtime field.
    resp = post_form(client, "/piranha/redundancy", redundancy_form("192.168.1.11", "20", "10"))
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422 and 'id="error-deadtime"' in page and "must be greater than" in page
    # backup equal to primary.
    resp = post_form(client, "/piranha/redundancy", redundancy_form("192.168.1.10", "2", "10"))
    assert 'id="error-backup"' in resp.get_data(as_text=True)
    # A VIP used twice: at the vip field of the new block.
    resp = post_form(client, "/piranha/failover/new", failover_form(vip="192.168.2.11"))
    page = html.unescape(resp.get_data(as_text=True))
    assert 'id="error-vip"' in page and "already used by failover 'web1'" in page
    # A bad regular expression.
    resp = post_form(client, "/piranha/failover/new", failover_form(expect="(", use_regex="1"))
    assert 'id="error-expect"' in resp.get_data(as_text=True)


def test_global_delete_and_deactivate_go_through_confirm(env: dict[str, Any]) -> None:
    client, cfg = env["client"], env["cfg"]
    login(client)
    resp = post_form(
        client, "/piranha/global", {"primary": "192.168.1.20", "network": "direct", "service": "fos"}
    )
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "+primary = 192.168.1.20" in page and "+network = direct" in page
    # web1 is the only active service: deactivating it is refused by the reader (fos needs one).
    listing = client.get("/piranha/failover").get_data(as_text=True)
    resp = client.post("/piranha/failover/web1/deactivate", data={"csrf_token": csrf_of(listing)})
    assert resp.status_code == 422 and "needs at least one active failover" in resp.get_data(as_text=True)
    resp = client.post("/piranha/failover/web1/delete", data={"csrf_token": csrf_of(listing)})
    assert resp.status_code == 422
    assert load(cfg)[0].serial_no == 1


def test_control_actions_use_argv_without_shell(env: dict[str, Any]) -> None:
    client, tmp = env["client"], env["tmp"]
    script = tmp / "initscript"
    script.write_text('#!/bin/sh\necho "init $1 called with $# args"\nexit 3\n')
    script.chmod(0o755)
    login(client)
    page = client.get("/piranha/control").get_data(as_text=True)
    for action in ("start", "stop", "reload", "sync"):
        assert f'id="action-{action}"' in page
    resp = client.post("/piranha/control/stop", data={"csrf_token": csrf_of(page)})
    text = resp.get_data(as_text=True)
    assert "init stop called with 1 args" in text and "exit status <strong>3</strong>" in text
    assert client.post("/piranha/control/rm%20-rf", data={"csrf_token": csrf_of(page)}).status_code == 404
    argv = webcontrol.action_argv(env["app"].extensions["piranha"]["settings"], "sync")
    assert argv[-5:] == ["sync", "-c", str(env["cfg"]), "--socket", str(tmp / "none.sock")]


def test_broken_config_is_not_editable(env: dict[str, Any]) -> None:
    client, cfg = env["client"], env["cfg"]
    cfg.write_text("primary = nonsense\n")
    login(client)
    page = client.get("/piranha/global").get_data(as_text=True)
    assert "has errors" in page and "not an IPv4 address" in page and '<form method="post">' not in page


def test_listen_option() -> None:
    assert webapp.parse_listen("192.0.2.100:3636") == ("192.0.2.100", 3636)
    with pytest.raises(argparse.ArgumentTypeError):
        webapp.parse_listen("3636")


def test_when_filter_shows_local_time_and_age() -> None:
    """The templates' ``when``: the status formatter's local time, plus the age; never a traceback."""
    from pyrhfos.daemon import status

    stamp = time.time() - 42
    assert webapp.when_ago(stamp) == f"{status.when(stamp)} (42 s ago)"
    assert webapp.when_ago(time.time() + 600).endswith(" (0 s ago)")  # a partner's clock ahead
    assert webapp.when_ago(None) == "never"
    assert webapp.when_ago("soon") == "?"  # type: ignore[arg-type]  # JSON from the socket: any type
    assert webapp.when_ago(float("nan")) == "?"


STATUS = {
    "schema": 1,
    "node": {"role": "primary", "state": "active", "since": 1.7e9, "reason": "partner silent", "pid": 42,
             "config": "/etc/sysconfig/ha/lvs.cf", "serial": 1, "hold_down": 0.0},
    "partner": {"addresses": ["192.0.2.200"], "paths": {"192.0.2.200": {"last_beat_age": 0.4}},
                "state": "standby", "alive": True, "hold_down": False, "protocol": "pyrhfos",
                "config_match": False},
    "services": [{"name": "web1", "vip": "192.0.2.11", "label": "eth0:1", "port": 80, "held": True,
                  "probe": "ok", "probe_reason": "expected answer", "probe_latency": 0.002,
                  "last_change": 1.7e9}],
    "counters": {"beats-sent": 10, "beats-received": 9},
}  # fmt: skip


def test_control_page_renders_daemon_status(env: dict[str, Any]) -> None:
    """A stand-in daemon on a Unix socket in tmp_path (no network) answers as pulse does."""
    import json
    import socket
    import threading

    path = str(env["tmp"] / "pulse.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    srv.settimeout(10)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = srv.accept()
                with conn:
                    conn.recv(1024)
                    conn.sendall(json.dumps({"ok": True, "status": STATUS}).encode() + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        env["app"].extensions["piranha"]["settings"].socket = path
        client = env["client"]
        login(client)
        page = html.unescape(client.get("/piranha/control").get_data(as_text=True))
        assert 'id="node-state">active<' in page and 'id="partner-state">standby<' in page
        assert "config mismatch" in page and "192.0.2.11 eth0:1:80" in page and "this node" in page
        assert "beats-sent 10" in page and '<meta http-equiv="refresh"' in page
    finally:
        with contextlib.suppress(OSError):
            srv.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone would not)
        srv.close()
        thread.join(5)


def test_backup_name_gets_a_counter_when_taken(tmp_path: Path) -> None:
    import datetime

    now = datetime.datetime(2026, 1, 2, 3, 4, 5)
    path = tmp_path / "lvs.cf"
    first = edits.backup_name(path, now)
    assert first.name == "lvs.cf.20260102-030405"
    first.write_text("x")
    second = edits.backup_name(path, now)
    assert second.name == "lvs.cf.20260102-030405.1"


@pytest.mark.parametrize(
    "field,value",
    [("expect", '{"status": "ok"}'), ("send", "a{b}"), ("start_cmd", '/usr/bin/logger "web1 up"')],
)
def test_quotes_and_braces_in_free_text_stay_inside_the_quotes(
    env: dict[str, Any], field: str, value: str
) -> None:
    """Quoted and escaped by the writer, they are characters, not structure: saved, and read back."""
    client, cfg = env["client"], env["cfg"]
    login(client)
    resp = post_form(client, "/piranha/failover/new", failover_form(**{field: value}))
    assert resp.status_code == 302, resp.get_data(as_text=True)
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    token = resp.headers["Location"].rsplit("/", 1)[1]
    base = re.search(r'name="base_sha256" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    done = post_form(client, f"/piranha/confirm/{token}", {"save": "1", "base_sha256": base})
    assert done.status_code == 200
    new, _ = load(cfg)
    assert [f.name for f in new.failovers] == ["web1", "db1"]
    assert getattr(new.failovers[1], field) == value
    # ... and the form shows it again, editable (no refusal of its own value).
    again = post_form(client, "/piranha/failover/db1/edit", failover_form(name="db1", **{field: value}))
    assert again.status_code == 302


def test_logout_ends_the_session_for_a_copied_cookie(env: dict[str, Any]) -> None:
    client = env["client"]
    login(client)
    assert client.get("/piranha/control").status_code == 200
    stolen = client.get_cookie("piranha_session", path="/piranha")
    assert stolen is not None
    token = csrf_of(client.get("/piranha/control").get_data(as_text=True))
    assert client.post("/piranha/logout", data={"csrf_token": token}).status_code == 302
    client.set_cookie("piranha_session", stolen.value, path="/piranha")  # replayed after logout
    assert client.get("/piranha/control").status_code == 302


def test_session_idle_and_absolute_limits() -> None:
    now = [0.0]
    sessions = auth.Sessions(clock=lambda: now[0], idle=60, absolute=300)
    sid = sessions.start()
    for _ in range(5):
        now[0] += 50
        assert sessions.touch(sid)  # in use: alive
    now[0] += 61
    assert not sessions.touch(sid)  # idle too long
    sid = sessions.start()
    while now[0] < 700:
        now[0] += 50
        if not sessions.touch(sid):
            break
    assert now[0] - 361 <= 300  # never past the absolute limit
    sessions.end(sid)
    assert not sessions.touch(sid)


@pytest.mark.parametrize(
    "record",
    [
        "scrypt$3$8$1$00$00",  # n not a power of two: hashlib would raise
        f"scrypt${2**20}$32$1$00$00",  # 4 GiB
        f"scrypt${2**16}$8$16$00$00",  # 64x the work
        "scrypt$x$8$1$00$00",
        "md5$1$2$3$4$5",
        "",
    ],
)
def test_damaged_passwd_file_refuses_login_cleanly(tmp_path: Path, record: str) -> None:
    assert passwd.verify_hash(record, "anything") is False


def test_throttle_counts_before_checking_and_keys_ipv6_by_64() -> None:
    t = auth.Throttle(clock=lambda: 0.0, free=2)
    assert t.key("2001:db8::1") == t.key("2001:db8::ffff") != t.key("2001:db8:0:1::1")
    t.failure("2001:db8::1")
    t.failure("2001:db8::2")
    assert t.wait("2001:db8::3") > 0  # the same /64
    assert t.wait("192.0.2.7") == 0


def test_probe_strings_outside_latin1_are_refused_by_the_reader() -> None:
    """Probes send bytes: a character above U+00FF would stop the probe, not fail the check."""
    from pyrhfos.config import ConfigError

    text = write(load(EXAMPLE)[0]).replace('send = "', 'send = "\u20ac', 1)
    with pytest.raises(ConfigError, match="U\\+20AC is not a byte"):
        loads(text)


def test_save_through_a_symlink_edits_the_real_file(env: dict[str, Any]) -> None:
    cfg: Path = env["cfg"]
    real = cfg.with_name("real-lvs.cf")
    cfg.rename(real)
    cfg.symlink_to(real.name)
    current = edits.read_current(cfg)
    assert current.cfg is not None
    proposal = edits.propose(current, dataclasses.replace(current.cfg, keepalive=3), "test")
    edits.save(cfg, proposal)
    assert cfg.is_symlink() and cfg.resolve() == real.resolve()
    assert load(real)[0].keepalive == 3
