"""Network-namespace lab shared by `make demo`, the tests and the benchmarks.

Owns creating and always removing namespaces, veths, bridges and processes, plus a tiny TCP service.

Layout: one "switch" namespace holds the bridges (br0 = public network, br1 = private heartbeat network);
each node is a namespace whose eth0/eth1 is one end of a veth pair whose other end is a bridge port in the
switch namespace.  Nothing is ever created in, or sent from, the machine's own (root) namespace.
Namespace names are ``<prefix><name>`` with a per-run prefix ``pyrh-<pid>-<hex>-``; the owning pid is
also written to a marker file so :func:`sweep_stale` can remove leftovers of crashed runs, and only those.
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import contextlib
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BASE_PREFIX = "pyrh-"
SWITCH = "switch"
MARKER_DIR = Path("/run/pyrhfos-lab")
# Only the documentation ranges (RFC 5737) are ever configured inside the lab.
ALLOWED_NETS = tuple(ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"))
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}-$")
_DEFAULT_PREFIX_RE = re.compile(r"^pyrh-(\d+)-[0-9a-f]+-")


class LabError(RuntimeError):
    """The lab could not be built or used."""


def _ip(*args: str, check: bool = True, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def list_netns() -> list[str]:
    """Names of all named network namespaces (``ip netns list``)."""
    out = _ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def lab_available() -> str | None:
    """None when the lab can run here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "network-namespace lab needs root"
    try:
        proc = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns` unavailable: {exc}"
    if proc.returncode != 0:
        return f"`ip netns` unavailable: {proc.stderr.strip()}"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_netns_processes(ns: str) -> None:
    """SIGKILL every process still living in a namespace of ours (e.g. a daemon that left its group)."""
    proc = _ip("netns", "pids", ns, check=False)
    for word in proc.stdout.split():
        if word.isdigit() and int(word) != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(word), signal.SIGKILL)


def _delete_netns(ns: str) -> None:
    _kill_netns_processes(ns)
    _ip("netns", "delete", ns, check=False)


def _owner_pid(run_prefix: str) -> int | None:
    marker = MARKER_DIR / run_prefix
    with contextlib.suppress(OSError, ValueError):
        return int(marker.read_text().split()[0])
    m = _DEFAULT_PREFIX_RE.match(run_prefix)
    return int(m.group(1)) if m else None


def sweep_stale(prefix: str = BASE_PREFIX) -> list[str]:
    """Delete namespaces of lab runs under ``prefix`` whose owning process is dead; return their names.

    A run is recognised by its marker file (or by a default ``pyrh-<pid>-<hex>-`` name); namespaces
    whose owner is alive, or that cannot be attributed to a run of ours, are never touched.
    """
    runs: set[str] = set()
    if MARKER_DIR.is_dir():
        runs |= {p.name for p in MARKER_DIR.iterdir() if p.name.startswith(prefix)}
    names = list_netns()
    for ns in names:
        m = _DEFAULT_PREFIX_RE.match(ns)
        if m and ns.startswith(prefix):
            runs.add(m.group(0))
    removed: list[str] = []
    for run in sorted(runs):
        pid = _owner_pid(run)
        if pid is None or _pid_alive(pid):
            continue
        for ns in names:
            if ns.startswith(run):
                _delete_netns(ns)
                removed.append(ns)
        with contextlib.suppress(OSError):
            (MARKER_DIR / run).unlink()
    return removed


class Node:
    """One host of the lab: a network namespace with one interface per network it is attached to."""

    def __init__(self, lab: Lab, name: str, ns: str) -> None:
        self.lab = lab
        self.name = name
        self.ns = ns
        # ifname -> (ip, prefixlen, bridge, switch-side port name)
        self.interfaces: dict[str, tuple[str, int, str, str]] = {}
        self._macs: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Node({self.name!r}, ns={self.ns!r}, interfaces={self.interfaces!r})"

    @property
    def ip(self) -> str:
        """Address of the first interface (eth0, the public network)."""
        return next(iter(self.interfaces.values()))[0]

    @property
    def ifname(self) -> str:
        return next(iter(self.interfaces))

    def ip_of(self, ifname: str) -> str:
        return self.interfaces[ifname][0]

    @property
    def mac(self) -> str:
        return self.mac_of(self.ifname)

    def mac_of(self, ifname: str) -> str:
        if ifname not in self._macs:
            info = json.loads(_ip("-n", self.ns, "-j", "link", "show", "dev", ifname).stdout)
            self._macs[ifname] = info[0]["address"]
        return self._macs[ifname]

    # -- processes ---------------------------------------------------------------------------------
    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment for processes in the node: ours, plus PYTHONPATH so ``-m pyrhfos...`` works."""
        env = dict(os.environ)
        path = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = _REPO_ROOT + (os.pathsep + path if path else "")
        if extra:
            env.update(extra)
        return env

    def run(
        self, *argv: str, check: bool = True, timeout: float = 10, capture: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the node (``ip netns exec``); raises CalledProcessError if check fails."""
        return subprocess.run(
            ["ip", "netns", "exec", self.ns, *argv],
            check=check,
            timeout=timeout,
            capture_output=capture,
            text=True,
            env=self.env(),
            stdin=subprocess.DEVNULL,
        )

    def run_python(
        self, code: str, *args: str, check: bool = True, timeout: float = 20
    ) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet inside the node with this interpreter and the repo on sys.path."""
        return self.run(sys.executable, "-c", code, *args, check=check, timeout=timeout)

    def popen(
        self,
        argv: Sequence[str],
        stdout: Any = subprocess.DEVNULL,
        stderr: Any = subprocess.DEVNULL,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the node in a new process group; the lab kills that group at teardown."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *argv],  # ip execs argv: same pid, same group
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=self.env(env),
            start_new_session=True,
        )
        self.lab._procs.append(proc)
        return proc

    def start_service(
        self, port: int = 80, text: str | None = None, timeout: float = 10
    ) -> subprocess.Popen[Any]:
        """Start the lab's tiny TCP/HTTP service (``serve``) in the node; returns once it listens."""
        argv = [
            sys.executable,
            "-m",
            "pyrhfos_lab.lab",
            "serve",
            "--port",
            str(port),
            "--text",
            text or self.name,
        ]
        proc = self.popen(argv, stdout=subprocess.PIPE)
        out = proc.stdout
        assert out is not None
        ready: list[bytes] = []
        reader = threading.Thread(target=lambda: ready.append(out.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not ready or not ready[0].startswith(b"ready"):
            raise LabError(f"service on {self.name}:{port} did not start")
        return proc

    # -- links -------------------------------------------------------------------------------------
    def link_down(self, ifname: str | None = None, end: str = "switch") -> None:
        """Cut the node's link so its partner hears silence.

        ``end="switch"`` (default) sets the bridge-side veth end down, like pulling the cable or a dead
        switch port: the node's eth0 stays administratively UP with all its addresses (the VIP too) and
        routes; it only loses carrier (NO-CARRIER), which is what a daemon sees on real hardware.
        ``end="node"`` is ``ip link set eth0 down`` inside the node (an administrative ifdown): addresses
        stay, but the kernel drops every route through eth0 and its neighbour entries, so sends fail
        with ENETUNREACH; link_up brings the connected routes back by itself.
        """
        self._set_link(ifname or self.ifname, end, "down")

    def link_up(self, ifname: str | None = None, end: str = "switch") -> None:
        self._set_link(ifname or self.ifname, end, "up")

    def _set_link(self, ifname: str, end: str, state: str) -> None:
        if end == "switch":
            _ip("-n", self.lab.switch_ns, "link", "set", self.interfaces[ifname][3], state)
        elif end == "node":
            _ip("-n", self.ns, "link", "set", ifname, state)
        else:
            raise ValueError(f"end must be 'switch' or 'node', not {end!r}")

    # -- inspection --------------------------------------------------------------------------------
    def addresses(self, ifname: str = "eth0") -> list[tuple[str, int, str]]:
        """IPv4 addresses on ``ifname`` as (ip, prefixlen, label), read with pyroute2 in the namespace."""
        from pyroute2 import IPRoute  # lazy: the service helper must not pay for pyroute2

        def read() -> list[tuple[str, int, str]]:
            with IPRoute(netns=self.ns, flags=0) as ipr:  # flags=0: never create a namespace by accident
                links = ipr.link_lookup(ifname=ifname)
                if not links:
                    return []
                return [
                    (a.get_attr("IFA_ADDRESS"), a["prefixlen"], a.get_attr("IFA_LABEL") or ifname)
                    for a in ipr.get_addr(family=socket.AF_INET, index=links[0])
                ]

        # pyroute2's sync API cannot run inside a running asyncio loop: use a helper thread then.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(read).result(30)

    def address_info(self, ifname: str = "eth0") -> list[dict[str, Any]]:
        """``ip -j addr`` records of ``ifname`` (includes valid_life_time / preferred_life_time)."""
        out = _ip("-n", self.ns, "-j", "-4", "addr", "show", "dev", ifname).stdout
        data = json.loads(out) if out.strip() else []
        return data[0].get("addr_info", []) if data else []

    def ifconfig(self) -> str:
        return self.run("ifconfig", "-a").stdout

    def neigh_mac(self, ip: str) -> str | None:
        """MAC this node's neighbour (ARP) table maps ``ip`` to, or None when there is no usable entry."""
        out = _ip("-n", self.ns, "-j", "-4", "neigh", "show", "to", str(ip)).stdout
        for entry in json.loads(out) if out.strip() else []:
            if entry.get("dst") == str(ip) and entry.get("lladdr"):
                return entry["lladdr"]
        return None

    def sysctl(self, key: str, value: str | int) -> None:
        """Set a (network-namespaced) sysctl inside the node."""
        self.run("sysctl", "-qw", f"{key}={value}")


def stop_process(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """End one process this run started: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)


class Lab:
    """A set of namespaces joined by bridges; a context manager that always tears everything down."""

    def __init__(self, prefix: str | None = None) -> None:
        if prefix is None:
            prefix = f"{BASE_PREFIX}{os.getpid()}-{secrets.token_hex(3)}-"
        if not _PREFIX_RE.match(prefix):
            raise ValueError(f"bad lab prefix {prefix!r}: lowercase letters, digits, '-', ending in '-'")
        self.prefix = prefix
        self.switch_ns = prefix + SWITCH
        self.nodes: dict[str, Node] = {}
        self._procs: list[subprocess.Popen[Any]] = []
        self._namespaces: list[str] = []  # creation order; switch first
        self._bridges: set[str] = set()
        self._ports = 0
        self._closed = False
        self._started = False
        atexit.register(self.teardown)  # last resort on interpreter exit; crashes are left to sweep_stale

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def _new_netns(self, ns: str) -> None:
        if not self._started:
            self._started = True
            MARKER_DIR.mkdir(parents=True, exist_ok=True)
            (MARKER_DIR / self.prefix).write_text(f"{os.getpid()}\n")
        if ns in list_netns():
            raise LabError(f"namespace {ns} already exists")
        _ip("netns", "add", ns)
        self._namespaces.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def _ensure_switch(self, bridge: str) -> None:
        if self._closed:
            raise LabError("lab already torn down")
        if self.switch_ns not in self._namespaces:
            self._new_netns(self.switch_ns)
        if bridge not in self._bridges:
            # No STP: ports forward at once, as on an unmanaged switch.
            _ip("-n", self.switch_ns, "link", "add", bridge, "type", "bridge", "stp_state", "0")
            _ip("-n", self.switch_ns, "link", "set", bridge, "up")
            self._bridges.add(bridge)

    def add_node(
        self,
        name: str,
        ip: str,
        prefixlen: int = 24,
        bridge: str = "br0",
        ifname: str = "eth0",
        arp_accept: bool = False,
    ) -> Node:
        """Create (or extend) node ``name`` with interface ``ifname`` = ``ip/prefixlen`` on ``bridge``.

        ``arp_accept=True`` lets the node create neighbour entries from gratuitous ARP (see test_arp).
        """
        if not _NAME_RE.match(name) or name == SWITCH:
            raise ValueError(f"bad node name {name!r}")
        addr = ipaddress.ip_address(ip)
        if not any(addr in net for net in ALLOWED_NETS):
            raise ValueError(f"{ip} is outside the lab's documentation ranges")
        self._ensure_switch(bridge)
        node = self.nodes.get(name)
        if node is None:
            node = Node(self, name, self.prefix + name)
            self._new_netns(node.ns)
            node.sysctl("net.ipv6.conf.all.disable_ipv6", 1)  # IPv4-only lab: no DAD/RS noise
            node.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
            self.nodes[name] = node
        if ifname in node.interfaces:
            raise LabError(f"{name} already has {ifname}")
        self._ports += 1
        port = f"p{self._ports}-{name}"[:15]
        # Create the pair inside the switch namespace with the node end moved straight into the node:
        # no interface ever appears in the root namespace.
        _ip(
            "-n",
            self.switch_ns,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            node.ns,
        )
        _ip("-n", self.switch_ns, "link", "set", port, "master", bridge)
        _ip("-n", self.switch_ns, "link", "set", port, "up")
        _ip("-n", node.ns, "addr", "add", f"{ip}/{prefixlen}", "brd", "+", "dev", ifname)
        _ip("-n", node.ns, "link", "set", ifname, "up")
        node.interfaces[ifname] = (str(addr), prefixlen, bridge, port)
        if arp_accept:
            node.sysctl("net.ipv4.conf.all.arp_accept", 1)
            node.sysctl(f"net.ipv4.conf.{ifname}.arp_accept", 1)
        return node

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def pair(self, private: bool = False) -> tuple[Node, Node, Node]:
        """The anchors' topology: a 192.0.2.100 (primary), b 192.0.2.200 (backup), client 192.0.2.50.

        ``private=True`` adds eth1 on br1 (198.51.100.100/.200) as a private heartbeat network.
        The client accepts gratuitous ARP for unknown addresses (arp_accept=1).
        """
        a = self.add_node("a", "192.0.2.100")
        b = self.add_node("b", "192.0.2.200")
        client = self.add_node("client", "192.0.2.50", arp_accept=True)
        if private:
            self.add_node("a", "198.51.100.100", bridge="br1", ifname="eth1")
            self.add_node("b", "198.51.100.200", bridge="br1", ifname="eth1")
        return a, b, client

    def owned_namespaces(self) -> list[str]:
        """Namespaces carrying this lab's prefix that currently exist."""
        return [ns for ns in list_netns() if ns.startswith(self.prefix)]

    def teardown(self) -> None:
        """Kill our processes (whole groups), then delete node namespaces, then the switch. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.teardown)
        self._stop_processes()
        if self._started:
            for ns in [*reversed(self._namespaces), *self.owned_namespaces()]:
                _delete_netns(ns)  # its veth end goes with it; the switch-side peer is destroyed too
            with contextlib.suppress(OSError):
                (MARKER_DIR / self.prefix).unlink()
            left = self.owned_namespaces()
            if left:
                raise LabError(f"namespaces left after teardown: {left}")

    def _stop_processes(self, grace: float = 2.0) -> None:
        live = [p for p in self._procs if p.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.0, deadline - time.monotonic()))
        for p in self._procs:
            # SIGKILL the group even if the leader is gone: its children may still be there.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(2)
            for stream in (p.stdout, p.stderr):
                if stream is not None:
                    stream.close()
        self._procs.clear()


# -- the tiny service ------------------------------------------------------------------------------
def serve(port: int, text: str, host: str = "0.0.0.0", ready: bool = True) -> None:
    """Answer every TCP connection on ``host:port`` with ``HTTP/1.0 200 OK`` and a body naming ``text``.

    The answer is written at once (no need to wait for a request, so plain connect probes work too);
    then the server drains what the client sends until it closes (max 2 s), so the client never gets
    an RST for an unread request.
    """
    body = f"{text}\n".encode()
    reply = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(1024)  # the 200-service bench connects 200 at once: none may wait for a SYN retry

    def handle(conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(2)
                conn.sendall(reply)
                conn.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline and conn.recv(4096):
                    pass
            except OSError:
                pass

    if ready:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyrhfos_lab.lab")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_serve = sub.add_parser("serve", help="tiny HTTP/TCP service naming this node")
    p_serve.add_argument("--port", type=int, default=80)
    p_serve.add_argument("--text", default=socket.gethostname())
    p_serve.add_argument("--host", default="0.0.0.0")
    p_sweep = sub.add_parser("sweep", help="remove namespaces of dead lab runs")
    p_sweep.add_argument("--prefix", default=BASE_PREFIX)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        serve(args.port, args.text, args.host)
    elif args.cmd == "sweep":
        for ns in sweep_stale(args.prefix):
            print(f"removed {ns}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
