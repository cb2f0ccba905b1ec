"""``pulse sync``: copy lvs.cf to the partner with ``rsh_command``, then have both daemons reload it.

Piranha's setting names the remote-shell family: ``ssh`` copies with scp and runs with ssh, ``rsh`` with
rcp and rsh. The file lands under a temporary name and is renamed over the partner's lvs.cf, so a
daemon starting on the partner never reads half a file. Every remote command is an argv list here;
the one string the remote shell sees is built from shlex-quoted words.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from ..config import ConfigError, load
from ..config.model import Config, RshCommand
from ..daemon.control import request
from ..defaults import SOCKET
from ..fileutil import BACKUP_STAMP
from ..net.host import local_ipv4_addresses
from .common import EXIT_CONFIG, add_configfile, find_config, load_or_report

TIMEOUT = 60.0  # per scp/ssh call: a partner that hangs must not hang the administrator's shell


class SyncError(Exception):
    """A step failed; the message says which and what the partner said."""


@dataclass(frozen=True)
class Remote:
    """How to reach the partner: the lvs.cf key ``rsh_command`` plus command-line overrides."""

    kind: RshCommand
    host: str
    user: str = "root"
    ssh_options: tuple[str, ...] = ()  # each passed as ``-o OPTION`` (ssh family only)

    def _opts(self) -> list[str]:
        if self.kind is RshCommand.RSH:
            return []
        # BatchMode: never stop to ask for a password; sync is key-based or fails at once.
        opts = ["BatchMode=yes", "ConnectTimeout=10", *self.ssh_options]
        return [arg for o in opts for arg in ("-o", o)]

    def copy_argv(self, source: str, target: str) -> list[str]:
        """Copy ``source`` (a local path or ``:path`` on the partner) to ``target`` (likewise)."""

        def where(p: str) -> str:
            return f"{self.user}@{self.host}{p}" if p.startswith(":") else p

        tool = ["scp", "-q", "-p"] if self.kind is RshCommand.SSH else ["rcp", "-p"]
        return [*tool, *self._opts(), where(source), where(target)]

    def shell_argv(self, words: Sequence[str]) -> list[str]:
        """Run ``words`` on the partner; the remote shell gets them quoted, never interpreted."""
        tool = ["ssh"] if self.kind is RshCommand.SSH else ["rsh"]
        return [*tool, *self._opts(), "-l", self.user, self.host, shlex.join(words)]


def partner_address(cfg: Config, local_addresses: Sequence[IPv4Address]) -> str:
    """The partner's public address (private if it has none) for the node this host is."""
    role = cfg.role_of(local_addresses)
    if role is None:
        raise SyncError(f"{cfg.path}: this host is neither the primary nor the backup it names")
    if not cfg.backup_active:
        raise SyncError(f"{cfg.path}: backup_active = 0: there is no partner to copy to")
    addresses = cfg.node_addresses(role.partner)
    if not addresses:
        raise SyncError(f"{cfg.path}: the partner has no address")
    return str(addresses[0])


NOT_RUNNING = 3  # `pulse reload`'s exit status when no daemon answers


