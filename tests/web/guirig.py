"""A piranha-gui for the web tests: the example lvs.cf and a fast-hashed password in a temporary
directory, a clock the test moves, and the CSRF token of a page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pyrhfos.web import passwd
from pyrhfos.web.common import Settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "etc" / "lvs.cf.example"
PASSWORD = "correct horse battery"
# Fast scrypt for tests that hash many times; the file format stores the parameters, so verify follows.
FAST = {"n": 2**4, "r": 1, "p": 1}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def settings_in(tmp: Path, initscript: str = "/bin/false", **kw: Any) -> Settings:
    """Settings of a GUI editing tmp/lvs.cf (the example) with PASSWORD in tmp/piranha.passwd."""
    cfg = tmp / "lvs.cf"
    cfg.write_text(EXAMPLE.read_text())
    pw = tmp / "piranha.passwd"
    pw.write_text(passwd.hash_password(PASSWORD, **FAST) + "\n")
    return Settings(config=cfg, passwd_file=pw, socket=str(tmp / "none.sock"), initscript=initscript, **kw)


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert m, page
    return m.group(1)
