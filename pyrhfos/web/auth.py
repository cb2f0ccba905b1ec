"""Who may use piranha-gui: the failed-login throttle, the server-side sessions, ``login_required``,
and the login and logout views.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from flask import redirect, render_template, request, session, url_for

from . import audit, passwd
from .common import bp, ext, settings


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


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        live = session.get("user") == passwd.USER and ext()["sessions"].touch(session.get("sid", ""))
        if not live:
            session.clear()
            return redirect(url_for("piranha.login"))
        return view(*args, **kwargs)

    return wrapped


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    s = settings()
    throttle: Throttle = ext()["throttle"]
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
                ext()["sessions"].end(session.get("sid"))
                session.clear()
                session["user"] = passwd.USER
                session["sid"] = ext()["sessions"].start()
                audit.record("login ok")
                return redirect(url_for("piranha.control"))
            audit.record("login failed", logging.WARNING)
            error, status = "Wrong user name or password.", 403
    return render_template("login.html", title="Login", is_set=is_set, error=error), status


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    if session.get("user"):
        audit.record("logout")
    ext()["sessions"].end(session.get("sid"))
    session.clear()
    return redirect(url_for("piranha.login"))
