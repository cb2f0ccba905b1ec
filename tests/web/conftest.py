"""Every web test runs as on a SysV node with no syslog: no test runs systemctl or writes the host's log."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyrhfos.web import audit
from pyrhfos.web import control as webcontrol


@pytest.fixture(autouse=True)
def _no_systemd_no_syslog(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere: Path = tmp_path_factory.mktemp("host") / "absent"
    monkeypatch.setattr(webcontrol, "SYSTEMD_RUN", nowhere)
    monkeypatch.setattr(audit, "SYSLOG", str(nowhere))
