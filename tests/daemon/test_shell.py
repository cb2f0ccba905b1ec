"""The daemon shell on fakes, without a network: control requests and every refusal, reload (kept,
added, removed, refused), the probe scheduler. The clock is the test's; no loop timer fires."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rig import EXAMPLE, Rig, build

from pyrhfos.config import load, write
from pyrhfos.config.model import Config
from pyrhfos.core.events import AcquireDone, Start, Tick
from pyrhfos.core.vocab import ProbeMode, Role, State
from pyrhfos.core.wire import Beat, Flag, decode, encode
from pyrhfos.daemon.services import PROBE_FAILURES, Service, ServiceSet
from pyrhfos.daemon.startup import StartupError
from pyrhfos.net.probe import ProbeResult

SEQ = iter(range(1, 1_000_000))
NO_FLAGS = Flag(0)


def hear(r: Rig, state: State, flags: Flag = NO_FLAGS) -> None:
    role = Role.BACKUP if r.daemon.me.role is Role.PRIMARY else Role.PRIMARY
    r.daemon.on_datagram(encode(Beat(role, state, next(SEQ), bytes(8), 0, bytes(8), flags)), r.partner)


def wait(r: Rig, seconds: float, partner: State | None = None) -> None:
    """Let time pass in steps shorter than deadtime (a longer jump is a freeze to the machine),
    hearing the partner in ``partner`` state at each step, or silence."""
    end = r.clock.now + seconds
    while r.clock.now < end:
        r.clock.now = min(end, r.clock.now + 0.5)
        if partner is not None:
            hear(r, partner)
        r.daemon.feed(Tick())


def control(r: Rig, command: str) -> dict[str, Any]:
    return asyncio.run(r.daemon.control(command))


def active_primary(r: Rig) -> Rig:
    r.daemon.feed(Start())
    hear(r, State.STANDBY)
    r.clock.now += 2 * r.daemon.machine.timers.beat_interval  # a STANDBY is believed 2 intervals on
    hear(r, State.STANDBY)
    r.daemon.feed(AcquireDone())
    assert r.daemon.machine.state is State.ACTIVE
    return r


def standby_backup(cfg: Config) -> Rig:
    r = build(cfg, Role.BACKUP)
    r.daemon.feed(Start())
    hear(r, State.ACTIVE)
    assert r.daemon.machine.state is State.STANDBY
    return r


# -- control requests -----------------------------------------------------------


def test_status_answers_with_the_schema(rig: Rig) -> None:
    answer = control(rig, "status")
    assert answer["ok"] and answer["status"]["schema"] == 1
    assert answer["status"]["node"]["state"] == "starting"
    assert [s["name"] for s in answer["status"]["services"]] == ["web1"]


def test_release_is_refused_on_a_node_that_is_not_active(rig: Rig) -> None:
    assert control(rig, "release") == {"ok": False, "error": "this node is starting, not active"}


def test_release_is_refused_without_a_live_standby_partner(rig: Rig) -> None:
    active_primary(rig)
    wait(rig, rig.daemon.cfg.deadtime)  # the partner falls silent
    answer = control(rig, "release")
    assert answer == {"ok": False, "error": "refused: no standby partner to take the services over"}
    assert rig.daemon.machine.state is State.ACTIVE


def test_release_is_refused_while_the_partner_is_in_hold_down(rig: Rig) -> None:
    active_primary(rig)
    hear(rig, State.STANDBY, Flag.HOLD)
    answer = control(rig, "release")
    assert answer == {"ok": False, "error": "refused: the partner is in hold-down after a failure"}
    assert rig.daemon.machine.state is State.ACTIVE


def test_release_to_a_standby_partner_is_done(rig: Rig) -> None:
    active_primary(rig)
    answer = control(rig, "release")
    assert answer == {"ok": True, "message": "releasing: the partner takes the services over"}
    assert rig.daemon.machine.state is State.RELEASING


def test_takeover_is_refused_on_a_node_that_is_not_standby(rig: Rig) -> None:
    active_primary(rig)
    assert control(rig, "takeover") == {"ok": False, "error": "this node is active, not standby"}


def test_takeover_is_refused_when_the_partner_is_not_heard(example: Config) -> None:
    r = build(example, Role.BACKUP)
    r.daemon.feed(Start())  # a backup just started: standby, the primary not heard yet
    answer = control(r, "takeover")
    why = "refused: the partner is not heard; this node takes over by itself"
    assert answer == {"ok": False, "error": why} and r.daemon.machine.state is State.STANDBY


def test_takeover_is_refused_while_services_fail_here(example: Config) -> None:
    r = standby_backup(example)
    next(iter(r.daemon.services)).probe_ok = False
    assert control(r, "takeover") == {"ok": False, "error": "refused: services failing here: web1"}
    assert r.daemon.machine.want_takeover is None


def test_takeover_from_a_live_active_partner_asks_it_to_release(example: Config) -> None:
    r = standby_backup(example)
    answer = control(r, "takeover")
    assert answer == {"ok": True, "message": "taking over: the partner is asked to release"}
    assert r.daemon.machine.want_takeover is not None
    beat = decode(r.transport.sent[-1][0])
    assert isinstance(beat, Beat) and beat.stopme, "STOPME tells the partner at once"


# -- reload ---------------------------------------------------------------------

WEB2 = """
failover web2 {
    address = 192.168.2.12 eth0:2
    active = 1
    port = 80
    send = "GET / HTTP/1.0\\r\\n\\r\\n"
    expect = "HTTP"
    timeout = 10
    start_cmd = "true"
    stop_cmd = "true"
}
"""


def on_disk(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "lvs.cf"
    path.write_text(text)
    return load(path)[0]


def test_reload_keeps_unchanged_services_and_starts_new_ones(tmp_path: Path) -> None:
    cfg = on_disk(tmp_path, EXAMPLE.read_text())
    r = active_primary(build(cfg))
    d = r.daemon
    web1 = d.services.services["web1"]
    web1.held, web1.probe_ok = True, True  # what an active node knows of a running service
    old_digest = d.link.digest
    (tmp_path / "lvs.cf").write_text(EXAMPLE.read_text() + WEB2)
    ok, message = asyncio.run(d.reload())
    assert ok, message
    assert "1 service(s) added, 0 removed or changed, 1 unchanged" in message
    assert d.services.services["web1"] is web1 and web1.probe_ok is True, "kept untouched"
    assert list(d.services.services) == ["web1", "web2"]
    assert d.services.services["web2"].held, "added on the active node: VIP taken"
    assert d.link.digest != old_digest and d.cfg.failovers[-1].name == "web2"


def test_reload_stops_removed_and_changed_services(tmp_path: Path) -> None:
    cfg = on_disk(tmp_path, EXAMPLE.read_text() + WEB2)
    r = active_primary(build(cfg))
    d = r.daemon
    asyncio.run(d.services.acquire())
    web1 = d.services.services["web1"]
    text = write(cfg).replace("failover web2 {", "failover web3 {")
    (tmp_path / "lvs.cf").write_text(text.replace("timeout = 10", "timeout = 7", 1))
    ok, message = asyncio.run(d.reload())
    assert ok, message
    assert "2 service(s) added, 2 removed or changed, 0 unchanged" in message
    assert set(d.services.services) == {"web1", "web3"}
    assert d.services.services["web1"] is not web1 and not web1.held, "changed: the old one released"
    assert d.services.services["web1"].f.timeout == 7


def test_reload_with_errors_keeps_everything(tmp_path: Path) -> None:
    cfg = on_disk(tmp_path, EXAMPLE.read_text())
    r = active_primary(build(cfg))
    before = (r.daemon.cfg, dict(r.daemon.services.services), r.daemon.link.digest)
    (tmp_path / "lvs.cf").write_text("primary = 192.0.2.300\n")
    ok, message = asyncio.run(r.daemon.reload())
    assert not ok and "lvs.cf:1:11:" in message and "keeping the running configuration" in message
    assert (r.daemon.cfg, dict(r.daemon.services.services), r.daemon.link.digest) == before


def test_reload_refuses_keys_that_need_a_restart(tmp_path: Path) -> None:
    cfg = on_disk(tmp_path, EXAMPLE.read_text())
    r = active_primary(build(cfg))
    text = EXAMPLE.read_text()
    (tmp_path / "lvs.cf").write_text(text.replace("heartbeat_port = 539", "heartbeat_port = 540"))
    ok, message = asyncio.run(r.daemon.reload())
    assert not ok and "changing heartbeat_port needs a restart of pulse" in message
    assert r.daemon.cfg is cfg


def test_reload_refuses_a_file_this_host_cannot_run(tmp_path: Path) -> None:
    cfg = on_disk(tmp_path, EXAMPLE.read_text())

    def check(new: Config) -> None:
        raise StartupError("this host is neither primary nor backup")

    r = active_primary(build(cfg, check=check))
    ok, message = asyncio.run(r.daemon.reload())
    assert not ok and "neither primary nor backup; reload refused" in message
    assert r.daemon.cfg is cfg


def test_reload_applies_new_timers(tmp_path: Path) -> None:
    cfg = on_disk(tmp_path, EXAMPLE.read_text())
    r = active_primary(build(cfg))
    (tmp_path / "lvs.cf").write_text(EXAMPLE.read_text().replace("keepalive = 2", "keepalive = 1"))
    ok, _ = asyncio.run(r.daemon.reload())
    assert ok and r.daemon.machine.timers.keepalive == 1.0


# -- the probe scheduler --------------------------------------------------------


class ScriptedServices(ServiceSet):
    """Probe results from a script instead of the network."""

    def __init__(self, cfg: Config, clock: Any, results: Iterable[bool]) -> None:
        super().__init__(cfg.active_failovers, None, cfg.deadtime, 1.0, clock)
        self.results = iter(results)
        self.rounds = 0

    async def probe_all(self) -> list[tuple[Service, ProbeResult]]:
        self.rounds += 1
        ok = next(self.results, None)
        if ok is None:
            raise RuntimeError("a bug in a probe round")
        return [(s, ProbeResult(ok, "ok" if ok else "refused", 0.001)) for s in self]


def scripted(cfg: Config, results: Iterable[bool], role: Role = Role.PRIMARY) -> tuple[Rig, ScriptedServices]:
    clock_rig = build(cfg, role)
    services = ScriptedServices(cfg, clock_rig.clock, results)
    r = build(cfg, role, services=services)
    services.now = r.clock
    return r, services


def step(r: Rig) -> float:
    return asyncio.run(r.daemon.monitor.step())


def test_no_probes_before_the_node_or_its_partner_serves(example: Config) -> None:
    r, services = scripted(example, [])
    r.daemon.feed(Start())
    assert step(r) == example.keepalive and services.rounds == 0


def test_no_probes_while_a_job_is_under_way(example: Config) -> None:
    r, services = scripted(example, [])
    active_primary(r)
    r.daemon.busy = True
    assert r.daemon.monitor.current_mode() is None
    step(r)
    assert services.rounds == 0


def test_active_node_probes_its_own_services_and_confirms_a_failure_quickly(example: Config) -> None:
    r, services = scripted(example, [False] * PROBE_FAILURES)
    active_primary(r)
    assert r.daemon.monitor.current_mode() is ProbeMode.LOCAL
    assert step(r) == example.keepalive, "the grace after taking the services: no failure counted"
    wait(r, example.deadtime, State.STANDBY)
    periods = []
    for _ in range(PROBE_FAILURES - 1):
        periods.append(step(r))
        r.clock.now += periods[-1]
    assert periods == [min(example.keepalive / 4, 0.1)] * (PROBE_FAILURES - 1)
    assert services.rounds == PROBE_FAILURES


def test_a_failed_local_service_is_handed_to_the_standby_partner(example: Config) -> None:
    r, services = scripted(example, [True] + [False] * PROBE_FAILURES)
    active_primary(r)
    step(r)  # resets the probes (mode changed) and probes once
    wait(r, example.deadtime, State.STANDBY)
    for _ in range(PROBE_FAILURES):
        r.clock.now += step(r)
        hear(r, State.STANDBY)
    assert r.daemon.machine.state is State.RELEASING, "LocalServiceFailed with a standby partner"


def test_standby_probes_the_active_partner_and_asks_it_to_release(example: Config) -> None:
    r, services = scripted(example, [True] + [False] * PROBE_FAILURES, Role.BACKUP)
    r.daemon.feed(Start())
    hear(r, State.ACTIVE)
    assert r.daemon.monitor.current_mode() is ProbeMode.PARTNER
    step(r)
    wait(r, example.deadtime, State.ACTIVE)
    for _ in range(PROBE_FAILURES):
        r.clock.now += step(r)
        hear(r, State.ACTIVE)
    assert r.daemon.machine.want_takeover is not None, "PartnerServiceFailed: STOPME sent"


def test_a_probe_bug_is_counted_and_monitoring_goes_on(example: Config) -> None:
    r, services = scripted(example, [])  # the script is empty: probe_all raises
    active_primary(r)
    assert step(r) == example.keepalive and step(r) == example.keepalive
    assert services.rounds == 2 and r.daemon.counters["probe-errors"] == 2
