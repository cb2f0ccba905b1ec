"""The control socket: root-only Unix socket for ``pulse status|takeover|release|reload``.

One JSON request line in, one JSON answer line out. The daemon supplies the handler; this module owns the
socket (mode 0600), the request format and the client side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

COMMANDS = ("status", "takeover", "release", "reload")
MAX_REQUEST = 4096

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
            self.server = await asyncio.start_unix_server(self._serve, path=self.path)
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
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            try:
                request = json.loads(line[:MAX_REQUEST])
                command = request["command"]
                if command not in COMMANDS:
                    raise ValueError(command)
            except (ValueError, KeyError, TypeError):
                answer: dict[str, Any] = {
                    "ok": False,
                    "error": f"unknown request; use one of {', '.join(COMMANDS)}",
                }
            else:
                answer = await self.handler(command)
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()


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
