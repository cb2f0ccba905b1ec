"""Tests for pyrhfos.net.tablesync on a fake transport and clock: what the active director sends, what the
standby keeps (expiry, size, complete snapshots, the partner only) and what it seeds on takeover."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address
from typing import Any

import pytest

from pyrhfos.config.model import Config, NetworkMode
from pyrhfos.core import pinwire
from pyrhfos.core.pinwire import MAX_DATAGRAM, Element
from pyrhfos.core.vocab import Role
from pyrhfos.net.conntrackd import SyncConfigError
from pyrhfos.net.tablesync import DROP_REASONS, PinCache, TableSync, for_director, snapshot_elements

KEY = b"k" * 32
A, B = IPv4Address("198.51.100.2"), IPv4Address("198.51.100.3")
SESSION = bytes(8)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.closed = False

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def close(self) -> None:
        self.closed = True


def listed_pin(client: str, sport: int, backend: int, expires: int = 900) -> dict[str, Any]:
    return {"elem": {"val": {"concat": [client, sport, backend]}, "expires": expires}}


class Table:
    """What NftEngine.dynamic_elements would list: set name -> elements."""

    def __init__(self) -> None:
        self.sets: dict[str, list[Any]] = {"pin-web": [], "per-web": []}
        self.calls = 0

    def __call__(self) -> Mapping[str, Sequence[Any]]:
        self.calls += 1
        return self.sets


def pair(key: bytes | None = None, **kw: Any) -> tuple[TableSync, TableSync, Table, Clock]:
    clock, table = Clock(), Table()
    sender = TableSync(A, B, 3781, key, table, now=clock, **kw)
    receiver = TableSync(B, A, 3781, key, lambda: {}, now=clock, **kw)
    for t in (sender, receiver):
        t._transport = FakeTransport()  # type: ignore[assignment]
    return sender, receiver, table, clock


def deliver(sender: TableSync, receiver: TableSync, source: str | None = None) -> int:
    transport = sender._transport
    assert isinstance(transport, FakeTransport)
    n = len(transport.sent)
    for data, (host, port) in transport.sent:
        assert (host, port) == (str(receiver.own), receiver.port)
        assert len(data) <= MAX_DATAGRAM
        receiver.received(data, source or str(sender.own))
    transport.sent.clear()
    return n


def send(sender: TableSync) -> int:
    return asyncio.run(sender.send_snapshot())


@pytest.mark.parametrize("key", [None, KEY])
def test_the_standby_seeds_what_the_active_director_had(key: bytes | None) -> None:
    sender, receiver, table, clock = pair(key)
    table.sets["pin-web"] = [listed_pin("192.0.2.50", 40000 + i, 7, 900 - i) for i in range(3)]
    table.sets["per-web"] = [{"elem": {"val": {"concat": ["192.0.2.0", 7]}, "expires": 60}}]
    sender.set_active(True)
    assert send(sender) == 1 and deliver(sender, receiver) == 1
    st = receiver.status()
    assert st["elements_received"] == 4 and st["cached"] == 4 and st["snapshots_received"] == 1
    assert sender.status()["elements_sent"] == 4 and sender.status()["sending"] is True
    clock.t += 10.5
    seed = receiver.seed()
    assert seed == {
        "pin-web": [listed_pin("192.0.2.50", 40000 + i, 7, 889 - i) for i in range(3)],
        "per-web": [{"elem": {"val": {"concat": ["192.0.2.0", 7]}, "expires": 49}}],
    }
    assert receiver.status()["cached"] == 0 and receiver.status()["seeded"] == 4  # now in the table


def test_a_large_table_goes_in_many_datagrams_and_arrives_whole() -> None:
    sender, receiver, table, _ = pair(KEY)
    table.sets["pin-web"] = [listed_pin(f"10.0.{i // 250}.{i % 250}", 1024 + i, i % 3) for i in range(10_000)]
    sender.set_active(True)
    n = send(sender)
    assert n > 100
    assert deliver(sender, receiver) == n
    assert receiver.status()["cached"] == 10_000 and receiver.status()["snapshots_received"] == 1


def test_a_snapshot_is_bounded() -> None:
    sender, receiver, table, _ = pair(max_snapshot=100)
    table.sets["pin-web"] = [listed_pin("10.0.0.1", 1024 + i, 1) for i in range(150)]
    sender.set_active(True)
    send(sender)
    deliver(sender, receiver)
    assert sender.status()["elements_sent"] == 100 and sender.status()["elements_left_out"] == 50
    assert receiver.status()["cached"] == 100


def test_a_complete_snapshot_replaces_the_cache_an_incomplete_one_adds() -> None:
    sender, receiver, table, _ = pair()
    sender.set_active(True)
    table.sets["pin-web"] = [listed_pin("10.0.0.1", 1024 + i, 1) for i in range(200)]
    send(sender)
    deliver(sender, receiver)
    assert len(receiver.cache) == 200
    table.sets["pin-web"] = [listed_pin("10.0.0.2", 2000 + i, 1) for i in range(200)]
    send(sender)
    transport = sender._transport
    assert isinstance(transport, FakeTransport) and len(transport.sent) >= 2
    del transport.sent[0]  # one datagram lost: the snapshot never completes
    deliver(sender, receiver)
    assert 200 < len(receiver.cache) < 400  # the old ones stay, the new ones that came are added
    table.sets["pin-web"] = table.sets["pin-web"][:10]  # connections ended or expired there
    send(sender)
    deliver(sender, receiver)
    assert len(receiver.cache) == 10
    table.sets["pin-web"] = []
    send(sender)
    assert deliver(sender, receiver) == 1  # an empty snapshot still says so
    assert len(receiver.cache) == 0 and receiver.status()["snapshots_received"] == 3


def test_the_cache_is_bounded_and_expires() -> None:
    sender, receiver, table, clock = pair(max_cache=50)
    sender.set_active(True)
    table.sets["pin-web"] = [listed_pin("10.0.0.1", 1024 + i, 1, expires=5) for i in range(80)]
    send(sender)
    deliver(sender, receiver)
    st = receiver.status()
    assert st["cached"] == 50 and st["elements_refused"] == 30
    clock.t += 6
    assert receiver.seed() == {}  # every one expired


def test_expired_entries_make_room() -> None:
    cache = PinCache(limit=2)
    d1 = pinwire.Datagram(SESSION, 1, 1, 0, 2, (Element("s", ("1.1.1.1",), False, 1000),) * 1)
    cache.accept(d1, now=0.0)
    d2 = pinwire.Datagram(SESSION, 2, 1, 1, 2, (Element("s", ("2.2.2.2",), False, 60_000),))
    cache.accept(d2, now=0.5)
    d3 = pinwire.Datagram(SESSION, 3, 2, 0, 2, (Element("s", ("3.3.3.3",), False, 60_000),))
    assert cache.accept(d3, now=2.0) is None
    assert len(cache) == 2 and cache.refused == 0  # 1.1.1.1 had expired


def test_only_the_partner_is_heard_and_every_bad_datagram_is_counted() -> None:
    sender, receiver, table, _ = pair(KEY)
    sender.set_active(True)
    table.sets["pin-web"] = [listed_pin("10.0.0.1", 1024, 1)]
    send(sender)
    transport = sender._transport
    assert isinstance(transport, FakeTransport)
    good = transport.sent[0][0]
    deliver(sender, receiver, source="198.51.100.99")  # a stranger
    for bad in (b"", b"junk" * 10, good[:-1], good + b"x", bytes(2000), good[:-1] + bytes([good[-1] ^ 1])):
        receiver.received(bad, str(A))
    receiver.received(good, str(A))
    receiver.received(good, str(A))  # again: a replay
    unsigned = pinwire.encode([], session=SESSION, seq=99, snapshot=1).datagrams[0]
    receiver.received(unsigned, str(A))
    st = receiver.status()
    assert st["cached"] == 1 and st["elements_received"] == 1
    assert st["drops"] == {
        "not-partner": 1,
        "truncated": 1,
        "bad-magic": 1,
        "bad-mac": 3,  # one byte short, one too many (the MAC is checked first), one flipped
        "bad-length": 1,  # over 1400 bytes
        "replayed": 1,
        "unauthenticated": 1,
    }
    assert st["dropped"] == 9
    assert set(st["drops"]) <= set(DROP_REASONS)


def test_a_restarted_sender_is_heard_again() -> None:
    sender, receiver, table, _ = pair()
    sender.set_active(True)
    table.sets["pin-web"] = [listed_pin("10.0.0.1", 1024, 1)]
    send(sender)
    deliver(sender, receiver)
    again = TableSync(A, B, 3781, None, table)  # a new session, sequence numbers from 0
    again._transport = FakeTransport()  # type: ignore[assignment]
    again.set_active(True)
    table.sets["pin-web"] = [listed_pin("10.0.0.9", 1024, 1)]
    send(again)
    deliver(again, receiver)
    assert receiver.status()["dropped"] == 0
    assert list(receiver.seed()) == ["pin-web"] and len(receiver.cache) == 0


def test_nothing_is_sent_while_standby_and_a_release_during_the_listing_sends_nothing() -> None:
    sender, receiver, table, _ = pair()
    table.sets["pin-web"] = [listed_pin("10.0.0.1", 1024, 1)]

    async def run() -> None:
        sender.start()
        await asyncio.sleep(0.01)
        sender.close()

    sender.interval = 0.01
    asyncio.run(run())
    assert table.calls == 0
    sender, receiver, table, _ = pair()
    sender.set_active(True)

    def listing() -> Mapping[str, Sequence[Any]]:
        sender.set_active(False)
        return {"pin-web": [listed_pin("10.0.0.1", 1024, 1)]}

    sender.lister = listing
    assert send(sender) == 0


def test_the_send_loop_survives_a_failing_listing() -> None:
    sender, _, _, _ = pair()

    def broken() -> Mapping[str, Sequence[Any]]:
        raise RuntimeError("libnftables failed")

    sender.lister = broken
    sender.interval = 0.01
    sender.set_active(True)

    async def run() -> None:
        sender.start()
        await asyncio.sleep(0.05)
        sender.close()

    asyncio.run(run())
    assert sender.status()["last_error"] == "snapshot not sent: libnftables failed"


def test_a_port_it_cannot_bind_is_shown_and_tried_again() -> None:
    sync = TableSync(IPv4Address("192.0.2.254"), B, 3781, None, dict, interval=0.01)  # not ours

    async def run() -> None:
        sync.start()
        await asyncio.sleep(0.05)
        sync.close()

    asyncio.run(run())
    st = sync.status()
    assert not st["listening"] and "cannot listen on 192.0.2.254 port 3781" in st["last_error"]


def test_snapshot_elements_leave_out_what_cannot_travel() -> None:
    listed = {
        "pin-web": [
            listed_pin("10.0.0.1", 1, 2),
            {"elem": {"val": {"concat": ["10.0.0.1", 1, 2]}}},  # no expiry listed
            {"concat": ["10.0.0.1", 1, 2]},  # listed bare
            {"elem": {"val": {"range": [1, 2]}, "expires": 3}},
        ]
    }
    elements, left_out = snapshot_elements(listed, 10)
    assert elements == [Element("pin-web", ("10.0.0.1", 1, 2), True, 900_000)] and left_out == 3


def test_for_director_uses_conntrackds_addresses_and_the_next_port() -> None:
    cfg = Config(
        network=NetworkMode.DIRECT,
        primary=IPv4Address("192.0.2.1"),
        backup=IPv4Address("192.0.2.2"),
        primary_private=A,
        backup_private=B,
        syncd_id=4,
    )
    sync = for_director(cfg, Role.BACKUP, KEY, dict)
    assert (sync.own, sync.peer, sync.port, sync.key) == (B, A, 3780 + 4 + 1, KEY)
    public = Config(
        network=NetworkMode.DIRECT, primary=IPv4Address("192.0.2.1"), backup=IPv4Address("192.0.2.2")
    )
    sync = for_director(public, Role.PRIMARY, None, dict)
    assert (str(sync.own), str(sync.peer), sync.port) == ("192.0.2.1", "192.0.2.2", 3781)
    with pytest.raises(SyncConfigError):
        for_director(
            Config(network=NetworkMode.DIRECT, primary=IPv4Address("192.0.2.1")), Role.PRIMARY, None, dict
        )
    with pytest.raises(SyncConfigError):
        for_director(
            Config(network=NetworkMode.DIRECT, primary=A, backup=B, syncd_id=256), Role.PRIMARY, None, dict
        )
