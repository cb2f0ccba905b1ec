"""Service probes as Piranha's nanny did them: TCP connect/send/expect, or an administrator's send_program.

Owns one probe's connection or child process from start to close; knows nothing of VIPs or failover state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import shlex
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeGuard

from .commands import run_command

if TYPE_CHECKING:
    from .config.model import Failover

READ_LIMIT = 64 * 1024  # stop reading an answer after this many bytes: a probe is not a download
PROGRAM_KILL_GRACE = 0.2  # a probe program needs no graceful shutdown: SIGKILL it soon after SIGTERM
ANY_ANSWER = "*"
_SHOW = 40  # characters of expect/answer quoted in a reason


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str  # short, for one log line
    latency: float  # seconds


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    # Compiled once per pattern: up to 200 services are probed every keepalive.
    return re.compile(pattern)


def _regex_error(expect: str | None, use_regex: bool) -> str | None:
    """Why ``expect`` cannot be used as a regex, or None (the config checker normally caught it)."""
    if not use_regex or not _wants_answer(expect):
        return None
    try:
        _regex(expect)
    except re.error as exc:
        return f"invalid expect regex {_show(expect)}: {exc}"
    return None


def _wants_answer(expect: str | None) -> TypeGuard[str]:
    """Is there text to match? ("*" matches any answer, even an empty one.)"""
    return bool(expect) and expect != ANY_ANSWER


def _show(text: str | bytes | None) -> str:
    """Quote (escaped, shortened) text for one log line."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    text = text or ""
    short = text[:_SHOW] + ("..." if len(text) > _SHOW else "")
    return repr(short)


def answer_matches(answer: bytes, expect: str | None, use_regex: bool) -> bool:
    """Does ``answer`` satisfy ``expect``?

    None, "" and "*" accept anything (also no answer at all). Otherwise the answer is decoded as
    latin-1 (the config's own code points: every byte maps to one character, nothing is lost) and
    ``expect`` must appear in it, or with ``use_regex`` ``re.search`` must find it. An invalid regex
    matches nothing.
    """
    if not _wants_answer(expect):
        return True
    text = answer.decode("latin-1")
    if use_regex:
        try:
            return _regex(expect).search(text) is not None
        except re.error:
            return False
    return expect in text


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def _secs(timeout: float) -> str:
    return f"{timeout:g}s"


