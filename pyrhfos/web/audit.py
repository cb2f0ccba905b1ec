"""piranha-gui's audit trail: logins, saves and actions, one line each, to syslog (facility authpriv)
as ``piranha-gui[pid]``; stderr (the journal under systemd) when there is no syslog socket.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import threading
import unicodedata

from flask import current_app, has_app_context, has_request_context, request

SYSLOG = "/dev/log"
_made = threading.Lock()  # one trail per app, even when two first requests race


class Audit:
    """One audit trail; its own logger, so nothing else's handlers or levels touch it."""

    def __init__(self, address: str | None = None) -> None:
        """``address``: the syslog socket, SYSLOG when None (read now: tests point it elsewhere)."""
        address = address or SYSLOG
        self.logger = logging.Logger("piranha-gui.audit", logging.INFO)
        handler: logging.Handler
        if os.path.exists(address):
            handler = logging.handlers.SysLogHandler(
                address=address, facility=logging.handlers.SysLogHandler.LOG_AUTHPRIV
            )
            handler.ident = f"piranha-gui[{os.getpid()}]: "
        else:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(f"piranha-gui[{os.getpid()}]: %(message)s"))
        self.logger.addHandler(handler)

    def log(self, message: str, level: int = logging.INFO) -> None:
        self.logger.log(level, "%s", clean(message))

    def close(self) -> None:
        for handler in self.logger.handlers:
            handler.close()


def clean(text: str) -> str:
    """One line whatever the input: control, format and separator characters shown as escapes."""
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c)[0] in "CZ" and c != " " else c
        for c in text
    )


def record(message: str, level: int = logging.INFO) -> None:
    """Log ``message`` with the client's address, on the current app's trail (made at first use)."""
    if not has_app_context():
        return
    state = current_app.extensions["piranha"]
    with _made:
        trail = state.get("audit")
        if trail is None:
            trail = state["audit"] = Audit()
    addr = request.remote_addr if has_request_context() else None
    trail.log(f"{message} (from {addr or '?'})", level)
