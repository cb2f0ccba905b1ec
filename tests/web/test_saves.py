"""piranha-gui's saves, actions and audit trail (issue 13, items 8-11): what is saved is what pulse
reads, a save never overwrites a change that landed meanwhile, every login/save/action reaches
syslog, and start/stop run outside the GUI's cgroup and environment.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import logging.handlers
import os
import re
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from guirig import EXAMPLE, PASSWORD, csrf_of, settings_in

from pyrhfos import fileutil
from pyrhfos.config import load
from pyrhfos.web import app as webapp
from pyrhfos.web import audit, edits
from pyrhfos.web import control as webcontrol
from pyrhfos.web.common import Settings

LATIN1 = ("# caf\xe9: an old latin-1 file\n" + EXAMPLE.read_text()).encode("latin-1")


@pytest.fixture
def gui(tmp_path: Path) -> dict[str, Any]:
    settings = settings_in(tmp_path, initscript=str(tmp_path / "init"))
    cfg = settings.config
    app = webapp.create_app(settings)
    app.config["TESTING"] = True
    return {"app": app, "client": app.test_client(), "cfg": cfg, "tmp": tmp_path, "settings": settings}


def login(client: Any, password: str = PASSWORD) -> Any:
    token = csrf_of(client.get("/piranha/login").get_data(as_text=True))
    return client.post(
        "/piranha/login", data={"csrf_token": token, "username": "piranha", "password": password}
    )


def post_form(client: Any, url: str, data: dict[str, str]) -> Any:
    token = csrf_of(client.get(url).get_data(as_text=True))
    return client.post(url, data={"csrf_token": token, **data})


def new_failover(**changes: str) -> dict[str, str]:
    base = {
        "name": "db1", "active": "1", "vip": "192.168.2.12", "device": "eth0:2", "port": "5432",
        "timeout": "5", "start_cmd": "/etc/rc.d/init.d/postgresql start",
        "stop_cmd": "/etc/rc.d/init.d/postgresql stop",
    }  # fmt: skip
    return {**base, **changes}


def confirm(client: Any, url: str) -> Any:
    page = client.get(url).get_data(as_text=True)
    base = re.search(r'name="base_sha256" value="([0-9a-f]+)"', page)
    assert base, page
    return client.post(url, data={"csrf_token": csrf_of(page), "base_sha256": base.group(1), "save": "1"})


def proposal_for(cfg: Path, **global_changes: Any) -> edits.Proposal:
    current = edits.read_current(cfg)
    assert current.cfg is not None
    return edits.propose(current, dataclasses.replace(current.cfg, **global_changes), "test edit")


def leftovers(tmp: Path) -> list[str]:
    """Files beside lvs.cf that a refused save must not leave: backups, temporary files."""
    names = (p.name for p in tmp.iterdir() if p.name.startswith(("lvs.cf.", ".lvs.cf")))
    return sorted(n for n in names if n != "lvs.cf.lock")  # the lock stays: flock(1) leaves it too


# ------------------------------------------------------------ item 8: the diff is what pulse reads


def test_latin1_bytes_that_pulse_reads_as_utf8_are_refused_before_the_diff(gui: dict[str, Any]) -> None:
    """In a latin-1 file, typed "ï»¿" is EF BB BF: pulse would read U+FEFF, not what the diff shows."""
    client, cfg = gui["client"], gui["cfg"]
    cfg.write_bytes(LATIN1)  # its only non-ASCII byte is in a comment, which a save drops
    login(client)
    resp = post_form(client, "/piranha/failover/new", new_failover(start_cmd="/bin/true \xef\xbb\xbf"))
    page = html.unescape(resp.get_data(as_text=True))
    assert resp.status_code == 422 and "U+FEFF" in page and "latin-1" in page
    assert cfg.read_bytes() == LATIN1


def test_save_reads_the_new_bytes_with_pulses_loader_before_the_rename(gui: dict[str, Any]) -> None:
    """A proposal whose bytes would read otherwise (made before the check, or by a future bug): not saved."""
    cfg, tmp = gui["cfg"], gui["tmp"]
    cfg.write_bytes(LATIN1)
    good = proposal_for(cfg, keepalive=3)
    text = good.text.replace('"/etc/rc.d/init.d/httpd start"', '"/etc/rc.d/init.d/httpd start \xef\xbb\xbf"')
    assert text != good.text
    bad = dataclasses.replace(good, text=text)
    with pytest.raises(edits.Misread, match="differently from the diff"):
        edits.save(cfg, bad)
    assert cfg.read_bytes() == LATIN1 and leftovers(tmp) == []
    # The same edit without the stray bytes is saved, and the latin-1 file stays latin-1.
    latin = dataclasses.replace(good, text=good.text.replace("httpd start", "httpd start caf\xe9"))
    edits.save(cfg, latin)
    assert b"caf\xe9" in cfg.read_bytes()
    assert load(cfg)[0].failovers[0].start_cmd == "/etc/rc.d/init.d/httpd start caf\xe9"


def test_latin1_text_in_a_latin1_file_is_saved_as_latin1(gui: dict[str, Any]) -> None:
    client, cfg = gui["client"], gui["cfg"]
    cfg.write_bytes(LATIN1)
    login(client)
    resp = post_form(client, "/piranha/failover/new", new_failover(start_cmd="/usr/bin/logger caf\xe9"))
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert confirm(client, resp.headers["Location"]).status_code == 200
    assert b"logger caf\xe9" in cfg.read_bytes()
    assert load(cfg)[0].failovers[1].start_cmd == "/usr/bin/logger caf\xe9"


# ------------------------------------------------------------ item 9: save races


def test_a_change_landing_between_confirm_and_rename_is_not_overwritten(
    gui: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that takes no lock (an editor) lands after the first check: the re-check sees it."""
    client, cfg, tmp = gui["client"], gui["cfg"], gui["tmp"]
    login(client)
    resp = post_form(client, "/piranha/failover/new", new_failover())
    assert resp.status_code == 302
    other = cfg.read_text().replace("deadtime = 10", "deadtime = 11")
    real_load = load  # edits.load is config.load

    def load_after_someone_writes(path: Any) -> Any:
        if Path(path).name.startswith(".lvs.cf."):  # the save's own read-back of its temporary file
            cfg.write_text(other)
        return real_load(path)

    monkeypatch.setattr(edits, "load", load_after_someone_writes, raising=False)
    saved = confirm(client, resp.headers["Location"])
    assert saved.status_code == 409 and "changed since" in saved.get_data(as_text=True)
    assert cfg.read_text() == other and leftovers(tmp) == []