def _run(argv: list[str], what: str, *, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    # The C locale: sync reads the tools' messages ("No such file"), which rcp's strerror would
    # otherwise translate, and a partner without a file would then look like a failed read.
    env = {**os.environ, "LC_ALL": "C"}
    try:
        res = subprocess.run(
            argv, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL, env=env
        )
    except FileNotFoundError:
        raise SyncError(f"{what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise SyncError(f"{what}: no answer within {TIMEOUT:g} s ({shlex.join(argv[:1])})") from None
    if res.returncode not in ok:
        said = (res.stderr or res.stdout).strip() or f"exit status {res.returncode}"
        raise SyncError(f"{what}: {said}")
    return res


@dataclass(frozen=True)
class PartnerFile:
    data: bytes
    mode: int  # permission bits (scp -p and rcp -p carry them)
    serial: int | None  # None: the file has no serial_no, or does not parse


def fetch_partner_file(remote: Remote, target: str) -> PartnerFile | None:
    """The partner's current file; None when it has none. Any other failure is a SyncError:
    a file that exists but cannot be read must not pass for "nothing to lose"."""
    with tempfile.TemporaryDirectory(prefix="pulse-sync-") as tmp:
        copy = os.path.join(tmp, "lvs.cf")
        try:
            _run(remote.copy_argv(f":{target}", copy), "reading the partner's lvs.cf")
        except SyncError as e:
            if "No such file" in str(e):  # scp and rcp both say so (strerror of ENOENT)
                return None
            raise
        with open(copy, "rb") as f:
            data = f.read()
        mode = stat.S_IMODE(os.stat(copy).st_mode)
        try:
            cfg, _ = load(copy)
        except ConfigError:
            return PartnerFile(data, mode, None)
        return PartnerFile(data, mode, cfg.serial_no)


DONE = "pulse-sync: replaced"  # printed last by the partner's line: rsh reports no exit status


def replace_command(staging: str, target: str, backup: str) -> list[str]:
    """The partner's command: keep its file (if any) as ``backup`` (``.1``, ``.2``... if taken) and
    print "kept NAME", rename ``staging`` over the file, print DONE.

    A failed copy of the old file replaces nothing and removes the staging file. The line is
    built from shlex-quoted words only and run by ``sh -c``: the login shell (csh, say) then
    reads one quoted word, not sh syntax.
    """
    t, b, s = shlex.quote(target), shlex.quote(backup), shlex.quote(staging)
    keep = (
        f'b={b}; n=0; while [ -e "$b" ]; do n=$((n + 1)); b={b}.$n; done; '
        f'cp -p -- {t} "$b" || {{ rm -f -- {s}; exit 1; }}; printf \'kept %s\\n\' "$b"'
    )
    line = f"if [ -e {t} ]; then {keep}; fi; mv -f -- {s} {t} && printf '%s\\n' {shlex.quote(DONE)}"
    return ["sh", "-c", line]


def sync(
    cfg: Config,
    remote: Remote,
    target: str,
    *,
    force: bool = False,
    say: Callable[[str], None] = print,
    now: datetime.datetime | None = None,
) -> None:
    """Copy ``cfg.path`` to ``target`` on the partner and rename it into place.

    The partner's previous file is kept beside it as ``TARGET.YYYYmmdd-HHMMSS`` (the GUI's backup
    name): a file that differs but does not carry a higher serial_no may still hold hand edits.
    """
    with open(cfg.path, "rb") as f:
        ours_data = f.read()
        ours_mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
    theirs = fetch_partner_file(remote, target)
    ours = cfg.serial_no or 0
    if theirs is not None and theirs.serial is not None and theirs.serial > ours and not force:
        raise SyncError(
            f"the partner's {target} has serial_no {theirs.serial}, newer than this file's {ours}: it may "
            "hold changes this one lacks; copy it here instead, or use --force to overwrite it"
        )
    where = f"{remote.user}@{remote.host}:{target}"
    if theirs is not None and (theirs.data, theirs.mode) == (ours_data, ours_mode):
        say(f"{where} is already identical to {cfg.path} (serial {ours}): nothing copied")
        return
    staging = f"{target}.pulse-sync"
    backup = f"{target}.{(now or datetime.datetime.now()).strftime(BACKUP_STAMP)}"
    _run(remote.copy_argv(cfg.path, f":{staging}"), f"copying to {remote.host}")
    what = f"replacing {target} on {remote.host}"
    res = _run(remote.shell_argv(replace_command(staging, target, backup)), what)
    lines = res.stdout.splitlines()  # a login shell may print more (a motd): look for ours only
    if DONE not in lines:
        said = res.stderr.strip() or "the partner's shell did not confirm the rename"
        raise SyncError(f"{what}: {said}; its file is unchanged unless the rename happened")
    say(f"copied {cfg.path} (serial {ours}) to {where}")
    for kept in (line.removeprefix("kept ") for line in lines if line.startswith("kept ")):
        say(f"the partner's previous file is kept as {kept}")


STATUS = "pulse-sync: exit status"  # rsh reports no remote exit status: the partner prints it


def reload_command(pulse: str, socket: str) -> list[str]:
    """``pulse reload`` on the partner, then its exit status on a line of its own (see STATUS)."""
    reload = shlex.join([pulse, "reload", "--socket", socket])
    return ["sh", "-c", f"{reload}; printf '%s %s\\n' {shlex.quote(STATUS)} \"$?\""]


def reload_remote(remote: Remote, pulse: str, socket: str) -> str:
    what = f"reload on {remote.host}"
    res = _run(remote.shell_argv(reload_command(pulse, socket)), what)
    lines = res.stdout.splitlines()
    codes = [line.removeprefix(STATUS).strip() for line in lines if line.startswith(STATUS)]
    if not codes or not codes[-1].isdigit():
        raise SyncError(f"{what}: {res.stderr.strip() or 'no exit status from the partner'}")
    if int(codes[-1]) == NOT_RUNNING:
        return "no pulse running there; it reads the new file when it starts"
    said = "\n".join(line for line in lines if not line.startswith(STATUS)).strip()
    if int(codes[-1]) != 0:
        raise SyncError(f"{what}: {res.stderr.strip() or said or f'exit status {codes[-1]}'}")
    return said


def sync_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pulse sync",
        description="Copy lvs.cf to the partner with rsh_command (ssh: scp, rsh: rcp) under a temporary "
        "name, rename it into place, then reload pulse on both nodes. Refused when the file does not "
        "pass pulse --check, or when the partner's copy has a higher serial_no (see --force).",
    )
    add_configfile(p, "copy")
    p.add_argument("--to", metavar="HOST", help="partner address (default: the partner's address in FILE)")
    p.add_argument("--user", default="root", help="remote user (default root)")
    p.add_argument("--remote-file", metavar="PATH", help="lvs.cf path on the partner (default: same as FILE)")
    p.add_argument("--remote-pulse", metavar="PATH", default="pulse", help="pulse on the partner")
    p.add_argument("--remote-socket", metavar="PATH", default=SOCKET, help="its control socket")
    p.add_argument("--socket", metavar="PATH", default=SOCKET, help="this node's control socket")
    p.add_argument(
        "--ssh-option",
        metavar="OPTION",
        action="append",
        default=[],
        help="passed to scp and ssh as -o OPTION, e.g. IdentityFile=/root/.ssh/pulse (repeatable)",
    )
    p.add_argument("--force", action="store_true", help="overwrite a partner file with a higher serial_no")
    p.add_argument("--no-reload", action="store_true", help="copy only; reload neither daemon")
    return p


def main(argv: Sequence[str]) -> int:
    """``pulse sync``: exit 0 copied and both reloaded, 1 a step failed, 2 the file has errors."""
    a = sync_parser().parse_args(argv)
    a.configfile = find_config(a.configfile)
    cfg = load_or_report(a.configfile)
    if cfg is None:
        print("pulse sync: not copied: the file does not pass pulse --check", file=sys.stderr)
        return EXIT_CONFIG
    try:
        host = a.to or partner_address(cfg, local_ipv4_addresses())
        remote = Remote(cfg.rsh_command, host, a.user, tuple(a.ssh_option))
        if remote.kind is RshCommand.RSH and remote.ssh_options:
            raise SyncError("--ssh-option needs rsh_command = ssh")
        target = a.remote_file or os.path.abspath(cfg.path)
        sync(cfg, remote, target, force=a.force)
        if a.no_reload:
            return 0
        print(f"partner: {reload_remote(remote, a.remote_pulse, a.remote_socket)}")
    except SyncError as e:
        print(f"pulse sync: {e}", file=sys.stderr)
        return 1
    try:
        answer = request(a.socket, "reload")
    except OSError:
        print(f"this node: no pulse answers on {a.socket}; it reads the file when it starts")
        return 0
    if not answer.get("ok"):
        print(f"pulse sync: local reload: {answer.get('error')}", file=sys.stderr)
        return 1
    print(f"this node: {answer['message']}")
    return 0
