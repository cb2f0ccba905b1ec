"""The LVS lab: a client, two directors and three real servers in namespaces, by NAT or direct routing.

Owns that topology, the real servers' name-answering TCP/UDP service, the pair's lvs.cf and client helpers.

NAT (``mode="nat"``)::

    br0 (public)  client 203.0.113.10, primary eth0 203.0.113.2, backup eth0 203.0.113.3
    br1 (private) primary eth1 198.51.100.2, backup eth1 198.51.100.3, rs1..rs3 198.51.100.11-.13
                  (the real servers' default route is nat_router 198.51.100.1: the active director holds it)

Direct routing (``mode="direct"``)::

    br0 (public)  client, primary eth0, backup eth0, rs1..rs3 203.0.113.11-.13 (the VIPs on lo,
                  arp_ignore=1 / arp_announce=2 so they never answer ARP for them)
    br1 (private) primary eth1 198.51.100.2, backup eth1 198.51.100.3 (a heartbeat link only)

The VIPs are 203.0.113.100 and .101, on the client's own /24 (on-link). Client-side sockets are made in the
client's namespace from this process (setns in a short-lived thread), so a connection costs no interpreter.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import dataclasses
import os
import queue
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import typing
from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Literal, TypeVar

from pyrhfos.config import loads, write
from pyrhfos.config.model import Config, DeviceAddress, NetworkMode, Server, ServiceKind, Virtual

from .lab import Lab, LabError, Node, stop_process
from .testbed import Testbed, wait_until

T = TypeVar("T")
Mode = Literal["nat", "direct"]

CLIENT_IP = "203.0.113.10"
PRIMARY_IP, BACKUP_IP = "203.0.113.2", "203.0.113.3"
PRIMARY_PRIVATE, BACKUP_PRIVATE = "198.51.100.2", "198.51.100.3"
NAT_ROUTER = "198.51.100.1"
VIPS = ("203.0.113.100", "203.0.113.101")
VIP = VIPS[0]
VIP_LABEL, NAT_ROUTER_LABEL = "eth0:1", "eth1:1"
DIRECTORS = ("primary", "backup")
REAL_SERVERS = ("rs1", "rs2", "rs3")
RS_ADDRESSES: dict[str, dict[str, str]] = {
    "nat": {"rs1": "198.51.100.11", "rs2": "198.51.100.12", "rs3": "198.51.100.13"},
    "direct": {"rs1": "203.0.113.11", "rs2": "203.0.113.12", "rs3": "203.0.113.13"},
}
PORT = 80  # the real servers' TCP service and the "web" virtual
UDP_PORT = 53  # the real servers' UDP service (for udp virtuals)
KEEPALIVE, DEADTIME = 0.5, 2.0
# The probe lvs_cf() puts on "web": the service answers PING with "PONG <name>".
PROBE_SEND, PROBE_EXPECT = "PING\r\n", "PONG"

_CLONE_NEWNET = 0x40000000
_IP_PKTINFO = 8  # Linux; socket.IP_PKTINFO only exists from Python 3.12
_PKTINFO = struct.Struct("I4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr


# -- sockets in another namespace ------------------------------------------------------------------
_libc: ctypes.CDLL | None = None


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread switched into namespace ``ns``; its sockets stay in ``ns``.

    setns(CLONE_NEWNET) changes only the calling thread, and a socket belongs to the namespace it was
    made in for life, so the sockets ``fn`` creates can be used from any thread afterwards.
    ``fn`` must bound its own time (socket timeouts): the join does not.
    """
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    libc = _libc
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return typing.cast(T, box["value"])


def _read_line(sock: socket.socket, buf: bytearray, limit: int = 4096) -> bytes:
    """One line (without its newline) from ``sock``, buffering the rest in ``buf``; b"" at EOF."""
    while b"\n" not in buf and len(buf) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    line, sep, rest = bytes(buf).partition(b"\n")
    buf[:] = rest if sep else b""
    return line.rstrip(b"\r")


