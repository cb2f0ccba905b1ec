"""The CONTROL/MONITORING page: pulse's status read over its control socket, and the actions
(start/stop by systemctl or the init script, pulse reload, pulse sync) run as fixed argv lists.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from flask import abort, redirect, render_template, url_for

from ..daemon import control as pulse_control
from . import audit, edits
from .auth import login_required
from .common import Settings, bp, ext, settings

ACTIONS = ("start", "stop", "reload", "sync")
SYSTEMD_RUN = Path("/run/systemd/system")  # a directory only while systemd is PID 1 (sd_booted(3))
UNIT = "pulse"  # init.d/pulse.service; systemd's generator gives an init script the same unit name
# The init script's whole environment under SysV: nothing of the GUI's (a daemon it starts keeps it).
CLEAN_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C")


def read_status(sock: str) -> tuple[dict[str, Any] | None, str | None]:
    """pulse's status, or None and why the page cannot show one."""
    try:
        reply = pulse_control.request(sock, "status", timeout=3.0)
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


def action_argv(s: Settings, action: str, systemd_run: Path | None = None) -> list[str]:
    """Fixed argv lists: nothing from a request is ever part of them, and no shell runs them.

    Start and stop under systemd go through systemctl, so pulse lives in its own unit, not in the
    GUI's cgroup with its sandboxing (nor dies with it); under SysV the init script runs with
    CLEAN_ENV only. ``systemd_run``: SYSTEMD_RUN, read at each call (tests give another path).
    """
    if action in ("start", "stop"):
        if (systemd_run or SYSTEMD_RUN).is_dir():
            return ["systemctl", action, UNIT]
        return ["/usr/bin/env", "-i", *CLEAN_ENV, s.initscript, action]
    if action == "reload":
        return [*s.pulse_argv(), "reload", "--socket", s.socket]
    return [*s.pulse_argv(), "sync", "-c", str(s.config), "--socket", s.socket]


def run_action(s: Settings, action: str) -> dict[str, Any]:
    argv = action_argv(s, action)
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
    s = settings()
    status, problem = read_status(s.socket)
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
    lock: threading.Lock = ext()["action_lock"]
    if not lock.acquire(blocking=False):  # a hanging init script must not take every server thread
        busy = {"action": action, "argv": "", "rc": "not run", "output": "another action is still running"}
        audit.record(f"action {action}: not run, another action is still running")
        return _render_control(busy), 409
    try:
        result = run_action(settings(), action)
        audit.record(f"action {action}: {result['argv']}: exit status {result['rc']}")
        return _render_control(result)
    finally:
        lock.release()
