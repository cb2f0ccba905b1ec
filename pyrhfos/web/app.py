"""piranha-gui: the web interface to lvs.cf and pulse, under /piranha (Flask app, served by waitress).

Security rules, from Piranha's history: no default password (CVE-2000-0248: nobody gets in until
``piranha-passwd`` has set one); nothing from a form reaches a shell (CVE-2000-0322: control actions run
fixed argv lists, shell=False); every form value is typed and checked, and lvs.cf is only ever produced
by the project's writer and re-read by its reader (web/edits.py). Every POST carries a CSRF token
(Flask-WTF), the session cookie is HttpOnly and SameSite=Strict, failed logins are throttled.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import hmac
import ipaddress
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError, CSRFProtect

from ..daemon import control
from ..defaults import CONFIG_PATHS, SOCKET
from . import edits, passwd

DEFAULT_CONFIG = CONFIG_PATHS[0]  # Piranha's GUI edited this one
DEFAULT_LISTEN = "0.0.0.0:3636"  # Piranha's later releases served the GUI on port 3636
DEFAULT_INITSCRIPT = "/etc/rc.d/init.d/pulse"
PREFIX = "/piranha"


@dataclass
class Settings:
    config: Path
    passwd_file: Path
    socket: str = SOCKET
    initscript: str = DEFAULT_INITSCRIPT
    pulse: str = ""  # the pulse executable; "" = the one installed beside this Python
    command_timeout: float = 120.0

    def pulse_argv(self) -> list[str]:
        if self.pulse:
            return [self.pulse]
        beside = Path(sys.executable).parent / "pulse"
        return [str(beside)] if beside.exists() else [sys.executable, "-m", "pyrhfos.cli"]


class Throttle:
    """Failed logins per client address: after ``free`` failures, a lock-out that doubles each time.

    In memory (a restart forgets, which only helps the admin); bounded in size; ``clock`` injectable.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        free: int = 5,
        base: float = 5.0,
        cap: float = 900.0,
        max_entries: int = 10000,
    ) -> None:
        self.clock, self.free, self.base, self.cap, self.max_entries = clock, free, base, cap, max_entries
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # addr -> (count, until)

    @staticmethod
    def key(addr: str) -> str:
        """IPv6 clients by /64 (one host has a whole /64 to rotate through), IPv4 by address."""
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return addr
        return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else addr

    def wait(self, addr: str) -> float:
        """Seconds before ``addr`` may try again (0: now)."""
        with self._lock:
            count, until = self._failures.get(self.key(addr), (0, 0.0))
            return max(0.0, until - self.clock()) if count >= self.free else 0.0

    def failure(self, addr: str) -> None:
        addr = self.key(addr)
        with self._lock:
            count = self._failures.pop(addr, (0, 0.0))[0] + 1
            delay = min(self.cap, self.base * 2 ** (count - self.free)) if count >= self.free else 0.0
            self._failures[addr] = (count, self.clock() + delay)
            while len(self._failures) > self.max_entries:
                self._failures.popitem(last=False)

    def success(self, addr: str) -> None:
        with self._lock:
            self._failures.pop(self.key(addr), None)


