"""The control socket: root-only Unix socket for ``pulse status|takeover|release|reload``.

One JSON request line in, one JSON answer line out. The daemon supplies the handler; this module owns the
socket (mode 0600), the wire format and the client side, and the text rendering of a status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

DEFAULT_SOCKET = "/var/run/pulse.sock"
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


def _age(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f}s ago"


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def render(status: dict[str, Any]) -> str:
    """The one-screen text of ``pulse status``."""
    node, partner = status["node"], status["partner"]
    lines = [
        f"this node: {node['role']}, {node['state'].upper()} since {_when(node['since'])} ({node['reason']})",
        f"           pid {node['pid']}, {node['config']} (serial {node['serial']})",
    ]
    if partner["addresses"]:
        match = {True: "same lvs.cf", False: "DIFFERENT lvs.cf", None: "lvs.cf not compared"}[
            partner["config_match"]
        ]
        lines.append(
            f"partner:   {', '.join(partner['addresses'])}: {(partner['state'] or 'unknown').upper()}, "
            f"{'alive' if partner['alive'] else 'DEAD'}, {partner['protocol'] or 'not heard'}, {match}"
        )
        for path, info in partner["paths"].items():
            lines.append(f"           last beat via {path}: {_age(info['last_beat_age'])}")
    else:
        lines.append("partner:   none (backup_active = 0)")
    lines.append("services:")
    for s in status["services"]:
        lines.append(
            f"  {s['name']:<16} {s['vip']} on {s['label']} port {s['port']}: "
            f"{'HELD' if s['held'] else 'not held'}, probe {s['probe']}"
            + (f" ({s['probe_reason']})" if s["probe_reason"] and s["probe"] != "ok" else "")
            + f", since {_when(s['last_change'])}"
        )
    counters = ", ".join(f"{k} {v}" for k, v in sorted(status["counters"].items()))
    lines.append(f"counters:  {counters or 'none'}")
    events = status.get("events", [])[-5:]
    if events:
        lines.append("recent:")
        lines += [f"  {_when(e['time'])} {e['message']}" for e in events]
    return "\n".join(lines)
