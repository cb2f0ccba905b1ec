"""The control socket against hostile requests (issue 13, item 18): every malformed or oversized line
gets one JSON error reply, the daemon logs no traceback, and the socket keeps answering."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from pyrhfos.daemon.control import MAX_REQUEST, ControlServer


def exchange(path: str, data: bytes) -> bytes:
    """Send ``data`` raw and read the answer line; the server may stop reading a long request early."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:  # it answered and closed before reading everything: the answer is queued
            pass
        reply = b""
        while not reply.endswith(b"\n"):
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            reply += chunk
    return reply


async def serve_and_send(path: str, requests: list[bytes]) -> tuple[list[bytes], list[str]]:
    handled: list[str] = []

    async def handler(command: str) -> dict[str, Any]:
        handled.append(command)
        return {"ok": True, "message": command}

    server = ControlServer(path, handler)
    await server.start()
    try:
        replies = [await asyncio.to_thread(exchange, path, r) for r in requests]
    finally:
        await server.close()
    return replies, handled


BAD = {
    "oversized line": (b"x" * (1 << 20) + b"\n", "longer than 4096 bytes"),
    "oversized without newline": (b'{"command": "' + b"s" * (MAX_REQUEST + 10), "longer than 4096 bytes"),
    "not JSON": (b"status\n", "not JSON"),
    "deeply nested JSON": (b"[" * 3000 + b"\n", "not JSON"),
    "JSON array": (b'["status"]\n', "not a JSON object"),
    "JSON string": (b'"status"\n', "not a JSON object"),
    "non-string command": (b'{"command": ["status"]}\n', '"command" must be a string'),
    "unhashable command": (b'{"command": {"a": 1}}\n', '"command" must be a string'),
    "no command": (b'{"cmd": "status"}\n', '"command" must be a string'),
    "invalid UTF-8": (b'{"command": "st\xffatus"}\n', "not UTF-8"),
    "unknown command": (b'{"command": "shutdown"}\n', "unknown command 'shutdown'"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_request_gets_an_error_reply_and_no_traceback(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, error = BAD[name]
    path = str(tmp_path / "pulse.sock")
    good = json.dumps({"command": "status"}).encode() + b"\n"
    with caplog.at_level(logging.DEBUG):
        (bad_reply, good_reply), handled = asyncio.run(serve_and_send(path, [data, good]))
    answer = json.loads(bad_reply)
    assert answer["ok"] is False and error in answer["error"], answer
    assert handled == ["status"], "the bad request reached no handler; the next one was served"
    assert json.loads(good_reply) == {"ok": True, "message": "status"}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text


def test_a_failing_handler_is_an_error_reply(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "pulse.sock")

    async def handler(command: str) -> dict[str, Any]:
        raise RuntimeError("bug")

    async def run() -> bytes:
        server = ControlServer(path, handler)
        await server.start()
        try:
            return await asyncio.to_thread(exchange, path, b'{"command": "status"}\n')
        finally:
            await server.close()

    with caplog.at_level(logging.ERROR, logger="pulse"):
        reply = json.loads(asyncio.run(run()))
    assert reply == {"ok": False, "error": "internal error: RuntimeError"}
    assert "control request 'status' failed" in caplog.text  # logged once, with its traceback, by us