async def probe_tcp(
    host: str, port: int, send: str | None, expect: str | None, use_regex: bool, timeout: float
) -> ProbeResult:
    """Connect to host:port, write ``send``, read until ``expect`` matches; all within ``timeout``.

    Without an expect (None or "") a successful connect and send is enough and nothing is read.
    ``expect = "*"`` takes any reaction of the server within ``timeout``: some bytes, or the connection
    closed (even with no byte, even by a reset); only silence fails it. Never raises (except
    CancelledError); the connection is always closed, with a reset when the probe gave up on it.
    """
    start = time.monotonic()

    def done(ok: bool, reason: str) -> ProbeResult:
        return ProbeResult(ok, reason, time.monotonic() - start)

    bad = _regex_error(expect, use_regex)
    if bad:
        return done(False, bad)
    try:
        data = send.encode("latin-1") if send else b""
    except UnicodeEncodeError:
        return done(False, f"send {_show(send)} is not latin-1 text")

    writer: asyncio.StreamWriter | None = None
    phase = "connecting"
    answer = bytearray()
    clean = False  # True: close with FIN; otherwise abort (RST) so nothing lingers
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=READ_LIMIT)
            if data:
                phase = "sending"
                writer.write(data)
                await writer.drain()
            if not expect:  # None or "": connect (and send) is the whole test
                clean = True
                return done(True, "ok")
            phase = "reading"
            while len(answer) < READ_LIMIT:
                try:
                    chunk = await reader.read(READ_LIMIT - len(answer))
                except ConnectionResetError:
                    if expect != ANY_ANSWER:
                        raise
                    chunk = b""  # a reset is a reaction too (the server closed on our unread send)
                if expect == ANY_ANSWER:  # any reaction will do: bytes, or a close with none
                    clean = True
                    return done(True, "ok")
                if not chunk:
                    break
                answer += chunk
                # Stop as soon as it matches: the server may keep the connection open.
                if answer_matches(bytes(answer), expect, use_regex):
                    clean = True
                    return done(True, "ok")
            clean = True
            if not answer:
                return done(False, f"connection closed without an answer (expected {_show(expect)})")
            limit = f" in {READ_LIMIT // 1024} KiB" if len(answer) >= READ_LIMIT else ""
            return done(False, f"answer did not match {_show(expect)}{limit} (got {_show(bytes(answer))})")
    except TimeoutError:
        if phase != "reading":
            return done(False, f"timeout after {_secs(timeout)} ({phase})")
        if not answer:
            return done(False, f"timeout after {_secs(timeout)} (no answer)")
        return done(
            False,
            f"timeout after {_secs(timeout)} (answer did not match {_show(expect)}, "
            f"got {_show(bytes(answer))})",
        )
    except OSError as exc:
        reason = _os_reason(exc)
        return done(False, reason if phase == "connecting" else f"{reason} while {phase}")
    except Exception as exc:  # a probe must report, never crash the monitor
        return done(False, f"probe error: {type(exc).__name__}: {exc}")
    finally:
        if writer is not None:
            if clean:
                writer.close()
            else:
                writer.transport.abort()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def probe_program(
    program: str, host: str, expect: str | None, use_regex: bool, timeout: float
) -> ProbeResult:
    """Run ``program`` (``%h`` = host) under /bin/sh via run_command, killing its tree after ``timeout``.

    With an expect its output (stdout and stderr) must match, and the exit status is ignored ("*": any
    output, even none, once the program has exited); without one, exit status 0 is success.
    ``host`` must come from the configuration (the VIP), never from the network: it becomes part of a
    shell command.
    """
    start = time.monotonic()

    def done(ok: bool, reason: str) -> ProbeResult:
        return ProbeResult(ok, reason, time.monotonic() - start)

    bad = _regex_error(expect, use_regex)
    if bad:
        return done(False, bad)
    # Quoting changes nothing for an IP address and keeps anything stranger one shell word.
    cmd = program.replace("%h", shlex.quote(host))
    try:
        result = await run_command(cmd, timeout, kill_grace=PROGRAM_KILL_GRACE)
    except Exception as exc:  # a probe must report, never crash the monitor
        return done(False, f"send_program error: {type(exc).__name__}: {exc}")
    if result.timed_out:
        return done(False, f"send_program timed out after {_secs(timeout)}")
    if result.returncode is None:
        return done(False, f"send_program could not run: {result.output.strip()}")
    if expect == ANY_ANSWER:
        return done(True, "ok")
    if expect:
        # run_command decoded the output as UTF-8; back to bytes so matching sees the same code
        # points as a TCP answer would (the config holds latin-1 code points).
        raw = result.output.encode("utf-8")
        if answer_matches(raw, expect, use_regex):
            return done(True, "ok")
        if not raw.strip():
            return done(False, f"send_program printed nothing (expected {_show(expect)})")
        return done(False, f"send_program output did not match {_show(expect)} (got {_show(raw.strip())})")
    if result.returncode == 0:
        return done(True, "ok")
    if result.returncode < 0:
        return done(False, f"send_program killed by signal {-result.returncode}")
    return done(False, f"send_program exited {result.returncode}")


async def probe(f: Failover, host: str) -> ProbeResult:
    """Probe failover service ``f`` at ``host`` (its VIP): send_program if set, else TCP to f.port."""
    if f.send_program:  # "" counts as unset: an empty command would always succeed
        return await probe_program(f.send_program, host, f.expect, f.use_regex, f.timeout)
    if f.port is None:
        return ProbeResult(False, "no port to probe", 0.0)
    return await probe_tcp(host, f.port, f.send, f.expect, f.use_regex, f.timeout)
