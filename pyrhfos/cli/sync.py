"""``pulse sync``: copy lvs.cf to the partner with ``rsh_command``, then have both daemons reload it.

Piranha's setting names the remote shell: ``ssh`` or ``rsh``. Every step on the partner is an sh
script sent on standard input to ``sh -s`` (run_on_partner): the login shell there sees those two
words only. The file travels inside the script, lands under a temporary name and is renamed over the
partner's lvs.cf under ``flock lvs.cf.lock`` (piranha-gui's save lock), so a daemon starting there
never reads half a file and a GUI save landing meanwhile is not overwritten silently.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import shlex
import stat
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from ..config import ConfigError, loads
from ..config.model import Config, RshCommand
from ..daemon.control import request
from ..defaults import SOCKET
from ..fileutil import BACKUP_STAMP
from ..net.host import local_ipv4_addresses
from .common import EXIT_CONFIG, add_configfile, find_config, load_or_report

TIMEOUT = 60.0  # per ssh/rsh call: a partner that hangs must not hang the administrator's shell


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
MARK = "pulse-sync:"  # the partner's script prints its findings on lines of their own, after any noise
DONE = f"{MARK} replaced"  # printed last by the replace script: rsh reports no exit status
STATUS = f"{MARK} exit status"  # likewise for the reload
KEPT = f"{MARK} kept"  # the old file's backup: the number of its suffix
LOCK_WAIT = 30  # seconds the partner waits for lvs.cf's lock (a GUI save holds it for a moment)


def _run(
    argv: list[str], what: str, *, ok: tuple[int, ...] = (0,), script: str | None = None
) -> subprocess.CompletedProcess[str]:
    # The C locale: ssh's and rsh's own messages are reported as they are, not in the
    # administrator's language, and nothing they print depends on it.
    env = {**os.environ, "LC_ALL": "C"}
    stdin = {"input": script} if script is not None else {"stdin": subprocess.DEVNULL}
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=env, **stdin)
    except FileNotFoundError:
        raise SyncError(f"{what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise SyncError(f"{what}: no answer within {TIMEOUT:g} s ({shlex.join(argv[:1])})") from None
    if res.returncode not in ok:
        said = (res.stderr or res.stdout).strip() or f"exit status {res.returncode}"
        raise SyncError(f"{what}: {said}")
    return res


def run_on_partner(remote: Remote, script: str, what: str) -> subprocess.CompletedProcess[str]:
    """Run the sh ``script`` on the partner: ``sh -s`` reads it from standard input.

    The partner's login shell (sh, bash, tcsh...) parses only the constant words ``sh -s``; every path
    and value is inside the script, shlex-quoted for sh, so a newline, ``!``, quotes or ``$()`` in a
    path are data there, never the login shell's syntax.
    """
    return _run(remote.shell_argv(["sh", "-s"]), what, script=script)


@dataclass(frozen=True)
class PartnerFile:
    data: bytes
    mode: int  # permission bits
    serial: int | None  # None: the file has no serial_no, or does not parse


def read_script(target: str) -> str:
    """Print the partner's file as hex (od, POSIX) between two marks with its mode, or "absent"."""
    return (
        f"t={shlex.quote(target)}\n"
        f'if [ ! -e "$t" ] && [ ! -L "$t" ]; then printf "%s\\n" "{MARK} absent"; exit 0; fi\n'
        f'if [ ! -f "$t" ]; then echo "$t: not a regular file" >&2; exit 1; fi\n'
        'mode=$(stat -L -c %a -- "$t") || exit 1\n'
        f'printf "{MARK} file %s\\n" "$mode"\n'
        'od -An -v -tx1 < "$t" || exit 1\n'
        f'printf "%s\\n" "{MARK} end"\n'
    )


def parse_read(stdout: str, stderr: str) -> tuple[bytes, int] | None:
    lines = stdout.splitlines()
    if f"{MARK} absent" in lines:
        return None
    begin = next((i for i, line in enumerate(lines) if line.startswith(f"{MARK} file ")), None)
    end = f"{MARK} end"
    if begin is None or end not in lines[begin:]:
        raise SyncError(f"reading the partner's lvs.cf: {stderr.strip() or 'its shell sent no file'}")
    mode = int(lines[begin].split()[-1], 8)
    hexdump = "".join(lines[begin + 1 : lines.index(end, begin)])
    return bytes.fromhex(hexdump), mode


def fetch_partner_file(remote: Remote, target: str) -> PartnerFile | None:
    """The partner's current file; None when it has none. Any other failure is a SyncError:
    a file that exists but cannot be read must not pass for "nothing to lose"."""
    res = run_on_partner(remote, read_script(target), "reading the partner's lvs.cf")
    found = parse_read(res.stdout, res.stderr)
    if found is None:
        return None
    data, mode = found
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # as config.load reads an old file
    try:
        cfg, _ = loads(text, target)
    except ConfigError:
        return PartnerFile(data, mode, None)
    return PartnerFile(data, mode, cfg.serial_no)


