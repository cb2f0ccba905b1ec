"""piranha-gui: the app factory (cookies, CSRF, security headers) and the command line; the pages
are in auth.py, control.py, views.py and virtuals.py, all under /piranha (Flask, served by waitress).

Security rules, from Piranha's history: no default password (CVE-2000-0248: nobody gets in until
``piranha-passwd`` has set one); nothing from a form reaches a shell (CVE-2000-0322: control actions run
fixed argv lists, shell=False); every form value is typed and checked, and lvs.cf is only ever produced
by the project's writer and re-read by its reader (web/edits.py). Every POST carries a CSRF token
(Flask-WTF), the session cookie is HttpOnly and SameSite=Strict (and Secure over TLS), failed logins
are throttled. The server (waitress) listens on loopback unless told otherwise, refuses bodies over
64 KiB before reading them, and keeps idle connections from filling its connection cap.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from flask import Flask, has_request_context, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server

from ..daemon import status
from ..defaults import CONFIG_PATHS, SOCKET
from . import auth, passwd, views, virtuals
from . import control as _control  # noqa: F401  # imported for its routes on bp
from .common import DEFAULT_INITSCRIPT, MAX_BODY, PREFIX, Settings, bp

DEFAULT_CONFIG = CONFIG_PATHS[0]  # Piranha's GUI edited this one
# Piranha's later releases served the GUI on port 3636 (on every address); here only the node itself
# can reach it unless --listen says otherwise (behind a TLS proxy: the pages carry the password).
DEFAULT_LISTEN = "127.0.0.1:3636"

# waitress's own defaults: bodies up to 1 GiB (spooled to TMPDIR past 512 KiB, before Flask sees
# them), 120 s idle, 100 connections. Ours: a body is refused on its Content-Length (or while
# chunked) before any of it is buffered, idle connections go after 30 s, and FairChannel keeps a
# real request from waiting behind idle ones.
MAX_CONNECTIONS = 50
SERVER_LIMITS: dict[str, Any] = {
    "max_request_body_size": MAX_BODY + 1,  # waitress refuses this size and more, Flask only larger
    "max_request_header_size": 32 * 1024,
    "channel_timeout": 30,
    "cleanup_interval": 5,
    "connection_limit": MAX_CONNECTIONS + 10,  # waitress stops accepting there: FairChannel stays below
}

csrf = CSRFProtect()
NAV = virtuals.NAV_FOS


def create_app(
    settings: Settings, throttle: auth.Throttle | None = None, sessions: auth.Sessions | None = None
) -> Flask:
    app = Flask(__name__, static_url_path=f"{PREFIX}/static")
    app.config.update(
        SECRET_KEY=os.urandom(32),  # per process: a restart logs everyone out, nothing to steal on disk
        SESSION_COOKIE_NAME="piranha_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH=PREFIX,
        MAX_CONTENT_LENGTH=MAX_BODY,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the login, which Sessions bounds
        # Over TLS Flask-WTF would also demand a same-host Referer, which Referrer-Policy no-referrer
        # never sends (and a proxy's Host may differ): the token alone decides, as over plain HTTP.
        WTF_CSRF_SSL_STRICT=False,
    )
    app.extensions["piranha"] = {
        "settings": settings,
        "throttle": throttle or auth.Throttle(),
        "sessions": sessions or auth.Sessions(),
        "action_lock": threading.Lock(),
        "pending": views.Pending(),
        "save_lock": threading.Lock(),
    }
    app.session_interface = TlsAwareSessions()
    if settings.behind_tls_proxy:
        app.wsgi_app = LoopbackProxy(app.wsgi_app)  # type: ignore[method-assign]
    csrf.init_app(app)
    app.register_blueprint(bp)
    app.add_url_rule("/", "root", lambda: redirect(url_for("piranha.control")))

    @app.errorhandler(CSRFError)
    def csrf_refused(e: CSRFError) -> tuple[str, int]:
        return render_template("error.html", title="Refused", message=f"Form refused: {e.description}"), 400

    @app.after_request
    def security_headers(resp: Any) -> Any:
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        )
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.context_processor
    def globals_for_templates() -> dict[str, Any]:
        return {"nav": virtuals.nav(), "logged_in": "user" in session, "settings": settings}

    app.jinja_env.filters["when"] = when_ago
    return app


class TlsAwareSessions(SecureCookieSessionInterface):
    """The session cookie is Secure whenever the request came over TLS (so the browser never sends
    it back in clear); over plain HTTP on loopback it could not be, or nobody could log in."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return (has_request_context() and request.is_secure) or super().get_cookie_secure(app)


