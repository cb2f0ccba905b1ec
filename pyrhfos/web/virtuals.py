"""The VIRTUAL SERVERS pages (service = lvs): the virtual servers with their running status, their add,
edit, delete and (de)activate, and each one's REAL SERVERS subpage; every edit goes through views' confirm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import abort, render_template, request, session

from ..config.model import Config, ServiceKind
from . import edits, lvsedits
from .auth import login_required
from .common import bp, settings
from .control import read_status
from .views import _current_or_problem, apply_op, block_post

NAV_FOS = (
    ("control", "CONTROL/MONITORING"),
    ("global_settings", "GLOBAL SETTINGS"),
    ("redundancy", "REDUNDANCY"),
    ("failovers", "FAILOVER SERVICES"),
)
NAV_LVS = (*NAV_FOS[:3], ("virtuals", "VIRTUAL SERVERS"))


def nav() -> tuple[tuple[str, str], ...]:
    """The menu: VIRTUAL SERVERS for an LVS lvs.cf, FAILOVER SERVICES otherwise (as Piranha's GUI)."""
    if "user" not in session:
        return NAV_FOS
    cfg = edits.read_current(settings().config).cfg
    return NAV_LVS if cfg is not None and cfg.service is ServiceKind.LVS else NAV_FOS


def _running() -> dict[str, Any] | None:
    status, _ = read_status(settings().socket)
    return status


def _virtual_or_404(cfg: Config, name: str) -> Any:
    try:
        return lvsedits.find_virtual(cfg, name)
    except KeyError:
        abort(404)


@bp.route("/virtual", methods=["GET"])
@login_required
def virtuals() -> Any:
    current, problem = _current_or_problem()
    if problem:
        return problem
    assert current.cfg is not None
    status = _running()
    states = {v.name: lvsedits.virtual_state(v.name, status) for v in current.cfg.virtuals}
    return render_template(
        "virtuals.html", title="Virtual servers", current=current, states=states, running=status is not None
    )


@bp.route("/virtual/new", methods=["GET", "POST"])
@bp.route("/virtual/<name>/edit", methods=["GET", "POST"])
@login_required
def virtual_edit(name: str | None = None) -> Any:
    current, problem = _current_or_problem()
    if problem:
        return problem
    cfg = current.cfg
    assert cfg is not None
    if name is None:
        values = dict.fromkeys(lvsedits.VIRTUAL_FIELDS, "") | lvsedits.NEW_VIRTUAL
    else:
        values = lvsedits.virtual_form(_virtual_or_404(cfg, name))
    errors: dict[str, str] = {}
    status = 200
    if request.method == "POST":
        block = request.form.get("name", "")
        what = f"virtual server '{block}' " + ("added" if name is None else "changed")
        build = lambda: lvsedits.edit_virtual(cfg, name, request.form)  # noqa: E731
        done, values, errors = block_post(current, lvsedits.VIRTUAL_FIELDS, build, what, block)
        if done is not None:
            return done
        status = 422
    title = "Add a virtual server" if name is None else f"Edit virtual server {name}"
    return render_template(
        "virtual_edit.html", title=title, values=values, errors=errors, name=name, current=current,
        schedulers=[(s, s) for s in lvsedits.SCHEDULERS], protocols=[(p, p) for p in lvsedits.PROTOCOLS],
    ), status  # fmt: skip


@bp.route("/virtual/<name>/<op>", methods=["POST"])
@login_required
def virtual_op(name: str, op: str) -> Any:
    current, problem = _current_or_problem()
    if problem:
        return problem
    cfg = current.cfg
    assert cfg is not None
    _virtual_or_404(cfg, name)
    ops: dict[str, tuple[Callable[[], Any], str]] = {
        "delete": (lambda: lvsedits.delete_virtual(cfg, name), f"virtual server '{name}' deleted"),
        "activate": (
            lambda: lvsedits.set_virtual_active(cfg, name, True),
            f"virtual server '{name}' activated",
        ),
        "deactivate": (
            lambda: lvsedits.set_virtual_active(cfg, name, False),
            f"virtual server '{name}' deactivated",
        ),
    }
    return apply_op(current, ops, op)


@bp.route("/virtual/<name>/servers", methods=["GET"])
@login_required
def real_servers(name: str) -> Any:
    current, problem = _current_or_problem()
    if problem:
        return problem
    assert current.cfg is not None
    virtual = _virtual_or_404(current.cfg, name)
    status = _running()
    states = {s.name: lvsedits.server_state(name, s.name, status) for s in virtual.servers}
    return render_template(
        "servers.html", title=f"Real servers of {name}", current=current, virtual=virtual, states=states
    )


@bp.route("/virtual/<vname>/server/new", methods=["GET", "POST"])
@bp.route("/virtual/<vname>/server/<name>/edit", methods=["GET", "POST"])
@login_required
def server_edit(vname: str, name: str | None = None) -> Any:
    current, problem = _current_or_problem()
    if problem:
        return problem
    cfg = current.cfg
    assert cfg is not None
    virtual = _virtual_or_404(cfg, vname)
    if name is None:
        values = dict.fromkeys(lvsedits.SERVER_FIELDS, "") | lvsedits.NEW_SERVER
    else:
        try:
            values = lvsedits.server_form(lvsedits.find_server(virtual, name))
        except KeyError:
            abort(404)
    errors: dict[str, str] = {}
    status = 200
    if request.method == "POST":
        block = request.form.get("name", "")
        done_what = "added" if name is None else "changed"
        what = f"real server '{block}' of virtual server '{vname}' {done_what}"
        build = lambda: lvsedits.edit_server(cfg, vname, name, request.form)  # noqa: E731
        done, values, errors = block_post(current, lvsedits.SERVER_FIELDS, build, what, (vname, block))
        if done is not None:
            return done
        status = 422
    title = f"Add a real server to {vname}" if name is None else f"Edit real server {name} of {vname}"
    return render_template(
        "server_edit.html", title=title, values=values, errors=errors, name=name, virtual=virtual,
        current=current,
    ), status  # fmt: skip


@bp.route("/virtual/<vname>/server/<name>/<op>", methods=["POST"])
@login_required
def server_op(vname: str, name: str, op: str) -> Any:
    current, problem = _current_or_problem()
    if problem:
        return problem
    cfg = current.cfg
    assert cfg is not None
    try:
        lvsedits.find_server(_virtual_or_404(cfg, vname), name)
    except KeyError:
        abort(404)
    what = f"real server '{name}' of virtual server '{vname}'"
    ops: dict[str, tuple[Callable[[], Any], str]] = {
        "delete": (lambda: lvsedits.delete_server(cfg, vname, name), f"{what} deleted"),
        "activate": (lambda: lvsedits.set_server_active(cfg, vname, name, True), f"{what} activated"),
        "deactivate": (lambda: lvsedits.set_server_active(cfg, vname, name, False), f"{what} deactivated"),
    }
    return apply_op(current, ops, op)
