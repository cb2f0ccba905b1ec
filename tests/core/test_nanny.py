"""Real-server health rules (core/nanny.py) driven by an injected clock: no sockets, no sleeping."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from pyrhfos.core.nanny import (
    FlushServer,
    Health,
    HealthChanged,
    Member,
    Nanny,
    PoolChanged,
    ServerProbed,
)


def member(
    server: str = "rs1",
    virtual: str = "web",
    weight: int = 1,
    reentry: float = 12.0,
    quiesce: bool = False,
    address: str | None = None,
    port: int = 80,
) -> Member:
    addr = IPv4Address(address or f"198.51.100.{10 + int(server[-1])}")
    return Member(virtual, server, addr, port, weight, reentry, quiesce)


def ok(server: str = "rs1", virtual: str = "web") -> ServerProbed:
    return ServerProbed(virtual, server, True, "ok")


def bad(server: str = "rs1", virtual: str = "web", reason: str = "connection refused") -> ServerProbed:
    return ServerProbed(virtual, server, False, reason)


def weights(n: Nanny, virtual: str = "web") -> dict[str, int]:
    return {m.server: w for m, w in n.in_effect(virtual)}


def test_unknown_takes_no_traffic_until_a_first_good_probe() -> None:
    n = Nanny([member("rs1"), member("rs2", weight=3)])
    assert n.in_effect("web") == ()
    st = n.state("web", "rs1")
    assert (st.health, st.since, st.last_ok, st.last_at) == (Health.UNKNOWN, None, None, None)
    actions = n.handle(ok("rs2"), now=100.0)
    assert actions == [
        HealthChanged("web", "rs2", Health.UNKNOWN, Health.UP, "first good probe"),
        PoolChanged("web", "rs2 up: first good probe"),
    ]
    assert weights(n) == {"rs2": 3}
    st = n.state("web", "rs2")
    assert (st.health, st.since, st.last_ok, st.last_reason, st.last_at) == (
        Health.UP,
        100.0,
        True,
        "ok",
        100.0,
    )
    assert n.handle(ok("rs2"), now=106.0) == []  # no change, no action
    assert n.state("web", "rs2").last_at == 106.0


def test_one_failure_removes_and_flushes_without_quiesce() -> None:
    n = Nanny([member("rs1"), member("rs2")])
    n.handle(ok("rs1"), 0.0)
    n.handle(ok("rs2"), 0.0)
    actions = n.handle(bad("rs1", reason="timeout after 3s"), 6.0)
    assert actions == [
        HealthChanged("web", "rs1", Health.UP, Health.DOWN, "timeout after 3s"),
        PoolChanged("web", "rs1 down: timeout after 3s"),
        FlushServer("web", "rs1"),  # after the table change: nothing new reaches it meanwhile
    ]
    assert weights(n) == {"rs2": 1}
    assert n.state("web", "rs1").health is Health.DOWN
    assert n.handle(bad("rs1"), 12.0) == []  # already down: no second flush


def test_one_failure_quiesces_to_weight_zero_without_flush() -> None:
    n = Nanny([member("rs1", quiesce=True, weight=5), member("rs2", quiesce=True)])
    n.handle(ok("rs1"), 0.0)
    n.handle(ok("rs2"), 0.0)
    actions = n.handle(bad("rs1"), 6.0)
    assert [type(a) for a in actions] == [HealthChanged, PoolChanged]
    assert not any(isinstance(a, FlushServer) for a in actions)
    assert weights(n) == {"rs1": 0, "rs2": 1}  # stays in the table at 0: its connections continue


def test_unknown_then_failure_is_down_and_needs_reentry() -> None:
    n = Nanny([member("rs1", reentry=12.0), member("rs2", quiesce=True)])
    assert n.handle(bad("rs1"), 0.0) == [
        HealthChanged("web", "rs1", Health.UNKNOWN, Health.DOWN, "connection refused")
    ]
    # quiesce: DOWN is in the table at weight 0 where UNKNOWN was absent; nothing to flush (never had traffic)
    assert n.handle(bad("rs2"), 0.0)[1:] == [PoolChanged("web", "rs2 down: connection refused")]
    assert weights(n) == {"rs2": 0}
    assert n.handle(ok("rs1"), 6.0) == []
    assert n.handle(ok("rs1"), 12.0)[0].new is Health.UP  # type: ignore[union-attr]


def test_reentry_good_probes_in_a_row_bring_it_back() -> None:
    n = Nanny([member("rs1", reentry=18.0)])
    n.handle(ok("rs1"), 0.0)
    n.handle(bad("rs1"), 10.0)
    for t in (16.0, 22.0):  # 6 and 12 s after the failure: not yet
        assert n.handle(ok("rs1"), t) == []
        assert n.state("web", "rs1").health is Health.DOWN
    actions = n.handle(ok("rs1"), 28.0)  # 18 s of good probes since the failure
    assert actions == [
        HealthChanged("web", "rs1", Health.DOWN, Health.UP, "good probes for 18s (reentry)"),
        PoolChanged("web", "rs1 up: good probes for 18s (reentry)"),
    ]
    assert weights(n) == {"rs1": 1}
    assert n.state("web", "rs1").since == 28.0


def test_a_failure_during_reentry_restarts_the_count() -> None:
    n = Nanny([member("rs1", reentry=12.0)])
    n.handle(ok("rs1"), 0.0)
    n.handle(bad("rs1"), 6.0)
    assert n.handle(ok("rs1"), 12.0) == []
    assert n.handle(bad("rs1"), 18.0) == []  # still down; the run starts again here
    assert n.handle(ok("rs1"), 24.0) == []
    assert n.handle(ok("rs1"), 29.9) == []
    assert n.state("web", "rs1").health is Health.DOWN
    assert n.handle(ok("rs1"), 30.0)[0] == HealthChanged(
        "web", "rs1", Health.DOWN, Health.UP, "good probes for 12s (reentry)"
    )


def test_reentry_zero_returns_on_the_first_good_probe() -> None:
    n = Nanny([member("rs1", reentry=0.0)])
    n.handle(ok("rs1"), 0.0)
    n.handle(bad("rs1"), 1.0)
    assert n.handle(ok("rs1"), 2.0)[0].new is Health.UP  # type: ignore[union-attr]


def test_configured_weight_zero_stays_in_effect_with_zero() -> None:
    n = Nanny([member("rs1", weight=0), member("rs2")])
    actions = n.handle(ok("rs1"), 0.0)
    assert [type(a) for a in actions] == [HealthChanged, PoolChanged]
    assert weights(n) == {"rs1": 0}
    n.handle(ok("rs2"), 0.0)
    assert n.in_effect("web") == ((member("rs1", weight=0), 0), (member("rs2"), 1))  # config order


def test_virtuals_are_separate_and_unknown_probes_are_ignored() -> None:
    n = Nanny([member("rs1", virtual="web"), member("rs1", virtual="dns", port=53)])
    n.handle(ok("rs1", "web"), 0.0)
    assert weights(n, "web") == {"rs1": 1}
    assert n.in_effect("dns") == ()
    assert n.handle(ok("rs9", "web"), 0.0) == []
    assert n.handle(ok("rs1", "nope"), 0.0) == []
    with pytest.raises(KeyError):
        n.state("web", "rs9")


def test_duplicate_members_are_refused() -> None:
    with pytest.raises(ValueError):
        Nanny([member("rs1"), member("rs1")])


def test_reconcile_keeps_unchanged_adds_unknown_drops_removed() -> None:
    n = Nanny([member("rs1"), member("rs2"), member("rs3")])
    for s in ("rs1", "rs2", "rs3"):
        n.handle(ok(s), 0.0)
    n.handle(bad("rs2"), 6.0)
    before1, before2 = n.state("web", "rs1"), n.state("web", "rs2")
    actions = n.reconcile([member("rs1"), member("rs2"), member("rs4")])  # rs3 removed, rs4 added
    assert actions == [PoolChanged("web", "reload")]  # rs3 left the table; rs4 is UNKNOWN: absent
    assert n.state("web", "rs1") == before1
    assert n.state("web", "rs2") == before2
    assert n.state("web", "rs4").health is Health.UNKNOWN
    with pytest.raises(KeyError):
        n.state("web", "rs3")
    assert weights(n) == {"rs1": 1}
    assert n.handle(ok("rs3"), 7.0) == []  # a late probe of a removed server is ignored
    assert n.handle(ok("rs4"), 7.0)[-1] == PoolChanged("web", "rs4 up: first good probe")


def test_reconcile_no_change_gives_no_action_and_weight_change_does() -> None:
    n = Nanny([member("rs1"), member("rs2")])
    n.handle(ok("rs1"), 0.0)
    assert n.reconcile([member("rs1"), member("rs2")]) == []
    actions = n.reconcile([member("rs1", weight=4), member("rs2")])
    assert actions == [PoolChanged("web", "reload")]
    assert n.state("web", "rs1").health is Health.UP  # same address and port: health kept
    assert weights(n) == {"rs1": 4}


def test_reconcile_new_address_starts_unknown_and_removed_virtual_changes() -> None:
    n = Nanny([member("rs1"), member("rs1", virtual="dns", port=53)])
    n.handle(ok("rs1"), 0.0)
    n.handle(ok("rs1", "dns"), 0.0)
    actions = n.reconcile([member("rs1", address="198.51.100.99")])
    assert actions == [PoolChanged("web", "reload"), PoolChanged("dns", "reload")]
    assert n.state("web", "rs1").health is Health.UNKNOWN
    assert n.in_effect("dns") == ()
    assert not any(isinstance(a, FlushServer) for a in actions)  # a reload lets connections end by themselves


def test_reconcile_flushes_a_down_server_that_loses_quiesce() -> None:
    n = Nanny([member("rs1", quiesce=True), member("rs2", quiesce=True)])
    n.handle(ok("rs1"), 0.0)
    n.handle(ok("rs2"), 0.0)
    n.handle(bad("rs1"), 6.0)
    assert weights(n) == {"rs1": 0, "rs2": 1}
    actions = n.reconcile([member("rs1"), member("rs2")])
    assert actions == [PoolChanged("web", "reload"), FlushServer("web", "rs1")]
    assert weights(n) == {"rs2": 1}