class Sessions:
    """Live logins, server-side: a cookie is worth something only while its id is here.

    Logging out (or idling past ``idle``, or ``absolute`` after login) ends the id, so a copied
    cookie dies with the session, not when the signed cookie would expire.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, idle: float = 1800.0, absolute: float = 8 * 3600.0
    ) -> None:
        self.clock, self.idle, self.absolute = clock, idle, absolute
        self._lock = threading.Lock()
        self._live: dict[str, tuple[float, float]] = {}  # sid -> (logged in, last used)

    def start(self) -> str:
        sid = secrets.token_urlsafe(16)
        now = self.clock()
        with self._lock:
            self._live = {k: v for k, v in self._live.items() if self._fresh(v, now)}
            self._live[sid] = (now, now)
        return sid

    def _fresh(self, times: tuple[float, float], now: float) -> bool:
        return now - times[1] <= self.idle and now - times[0] <= self.absolute

    def touch(self, sid: str) -> bool:
        """True and the session kept alive if ``sid`` is a live login; expired ones are dropped."""
        now = self.clock()
        with self._lock:
            times = self._live.get(sid)
            if times is None or not self._fresh(times, now):
                self._live.pop(sid, None)
                return False
            self._live[sid] = (times[0], now)
            return True

    def end(self, sid: str | None) -> None:
        with self._lock:
            self._live.pop(sid or "", None)


class Pending:
    """Proposed edits waiting for their confirmation, server-side, keyed by a random token.

    Only the token goes to the browser; it is bound to the login session that made it, and expires.
    """

    def __init__(self, ttl: float = 1800.0, max_entries: int = 100) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[str, float, edits.Proposal]] = OrderedDict()

    def put(self, sid: str, proposal: edits.Proposal) -> str:
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._items[token] = (sid, time.monotonic(), proposal)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return token

    def get(self, sid: str, token: str) -> edits.Proposal | None:
        with self._lock:
            item = self._items.get(token)
        if item is None or not hmac.compare_digest(item[0], sid) or time.monotonic() - item[1] > self.ttl:
            return None
        return item[2]

    def drop(self, token: str) -> None:
        with self._lock:
            self._items.pop(token, None)


bp = Blueprint("piranha", __name__, url_prefix=PREFIX)
csrf = CSRFProtect()
NAV = (
    ("control", "CONTROL/MONITORING"),
    ("global_settings", "GLOBAL SETTINGS"),
    ("redundancy", "REDUNDANCY"),
    ("failovers", "FAILOVER SERVICES"),
)


def create_app(
    settings: Settings, throttle: Throttle | None = None, sessions: Sessions | None = None
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
        "throttle": throttle or Throttle(),
        "sessions": sessions or Sessions(),
        "action_lock": threading.Lock(),
        "pending": Pending(),
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

    app.jinja_env.filters["when"] = _when
    return app


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "never"
    try:
        t = datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError, TypeError):
        return "?"
    return f"{t} ({max(0.0, time.time() - stamp):.0f} s ago)"


def _ext() -> dict[str, Any]:
    return current_app.extensions["piranha"]


def _settings() -> Settings:
    return _ext()["settings"]


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        live = session.get("user") == passwd.USER and _ext()["sessions"].touch(session.get("sid", ""))
        if not live:
            session.clear()
            return redirect(url_for("piranha.login"))
        return view(*args, **kwargs)

    return wrapped


# ------------------------------------------------------------------ login


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    s = _settings()
    throttle: Throttle = _ext()["throttle"]
    is_set = passwd.is_set(s.passwd_file)
    error = None
    status = 200
    if request.method == "POST":
        addr = request.remote_addr or "?"
        wait = throttle.wait(addr)
        if not is_set:
            error, status = "No password is set: nobody can log in until one is.", 403
        elif wait > 0:
            error, status = f"Too many failed logins: try again in {wait:.0f} s.", 429
        else:
            # Counted as a failure before the (slow) check, so parallel guesses cannot slip past the limit.
            throttle.failure(addr)
            user = request.form.get("username", "")
            ok = passwd.verify(s.passwd_file, request.form.get("password", ""))  # always: same timing
            if ok and hmac.compare_digest(user.encode(), passwd.USER.encode()):
                throttle.success(addr)
                _ext()["sessions"].end(session.get("sid"))
                session.clear()
                session["user"] = passwd.USER
                session["sid"] = _ext()["sessions"].start()
                return redirect(url_for("piranha.control"))
            error, status = "Wrong user name or password.", 403
    return render_template("login.html", title="Login", is_set=is_set, error=error), status


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    _ext()["sessions"].end(session.get("sid"))
    session.clear()
    return redirect(url_for("piranha.login"))


# ------------------------------------------------------------------ control / monitoring


def _status(sock: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        reply = control.request(sock, "status", timeout=3.0)
    except (OSError, ValueError) as e:
        return (
            None,
            f"No pulse answers on {sock} ({getattr(e, 'strerror', None) or e}): pulse is not running here.",
        )
    if not reply.get("ok", False):
        return None, f"pulse answered with an error: {reply.get('error', 'unknown')}"
    status = reply.get("status")
    shape = {"node": dict, "partner": dict, "services": list, "counters": dict}
    if not isinstance(status, dict) or any(not isinstance(status.get(k), t) for k, t in shape.items()):
        return None, "pulse answered, but not with a status this page understands"
    return status, None


ACTIONS = ("start", "stop", "reload", "sync")


def _action_argv(s: Settings, action: str) -> list[str]:
    """Fixed argv lists: nothing from a request is ever part of them, and no shell runs them."""
    if action in ("start", "stop"):
        return [s.initscript, action]
    if action == "reload":
        return [*s.pulse_argv(), "reload", "--socket", s.socket]
    return [*s.pulse_argv(), "sync", "-c", str(s.config), "--socket", s.socket]


def run_action(s: Settings, action: str) -> dict[str, Any]:
    argv = _action_argv(s, action)
    # Output to files, not pipes: a daemon started by the init script may keep them open for ever.
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                shell=False, timeout=s.command_timeout, check=False,
            )  # fmt: skip
            rc: int | str = proc.returncode
        except FileNotFoundError:
            rc = "not found"
        except subprocess.TimeoutExpired:
            rc = f"killed after {s.command_timeout:.0f} s"
        except OSError as e:
            rc = f"cannot run: {e.strerror}"
        out.seek(0)
        output = out.read(20000).decode("utf-8", "replace")
    return {"action": action, "argv": " ".join(argv), "rc": rc, "output": output}


@bp.route("/")
@login_required
def index() -> Any:
    return redirect(url_for("piranha.control"))


@bp.route("/control", methods=["GET"], endpoint="control")
@login_required
def control_page() -> Any:
    return _render_control(None)


def _render_control(result: dict[str, Any] | None) -> Any:
    s = _settings()
    status, problem = _status(s.socket)
    current = edits.read_current(s.config)
    return render_template(
        "control.html",
        title="Control/Monitoring",
        status=status,
        problem=problem,
        result=result,
        refresh=result is None,
        current=current,
        actions=ACTIONS,
    )


@bp.route("/control/<action>", methods=["POST"])
@login_required
def control_action(action: str) -> Any:
    if action not in ACTIONS:
        abort(404)
    lock: threading.Lock = _ext()["action_lock"]
    if not lock.acquire(blocking=False):  # a hanging init script must not take every server thread
        busy = {"action": action, "argv": "", "rc": "not run", "output": "another action is still running"}
        return _render_control(busy), 409
    try:
        return _render_control(run_action(_settings(), action))
    finally:
        lock.release()


# ------------------------------------------------------------------ edit pages


def _current_or_problem() -> tuple[edits.Current, Any]:
    current = edits.read_current(_settings().config)
    if current.cfg is None:
        return current, render_template("problem.html", title="lvs.cf cannot be edited", current=current)
    return current, None


def _propose(current: edits.Current, build: Callable[[], Any], summary: str, **kw: Any) -> Any:
    """Build the new model, check it, keep it pending; redirect to its diff (or None and errors)."""
    try:
        proposal = edits.propose(current, build(), summary, **kw)
    except edits.FieldErrors as e:
        return None, e.errors
    token = _ext()["pending"].put(session["sid"], proposal)
    return redirect(url_for("piranha.confirm", token=token)), {}


def _settings_page(template: str, title: str, fields: tuple[str, ...], editor: Callable[..., Any]) -> Any:
    current, problem = _current_or_problem()
    if problem:
        return problem
    assert current.cfg is not None
    values, errors, status = edits.form_values(current.cfg, fields), {}, 200
    if request.method == "POST":
        values = {k: request.form.get(k, "") for k in fields}
        done, errors = _propose(
            current, lambda: editor(current.cfg, request.form), f"{title} changed", fields=fields
        )
        if done is not None:
            return done
        status = 422
    return render_template(template, title=title, values=values, errors=errors, current=current), status


@bp.route("/global", methods=["GET", "POST"])
@login_required
def global_settings() -> Any:
    return _settings_page("global.html", "Global settings", edits.GLOBAL_FIELDS, edits.edit_global)


@bp.route("/redundancy", methods=["GET", "POST"])
@login_required
def redundancy() -> Any:
    return _settings_page("redundancy.html", "Redundancy", edits.REDUNDANCY_FIELDS, edits.edit_redundancy)


@bp.route("/failover", methods=["GET"])
@login_required
def failovers() -> Any:
    current, problem = _current_or_problem()
    if problem:
        return problem
    return render_template("failovers.html", title="Failover services", current=current)


NEW_FAILOVER = {
    "active": "1",
    "port": "80",
    "timeout": "10",
    "device": "eth0:1",
    "send": "GET / HTTP/1.0\\r\\n\\r\\n",
}


@bp.route("/failover/new", methods=["GET", "POST"])
@bp.route("/failover/<name>/edit", methods=["GET", "POST"])
@login_required
def failover_edit(name: str | None = None) -> Any:
    current, problem = _current_or_problem()
    if problem:
        return problem
    cfg = current.cfg
    assert cfg is not None
    if name is None:
        values: dict[str, str] = dict.fromkeys(edits.FAILOVER_FIELDS, "") | NEW_FAILOVER
    else:
        try:
            values = edits.form_values(cfg, edits.FAILOVER_FIELDS, edits.find_failover(cfg, name))
        except KeyError:
            abort(404)
    errors: dict[str, str] = {}
    status = 200
    if request.method == "POST":
        values = {k: request.form.get(k, "") for k in edits.FAILOVER_FIELDS}
        block = request.form.get("name", "")
        what = f"failover service '{block}' " + ("added" if name is None else "changed")
        done, errors = _propose(
            current, lambda: edits.edit_failover(cfg, name, request.form), what,
            fields=edits.FAILOVER_FIELDS, block=block,
        )  # fmt: skip
        if done is not None:
            return done
        status = 422
    title = "Add a failover service" if name is None else f"Edit failover service {name}"
    return render_template(
        "failover_edit.html", title=title, values=values, errors=errors, name=name, current=current
    ), status


@bp.route("/failover/<name>/<op>", methods=["POST"])
@login_required
def failover_op(name: str, op: str) -> Any:
    current, problem = _current_or_problem()
    if problem:
        return problem
    cfg = current.cfg
    assert cfg is not None
    try:
        edits.find_failover(cfg, name)
    except KeyError:
        abort(404)
    ops: dict[str, tuple[Callable[[], Any], str]] = {
        "delete": (lambda: edits.delete_failover(cfg, name), f"failover service '{name}' deleted"),
        "activate": (lambda: edits.set_active(cfg, name, True), f"failover service '{name}' activated"),
        "deactivate": (lambda: edits.set_active(cfg, name, False), f"failover service '{name}' deactivated"),
    }
    if op not in ops:
        abort(404)
    done, errors = _propose(current, *ops[op])
    if done is not None:
        return done
    message = "; ".join(errors.values())
    return render_template("error.html", title="Not changed", message=f"Not changed: {message}"), 422


# ------------------------------------------------------------------ confirm and save


@bp.route("/confirm/<token>", methods=["GET", "POST"])
@login_required
def confirm(token: str) -> Any:
    pending: Pending = _ext()["pending"]
    proposal = pending.get(session["sid"], token)
    if proposal is None:
        return render_template(
            "error.html", title="No such edit", message="This edit has expired or was already saved."
        ), 404
    s = _settings()
    if request.method == "GET":
        return render_template("confirm.html", title="Review the change", proposal=proposal, token=token)
    if request.form.get("cancel"):
        pending.drop(token)
        return redirect(url_for("piranha.control"))
    if request.form.get("base_sha256", "") != proposal.base_sha256:
        abort(400)
    with _ext()["save_lock"]:
        try:
            backup = edits.save(s.config, proposal)
        except edits.Conflict as e:
            pending.drop(token)
            return render_template("error.html", title="Not saved", message=str(e)), 409
        except OSError as e:
            return render_template("error.html", title="Not saved", message=f"Not saved: {e}"), 500
    pending.drop(token)
    return render_template("saved.html", title="Saved", proposal=proposal, backup=backup)


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
    from waitress import create_server

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
