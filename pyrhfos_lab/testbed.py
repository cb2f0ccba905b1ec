"""A pulse pair on the namespace lab: lvs.cf per node, start/stop/kill pulse, a client prober.

Shared by ``make demo``, the integration tests and the benchmarks, so all three
exercise the same cluster the same way. The client's requests are client.py, run in the client node.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pyrhfos.config import loads, write
from pyrhfos.config.model import Config, DeviceAddress
from pyrhfos.daemon.control import answers

from .lab import Lab

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "etc" / "lvs.cf.example"
# pulse runs lvs.cf's commands with a clean environment (no PYTHONPATH): they name the lab's modules here.
LAB_PYTHON = f"env PYTHONPATH={REPO} {sys.executable}"
VIP = "192.0.2.11"
LABEL = "eth0:1"


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something true; bounded in time. Returns that value or None."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


class Testbed:
    """Nodes a (primary) and b (backup) and a client; one failover service on VIP eth0:1."""

    __test__ = False  # a helper, not a pytest class

    def __init__(
        self,
        lab: Lab,
        workdir: Path,
        *,
        keepalive: float = 1.0,
        deadtime: float = 3.0,
        private: bool = False,
        managed_service: bool = False,
        service_settings: dict[str, Any] | None = None,
        global_settings: dict[str, Any] | None = None,
    ) -> None:
        self.lab = lab
        self.workdir = workdir
        self.a, self.b, self.client = lab.pair(private=private)
        self.nodes = {"a": self.a, "b": self.b}
        self.pulses: dict[str, subprocess.Popen[Any]] = {}
        self.managed_service = managed_service
        self.service_procs: dict[str, subprocess.Popen[Any]] = {}
        if not managed_service:
            # The service runs on both nodes all the time; start/stop_cmd only leave a trace.
            for name, node in self.nodes.items():
                self.service_procs[name] = node.start_service(80, node.name)
        self.config_path = workdir / "lvs.cf"
        self.write_config(keepalive, deadtime, private, service_settings or {}, global_settings or {})

    # -- configuration -----------------------------------------------------

    def service_commands(self) -> tuple[str, str]:
        """start_cmd/stop_cmd for this lab: a trace line, and the service when managed."""
        # pulse passes PYRHFOS_* variables on: PYRHFOS_NODE (set by start()) names the node.
        trace = f"echo $(date +%s.%N) {{}} >> {self.workdir}/$PYRHFOS_NODE.cmds"
        start, stop = trace.format("start"), trace.format("stop")
        if not self.managed_service:
            return start, stop
        pid = f"{self.workdir}/service-$PYRHFOS_NODE.pid"
        serve = f"{LAB_PYTHON} -m pyrhfos_lab.lab serve --port 80 --text $PYRHFOS_NODE"
        start += f"; setsid {serve} </dev/null >/dev/null 2>&1 & echo $! > {pid}"
        stop += f"; kill $(cat {pid}) 2>/dev/null; rm -f {pid}"
        return start, stop

    def write_config(
        self,
        keepalive: float,
        deadtime: float,
        private: bool,
        service_settings: dict[str, Any],
        global_settings: dict[str, Any],
    ) -> Path:
        """The shipped example with the lab's addresses: what the demo tells admins to edit."""
        cfg, _ = loads(EXAMPLE.read_text(), str(EXAMPLE))
        start, stop = self.service_commands()
        failover = dataclasses.replace(
            cfg.failovers[0],
            address=DeviceAddress(IPv4Address(VIP), LABEL),
            vip_nmask=None,
            start_cmd=start,
            stop_cmd=stop,
            **{"timeout": min(cfg.failovers[0].timeout, 2.0), **service_settings},
        )
        extra: dict[str, Any] = {}
        if private:
            extra = {
                "primary_private": IPv4Address(self.a.ip_of("eth1")),
                "backup_private": IPv4Address(self.b.ip_of("eth1")),
            }
        cfg = dataclasses.replace(
            cfg,
            primary=IPv4Address(self.a.ip),
            backup=IPv4Address(self.b.ip),
            backup_active=True,
            keepalive=keepalive,
            deadtime=deadtime,
            failovers=(failover,),
            **extra,
            **global_settings,
        )
        return self.save_config(cfg)

    def save_config(self, cfg: Config) -> Path:
        """Write ``cfg`` as both nodes' lvs.cf (one file: the lab's nodes share this disk)."""
        self.cfg = cfg
        self.config_path.write_text(write(cfg))
        return self.config_path

    # -- pulse processes ---------------------------------------------------

    def start(
        self, name: str, *extra: str, config: Path | None = None, wait: bool = True
    ) -> subprocess.Popen[Any]:
        """Start pulse in the foreground on ``name``, its output in pulse-NAME.log.

        With ``wait``, return once it answers on its control socket (made after the heartbeat port
        is bound) or has exited: a backup started right after a slow primary must not see seconds
        of silence and take over (on a loaded machine, interpreter start alone can take a second).
        """
        node = self.nodes[name]
        logf = open(self.log_path(name), "ab")  # noqa: SIM115 - the child owns it from here
        argv = [
            sys.executable,
            "-m",
            "pyrhfos.cli",
            "--nodaemon",
            "--verbose",
            "-c",
            str(config or self.config_path),
            "--pidfile",
            str(self.workdir / f"pulse-{name}.pid"),
            "--socket",
            str(self.socket_path(name)),
            "--state-dir",
            str(self.state_dir(name)),
            *extra,
        ]
        proc = node.popen(argv, stdout=logf, stderr=logf, env={"PYRHFOS_NODE": name})
        logf.close()
        self.pulses[name] = proc
        if wait:
            sock = str(self.socket_path(name))
            wait_until(lambda: proc.poll() is not None or answers(sock), 30, 0.05)
        return proc

    def state_dir(self, name: str) -> Path:
        """Node ``name``'s boot counter and partner mark (kept across its restarts, like /var/lib/pulse)."""
        return self.workdir / f"state-{name}"

    def run_pulse(self, node: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``pulse -c <this lvs.cf> ARGS`` on ``node`` ("a", "b" or "client") and wait for it."""
        where = {**self.nodes, "client": self.client}[node]
        argv = [sys.executable, "-m", "pyrhfos.cli", "-c", str(self.config_path), *args]
        return where.run(*argv, check=False, timeout=timeout)

    def commands_run(self, name: str) -> list[str]:
        """The start/stop trace lines pulse's commands left on ``name``: ["start", "stop", ...]."""
        try:
            lines = (self.workdir / f"{name}.cmds").read_text().split()
        except OSError:
            return []
        return lines[1::2]

    def socket_path(self, name: str) -> Path:
        return self.workdir / f"pulse-{name}.sock"

    def ask(self, name: str, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``pulse COMMAND --socket <name's socket>`` run on node ``name``."""
        argv = [sys.executable, "-m", "pyrhfos.cli", command, "--socket", str(self.socket_path(name)), *args]
        return self.nodes[name].run(*argv, check=False, timeout=30)

    def log_path(self, name: str) -> Path:
        return self.workdir / f"pulse-{name}.log"

    def log(self, name: str) -> str:
        try:
            return self.log_path(name).read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, name: str, sig: signal.Signals) -> None:
        """Signal the pulse we started (by its pid: never by name)."""
        proc = self.pulses[name]
        if proc.poll() is None:
            os.kill(proc.pid, sig)

    def stop(self, name: str, timeout: float = 15.0) -> int | None:
        self.signal(name, signal.SIGTERM)
        try:
            return self.pulses[name].wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self, name: str) -> None:
        self.signal(name, signal.SIGKILL)
        self.pulses[name].wait(5)

    def kill_service(self, name: str) -> int | None:
        """SIGKILL the service on ``name`` (ours, or the pid its start_cmd recorded); its pid or None."""
        if name in self.service_procs:
            proc = self.service_procs.pop(name)
            proc.kill()
            return proc.pid
        try:
            pid = int((self.workdir / f"service-{name}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return pid

    # -- observation -------------------------------------------------------

    def holds_vip(self, name: str) -> bool:
        return any(ip == VIP for ip, _, _ in self.nodes[name].addresses())

    def holders(self) -> set[str]:
        return {name for name in self.nodes if self.holds_vip(name)}

    def vip_label(self, name: str) -> str | None:
        return next((label for ip, _, label in self.nodes[name].addresses() if ip == VIP), None)

    def fetch(self, timeout: float = 1.0) -> str | None:
        """One request from the client to VIP:80; the answering node's name, or None."""
        res = self.client.run(
            sys.executable, "-m", "pyrhfos_lab.client", "fetch", VIP, "80", str(timeout),
            check=False, timeout=10,
        )  # fmt: skip
        return res.stdout.strip() or None

    def wait_holders(self, expected: set[str], timeout: float) -> set[str]:
        wait_until(lambda: self.holders() == expected, timeout, 0.1)
        return self.holders()

    def start_prober(self, interval: float = 0.01, limit: float = 0.05) -> subprocess.Popen[Any]:
        """A client process that tries VIP:80 every ``interval`` s and prints one JSON line per try."""
        argv = [sys.executable, "-m", "pyrhfos_lab.client", "probe", VIP, "80", str(interval), str(limit)]
        return self.client.popen(argv, stdout=subprocess.PIPE)


def outage(samples: list[dict[str, Any]], fault_at: float, new: str) -> float | None:
    """Seconds from the fault to the first answer from ``new`` (None if it never answered)."""
    first = next((s["t"] for s in samples if s["t"] >= fault_at and s["who"] == new), None)
    return None if first is None else first - fault_at
