"""etc/lvs.cf.lvs.example, the LVS example shipped next to the FOS one: it checks with no error and no
warning, has the shape of the public Piranha LVS files, and uses documentation addresses only."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from pyrhfos.config import load, loads, write
from pyrhfos.config.model import Config, NetworkMode, ServiceKind
from pyrhfos.config.runnable import check_diagnostics

ROOT = Path(__file__).resolve().parents[2]
LVS_EXAMPLE = ROOT / "etc" / "lvs.cf.lvs.example"
PUBLIC = IPv4Network("192.0.2.0/24")
PRIVATE = IPv4Network("198.51.100.0/24")


def example() -> Config:
    cfg, warnings = load(LVS_EXAMPLE)
    assert warnings == []
    return cfg


def test_pulse_check_accepts_it_without_a_word_on_stderr() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "pyrhfos.cli", "--check", "-c", str(LVS_EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert "service:    lvs" in res.stdout and "virtual dns: active" in res.stdout


def test_this_host_runs_it_as_written() -> None:
    assert check_diagnostics(example()) == []


def test_it_has_the_shape_of_the_public_piranha_files() -> None:
    cfg = example()
    assert cfg.service is ServiceKind.LVS and cfg.network is NetworkMode.NAT and not cfg.syncdaemon
    assert cfg.nat_router is not None and cfg.backup_active
    http, https, dns = cfg.virtuals
    assert all(v.scheduler == "wlc" and v.active and not v.quiesce_server for v in cfg.virtuals)
    assert all(v.load_monitor == "none" for v in cfg.virtuals)
    # Two virtuals on one VIP, ports 80 and 443; the second persistent with a /24 pmask.
    assert http.address == https.address and (http.port, https.port) == (80, 443)
    assert https.persistent == 300 and https.pmask == IPv4Address("255.255.255.0")
    assert http.sorry_server is not None
    assert dns.fwmark == 5 and dns.protocol == "udp" and dns.send_program is not None
    # Piranha's GUI keeps a retired server at weight 0.
    assert [(s.active, s.weight) for s in http.servers][-1] == (False, 0)


def test_it_uses_documentation_addresses_only() -> None:
    cfg = example()
    assert cfg.nat_router is not None and cfg.nat_router.ip in PRIVATE
    for a in (cfg.primary, cfg.backup):
        assert a is not None and a in PUBLIC
    for a in (cfg.primary_private, cfg.backup_private):
        assert a is not None and a in PRIVATE
    for v in cfg.virtuals:
        assert v.address is not None and v.address.ip in PUBLIC
        assert v.sorry_server is None or v.sorry_server in PRIVATE
        assert all(s.address is not None and s.address in PRIVATE for s in v.servers)


def test_it_survives_a_write_and_a_read() -> None:
    cfg = example()
    again, _ = loads(write(cfg), str(LVS_EXAMPLE))
    assert again == cfg
