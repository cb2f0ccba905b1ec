"""What every piranha-gui page shares: its Settings, the /piranha blueprint they are routed on, and
the per-app state (throttle, sessions, locks, pending edits) that ``create_app`` keeps in app.extensions.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app

from ..defaults import SOCKET

DEFAULT_INITSCRIPT = "/etc/rc.d/init.d/pulse"
PREFIX = "/piranha"
AUTO = "auto"  # the query parameter of the monitoring page's own refresh (not activity: auth.py)
MAX_BODY = 64 * 1024  # bytes of a request body, for Flask and for waitress alike

# One blueprint for every module's pages, so endpoints stay "piranha.<view>" (the templates' url_for).
bp = Blueprint("piranha", __name__, url_prefix=PREFIX)


@dataclass
class Settings:
    config: Path
    passwd_file: Path
    socket: str = SOCKET
    initscript: str = DEFAULT_INITSCRIPT
    pulse: str = ""  # the pulse executable; "" = the one installed beside this Python
    command_timeout: float = 120.0
    behind_tls_proxy: bool = False  # X-Forwarded-Proto/-For believed from a loopback peer (app.py)

    def pulse_argv(self) -> list[str]:
        if self.pulse:
            return [self.pulse]
        beside = Path(sys.executable).parent / "pulse"
        # -I: a pyrhfos/ in the working directory must not be what runs as root.
        return [str(beside)] if beside.exists() else [sys.executable, "-I", "-m", "pyrhfos.cli"]


def ext() -> dict[str, Any]:
    """This app's state: settings, throttle, sessions, pending, action_lock, save_lock."""
    return current_app.extensions["piranha"]


def settings() -> Settings:
    return ext()["settings"]
