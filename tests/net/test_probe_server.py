"""Real-server probes (net/probe.probe_server): a virtual's send_program, TCP and UDP checks against
listeners on 127.0.0.1 that the test opens (ports picked by the kernel)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import cast

from pyrhfos.config.model import Virtual
from pyrhfos.net.probe import ProbeResult, probe_server

LOCAL = "127.0.0.1"


def run(coro: Awaitable[ProbeResult]) -> ProbeResult:
    async def main() -> ProbeResult:
        return await coro

    return asyncio.run(main())


def free_port(kind: int) -> int:
    """A port nobody listens on (bound then closed; nothing else on this host picks it that fast)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOCAL, 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def tcp_server(answer: bytes | None) -> AsyncIterator[int]:
    """Listens on 127.0.0.1; reads one chunk and writes ``answer`` (None: says nothing, keeps it open)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        if answer is None:
            await asyncio.sleep(5)
        else:
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, LOCAL, 0)
    async with server:
        yield int(server.sockets[0].getsockname()[1])


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, reply: Callable[[bytes], bytes | None]) -> None:
        self.reply = reply
        self.seen: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # selector's is no subclass of it

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.seen.append(data)
        out = self.reply(data)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)


@asynccontextmanager
async def udp_server(reply: Callable[[bytes], bytes | None]) -> AsyncIterator[tuple[int, _Udp]]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(lambda: _Udp(reply), local_addr=(LOCAL, 0))
    try:
        yield int(transport.get_extra_info("sockname")[1]), proto
    finally:
        transport.close()


def tcp_virtual(**kw: object) -> Virtual:
    return Virtual("web", timeout=2.0, **kw)  # type: ignore[arg-type]


def udp_virtual(**kw: object) -> Virtual:
    return Virtual("dns", protocol="udp", port=53, timeout=0.5, **kw)  # type: ignore[arg-type]


# -- TCP ----------------------------------------------------------------------------------------------
def test_tcp_send_expect() -> None:
    async def main() -> tuple[ProbeResult, ProbeResult, ProbeResult]:
        async with tcp_server(b"HTTP/1.0 200 OK\r\n\r\n") as port:
            v = tcp_virtual(send="GET / HTTP/1.0\r\n\r\n", expect="HTTP")
            good = await probe_server(v, LOCAL, port)
            regex = await probe_server(
                tcp_virtual(send="GET /\r\n", expect=r"^HTTP/1\.[01] 200", use_regex=True), LOCAL, port
            )
            wrong = await probe_server(tcp_virtual(send="GET /\r\n", expect="SSH-2.0"), LOCAL, port)
        return good, regex, wrong

    good, regex, wrong = asyncio.run(main())
    assert good.ok and good.reason == "ok"
    assert regex.ok
    assert not wrong.ok and "did not match" in wrong.reason


def test_tcp_uses_the_given_port_not_the_virtuals() -> None:
    async def main() -> ProbeResult:
        async with tcp_server(b"hello") as port:
            return await probe_server(tcp_virtual(port=1, expect="hello", send="x"), LOCAL, port)

    assert asyncio.run(main()).ok


def test_tcp_refused_and_silent() -> None:
    refused = run(probe_server(tcp_virtual(), LOCAL, free_port(socket.SOCK_STREAM)))
    assert not refused.ok and refused.reason == "connection refused"

    async def main() -> ProbeResult:
        async with tcp_server(None) as port:
            return await probe_server(Virtual("web", timeout=0.3, send="x", expect="y"), LOCAL, port)

    silent = asyncio.run(main())
    assert not silent.ok and silent.reason == "timeout after 0.3s (no answer)"


# -- send_program -------------------------------------------------------------------------------------
def test_send_program_gets_the_server_address_and_wins_over_protocol() -> None:
    v = udp_virtual(send_program="echo alive %h", expect="alive 127.0.0.1", send="ignored")
    assert run(probe_server(v, LOCAL, free_port(socket.SOCK_DGRAM))).ok
    v = tcp_virtual(send_program="echo alive %h", expect="alive 127.0.0.2")
    r = run(probe_server(v, LOCAL, 9))
    assert not r.ok and "did not match" in r.reason
    assert not run(probe_server(tcp_virtual(send_program="exit 3"), LOCAL, 9)).ok


# -- UDP ----------------------------------------------------------------------------------------------
def test_udp_send_expect_matches_the_answer() -> None:
    async def main() -> tuple[ProbeResult, ProbeResult, ProbeResult, list[bytes]]:
        async with udp_server(lambda data: b"pong " + data) as (port, proto):
            good = await probe_server(udp_virtual(send="ping", expect="pong ping"), LOCAL, port)
            star = await probe_server(udp_virtual(send="ping", expect="*"), LOCAL, port)
            wrong = await probe_server(udp_virtual(send="ping", expect="nope"), LOCAL, port)
            return good, star, wrong, proto.seen

    good, star, wrong, seen = asyncio.run(main())
    assert good.ok and star.ok
    assert not wrong.ok and "did not match" in wrong.reason
    assert seen == [b"ping"] * 3


def test_udp_with_expect_fails_on_silence_and_on_port_unreachable() -> None:
    async def main() -> ProbeResult:
        async with udp_server(lambda data: None) as (port, _):
            return await probe_server(udp_virtual(send="ping", expect="pong"), LOCAL, port)

    silent = asyncio.run(main())
    assert not silent.ok and silent.reason == "timeout after 0.5s (no answer)"
    closed = run(probe_server(udp_virtual(send="ping", expect="pong"), LOCAL, free_port(socket.SOCK_DGRAM)))
    assert not closed.ok and closed.reason == "port unreachable"


def test_udp_without_expect_fails_open() -> None:
    # Only an ICMP error fails it: a closed port does, a silent listener passes (documented).
    closed = run(probe_server(udp_virtual(), LOCAL, free_port(socket.SOCK_DGRAM)))
    assert not closed.ok and closed.reason == "port unreachable"

    async def main() -> tuple[ProbeResult, ProbeResult, list[bytes]]:
        async with udp_server(lambda data: None) as (port, proto):
            quiet = await probe_server(udp_virtual(), LOCAL, port)
            sent = await probe_server(udp_virtual(send="hello"), LOCAL, port)
            return quiet, sent, proto.seen

    quiet, sent, seen = asyncio.run(main())
    assert quiet.ok and quiet.reason == "ok (no answer, no ICMP error)"
    assert sent.ok
    assert seen == [b"", b"hello"]  # no send: an empty datagram, to draw an ICMP error if closed
