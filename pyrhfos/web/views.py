"""The lvs.cf edit pages (global settings, redundancy, failover services) and their confirm-and-save
step, with the server-side store of proposed edits waiting for confirmation.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from flask import abort, redirect, render_template, request, session, url_for

from ..config.model import Config, ServiceKind
from . import audit, edits, lvsedits
from .auth import login_required
from .common import bp, ext, settings


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


def _current_or_problem() -> tuple[edits.Current, Any]:
    current = edits.read_current(settings().config)
    if current.cfg is None:
        return current, render_template("problem.html", title="lvs.cf cannot be edited", current=current)
    return current, None


def block_post(
    current: edits.Current, fields: tuple[str, ...], build: Callable[[], Any], summary: str, block: Any
) -> tuple[Any, dict[str, str], dict[str, str]]:
    """A block form's POST: (redirect to the diff or None, the values as submitted, errors by field)."""
    values = {k: request.form.get(k, "") for k in fields}
    done, errors = _propose(current, build, summary, fields=fields, block=block)
    return done, values, errors


def apply_op(current: edits.Current, ops: dict[str, tuple[Callable[[], Any], str]], op: str) -> Any:
    """A block's delete/activate/deactivate button: its diff, or why it cannot be done."""
    if op not in ops:
        abort(404)
    done, errors = _propose(current, *ops[op])
    if done is not None:
        return done
    message = "; ".join(errors.values())
    return render_template("error.html", title="Not changed", message=f"Not changed: {message}"), 422


def _propose(current: edits.Current, build: Callable[[], Any], summary: str, **kw: Any) -> Any:
    """Build the new model, check it, keep it pending; redirect to its diff (or None and errors)."""
    try:
        proposal = edits.propose(current, build(), summary, **kw)
    except edits.FieldErrors as e:
        return None, e.errors
    token = ext()["pending"].put(session["sid"], proposal)
    return redirect(url_for("piranha.confirm", token=token)), {}


def _settings_page(
    template: str,
    title: str,
    fields: tuple[str, ...],
    editor: Callable[..., Any],
    lvs_fields: tuple[str, ...] = (),
    lvs_editor: Callable[..., Any] | None = None,
) -> Any:
    """``lvs_fields``/``lvs_editor``: more fields (lvsedits.py) shown and edited when service = lvs."""
    current, problem = _current_or_problem()
    if problem:
        return problem
    assert current.cfg is not None
    values, errors, status = edits.form_values(current.cfg, fields), {}, 200
    lvs = current.cfg.service is ServiceKind.LVS and lvs_editor is not None
    if lvs:
        values |= lvsedits.lvs_global_form(current.cfg)
        fields, editor = fields + lvs_fields, _both(editor, lvs_editor)
    if request.method == "POST":
        values = {k: request.form.get(k, "") for k in fields}
        done, errors = _propose(
            current, lambda: editor(current.cfg, request.form), f"{title} changed", fields=fields
        )
        if done is not None:
            return done
        status = 422
    return render_template(
        template, title=title, values=values, errors=errors, current=current, lvs=lvs
    ), status


def _both(first: Callable[..., Any], then: Callable[..., Any] | None) -> Callable[..., Any]:
    """An editor applying ``first`` then ``then``, their field errors reported together."""

    def edit(cfg: Config, data: Any) -> Config:
        errors: dict[str, str] = {}
        for step in (first, then):
            try:
                cfg = step(cfg, data) if step else cfg
            except edits.FieldErrors as e:
                errors |= e.errors
        if errors:
            raise edits.FieldErrors(errors)
        return cfg

    return edit


@bp.route("/global", methods=["GET", "POST"])
@login_required
def global_settings() -> Any:
    return _settings_page(
        "global.html", "Global settings", edits.GLOBAL_FIELDS, edits.edit_global,
        lvsedits.LVS_GLOBAL_FIELDS, lvsedits.edit_lvs_global,
    )  # fmt: skip


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
        block = request.form.get("name", "")
        what = f"failover service '{block}' " + ("added" if name is None else "changed")
        build = lambda: edits.edit_failover(cfg, name, request.form)  # noqa: E731
        done, values, errors = block_post(current, edits.FAILOVER_FIELDS, build, what, block)
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
    return apply_op(current, ops, op)


@bp.route("/confirm/<token>", methods=["GET", "POST"])
@login_required
def confirm(token: str) -> Any:
    pending: Pending = ext()["pending"]
    proposal = pending.get(session["sid"], token)
    if proposal is None:
        return render_template(
            "error.html", title="No such edit", message="This edit has expired or was already saved."
        ), 404
    s = settings()
    if request.method == "GET":
        return render_template("confirm.html", title="Review the change", proposal=proposal, token=token)
    if request.form.get("cancel"):
        pending.drop(token)
        return redirect(url_for("piranha.control"))
    if request.form.get("base_sha256", "") != proposal.base_sha256:
        abort(400)
    serial = proposal.serial_no
    with ext()["save_lock"]:
        try:
            backup = edits.save(s.config, proposal)
        except edits.NotSaved as e:  # changed meanwhile, or would be read otherwise: never saveable
            pending.drop(token)
            audit.record(f"save of serial {serial} refused: {proposal.summary}: {e}")
            return render_template("error.html", title="Not saved", message=str(e)), 409
        except TimeoutError as e:  # the lock: a pulse sync into this node still running
            audit.record(f"save of serial {serial} not done: {proposal.summary}: {e}")
            return render_template("error.html", title="Not saved", message=f"Not saved: {e}"), 409
        except OSError as e:
            audit.record(f"save of serial {serial} failed: {proposal.summary}: {e}")
            return render_template("error.html", title="Not saved", message=f"Not saved: {e}"), 500
    pending.drop(token)
    audit.record(f"saved {s.config} serial {serial}: {proposal.summary} (previous file kept as {backup})")
    return render_template("saved.html", title="Saved", proposal=proposal, backup=backup)
