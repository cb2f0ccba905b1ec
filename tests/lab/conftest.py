"""The pulse pair of the lab tests (a Testbed), with the module's KEEPALIVE and DEADTIME; each pulse's
log goes to stderr at the end, so a failure shows what the daemons said."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrhfos_lab.testbed import Testbed


@pytest.fixture
def bed(lab: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Testbed]:
    keepalive, deadtime = request.module.KEEPALIVE, request.module.DEADTIME
    tb = Testbed(lab, tmp_path, keepalive=keepalive, deadtime=deadtime)
    try:
        yield tb
    finally:
        for name in ("a", "b"):
            log = tb.log(name)
            if log:
                sys.stderr.write(f"--- pulse log of {name} ---\n{log[-4000:]}\n")