class LoopbackProxy:
    """--behind-tls-proxy: the X-Forwarded-Proto and X-Forwarded-For of a loopback peer (the TLS proxy
    on this node) say the scheme and the client; anyone else's are ignored, so no remote client can
    claim TLS or another address. The proxy must set both (the last X-Forwarded-For value is used)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if auth.is_loopback(environ.get("REMOTE_ADDR", "")):
            proto = _last(environ.get("HTTP_X_FORWARDED_PROTO", "")).lower()
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto
            client = _last(environ.get("HTTP_X_FORWARDED_FOR", "")).strip("[]")
            try:
                environ["REMOTE_ADDR"] = str(ipaddress.ip_address(client))
            except ValueError:
                pass  # none, or not an address: the proxy's own stays
        return self.app(environ, start_response)


def _last(header: str) -> str:
    return header.rsplit(",", 1)[-1].strip()


def when_ago(stamp: float | None) -> str:
    """The templates' ``when``: a status stamp as local time and its age; "never" when there is none."""
    shown = status.when(stamp, missing="never")
    if stamp is None or shown == "?":
        return shown
    return f"{shown} ({max(0.0, time.time() - stamp):.0f} s ago)"


# ------------------------------------------------------------------ the server


def _peer(channel: HTTPChannel) -> str:
    addr = channel.addr
    return auth.peer_key(str(addr[0])) if isinstance(addr, tuple) else ""


class FairChannel(HTTPChannel):
    """A connection past MAX_CONNECTIONS closes an idle one (no request being served, nothing left to
    send; half-sent headers count as idle) of the client holding the most, its oldest first: idle
    connections, or a slow sender's, never keep a real request waiting for a free place."""

    def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None) -> None:
        super().__init__(server, sock, addr, adj, map)
        live = [c for c in server.active_channels.values() if not c.will_close]
        if len(live) <= MAX_CONNECTIONS:
            return
        idle = [c for c in live if not c.requests and not c.total_outbufs_len]
        if idle:
            held = Counter(_peer(c) for c in live)
            min(idle, key=lambda c: (-held[_peer(c)], c.last_activity)).will_close = True


def make_server(app: Any, host: str, port: int, threads: int) -> Any:
    """waitress with SERVER_LIMITS and FairChannel on every socket it listens on."""
    sockets: dict[int, Any] = {}
    server = create_server(
        app, map=sockets, host=host, port=port, threads=threads, ident="piranha-gui", **SERVER_LIMITS
    )
    for dispatcher in sockets.values():
        if isinstance(dispatcher, BaseWSGIServer):
            dispatcher.channel_class = FairChannel
    return server


# ------------------------------------------------------------------ command line


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"'{text}' is not ADDR:PORT")
    return host.strip("[]"), int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="piranha-gui", description="Web interface to lvs.cf and pulse.")
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"the lvs.cf to edit (default {DEFAULT_CONFIG})"
    )
    parser.add_argument("--passwd-file", default=passwd.DEFAULT_PASSWD_FILE, help="the piranha-passwd file")
    parser.add_argument(
        "--listen", type=parse_listen, default=DEFAULT_LISTEN, help=f"ADDR:PORT (default {DEFAULT_LISTEN})"
    )
    parser.add_argument("--socket", default=SOCKET, help="pulse's control socket")
    parser.add_argument("--initscript", default=DEFAULT_INITSCRIPT, help="runs 'start' and 'stop' for pulse")
    parser.add_argument(
        "--pulse", default="", help="the pulse executable (default: the one beside this Python)"
    )
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--behind-tls-proxy", action="store_true",
        help="a TLS proxy on this node forwards to --listen: believe its X-Forwarded-Proto and"
        " X-Forwarded-For (from loopback peers only)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if isinstance(args.listen, str):
        args.listen = parse_listen(args.listen)
    settings = Settings(
        config=Path(args.config),
        passwd_file=Path(args.passwd_file),
        socket=args.socket,
        initscript=args.initscript,
        pulse=args.pulse,
        behind_tls_proxy=args.behind_tls_proxy,
    )
    if not passwd.is_set(settings.passwd_file):
        print(
            f"piranha-gui: no password set in {settings.passwd_file}: nobody can log in until"
            " 'piranha-passwd' sets one",
            file=sys.stderr,
        )
    host, port = args.listen
    if host != "localhost" and not auth.is_loopback(host):
        print(
            f"piranha-gui: listening on {host}, beyond this node: the password and the pages travel"
            " in clear HTTP unless a TLS proxy is in front (see --behind-tls-proxy)",
            file=sys.stderr,
        )
    server = make_server(create_app(settings), host, port, args.threads)
    print(f"piranha-gui: serving http://{host}:{port}{PREFIX}/", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