def tcp_name(host: str, port: int, timeout: float = 2.0) -> str | None:
    """Connect, read the service's first line (its name), close; None on any failure."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            return _read_line(s, bytearray()).decode(errors="replace") or None
    except OSError:
        return None


def udp_name(host: str, port: int, timeout: float = 2.0) -> str | None:
    """One datagram from a fresh socket (a new source port); the name in the answer's first line."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.connect((host, port))  # only answers from host:port are taken
            s.send(b"NAME\n")
            data = s.recv(65535)
    except OSError:
        return None
    return data.split(b"\n", 1)[0].decode(errors="replace") or None


class Held:
    """A long TCP connection to a real server (through a VIP) held open by the service's HOLD mode."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name  # the real server that answered
        self._buf = bytearray()
        self._count = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Held({self.name!r}, open={self.sock.fileno() >= 0})"

    def alive(self, timeout: float = 2.0) -> bool:
        """Send one line and read its echo within ``timeout``; False on reset, EOF, timeout or garbage."""
        with self._lock:
            if self.sock.fileno() < 0:
                return False
            self._count += 1
            line = f"ping {self._count}".encode()
            try:
                self.sock.settimeout(timeout)
                self.sock.sendall(line + b"\n")
                return _read_line(self.sock, self._buf) == line
            except OSError:
                return False

    def close(self) -> None:
        with self._lock:
            self.sock.close()

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_held(host: str, port: int, timeout: float) -> Held:
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        buf = bytearray()
        name = _read_line(sock, buf).decode(errors="replace")
        sock.sendall(b"HOLD\n")
        if not name or _read_line(sock, buf) != b"OK":
            raise LabError(f"{host}:{port} did not enter HOLD mode (answered {name!r})")
    except BaseException:
        sock.close()
        raise
    held = Held(sock, name)
    held._buf = buf
    return held


# -- the real servers' service ---------------------------------------------------------------------
def _handle_tcp(conn: socket.socket, name: str) -> None:
    """Name first (so a bare connect learns it), then one command line: HOLD echoes lines until EOF,
    PING answers ``PONG <name>``, ``GET ...`` an HTTP/1.0 200; anything else (EOF) ends the connection."""
    with conn:
        try:
            conn.settimeout(10)  # a silent client is dropped; a held one has said HOLD by then
            conn.sendall(f"{name}\n".encode())
            buf = bytearray()
            cmd = _read_line(conn, buf).strip().upper()
            if cmd == b"HOLD":
                conn.settimeout(None)
                conn.sendall(b"OK\n" + bytes(buf))  # echo what came with HOLD, then the rest as it comes
                while chunk := conn.recv(4096):
                    conn.sendall(chunk)
                return
            if cmd == b"PING":
                conn.sendall(f"PONG {name}\n".encode())
            elif cmd.startswith(b"GET "):  # an HTTP probe (the Piranha example's expect = "HTTP")
                conn.sendall(f"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{name}\n".encode())
            # Drain before closing so an unread request never turns our FIN into an RST.
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(2)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and conn.recv(4096):
                pass
        except OSError:
            pass


def _answer_udp(sock: socket.socket, name: str) -> None:
    """Answer ``<name>\\n<payload>`` from the address the datagram was sent to (the VIP on lo in
    direct routing: a reply from the server's own address would not match the client's socket)."""
    try:
        data, anc, _flags, peer = sock.recvmsg(65535, socket.CMSG_SPACE(_PKTINFO.size))
    except OSError:
        return
    cmsgs: list[tuple[int, int, bytes]] = []
    for level, kind, cdata in anc:
        if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(cdata) >= _PKTINFO.size:
            _ifindex, _spec, dst = _PKTINFO.unpack(cdata[: _PKTINFO.size])
            cmsgs = [(socket.IPPROTO_IP, _IP_PKTINFO, _PKTINFO.pack(0, dst, b"\0" * 4))]
    with contextlib.suppress(OSError):
        sock.sendmsg([f"{name}\n".encode() + data], cmsgs, 0, peer)


def rs_serve(name: str, tcp_ports: Sequence[int], udp_ports: Sequence[int]) -> None:
    """The real server's service: TCP (see _handle_tcp) and UDP (see _answer_udp) on every address.

    SIGUSR1 closes the listening sockets (new connections are refused, established ones go on: a
    "stopped" server whose held connections survive); SIGUSR2 opens them again. Each change is
    acknowledged on stdout ("paused", "resumed") after "ready".
    """
    sel = selectors.DefaultSelector()
    open_socks: list[socket.socket] = []
    pending: collections.deque[str] = collections.deque()

    def open_all() -> None:
        for port in tcp_ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
            s.listen(1024)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, "tcp")
            open_socks.append(s)
        for port in udp_ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            s.bind(("0.0.0.0", port))
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, "udp")
            open_socks.append(s)

    def close_all() -> None:
        for s in open_socks:
            sel.unregister(s)
            s.close()
        open_socks.clear()

    def say(word: str) -> None:
        sys.stdout.write(word + "\n")
        sys.stdout.flush()

    signal.signal(signal.SIGUSR1, lambda *_: pending.append("pause"))
    signal.signal(signal.SIGUSR2, lambda *_: pending.append("resume"))
    open_all()
    say("ready")
    while True:
        while pending:
            if pending.popleft() == "pause":
                close_all()
                say("paused")
            else:
                if not open_socks:
                    open_all()
                say("resumed")
        for key, _ in sel.select(0.1):
            sock = typing.cast(socket.socket, key.fileobj)
            if key.data == "udp":
                _answer_udp(sock, name)
                continue
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conn.setblocking(True)
            threading.Thread(target=_handle_tcp, args=(conn, name), daemon=True).start()


@dataclasses.dataclass
class _Service:
    proc: subprocess.Popen[Any]
    lines: queue.Queue[str]
    paused: bool = False

    def expect(self, word: str, timeout: float) -> None:
        try:
            got = self.lines.get(timeout=timeout)
        except queue.Empty:
            got = "(nothing)"
        if got != word:
            raise LabError(f"real server service pid {self.proc.pid}: wanted {word!r}, got {got!r}")


# -- pulse on the directors ------------------------------------------------------------------------
class Directors(Testbed):
    """testbed.Testbed's pulse handling (start, stop, kill, signal, ask, log) on primary and backup.

    Testbed.__init__ builds the FOS pair, so it is not called: this sets what those methods use.
    Each director reads its own lvs.cf (``config_file(name)``), written by LvsLab.write_config.
    """

    __test__ = False

    def __init__(self, lvs: LvsLab) -> None:  # noqa: D107 - see the class docstring
        self.lvs = lvs
        self.lab = lvs.lab
        self.workdir = lvs.workdir
        self.a, self.b, self.client = lvs.primary, lvs.backup, lvs.client
        self.nodes = {"primary": lvs.primary, "backup": lvs.backup}
        self.pulses: dict[str, subprocess.Popen[Any]] = {}
        self.managed_service = False
        self.service_procs: dict[str, subprocess.Popen[Any]] = {}
        self.config_path = self.config_file("primary")  # for Testbed.run_pulse

    def config_file(self, name: str) -> Path:
        return self.workdir / f"lvs-{name}.cf"

    def save_config(self, cfg: Config) -> Path:
        """Write ``cfg`` as both directors' lvs.cf."""
        self.cfg = cfg
        self.lvs.write_config(write(cfg))
        return self.config_path

    def start(
        self, name: str, *extra: str, config: Path | None = None, wait: bool = True
    ) -> subprocess.Popen[Any]:
        """Testbed.start with ``name``'s own lvs.cf unless ``config`` is given."""
        return super().start(name, *extra, config=config or self.config_file(name), wait=wait)

    def holds_vip(self, name: str) -> bool:
        return self.lvs.holds(name, VIP)

    def holders(self) -> set[str]:
        return self.lvs.holders(VIP)

    def fetch(self, timeout: float = 1.0) -> str | None:
        """The real server answering one fresh connection to VIP:80 (through the director), or None."""
        return self.lvs.connect_one(VIP, PORT, timeout=timeout)

    def start_prober(self, interval: float = 0.01, limit: float = 0.05) -> subprocess.Popen[Any]:
        argv = [sys.executable, "-m", "pyrhfos_lab.client", "probe", VIP, str(PORT)]
        return self.client.popen([*argv, str(interval), str(limit)], stdout=subprocess.PIPE)


