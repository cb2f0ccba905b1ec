"""piranha-gui: the app factory (cookies, CSRF, security headers) and the command line; the pages
are in auth.py, control.py and views.py, all under /piranha (Flask, served by waitress).

Security rules, from Piranha's history: no default password (CVE-2000-0248: nobody gets in until
``piranha-passwd`` has set one); nothing from a form reaches a shell (CVE-2000-0322: control actions run
fixed argv lists, shell=False); every form value is typed and checked, and lvs.cf is only ever produced
by the project's writer and re-read by its reader (web/edits.py). Every POST carries a CSRF token
(Flask-WTF), the session cookie is HttpOnly and SameSite=Strict, failed logins are throttled.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flask import Flask, redirect, render_template, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from waitress.server import create_server

from ..daemon import status
from ..defaults import CONFIG_PATHS, SOCKET
from . import auth, passwd, views
from . import control as _control  # noqa: F401  # imported for its routes on bp
from .common import DEFAULT_INITSCRIPT, PREFIX, Settings, bp

DEFAULT_CONFIG = CONFIG_PATHS[0]  # Piranha's GUI edited this one
DEFAULT_LISTEN = "0.0.0.0:3636"  # Piranha's later releases served the GUI on port 3636

csrf = CSRFProtect()
NAV = (
    ("control", "CONTROL/MONITORING"),
    ("global_settings", "GLOBAL SETTINGS"),
    ("redundancy", "REDUNDANCY"),
    ("failovers", "FAILOVER SERVICES"),
)


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
        MAX_CONTENT_LENGTH=64 * 1024,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the login, which Sessions bounds
    )
    app.extensions["piranha"] = {
        "settings": settings,
        "throttle": throttle or auth.Throttle(),
        "sessions": sessions or auth.Sessions(),
        "action_lock": threading.Lock(),
        "pending": views.Pending(),
        "save_lock": threading.Lock(),
    }
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
        return {"nav": NAV, "logged_in": "user" in session, "settings": settings}

    app.jinja_env.filters["when"] = when_ago
    return app


def when_ago(stamp: float | None) -> str:
    """The templates' ``when``: a status stamp as local time and its age; "never" when there is none."""
    shown = status.when(stamp, missing="never")
    if stamp is None or shown == "?":
        return shown
    return f"{shown} ({max(0.0, time.time() - stamp):.0f} s ago)"


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
    args = parser.parse_args(argv)
    if isinstance(args.listen, str):
        args.listen = parse_listen(args.listen)
    settings = Settings(
        config=Path(args.config),
        passwd_file=Path(args.passwd_file),
        socket=args.socket,
        initscript=args.initscript,
        pulse=args.pulse,
    )
    if not passwd.is_set(settings.passwd_file):
        print(
            f"piranha-gui: no password set in {settings.passwd_file}: nobody can log in until"
            " 'piranha-passwd' sets one",
            file=sys.stderr,
        )
    host, port = args.listen
    server = create_server(
        create_app(settings), host=host, port=port, threads=args.threads, ident="piranha-gui"
    )
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
