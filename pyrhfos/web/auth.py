"""Who may use piranha-gui: the failed-login throttle (by address, or by device cookie once a browser
has logged in), the server-side sessions, ``login_required``, and the login and logout views.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from flask import current_app, redirect, render_template, request, session, url_for
from itsdangerous import BadData, URLSafeTimedSerializer

from . import audit, passwd
from .common import AUTO, PREFIX, bp, ext, settings

DEVICE_COOKIE = "piranha_device"
DEVICE_AGE = 30 * 86400  # seconds; the signing key is this process's, so a restart forgets them all


def peer_key(addr: str) -> str:
    """One client, as far as an address tells: IPv4 by address (an IPv4-mapped IPv6 address is that
    IPv4 address), IPv6 by /64 (one host has a whole /64 to rotate through)."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else addr


def is_loopback(addr: str) -> bool:
    """All of 127/8 and ::1, IPv4-mapped or not: the node itself."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


class Throttle:
    """Failed logins per client: after ``free`` failures, a lock-out that doubles each time, up to ``cap``.

    A client is its device cookie when it shows a valid one (set at a successful login), otherwise
    its address (``key``). At most ``per_minute`` failures in any 60 s from all clients together;
    past that only device-cookie holders and the node itself (loopback) may try, so neither many
    addresses nor a /64 neighbour can lock out an administrator who has logged in before. In memory
    (a restart forgets, which only helps the admin); bounded in size, evicting clients that are not
    locked out first; ``clock`` injectable.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        free: int = 5,
        base: float = 5.0,
        cap: float = 900.0,
        max_entries: int = 10000,
        per_minute: int = 30,
    ) -> None:
        self.clock, self.free, self.base, self.cap, self.max_entries = clock, free, base, cap, max_entries
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # client -> (count, until)
        self._recent: deque[float] = deque(maxlen=per_minute)  # times of the latest failures, all clients

    @staticmethod
    def key(addr: str) -> str:
        """``peer_key``, except that every loopback address (all of 127/8, ::1) is one client."""
        return "loopback" if is_loopback(addr) else peer_key(addr)

    def _client(self, addr: str, device: str | None) -> str:
        return f"device {device}" if device else self.key(addr)

    def wait(self, addr: str, device: str | None = None) -> float:
        """Seconds before this client may try again (0: now)."""
        client = self._client(addr, device)
        with self._lock:
            now = self.clock()
            count, until = self._failures.get(client, (0, 0.0))
            own = max(0.0, until - now) if count >= self.free else 0.0
            if own > 0 or device or client == "loopback" or len(self._recent) < self.per_minute:
                return own
            return max(0.0, self._recent[0] + 60.0 - now)

    def failure(self, addr: str, device: str | None = None) -> None:
        client = self._client(addr, device)
        with self._lock:
            now = self.clock()
            count = self._failures.pop(client, (0, 0.0))[0] + 1
            delay = min(self.cap, self.base * 2 ** (count - self.free)) if count >= self.free else 0.0
            self._failures[client] = (count, now + delay)
            self._recent.append(now)
            while len(self._failures) > self.max_entries:
                self._evict(now, keep=client)

    def _evict(self, now: float, keep: str) -> None:
        """Forget the oldest client that is not locked out; only when all are, the oldest one."""
        for client, (count, until) in self._failures.items():
            if client != keep and (count < self.free or until <= now):
                del self._failures[client]
                return
        self._failures.popitem(last=False)

    def success(self, addr: str, device: str | None = None) -> None:
        with self._lock:
            if self._failures.pop(self._client(addr, device), None) is not None and self._recent:
                self._recent.pop()  # the attempt was counted before its check: it was no failure


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

    def touch(self, sid: str, active: bool = True) -> bool:
        """True if ``sid`` is a live login, kept alive when ``active``; expired ones are dropped."""
        now = self.clock()
        with self._lock:
            times = self._live.get(sid)
            if times is None or not self._fresh(times, now):
                self._live.pop(sid, None)
                return False
            if active:
                self._live[sid] = (times[0], now)
            return True

    def end(self, sid: str | None) -> None:
        with self._lock:
            self._live.pop(sid or "", None)


def is_auto_refresh() -> bool:
    """The monitoring page reloading itself (base.html's refresh adds ``auto=1``): not the admin's doing."""
    return request.method == "GET" and request.args.get(AUTO) == "1"


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        sid = session.get("sid", "")
        live = session.get("user") == passwd.USER and ext()["sessions"].touch(sid, not is_auto_refresh())
        if not live:
            session.clear()
            return redirect(url_for("piranha.login"))
        return view(*args, **kwargs)

    return wrapped


def _devices() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key or "", salt="piranha-device")


def known_device() -> str | None:
    """The id in this browser's device cookie, if this process signed it (at a successful login)."""
    try:
        device = _devices().loads(request.cookies.get(DEVICE_COOKIE, ""), max_age=DEVICE_AGE)
    except BadData:
        return None
    return device if isinstance(device, str) and device else None


def remember_device(resp: Any, device: str | None) -> Any:
    """The device cookie: this browser is then throttled on its own, not with its address."""
    value = _devices().dumps(device or secrets.token_urlsafe(16))
    resp.set_cookie(
        DEVICE_COOKIE, value, max_age=DEVICE_AGE, path=PREFIX,
        secure=request.is_secure, httponly=True, samesite="Strict",
    )  # fmt: skip
    return resp


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    s = settings()
    throttle: Throttle = ext()["throttle"]
    is_set = passwd.is_set(s.passwd_file)
    error = None
    status = 200
    if request.method == "POST":
        addr = request.remote_addr or "?"
        device = known_device()
        wait = throttle.wait(addr, device)
        if not is_set:
            error, status = "No password is set: nobody can log in until one is.", 403
        elif wait > 0:
            error, status = f"Too many failed logins: try again in {wait:.0f} s.", 429
        else:
            # Counted as a failure before the (slow) check, so parallel guesses cannot slip past the limit.
            throttle.failure(addr, device)
            user = request.form.get("username", "")
            ok = passwd.verify(s.passwd_file, request.form.get("password", ""))  # always: same timing
            if ok and hmac.compare_digest(user.encode(), passwd.USER.encode()):
                throttle.success(addr, device)
                ext()["sessions"].end(session.get("sid"))
                session.clear()
                session["user"] = passwd.USER
                session["sid"] = ext()["sessions"].start()
                audit.record("login ok")
                return remember_device(redirect(url_for("piranha.control")), device)
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
