"""``pulse`` itself: Piranha's options, ``--check``, daemonizing, the pid file and logging.

Everything here is start-up plumbing; the running daemon lives in pyrhfos/daemon/. cli/main.py is the
entry point and sends ``status|takeover|release|reload`` to client.py and ``sync`` to sync.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import logging.handlers
import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..config.model import Config, ServiceKind
from ..config.summary import format_summary
from ..daemon.shell import Options, serve
from ..daemon.startup import AlreadyRunning, StartupError, check_host, lock_pidfile, read_heartbeat_key
from ..defaults import PIDFILE, SOCKET
from ..net.host import local_ipv4_addresses
from ..net.state import DEFAULT_DIR as DEFAULT_STATE_DIR
from .common import EXIT_CONFIG, add_configfile, find_config, load_or_report

log = logging.getLogger("pulse")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pulse",
        description="Heartbeat and failover daemon for a primary/backup pair (drop-in for Piranha's pulse).",
        epilog="Commands for a running pulse: pulse status|takeover|release|reload [--socket PATH]; "
        "copy lvs.cf to the partner: pulse sync (see pulse sync --help).",
        add_help=False,
    )
    p.add_argument("-?", "-h", "--help", action="help", help="show this help and exit")
    p.add_argument("--usage", action="store_true", help="show a one-line usage and exit")
    p.add_argument("--version", action="version", version=f"pulse (pyrhfos) {__version__}")
    add_configfile(p, "use")
    p.add_argument(
        "--check",
        action="store_true",
        help="check the configuration, print a summary and exit (0: valid, 2: errors)",
    )
    p.add_argument("-n", "--nodaemon", action="store_true", help="stay in the foreground; log to stderr too")
    p.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    p.add_argument(
        "--forceactive",
        action="store_true",
        help="primary: take the services back even if the backup is serving",
    )
    p.add_argument(
        "-t",
        "--test-start",
        action="store_true",
        help="run for real but take no VIP, send no ARP and run no command; log what would be done",
    )
    p.add_argument("--norun", action="store_true", help="historical name of --test-start")
    p.add_argument("--lvs", metavar="PATH", help="accepted for Piranha compatibility; ignored (no lvs child)")
    p.add_argument(
        "--fos", metavar="PATH", help="accepted for Piranha compatibility; ignored (fos is built in)"
    )
    p.add_argument(
        "--pidfile",
        metavar="PATH",
        default=PIDFILE,
        help=f"pid file (default {PIDFILE}); give each daemon on one host its own",
    )
    p.add_argument(
        "--garp-count",
        type=int,
        default=5,
        metavar="N",
        help="gratuitous ARPs sent per VIP after a takeover (default 5, as Piranha's send_arp)",
    )
    p.add_argument(
        "--garp-interval", type=float, default=1.0, metavar="SECONDS", help="seconds between them (default 1)"
    )
    p.add_argument(
        "--socket",
        metavar="PATH",
        default=SOCKET,
        help=f"control socket for pulse status/takeover/release (default {SOCKET}; '' for none)",
    )
    p.add_argument(
        "--command-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="limit for each start_cmd, stop_cmd and send_program; its process tree is killed after it",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        default=DEFAULT_STATE_DIR,
        help=f"with heartbeat_key: where the boot counter and the partner's newest beat are kept "
        f"(default {DEFAULT_STATE_DIR})",
    )
    return p


def stderr_is_journal() -> bool:
    """True when systemd connected stderr to the journal (JOURNAL_STREAM names its device:inode)."""
    try:
        dev, ino = (int(x) for x in os.environ.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(nodaemon: bool, verbose: bool, syslog_address: str = "/dev/log") -> None:
    root = logging.getLogger("pulse")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    root.handlers.clear()
    if os.path.exists(syslog_address):
        syslog = logging.handlers.SysLogHandler(address=syslog_address, facility="daemon")
        syslog.ident = f"pulse[{os.getpid()}]: "
        root.addHandler(syslog)
    # Under systemd (-n) stderr is the journal, which already gets each line through syslog:
    # a second copy there would show every event twice.
    if not root.handlers or (nodaemon and not stderr_is_journal()):
        err = logging.StreamHandler(sys.stderr)
        err.setFormatter(logging.Formatter("%(asctime)s pulse[%(process)d]: %(message)s"))
        root.addHandler(err)


def daemonize() -> Callable[[bool], None]:
    """Classic double fork: no controlling terminal, not a process-group leader.

    The starting process stays until the daemon calls the returned ``ready`` (its pid is in the pid
    file, or it failed), and exits 0 or 1 then: whoever started pulse (an init script, a test) reads
    the pid file only after that, never while it is still empty.
    """
    done, tell = os.pipe()
    if os.fork() > 0:
        os.close(tell)
        # b"" when the daemon died before saying anything: a failed start.
        os._exit(0 if os.read(done, 1) == b"0" else 1)
    os.close(done)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    os.umask(0o022)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)

    def ready(ok: bool) -> None:
        with contextlib.suppress(OSError):
            os.write(tell, b"0" if ok else b"1")
            os.close(tell)

    return ready


def cmd_check(path: str) -> int:
    cfg = load_or_report(path)
    if cfg is None:
        return EXIT_CONFIG
    from ..config.runnable import check_diagnostics

    for d in check_diagnostics(cfg):  # what this host would not run as written: the file stays valid
        print(str(d), file=sys.stderr)
    print(format_summary(cfg, local_ipv4_addresses()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The daemon and ``--check`` (cli/main.py sends the other words elsewhere)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.usage:
        parser.print_usage()
        return 0
    path = find_config(args.configfile)
    if args.check:
        return cmd_check(path)
    return run_daemon(args, path)


def lvs_can_run(cfg: Config, path: str, show_table: bool) -> bool:
    """An LVS file this host cannot run stops start-up (file:line:col); -t prints the table it would load."""
    from ..config.runnable import lvs_refusals

    refusals = lvs_refusals(cfg)
    for d in refusals:
        print(str(d), file=sys.stderr)
    if refusals:
        return False
    if show_table:
        from ..core.ruleset import describe
        from ..daemon.director import planned_commands

        print(f"# the nftables table pulse loads on {path}'s active director (every real server up):")
        print(describe(planned_commands(cfg)))
    return True


def run_daemon(args: argparse.Namespace, path: str) -> int:
    cfg = load_or_report(path)
    if cfg is None:
        return EXIT_CONFIG
    if cfg.service is ServiceKind.LVS and not lvs_can_run(cfg, path, args.test_start or args.norun):
        return EXIT_CONFIG
    try:
        membership = check_host(cfg)
        key = read_heartbeat_key(cfg)
    except StartupError as e:
        print(e.render(path), file=sys.stderr)
        return EXIT_CONFIG
    pidfile = os.path.abspath(args.pidfile)  # removed at exit, after daemonize moved to /
    try:
        # Locked before daemonizing (the children inherit the lock), so a refusal reaches stderr.
        lock = lock_pidfile(pidfile)
    except AlreadyRunning as e:
        print(e, file=sys.stderr)
        return 1
    except OSError as e:
        print(f"pulse: cannot open pid file {pidfile}: {e.strerror}", file=sys.stderr)
        return 1
    ready = daemonize() if not args.nodaemon else None
    setup_logging(args.nodaemon, args.verbose)
    if cfg.service is ServiceKind.LVS:
        from ..config.runnable import lvs_warnings

        for w in lvs_warnings(cfg):
            log.warning("%s", w)
    opts = Options(
        force_active=args.forceactive,
        test_start=args.test_start or args.norun,
        garp_count=max(1, args.garp_count),
        garp_interval=args.garp_interval,
        command_timeout=args.command_timeout,
        socket=args.socket or None,
        state_dir=args.state_dir,
    )
    try:
        lock.write(os.getpid())
    except OSError as e:
        log.error("cannot write pid file %s: %s", pidfile, e)
        lock.release()
        if ready is not None:
            ready(False)
        return 1
    if ready is not None:
        ready(True)
    try:
        return asyncio.run(serve(cfg, membership, opts, key))
    except StartupError as e:
        log.error("%s", e.render(path))
        return EXIT_CONFIG
    except Exception:  # once daemonized, stderr is /dev/null: the log is the only witness
        log.exception("pulse stopped on an unexpected error")
        return 1
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(main())