def _printf_lines(data: bytes, target: str) -> str:
    """sh lines that write exactly ``data`` to the file ``target`` (printf with octal escapes)."""
    chunks = ["".join(f"\\{b:03o}" for b in data[i : i + 256]) for i in range(0, len(data), 256)]
    body = "".join(f"printf '{c}'\n" for c in chunks)
    return f"{{\n{body}}} > {target}"


def fingerprint(data: bytes | None) -> str:
    """What the replace script compares the partner's file with: its sha256, or "absent"."""
    return "absent" if data is None else hashlib.sha256(data).hexdigest()


def replace_script(data: bytes, mode: int, target: str, backup: str, expected: str) -> str:
    """The partner's script: under ``flock TARGET.lock`` (the lock piranha-gui's saves take), check
    the file is still the one read (``expected``, see fingerprint), write ``data`` as
    ``TARGET.pulse-sync`` (mode ``mode``), keep the old file (if any) as ``backup`` (``.1``, ``.2``... if
    taken) and print KEPT and that suffix's number (0: none; a name may hold a newline), rename the
    new one over it, print DONE.

    A failed write or copy of the old file replaces nothing and removes the staging file.
    """
    t, b, s = shlex.quote(target), shlex.quote(backup), shlex.quote(f"{target}.pulse-sync")
    keep = (
        f'b={b}; n=0; while [ -e "$b" ]; do n=$((n + 1)); b={b}.$n; done; '
        f'cp -p -- {t} "$b" || {{ rm -f -- {s}; exit 1; }}; printf \'{KEPT} %s\\n\' "$n"'
    )
    return (
        "umask 077\n"  # the staging file is the partner's secret until chmod gives it its mode
        f"exec 9>>{shlex.quote(f'{target}.lock')} || exit 1\n"
        f"flock -w {LOCK_WAIT} 9 || {{ echo {shlex.quote(f'{target}.lock')}': held by another process' >&2; "
        "exit 1; }\n"
        f"if [ -e {t} ]; then now=$(sha256sum < {t}) || exit 1; now=${{now%% *}}; else now=absent; fi\n"
        f'if [ "$now" != {shlex.quote(expected)} ]; then\n'
        f"    echo {t}': changed since it was read; run pulse sync again' >&2; exit 1\n"
        "fi\n"
        f"rm -f -- {s}\n"
        f"{_printf_lines(data, s)} || {{ rm -f -- {s}; exit 1; }}\n"
        f"chmod {mode:o} -- {s} || {{ rm -f -- {s}; exit 1; }}\n"
        f"if [ -e {t} ]; then {keep}; fi\n"
        f"mv -f -- {s} {t} && printf '%s\\n' {shlex.quote(DONE)}\n"
    )


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
    backup = f"{target}.{(now or datetime.datetime.now()).strftime(BACKUP_STAMP)}"
    expected = fingerprint(theirs.data if theirs is not None else None)
    what = f"replacing {target} on {remote.host}"
    res = run_on_partner(remote, replace_script(ours_data, ours_mode, target, backup, expected), what)
    lines = res.stdout.splitlines()  # a login shell may print more (a motd): look for ours only
    if DONE not in lines:
        said = res.stderr.strip() or "the partner's shell did not confirm the rename"
        raise SyncError(f"{what}: {said}; its file is unchanged unless the rename happened")
    say(f"copied {cfg.path} (serial {ours}) to {where}")
    for n in (line.removeprefix(KEPT).strip() for line in lines if line.startswith(KEPT)):
        kept = backup if n == "0" else f"{backup}.{n}"
        say(f"the partner's previous file is kept as {kept}")


def reload_script(pulse: str, socket: str) -> str:
    """``pulse reload`` on the partner, then its exit status on a line of its own (see STATUS)."""
    reload = shlex.join([pulse, "reload", "--socket", socket])
    return f"{reload} </dev/null\nprintf '%s %s\\n' {shlex.quote(STATUS)} \"$?\"\n"


def reload_remote(remote: Remote, pulse: str, socket: str) -> str:
    what = f"reload on {remote.host}"
    res = run_on_partner(remote, reload_script(pulse, socket), what)
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
        description="Copy lvs.cf to the partner through rsh_command (ssh or rsh, running 'sh -s' there "
        "with the steps on standard input) under a temporary name, rename it into place under the "
        "file's lock (flock FILE.lock), then reload pulse on both nodes. Refused when the file does not "
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
        help="passed to ssh as -o OPTION, e.g. IdentityFile=/root/.ssh/pulse (repeatable)",
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
