"""piranha-gui's server and command line: waitress's limits on a real loopback socket, the listen
default, and --behind-tls-proxy (issue 13, items 4 and 5).
"""

from __future__ import annotations

import contextlib
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from guirig import PASSWORD, settings_in

from pyrhfos.web import app as webapp
from pyrhfos.web import auth


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    """The server main() runs (make_server), on 127.0.0.1 and a free port, in a thread."""
    server = webapp.make_server(webapp.create_app(settings_in(tmp_path)), "127.0.0.1", 0, 2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.task_dispatcher.shutdown(timeout=2)
        for dispatcher in list(server._map.values()):
            with contextlib.suppress(OSError):
                dispatcher.close()
        thread.join(5)


def get_login(port: int, timeout: float) -> bytes:
    """A real request from 127.0.0.1: the first line of its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET /piranha/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        return s.makefile("rb").readline()


def test_big_unauthenticated_post_refused_before_it_is_buffered(
    served: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """waitress spooled bodies past 512 KiB to a temporary file (up to 1 GiB) before Flask's 413."""
    spooled: list[Any] = []
    real = tempfile.TemporaryFile

    def spy(*a: Any, **kw: Any) -> Any:
        spooled.append(a)
        return real(*a, **kw)

    monkeypatch.setattr(tempfile, "TemporaryFile", spy)  # waitress's buffers import it when they spool
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    size = 16 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", served.effective_port), timeout=10) as s:
        s.sendall(
            b"POST /piranha/login HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % size
        )
        s.settimeout(2)
        answer = b""
        with contextlib.suppress(TimeoutError):
            answer = s.recv(200)  # refused on the Content-Length alone: no need to send the body
        if not answer:  # not refused yet: what it did with the body is what counts
            s.settimeout(10)
            chunk = b"a" * 65536
            with contextlib.suppress(OSError):
                for _ in range(size // len(chunk)):
                    s.sendall(chunk)
                answer = s.recv(200)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert spooled == []  # nothing of it was written to disk
    assert get_login(served.effective_port, 5).startswith(b"HTTP/1.1 200")


def test_exactly_flasks_limit_still_reaches_flask(served: Any) -> None:
    """waitress's cap matches Flask's MAX_CONTENT_LENGTH: a 64 KiB form is Flask's to judge (CSRF: 400)."""
    body = b"x=" + b"a" * (64 * 1024 - 2)
    with socket.create_connection(("127.0.0.1", served.effective_port), timeout=10) as s:
        s.sendall(
            b"POST /piranha/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        assert s.makefile("rb").readline().startswith(b"HTTP/1.1 400")


def test_idle_connections_past_the_cap_do_not_lock_out_a_real_request(served: Any) -> None:
    """More idle connections than waitress accepts (half of them with half-sent headers, as a slow
    sender keeps them), all from one other loopback address: the real request is still answered,
    at once, and the server holds no more than its cap."""
    port = int(served.effective_port)
    count = served.adj.connection_limit + 10
    idle: list[socket.socket] = []
    try:
        for i in range(count):
            s = socket.socket()
            s.settimeout(5)
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", port))
            if i % 2:
                s.sendall(b"GET /piranha/login HTTP/1.1\r\nHost: localhost\r\n")
            idle.append(s)
        time.sleep(0.5)  # the server has accepted what it will
        started = time.monotonic()
        assert get_login(port, 5).startswith(b"HTTP/1.1 200")
        assert time.monotonic() - started < 3
        closed = 0
        for s in idle:
            s.settimeout(0.05)
            with contextlib.suppress(TimeoutError):
                if s.recv(1) == b"":
                    closed += 1
        assert closed >= count - webapp.MAX_CONNECTIONS
    finally:
        for s in idle:
            s.close()


def test_server_limits_are_the_ones_served(served: Any) -> None:
    adj = served.adj
    assert adj.max_request_body_size == 64 * 1024 + 1  # waitress refuses >= this; Flask > 64 KiB
    assert adj.channel_timeout <= 30 and adj.connection_limit <= 100
    assert webapp.create_app(settings_in(Path(tempfile.mkdtemp()))).config["MAX_CONTENT_LENGTH"] == 64 * 1024


# ------------------------------------------------------------------ listen default, TLS proxy


class FakeServer:
    def run(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_default_listen_is_loopback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Any) -> None:
    seen: dict[str, Any] = {}

    def fake(app: Any, host: str, port: int, threads: int) -> FakeServer:
        seen.update(host=host, port=port, proxy=app.extensions["piranha"]["settings"].behind_tls_proxy)
        return FakeServer()

    monkeypatch.setattr(webapp, "make_server", fake)
    s = settings_in(tmp_path)
    args = ["--config", str(s.config), "--passwd-file", str(s.passwd_file)]
    assert webapp.main(args) == 0
    assert seen == {"host": "127.0.0.1", "port": 3636, "proxy": False}
    assert "clear HTTP" not in capsys.readouterr().err
    assert webapp.main([*args, "--listen", "192.0.2.100:3636", "--behind-tls-proxy"]) == 0
    assert seen == {"host": "192.0.2.100", "port": 3636, "proxy": True}
    assert "clear HTTP unless a TLS proxy is in front" in capsys.readouterr().err  # remote: said so


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert m, page
    return m.group(1)


def login_via(app: Any, peer: str, headers: dict[str, str], password: str = PASSWORD) -> Any:
    """A login as the proxy forwards it: cookies passed by hand (the test client's jar would keep a
    Secure cookie from its plain-HTTP requests)."""
    client = app.test_client(use_cookies=False)
    env = {"REMOTE_ADDR": peer}
    page = client.get("/piranha/login", environ_base=env, headers=headers)
    cookie = session_cookie(page).split(";", 1)[0]
    form = {"csrf_token": csrf_of(page.get_data(as_text=True)), "username": "piranha", "password": password}
    return client.post("/piranha/login", data=form, environ_base=env, headers={**headers, "Cookie": cookie})


TLS = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"}


def session_cookie(resp: Any) -> str:
    return next(c for c in resp.headers.getlist("Set-Cookie") if c.startswith("piranha_session="))


@pytest.mark.parametrize(
    "proxy,peer,secure",
    [
        (True, "127.0.0.1", True),  # the TLS proxy on this node
        (True, "::1", True),
        (True, "192.0.2.9", False),  # anyone else's header is not believed
        (False, "127.0.0.1", False),  # without the switch, nobody's
    ],
)
def test_session_cookie_secure_only_over_tls_from_a_loopback_proxy(
    tmp_path: Path, proxy: bool, peer: str, secure: bool
) -> None:
    app = webapp.create_app(settings_in(tmp_path, behind_tls_proxy=proxy))
    app.config["TESTING"] = True
    resp = login_via(app, peer, TLS)
    assert resp.status_code == 302
    cookie = session_cookie(resp)
    assert ("; Secure" in cookie) is secure, cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_proxy_forwarded_client_is_throttled_not_the_proxy(tmp_path: Path) -> None:
    """Behind the proxy, failures count against the forwarded client, so one guesser behind it does not
    lock everyone out; a remote peer cannot pick its throttle address with the header."""
    app = webapp.create_app(settings_in(tmp_path, behind_tls_proxy=True))
    app.config["TESTING"] = True
    throttle: auth.Throttle = app.extensions["piranha"]["throttle"]
    for _ in range(5):
        assert login_via(app, "127.0.0.1", TLS, "wrong password").status_code == 403
    assert throttle.wait("198.51.100.7") > 0 and throttle.wait("127.0.0.1") == 0
    other = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.8"}
    assert login_via(app, "127.0.0.1", other).status_code == 302
    for _ in range(5):  # a remote peer naming another address is still itself
        assert login_via(app, "192.0.2.9", other, "wrong password").status_code == 403
    assert throttle.wait("192.0.2.9") > 0 and throttle.wait("198.51.100.8") == 0