def test_a_save_waits_for_pulse_syncs_lock_and_sees_its_file(gui: dict[str, Any]) -> None:
    """pulse sync's receiving side (util-linux flock on lvs.cf.lock) replaces the file meanwhile."""
    cfg, tmp = gui["cfg"], gui["tmp"]
    proposal = proposal_for(cfg, keepalive=3)
    synced = cfg.read_text().replace("deadtime = 10", "deadtime = 12")
    (tmp / "staging").write_text(synced)
    held = tmp / "held"
    script = f"touch {held}; sleep 0.6; mv -f {tmp / 'staging'} {cfg}"
    sync = subprocess.Popen(["flock", f"{cfg}.lock", "sh", "-c", script])
    try:
        deadline = time.monotonic() + 10
        while not held.exists():
            assert time.monotonic() < deadline and sync.poll() is None
            time.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(edits.Conflict):
            edits.save(cfg, proposal)
        assert time.monotonic() - started > 0.3  # it waited for the lock, then saw the new file
    finally:
        assert sync.wait(10) == 0
    assert cfg.read_text() == synced and leftovers(tmp) == []


def test_the_lock_file_is_0600_and_shared_with_flock(tmp_path: Path) -> None:
    path = tmp_path / "lvs.cf"
    old = os.umask(0)
    try:
        with fileutil.locked(path):
            assert stat.S_IMODE(os.stat(f"{path}.lock").st_mode) == 0o600
            busy = subprocess.run(["flock", "-n", f"{path}.lock", "true"], check=False)
            assert busy.returncode == 1
    finally:
        os.umask(old)
    assert subprocess.run(["flock", "-n", f"{path}.lock", "true"], check=False).returncode == 0
    holder = subprocess.Popen(["flock", f"{path}.lock", "sleep", "5"])
    try:
        deadline = time.monotonic() + 5
        while subprocess.run(["flock", "-n", f"{path}.lock", "true"], check=False).returncode == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(TimeoutError, match="held by another process"), fileutil.locked(path, timeout=0.2):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_save_through_a_symlink_locks_the_configured_name(gui: dict[str, Any]) -> None:
    """pulse sync renames over the configured name (the link): the GUI locks that name too."""
    cfg: Path = gui["cfg"]
    real = cfg.with_name("real-lvs.cf")
    cfg.rename(real)
    cfg.symlink_to(real.name)
    proposal = proposal_for(cfg, keepalive=3)
    with fileutil.locked(cfg), pytest.raises(TimeoutError):
        edits.save(cfg, proposal, lock_timeout=0.2)
    assert not Path(f"{real}.lock").exists()
    edits.save(cfg, proposal)
    assert load(real)[0].keepalive == 3