# -- the lab ---------------------------------------------------------------------------------------
def _coerce(value: Any, hint: str) -> Any:
    """Strings for address-typed fields of the config model: "IP" or "IP DEV[:N]"."""
    if not isinstance(value, str):
        return value
    if "DeviceAddress" in hint:
        ip, _, dev = value.partition(" ")
        return DeviceAddress(IPv4Address(ip), dev.strip())
    if "IPv4Address" in hint:
        return IPv4Address(value)
    return value


def _hints(cls: type) -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(cls)}


_CONFIG_FIELDS, _VIRTUAL_FIELDS, _SERVER_FIELDS = _hints(Config), _hints(Virtual), _hints(Server)


class LvsLab:
    """The LVS topology on a Lab (``lab``, or one of its own), real servers serving, pulse not started.

    A context manager: ``close()`` ends held connections and services, and the Lab when it made it.
    """

    def __init__(
        self,
        mode: Mode = "nat",
        workdir: Path | str | None = None,
        lab: Lab | None = None,
        *,
        tcp_ports: Sequence[int] = (PORT,),
        udp_ports: Sequence[int] = (UDP_PORT,),
    ) -> None:
        if mode not in ("nat", "direct"):
            raise ValueError(f"mode must be 'nat' or 'direct', not {mode!r}")
        self.mode: Mode = mode
        self._own_lab = lab is None
        self.lab = lab or Lab()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lvslab-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.tcp_ports, self.udp_ports = tuple(tcp_ports), tuple(udp_ports)
        self.rs_addresses = dict(RS_ADDRESSES[mode])
        self._services: dict[str, _Service] = {}
        self._held: list[Held] = []
        try:
            self._build()
            self.start_all_rs()
            self.pulse = Directors(self)
            self.write_config(self.lvs_cf())
        except BaseException:
            self.close()
            raise

    # -- topology --------------------------------------------------------------------------------
    def _build(self) -> None:
        lab = self.lab
        self.client = lab.add_node("client", CLIENT_IP, arp_accept=True)
        self.primary = lab.add_node("primary", PRIMARY_IP)
        self.backup = lab.add_node("backup", BACKUP_IP)
        lab.add_node("primary", PRIMARY_PRIVATE, bridge="br1", ifname="eth1")
        lab.add_node("backup", BACKUP_PRIVATE, bridge="br1", ifname="eth1")
        self.directors = {"primary": self.primary, "backup": self.backup}
        self.rs: dict[str, Node] = {}
        for name, addr in self.rs_addresses.items():
            if self.mode == "nat":
                node = lab.add_node(name, addr, bridge="br1")
                node.run("ip", "route", "add", "default", "via", NAT_ROUTER, "dev", "eth0")
            else:
                node = lab.add_node(name, addr, bridge="br0")
                for conf in ("all", "eth0"):
                    node.sysctl(f"net.ipv4.conf.{conf}.arp_ignore", 1)
                    node.sysctl(f"net.ipv4.conf.{conf}.arp_announce", 2)
                for vip in VIPS:
                    node.run("ip", "addr", "add", f"{vip}/32", "dev", "lo")
            self.rs[name] = node
        self.nodes: dict[str, Node] = {"client": self.client, **self.directors, **self.rs}

    def node(self, name: str) -> Node:
        return self.nodes[name]

    # -- real servers' services ------------------------------------------------------------------
    def _spawn_rs(self, name: str) -> _Service:
        argv = [sys.executable, "-m", "pyrhfos_lab.lvslab", "serve", "--name", name]
        argv += [a for p in self.tcp_ports for a in ("--tcp", str(p))]
        argv += [a for p in self.udp_ports for a in ("--udp", str(p))]
        proc = self.rs[name].popen(argv, stdout=subprocess.PIPE)
        lines: queue.Queue[str] = queue.Queue()
        out = proc.stdout
        assert out is not None

        def pump() -> None:
            with contextlib.suppress(OSError, ValueError):
                for raw in out:
                    lines.put(raw.decode(errors="replace").strip())

        threading.Thread(target=pump, name=f"rs-{name}-stdout", daemon=True).start()
        return _Service(proc, lines)

    def start_all_rs(self, timeout: float = 15.0) -> None:
        """Start every real server's service that is not running (at once; then wait for each)."""
        started = {n: self._spawn_rs(n) for n in self.rs if not self.rs_running(n)}
        self._services.update(started)
        for service in started.values():
            service.expect("ready", timeout)

    def rs_running(self, name: str) -> bool:
        """Is ``name``'s service process alive and accepting (not paused)?"""
        service = self._services.get(name)
        return service is not None and service.proc.poll() is None and not service.paused

    def rs_pid(self, name: str) -> int | None:
        service = self._services.get(name)
        return service.proc.pid if service and service.proc.poll() is None else None

    def stop_rs(self, name: str, keep_established: bool = False, timeout: float = 5.0) -> None:
        """Stop ``name``'s service (by its pid). With ``keep_established`` only its listening sockets
        close: new connections are refused and probes fail, held connections go on."""
        service = self._services[name]
        if service.proc.poll() is not None:
            return
        if keep_established:
            if not service.paused:
                os.kill(service.proc.pid, signal.SIGUSR1)
                service.expect("paused", timeout)
                service.paused = True
            return
        stop_process(service.proc, grace=timeout)

    def start_rs(self, name: str, timeout: float = 15.0) -> None:
        """Start ``name``'s service again (reopen its sockets if only paused); returns once it listens."""
        service = self._services.get(name)
        if service is not None and service.proc.poll() is None:
            if service.paused:
                os.kill(service.proc.pid, signal.SIGUSR2)
                service.expect("resumed", timeout)
                service.paused = False
            return
        self._services[name] = self._spawn_rs(name)
        self._services[name].expect("ready", timeout)

    # -- lvs.cf ----------------------------------------------------------------------------------
    def server(self, name: str, **fields: Any) -> Server:
        """The server block of real server ``name`` (rs1..rs3) with its lab address."""
        kw: dict[str, Any] = {"address": IPv4Address(self.rs_addresses[name]), **fields}
        return Server(name, **{k: _coerce(v, _SERVER_FIELDS[k]) for k, v in kw.items()})

    def config(self, **overrides: Any) -> Config:
        """The pair's model: service = lvs, this lab's network, one virtual "web" on VIP:80 (rr) over
        rs1..rs3 with a PING/PONG probe; keepalive 0.5, deadtime 2.

        ``overrides``: a global key's field (``keepalive=1``, ``primary_private="198.51.100.2"``), or a
        field of the "web" virtual (``scheduler="wrr"``, ``quiesce_server=True``); ``servers`` takes
        names or Server blocks, ``weights={"rs1": 3}`` sets weights, ``virtuals`` replaces them all.
        Strings are taken for address fields ("IP" or "IP DEV:N").
        """
        servers: Iterable[str | Server] = overrides.pop("servers", REAL_SERVERS)
        weights: dict[str, int] = overrides.pop("weights", {})
        blocks = tuple(s if isinstance(s, Server) else self.server(s) for s in servers)
        blocks = tuple(dataclasses.replace(s, weight=weights.get(s.name, s.weight)) for s in blocks)
        unknown = set(weights) - {s.name for s in blocks}
        if unknown:
            raise ValueError(f"weights for servers not in the virtual: {sorted(unknown)}")
        web: dict[str, Any] = {
            "address": DeviceAddress(IPv4Address(VIP), VIP_LABEL),
            "port": PORT,
            "protocol": "tcp",
            "scheduler": "rr",
            "send": PROBE_SEND,
            "expect": PROBE_EXPECT,
            "timeout": 1.0,
            "reentry": 3.0,
            "load_monitor": "none",
            "quiesce_server": False,
            "servers": blocks,
        }
        nat = self.mode == "nat"
        glob: dict[str, Any] = {
            "service": ServiceKind.LVS,
            "primary": IPv4Address(PRIMARY_IP),
            "backup": IPv4Address(BACKUP_IP),
            "backup_active": True,
            "heartbeat": True,
            "heartbeat_port": 539,
            "keepalive": KEEPALIVE,
            "deadtime": DEADTIME,
            "network": NetworkMode.NAT if nat else NetworkMode.DIRECT,
            "nat_router": DeviceAddress(IPv4Address(NAT_ROUTER), NAT_ROUTER_LABEL) if nat else None,
            "nat_nmask": IPv4Address("255.255.255.0") if nat else None,
        }
        for key, value in overrides.items():
            if key in ("failovers", "path", "positions"):
                raise ValueError(f"{key} cannot be overridden here")
            if key in _CONFIG_FIELDS:
                glob[key] = _coerce(value, _CONFIG_FIELDS[key])
            elif key in _VIRTUAL_FIELDS:
                web[key] = _coerce(value, _VIRTUAL_FIELDS[key])
            else:
                raise ValueError(f"no global or virtual key {key!r}")
        if "virtuals" in overrides:
            if set(overrides) & set(_VIRTUAL_FIELDS):
                raise ValueError("virtuals= replaces the web virtual: its fields cannot be set as well")
        else:
            glob["virtuals"] = (Virtual("web", **web),)
        return Config(**glob)

    def lvs_cf(self, **overrides: Any) -> str:
        """The lvs.cf text of ``config(**overrides)``, checked to read back to the same model."""
        cfg = self.config(**overrides)
        text = write(cfg)
        back, _warnings = loads(text, "lvslab")  # a refused file raises ConfigError here, not in pulse
        if back != cfg:
            raise LabError("lvs_cf: the written text does not read back to the same model")
        return text

    def write_config(self, text: str, names: Iterable[str] = DIRECTORS) -> list[Path]:
        """Write ``text`` as the lvs.cf of the directors ``names`` (each has its own file)."""
        paths = []
        for name in names:
            path = self.pulse.config_file(name)
            path.write_text(text)
            paths.append(path)
        return paths

    def start_pulse(self, name: str, *extra: str, wait: bool = True) -> subprocess.Popen[Any]:
        """pulse --nodaemon on director ``name`` with its own lvs.cf (Testbed.start)."""
        return self.pulse.start(name, *extra, wait=wait)

    def stop_pulse(self, name: str, timeout: float = 15.0) -> int | None:
        return self.pulse.stop(name, timeout)

    # -- observation -----------------------------------------------------------------------------
    def holds(self, name: str, ip: str = VIP) -> bool:
        """Does node ``name`` carry address ``ip`` on any interface (VIP on eth0, nat_router on eth1)?"""
        node = self.nodes[name]
        return any(a == ip for ifname in node.interfaces for a, _, _ in node.addresses(ifname))

    def holders(self, ip: str = VIP) -> set[str]:
        """The directors carrying ``ip``."""
        return {name for name in self.directors if self.holds(name, ip)}

    def wait_holders(self, expected: set[str], timeout: float, ip: str = VIP) -> set[str]:
        wait_until(lambda: self.holders(ip) == expected, timeout, 0.1)
        return self.holders(ip)

    def arp_who_has(self, ip: str, node: str = "client", timeout: float = 1.0) -> list[str]:
        """Send one ARP request for ``ip`` from ``node``'s eth0; the MACs that answered within ``timeout``."""
        who = self.nodes[node]
        mac = bytes.fromhex(who.mac_of("eth0").replace(":", ""))
        arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
        frame = b"\xff" * 6 + mac + b"\x08\x06" + arp + mac + socket.inet_aton(who.ip_of("eth0"))
        frame += b"\0" * 6 + socket.inet_aton(ip)
        target = socket.inet_aton(ip)

        def ask() -> list[str]:
            answers: list[str] = []
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)) as s:
                s.bind(("eth0", 0x0806))
                s.send(frame)
                deadline = time.monotonic() + timeout
                while (left := deadline - time.monotonic()) > 0:
                    s.settimeout(left)
                    try:
                        data = s.recv(2048)
                    except TimeoutError:
                        break
                    # op at 20..22, sender MAC 22..28, sender IP 28..32
                    if len(data) >= 42 and data[20:22] == b"\x00\x02" and data[28:32] == target:
                        answers.append(data[22:28].hex(":"))
            return answers

        return in_netns(who.ns, ask)

    # -- the client ------------------------------------------------------------------------------
    def connect_one(
        self, vip: str = VIP, port: int = PORT, proto: str = "tcp", timeout: float = 2.0, node: str = "client"
    ) -> str | None:
        """The real server answering one fresh connection (or datagram) from ``node``; None if none."""
        fn = tcp_name if proto == "tcp" else udp_name
        return in_netns(self.nodes[node].ns, lambda: fn(vip, port, timeout))

    def connect_many(
        self,
        vip: str = VIP,
        port: int = PORT,
        n: int = 30,
        proto: str = "tcp",
        timeout: float = 2.0,
        node: str = "client",
    ) -> collections.Counter[str | None]:
        """``n`` fresh connections one after another from ``node``: how many each server answered
        (None counts the ones that failed within ``timeout``)."""
        if proto not in ("tcp", "udp"):
            raise ValueError(f"proto must be tcp or udp, not {proto!r}")
        fn = tcp_name if proto == "tcp" else udp_name
        names = in_netns(self.nodes[node].ns, lambda: [fn(vip, port, timeout) for _ in range(n)])
        return collections.Counter(names)

    def hold(self, vip: str = VIP, port: int = PORT, timeout: float = 2.0, node: str = "client") -> Held:
        """A long connection from ``node`` in HOLD mode; ``.name`` says which server has it."""
        held = in_netns(self.nodes[node].ns, lambda: _open_held(vip, port, timeout))
        self._held.append(held)
        return held

    def close_held(self) -> None:
        """Close every connection hold() opened (a test's own, before the next test on this lab)."""
        for held in self._held:
            held.close()
        self._held.clear()

    # -- teardown --------------------------------------------------------------------------------
    def close(self) -> None:
        """Close held connections, stop the services and pulses we started; tear down our own Lab."""
        self.close_held()
        for service in self._services.values():
            stop_process(service.proc, grace=2.0)
        pulse = getattr(self, "pulse", None)
        if pulse is not None:
            for name, proc in pulse.pulses.items():
                stop_process(proc, grace=5.0)
                # pytest shows a test's stderr when it fails: then the daemons' own words are there.
                sys.stderr.write(f"--- pulse log of {name} ---\n{pulse.log(name)[-4000:]}\n")
        if self._own_lab:
            self.lab.teardown()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LvsLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyrhfos_lab.lvslab")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_serve = sub.add_parser("serve", help="a real server's service: its name over TCP and UDP")
    p_serve.add_argument("--name", required=True)
    p_serve.add_argument("--tcp", type=int, action="append", default=[])
    p_serve.add_argument("--udp", type=int, action="append", default=[])
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    rs_serve(args.name, args.tcp, args.udp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
