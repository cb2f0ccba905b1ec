"""The piranha-gui password: a salted scrypt hash in a 0600 file, and the ``piranha-passwd`` command.

There is no default password (CVE-2000-0248): until this file exists the GUI lets nobody in. The
password is never handed to a shell or another program (CVE-2000-0322): it is hashed here, in-process.
File format, one line: ``scrypt$N$r$p$<salt hex>$<hash hex>`` (parameters stored so they can grow).
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import hmac
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from ..fileutil import atomic_write

DEFAULT_PASSWD_FILE = "/etc/sysconfig/ha/conf/piranha.passwd"
USER = "piranha"
# scrypt cost: n=2**14, r=8 takes about 50 ms and 16 MiB; slow enough against guessing, fast for a login.
N, R, P = 2**14, 8, 1
MAX_MEMORY = 64 * 1024 * 1024  # scrypt's memory for one login, at most
SALT_BYTES = 16
HASH_BYTES = 32
MIN_LENGTH = 8
MAX_LENGTH = 1024  # scrypt hashes any length; a bound keeps a hostile form cheap


class PasswdError(Exception):
    """The password file is unusable, or a password is refused."""


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=2 * MAX_MEMORY, dklen=HASH_BYTES
    )


def verify_hash(stored: str, password: str) -> bool:
    """True when ``password`` matches ``stored``; a malformed record never matches."""
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.strip().split("$")
        if scheme != "scrypt":
            return False
        n_, r_, p_ = int(n), int(r), int(p)
        salt, digest = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        return False
    # A damaged or hostile file must neither crash a login nor make it cost seconds or gigabytes:
    # scrypt needs n a power of two and 128*r*n bytes; allow at most 4x the default work.
    if not (2 <= n_ and n_ & (n_ - 1) == 0 and 1 <= r_ <= 32 and 1 <= p_ <= 16):
        return False
    if 128 * r_ * n_ > MAX_MEMORY or n_ * r_ * p_ > 4 * N * R * P or len(password) > MAX_LENGTH:
        return False
    try:
        return hmac.compare_digest(_scrypt(password, salt, n_, r_, p_), digest)
    except (ValueError, MemoryError):
        return False


def read_hash(path: str | os.PathLike[str]) -> str | None:
    """The stored record, or None when no password has been set (no file, or an empty one)."""
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise PasswdError(f"cannot read {path}: {e}") from None
    return text or None


def is_set(path: str | os.PathLike[str]) -> bool:
    try:
        return read_hash(path) is not None
    except PasswdError:
        return False


def verify(path: str | os.PathLike[str], password: str) -> bool:
    """True when a password is set and ``password`` is it; False otherwise (never a default)."""
    try:
        stored = read_hash(path)
    except PasswdError:
        return False
    return stored is not None and verify_hash(stored, password)


def check_password(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise PasswdError(f"the password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswdError(f"the password must have at most {MAX_LENGTH} characters")
    if any(ord(c) < 0x20 or c == "\x7f" for c in password):
        raise PasswdError("the password must not contain control characters")


def set_password(path: str | os.PathLike[str], password: str) -> None:
    check_password(password)
    atomic_write(path, (hash_password(password) + "\n").encode("ascii"), 0o600)


def read_stdin() -> str:
    """The password from a pipe: its first line, without the newline. A terminal is refused: what is
    typed there would echo (the prompt, without --stdin, does not)."""
    if sys.stdin is None or sys.stdin.isatty():
        raise PasswdError("--stdin reads a pipe; to type the password, run piranha-passwd without arguments")
    data = sys.stdin.buffer.read(4 * MAX_LENGTH + 2)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PasswdError("the password on standard input is not UTF-8") from None
    line = text.removesuffix("\n").removesuffix("\r")
    if not line:
        raise PasswdError("no password on standard input")
    return line  # a second line stays in it: check_password refuses its newline


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="piranha-passwd",
        description=f"Set the password of the '{USER}' user of piranha-gui (stored as a salted scrypt hash).",
    )
    parser.add_argument(
        "password",
        nargs="?",
        help="the new password; visible to every user in the process list while this runs, so prefer "
        "the prompt (no argument) or --stdin",
    )
    parser.add_argument(
        "--stdin", action="store_true", help="read the password from standard input (a pipe), one line"
    )
    parser.add_argument(
        "--passwd-file",
        default=DEFAULT_PASSWD_FILE,
        help=f"where to store it (default {DEFAULT_PASSWD_FILE})",
    )
    parser.add_argument("--config", help="accepted for symmetry with piranha-gui; unused")
    args = parser.parse_args(argv)
    if args.stdin and args.password is not None:
        parser.error("give the password either as an argument or on standard input (--stdin), not both")
    password = args.password
    if password is not None:
        # /proc/PID/cmdline is world-readable: any local user may have seen it, and shells keep history.
        print(
            "piranha-passwd: warning: a password given as an argument is visible to every local user "
            "in the process list (ps) and may stay in the shell's history; use --stdin or the prompt",
            file=sys.stderr,
        )
    elif args.stdin:
        try:
            password = read_stdin()
        except PasswdError as e:
            print(f"piranha-passwd: {e}; nothing changed", file=sys.stderr)
            return 1
    else:
        try:
            password = getpass.getpass("New piranha-gui password: ")
            again = getpass.getpass("Again: ")
        except (EOFError, KeyboardInterrupt):
            print("piranha-passwd: no password given", file=sys.stderr)
            return 1
        if password != again:
            print("piranha-passwd: the two passwords differ; nothing changed", file=sys.stderr)
            return 1
    try:
        set_password(args.passwd_file, password)
    except (PasswdError, OSError) as e:
        print(f"piranha-passwd: {e}; nothing changed", file=sys.stderr)
        return 1
    print(f"piranha-passwd: password for '{USER}' stored in {args.passwd_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
