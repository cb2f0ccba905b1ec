"""The control socket: root-only Unix socket for ``pulse status|takeover|release|reload``.

One JSON request line in, one JSON answer line out. The daemon supplies the handler; this module owns the
socket (mode 0600), the request format and the client side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

COMMANDS = ("status", "takeover", "release", "reload")
MAX_REQUEST = 4096  # bytes of one request line, newline included
REQUEST_TIMEOUT = 5.0  # seconds for a client to send its line

log = logging.getLogger("pulse")

Handler = Callable[[str], Awaitable[dict[str, Any]]]


class ControlServer:
    """Serves requests on ``path`` until closed; a stale socket file from a crash is replaced."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        if answers(self.path):
            raise OSError(f"another process answers on {self.path}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # stale: nobody listens on it
        old = os.umask(0o177)  # created 0600 from the start: no window where others may connect
        try:
            # limit: readline stops at MAX_REQUEST bytes instead of buffering a hostile line whole.
            self.server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_REQUEST)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Whatever arrives, the client gets one answer line: a bad request is an error reply, never a
        # traceback in the daemon's log.
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            except TimeoutError:
                answer = refuse(f"no request line within {REQUEST_TIMEOUT:g} s")
            except ValueError:  # the line overran the reader's limit
                answer = refuse(f"request longer than {MAX_REQUEST} bytes")
            else:
                command, answer = parse_request(line)
                if command is not None:
                    try:
                        answer = await self.handler(command)
                    except Exception as e:  # a bug in one request must not close the socket for good
                        log.exception("control request %r failed", command)
                        answer = refuse(f"internal error: {type(e).__name__}")
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except OSError:
            pass  # the client went away: nobody to answer
        finally:
            writer.close()


def refuse(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}


def parse_request(line: bytes) -> tuple[str | None, dict[str, Any]]:
    """The command of one request line, or None and the error reply that says what is wrong with it."""
    usage = f"use one of {', '.join(COMMANDS)}"
    if len(line) > MAX_REQUEST:
        return None, refuse(f"request longer than {MAX_REQUEST} bytes")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, refuse("request is not UTF-8")
    try:
        request = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: a few thousand nested brackets
        return None, refuse(f'request is not JSON; send {{"command": NAME}}, {usage}')
    if not isinstance(request, dict):
        return None, refuse(f'request is not a JSON object; send {{"command": NAME}}, {usage}')
    command = request.get("command")
    if not isinstance(command, str):
        return None, refuse(f'"command" must be a string; {usage}')
    if command not in COMMANDS:
        return None, refuse(f"unknown command {command[:40]!r}; {usage}")
    return command, {}


def answers(path: str) -> bool:
    """Does something listen on the Unix socket ``path`` (a running pulse), rather than a stale file?"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(path)
        except OSError:  # absent, refused (stale file), not a socket: nobody there
            return False
    return True


def request(path: str, command: str, timeout: float = 30.0) -> dict[str, Any]:
    """Ask the daemon behind ``path``; raises OSError when nobody answers there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps({"command": command}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)
