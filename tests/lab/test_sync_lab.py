"""`pulse sync` over a real OpenSSH server running in the backup's namespace, and `pulse reload`.

Each node reads its own lvs.cf (the lab's nodes share one disk), so a copy is visible as a change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrhfos.config import load, write
from pyrhfos.config.model import RshCommand
from pyrhfos_lab.lab import stop_process
from pyrhfos_lab.testbed import Testbed, wait_until

pytestmark = pytest.mark.lab

SSHD = "/usr/sbin/sshd"
PULSE = str(Path(sys.executable).with_name("pulse"))


def status(bed: Testbed, name: str) -> dict[str, Any]:
    res = bed.ask(name, "status", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def backups(cf: Path) -> list[Path]:
    return sorted(p for p in cf.parent.glob(f"{cf.name}.2*") if p.is_file())


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    return path.with_suffix(".pub").read_text().strip()


@contextlib.contextmanager
def sshd_on(bed: Testbed, tmp_path: Path, login_shell: str | None = None) -> Iterator[list[str]]:
    """A root-login, key-only sshd on b; yields the ssh options that reach it.

    ``login_shell``: root's shell for this sshd only, from a copy of /etc/passwd bound over it in
    the sshd's own mount namespace (ip netns exec made one; nothing reaches the host's).
    """
    if not os.access(SSHD, os.X_OK):
        pytest.skip("openssh-server is not installed (make test installs it)")
    ssh = tmp_path / "ssh"
    ssh.mkdir(mode=0o700)
    client_key = keygen(ssh / "id")
    host_key = keygen(ssh / "host")
    (ssh / "authorized_keys").write_text(client_key + "\n")
    (ssh / "known_hosts").write_text(f"{bed.b.ip} {' '.join(host_key.split()[:2])}\n")
    (ssh / "sshd_config").write_text(
        f"ListenAddress {bed.b.ip}\nHostKey {ssh / 'host'}\nPidFile {ssh / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {ssh / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "Subsystem sftp internal-sftp\n"  # scp speaks SFTP since OpenSSH 9
        # The test's files live under /tmp (mode 1777), which StrictModes would refuse.
        "StrictModes no\n"
    )
    argv = [SSHD, "-D", "-e", "-f", str(ssh / "sshd_config")]
    if login_shell is not None:
        passwd = ssh / "passwd"
        rows = [r.split(":") for r in Path("/etc/passwd").read_text().splitlines()]
        passwd.write_text(
            "".join(
                ":".join(r[:6] + [login_shell]) + "\n" if r[0] == "root" else ":".join(r) + "\n" for r in rows
            )
        )
        argv = ["sh", "-c", 'mount --bind "$0" /etc/passwd && exec "$@"', str(passwd), *argv]
    privsep = Path("/run/sshd")  # sshd insists on its privilege-separation directory
    made = not privsep.exists()
    privsep.mkdir(mode=0o755, exist_ok=True)
    log = open(tmp_path / "sshd.log", "wb")  # noqa: SIM115 - closed in finally
    sshd = bed.b.popen(argv, stdout=log, stderr=log)
    try:
        probe = f"import socket; socket.create_connection(({bed.b.ip!r}, 22), 1).close()"
        assert wait_until(lambda: bed.a.run_python(probe, check=False).returncode == 0, 15), (
            tmp_path / "sshd.log"
        ).read_text()
        yield [
            f"IdentityFile={ssh / 'id'}",
            "IdentitiesOnly=yes",
            f"UserKnownHostsFile={ssh / 'known_hosts'}",
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
        ]
    finally:
        stop_process(sshd)
        log.close()
        if made:
            shutil.rmtree(privsep, ignore_errors=True)


@pytest.fixture
def sshd_on_b(lab: Any, tmp_path: Path) -> Iterator[tuple[Testbed, list[str]]]:
    """A pulse pair with a root-login, key-only sshd on b; yields the ssh options that reach it."""
    bed = Testbed(lab, tmp_path, keepalive=0.5, deadtime=10, global_settings={"rsh_command": RshCommand.SSH})
    with sshd_on(bed, tmp_path) as options:
        yield bed, options


def own_config(bed: Testbed, name: str) -> Path:
    path = bed.workdir / name / "lvs.cf"
    path.parent.mkdir(exist_ok=True)
    path.write_text(write(bed.cfg))
    path.chmod(0o640)
    return path


def test_sync_over_real_ssh(sshd_on_b: tuple[Testbed, list[str]]) -> None:
    bed, options = sshd_on_b
    a_cf, b_cf = own_config(bed, "a"), own_config(bed, "b")
    bed.start("a", config=a_cf)
    bed.start("b", config=b_cf)
    assert bed.wait_holders({"a"}, 15) == {"a"}
    assert wait_until(lambda: status(bed, "b")["partner"]["config_match"] is True, 15), bed.log("b")

    def sync(*extra: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "pyrhfos.cli", "sync", "-c", str(a_cf), "--remote-file", str(b_cf)]
        argv += ["--remote-pulse", PULSE, "--remote-socket", str(bed.socket_path("b"))]
        argv += ["--socket", str(bed.socket_path("a"))]
        for o in options:
            argv += ["--ssh-option", o]
        return bed.a.run(*argv, *extra, check=False, timeout=90)

    # The administrator edits the primary's file and reloads it there: both nodes see the mismatch.
    cfg, _ = load(a_cf)
    a_cf.write_text(write(dataclasses.replace(cfg, serial_no=7, keepalive=0.4)))
    reloaded = bed.ask("a", "reload")
    assert reloaded.returncode == 0 and "serial 7" in reloaded.stdout, reloaded.stderr
    for name in ("a", "b"):
        assert wait_until(lambda n=name: status(bed, n)["partner"]["config_match"] is False, 10), name
    assert "DIFFERENT lvs.cf" in bed.ask("b", "status").stdout

    before = b_cf.read_bytes()
    done = sync()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "partner: reloaded" in done.stdout and "this node: reloaded" in done.stdout, done.stdout
    assert b_cf.read_bytes() == a_cf.read_bytes()
    assert (b_cf.stat().st_mode & 0o777) == 0o640  # scp -p: the mode travels with the file
    assert not Path(f"{b_cf}.pulse-sync").exists()
    # The partner's previous file is kept beside it, as the GUI keeps its own.
    (backup,) = backups(b_cf)
    assert backup.read_bytes() == before and f"kept as {backup}" in done.stdout, done.stdout
    again = sync("--no-reload")
    assert again.returncode == 0 and "already identical" in again.stdout, again.stdout + again.stderr
    assert backups(b_cf) == [backup], "nothing copied, nothing to keep"
    for name in ("a", "b"):
        assert wait_until(lambda n=name: status(bed, n)["partner"]["config_match"] is True, 10), name
    assert status(bed, "b")["node"]["serial"] == 7
    assert "config match" in bed.log("b")

    # A partner file with a higher serial may hold edits this node lacks: not overwritten.
    newer = b_cf.read_text().replace("serial_no = 7", "serial_no = 9")
    b_cf.write_text(newer)
    refused = sync("--no-reload")
    assert refused.returncode == 1 and "serial_no 9" in refused.stderr, refused.stderr
    assert b_cf.read_text() == newer
    forced = sync("--no-reload", "--force")
    assert forced.returncode == 0, forced.stderr
    assert b_cf.read_bytes() == a_cf.read_bytes()
    assert newer in [b.read_text() for b in backups(b_cf)], "the overwritten serial 9 file is kept"

    # A file that fails pulse --check is not copied at all.
    good = a_cf.read_text()
    a_cf.write_text(good.replace("keepalive = 0.4", "keepalive = soon"))
    bad = sync()
    assert bad.returncode == 2 and "not copied" in bad.stderr, bad.stderr
    assert b_cf.read_text() == good
    assert bed.holders() == {"a"}  # nothing above moved the service


def test_reload_reports_errors_and_keeps_running(lab: Any, tmp_path: Path) -> None:
    bed = Testbed(lab, tmp_path, keepalive=0.5, deadtime=10)
    bed.start("a")
    bed.start("b")
    assert bed.wait_holders({"a"}, 15) == {"a"}
    before = bed.config_path.read_text()
    bed.config_path.write_text(before.replace("deadtime = 10", "deadtime = 10\nbogus_key = 1"))
    res = bed.ask("a", "reload")
    assert res.returncode == 1
    assert "bogus_key" in res.stderr and "keeping the running configuration" in res.stderr, res.stderr
    moved = before.replace(f"primary = {bed.a.ip}", "primary = 192.0.2.99")
    bed.config_path.write_text(moved)
    res = bed.ask("a", "reload")
    assert res.returncode == 1 and "needs a restart" in res.stderr, res.stderr
    assert bed.holders() == {"a"}
    assert status(bed, "a")["node"]["state"] == "active"


HOSTILE = "b dir\nline ! !! 'single' \"double\" $(touch ran) `touch ran2` ${HOME}"


@pytest.mark.skipif(shutil.which("tcsh") is None, reason="tcsh not installed (make test installs it)")
def test_sync_to_a_tcsh_login_shell_with_a_hostile_path(lab: Any, tmp_path: Path) -> None:
    """Issue 13, item 17: root's login shell on the partner is tcsh and the partner's lvs.cf, pulse
    and control socket lie under a directory named with a newline, ``!``, quotes, ``$()`` and
    backquotes. tcsh sees ``sh -s`` only: the copy, the rename (under ``flock lvs.cf.lock``) and the
    reload all work, and nothing in the path runs."""
    bed = Testbed(lab, tmp_path, keepalive=0.5, deadtime=10, global_settings={"rsh_command": RshCommand.SSH})
    with sshd_on(bed, tmp_path, login_shell=shutil.which("tcsh")) as options:
        shell = bed.a.run(
            "ssh", *[a for o in options for a in ("-o", o)], f"root@{bed.b.ip}", "echo $shell", check=False
        )
        assert shell.stdout.strip().endswith("tcsh"), shell.stdout + shell.stderr
        a_cf = own_config(bed, "a")
        odd = tmp_path / HOSTILE
        odd.mkdir()
        b_cf = odd / "lvs.cf"
        b_cf.write_text(write(bed.cfg))
        before = b_cf.read_bytes()
        cfg, _ = load(a_cf)
        a_cf.write_text(write(dataclasses.replace(cfg, serial_no=7)))
        bed.start("a", config=a_cf)
        bed.start("b", config=b_cf)
        assert bed.wait_holders({"a"}, 15) == {"a"}
        pulse = odd / "pulse"
        pulse.write_text(f'#!/bin/sh\nexec {shlex.quote(PULSE)} "$@"\n')
        pulse.chmod(0o755)
        argv = [sys.executable, "-m", "pyrhfos.cli", "sync", "-c", str(a_cf), "--remote-file", str(b_cf)]
        argv += ["--remote-pulse", str(pulse), "--remote-socket", str(bed.socket_path("b"))]
        argv += ["--socket", str(bed.socket_path("a"))]
        for o in options:
            argv += ["--ssh-option", o]
        done = bed.a.run(*argv, check=False, timeout=90)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "partner: reloaded" in done.stdout, done.stdout
        assert b_cf.read_bytes() == a_cf.read_bytes()
        (backup,) = backups(b_cf)
        assert backup.read_bytes() == before and f"kept as {backup}" in done.stdout, done.stdout
        assert Path(f"{b_cf}.lock").exists(), "the rename ran under lvs.cf's lock"
        assert wait_until(lambda: status(bed, "b")["node"]["serial"] == 7, 10)
    assert not list(tmp_path.rglob("ran*")) and not Path("/root/ran").exists(), "nothing in the path ran"