# ------------------------------------------------------------ item 10: the audit trail


@pytest.fixture
def syslog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as fake:
        fake.bind(str(path))
        fake.settimeout(0)
        monkeypatch.setattr(audit, "SYSLOG", str(path))
        yield fake


def lines_of(fake: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(fake.recv(65536).decode())
        except BlockingIOError:
            return out


def test_logins_saves_and_actions_reach_syslog_authpriv(gui: dict[str, Any], syslog: socket.socket) -> None:
    client, tmp = gui["client"], gui["tmp"]
    script = tmp / "init"
    script.write_text("#!/bin/sh\nexit 3\n")
    script.chmod(0o755)
    assert login(client, "wrong password").status_code == 403
    assert login(client).status_code == 302
    resp = post_form(client, "/piranha/failover/new", new_failover())
    assert confirm(client, resp.headers["Location"]).status_code == 200
    page = client.get("/piranha/control").get_data(as_text=True)
    client.post("/piranha/control/stop", data={"csrf_token": csrf_of(page)})
    got = lines_of(syslog)
    authpriv = logging.handlers.SysLogHandler.LOG_AUTHPRIV * 8
    head = f"piranha-gui[{os.getpid()}]: "
    warning, info = f"<{authpriv + 4}>{head}", f"<{authpriv + 6}>{head}"
    assert got[0] == f"{warning}login failed (from 127.0.0.1)\x00"
    assert got[1] == f"{info}login ok (from 127.0.0.1)\x00"
    assert got[2].startswith(f"{info}saved {gui['cfg']} serial 2: failover service 'db1' added")
    assert got[2].endswith(" (from 127.0.0.1)\x00")
    assert got[3].startswith(f"{info}action stop: /usr/bin/env -i ") and "exit status 3 (from" in got[3]
    assert len(got) == 4


def test_an_audit_line_stays_one_line(syslog: socket.socket) -> None:
    trail = audit.Audit()
    trail.log("saved: name\nforged line\u2028and\x1b[31m")
    trail.close()
    assert lines_of(syslog) == [
        f"<86>piranha-gui[{os.getpid()}]: saved: name\\nforged line\\u2028and\\x1b[31m\x00"
    ]


# ------------------------------------------------------------ item 11: start pulse


def test_start_and_stop_argv_under_systemd_and_sysv(gui: dict[str, Any], tmp_path: Path) -> None:
    settings: Settings = gui["settings"]
    run = tmp_path / "run" / "systemd" / "system"
    for action in ("start", "stop"):
        assert webcontrol.action_argv(settings, action, run) == [
            "/usr/bin/env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=C", settings.initscript, action,
        ]  # fmt: skip
    run.mkdir(parents=True)
    assert webcontrol.action_argv(settings, "start", run) == ["systemctl", "start", "pulse"]
    assert webcontrol.action_argv(settings, "stop", run) == ["systemctl", "stop", "pulse"]
    # reload and sync talk to pulse itself either way.
    assert webcontrol.action_argv(settings, "reload", run)[-3:] == ["reload", "--socket", settings.socket]


def test_sysv_init_script_gets_a_clean_environment(
    gui: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, tmp = gui["client"], gui["tmp"]
    script = tmp / "init"
    script.write_text("#!/bin/sh\nenv\n")
    script.chmod(0o755)
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.leak")
    monkeypatch.setenv("PYTHONPATH", "/tmp/leak")
    login(client)
    page = client.get("/piranha/control").get_data(as_text=True)
    out = html.unescape(
        client.post("/piranha/control/start", data={"csrf_token": csrf_of(page)}).get_data(as_text=True)
    )
    assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in out and "LANG=C" in out
    assert "leak" not in out


def test_start_under_systemd_runs_systemctl(
    gui: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client, tmp = gui["client"], gui["tmp"]
    run = tmp_path / "run" / "systemd" / "system"
    run.mkdir(parents=True)
    monkeypatch.setattr(webcontrol, "SYSTEMD_RUN", run)
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text('#!/bin/sh\necho "fake systemctl: $*"\n')
    (bin_dir / "systemctl").chmod(0o755)
    (tmp / "init").write_text("#!/bin/sh\necho init script ran\n")
    (tmp / "init").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    login(client)
    page = client.get("/piranha/control").get_data(as_text=True)
    out = client.post("/piranha/control/start", data={"csrf_token": csrf_of(page)}).get_data(as_text=True)
    assert "fake systemctl: start pulse" in out and "init script ran" not in out
