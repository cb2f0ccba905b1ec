"""net/conntrack.py on a real NAT director in namespaces: per-backend counts as ipvsadm shows them, and a
flush that cuts a dead server's clients off while the other server's client and the director's own
connection to the flushed server continue.

client 192.0.2.50 -- br0 -- 192.0.2.1 director (VIP 192.0.2.10) 198.51.100.1 -- br1 -- rs1 .11, rs2 .12
The director's nat table is a plain `nft -f` file written here (round robin, rs1 first), not core/ruleset.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.lab

VIP = "192.0.2.10"
RS = {"rs1": "198.51.100.11", "rs2": "198.51.100.12"}
RS_PORT = 8080

RULESET = f"""
table ip conntracklab {{
    chain to_rs1 {{ meta l4proto tcp dnat to {RS["rs1"]}:{RS_PORT}; }}
    chain to_rs2 {{ meta l4proto tcp dnat to {RS["rs2"]}:{RS_PORT}; }}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {VIP} tcp dport 80 numgen inc mod 2 vmap {{ 0 : jump to_rs1, 1 : jump to_rs2 }}
    }}
}}
"""

# Echoes every chunk back prefixed with the server's name, until the client closes.
ECHO = textwrap.dedent(
    """
    import socket, sys, threading
    name = sys.argv[1]
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", int(sys.argv[2])))
    srv.listen(16)
    def handle(c):
        with c:
            try:
                while data := c.recv(4096):
                    c.sendall(name.encode() + b" " + data)
            except OSError:
                pass
    print("ready", flush=True)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()
    """
)

# Opens 4 connections to the VIP, closes the 4th, reports who answered; once `go` exists, uses the
# first 3 again and reports what became of each.
CLIENT = textwrap.dedent(
    """
    import json, os, socket, sys, time
    vip, go = sys.argv[1], sys.argv[2]
    conns, who = [], []
    for i in range(4):
        s = socket.create_connection((vip, 80), timeout=5)
        s.sendall(b"hello")
        who.append(s.recv(100).decode().split()[0])
        conns.append(s)
    conns[3].close()
    print(json.dumps({"who": who}), flush=True)
    while not os.path.exists(go):
        time.sleep(0.05)
    after = []
    for s in conns[:3]:
        try:
            s.settimeout(3)
            s.sendall(b"again")
            data = s.recv(100)
            after.append("ok" if data.endswith(b"again") else f"closed {data!r}")
        except ConnectionResetError:
            after.append("reset")
        except TimeoutError:
            after.append("dead")
        except OSError as e:
            after.append(f"error {e}")
    print(json.dumps({"after": after}), flush=True)
    """
)

# Runs in the director: counts, then flush rs1, while the director holds a connection of its own to rs1.
DIRECTOR = textwrap.dedent(
    """
    import asyncio, json, socket, sys
    from ipaddress import IPv4Address as A
    from pyrhfos.net import conntrack
    vip, rs1, rs2, port = A(sys.argv[1]), A(sys.argv[2]), A(sys.argv[3]), int(sys.argv[4])
    backends = [(rs1, port), (rs2, port)]
    own = socket.create_connection((str(rs1), port), timeout=5)  # like a probe: not NAT'ed
    own.sendall(b"probe"); own.recv(100)
    out = {"before": {str(a): v for (a, _), v in conntrack.counts(vip, 80, "tcp", backends).items()}}
    out["fwmark_style"] = {str(a): v for (a, _), v in conntrack.counts(None, None, "tcp", backends).items()}
    # The director's way: from a running event loop, in a worker thread.
    threaded = asyncio.run(asyncio.to_thread(conntrack.counts, vip, 80, "tcp", backends))
    out["threaded"] = {str(a): v for (a, _), v in threaded.items()}
    out["udp"] = {str(a): v for (a, _), v in conntrack.counts(vip, 80, "udp", backends).items()}
    out["flushed"] = conntrack.flush(rs1, port, "tcp")
    out["after"] = {str(a): v for (a, _), v in conntrack.counts(vip, 80, "tcp", backends).items()}
    own.sendall(b"still")
    out["own"] = own.recv(100).decode()
    print(json.dumps(out))
    """
)


def _line(proc: subprocess.Popen[Any], timeout: float) -> str:
    out = proc.stdout
    assert out is not None
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(out.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert got and got[0], f"no line from {proc.args!r}"
    return got[0].decode()


def test_counts_and_flush_on_a_nat_director(lab: Any, tmp_path: Path) -> None:
    client = lab.add_node("client", "192.0.2.50")
    director = lab.add_node("director", "192.0.2.1")
    lab.add_node("director", "198.51.100.1", bridge="br1", ifname="eth1")
    director.run("ip", "addr", "add", f"{VIP}/24", "dev", "eth0")
    servers = {}
    for name, ip in RS.items():
        servers[name] = node = lab.add_node(name, ip, bridge="br1")
        node.run("ip", "route", "add", "default", "via", "198.51.100.1")
        proc = node.popen([sys.executable, "-c", ECHO, name, str(RS_PORT)], stdout=subprocess.PIPE)
        assert _line(proc, 10).strip() == "ready"

    set_code = (
        "import sys; from pyrhfos.net.conntrack import set_sysctl as s; print(s(sys.argv[1], sys.argv[2]))"
    )
    get_code = "import sys; from pyrhfos.net.conntrack import get_sysctl as g; print(g(sys.argv[1]))"
    assert director.run_python(set_code, "net.ipv4.ip_forward", "1").stdout.strip() == "0"  # the previous
    assert director.run_python(get_code, "net.ipv4.ip_forward").stdout.strip() == "1"
    rules = tmp_path / "nat.nft"
    rules.write_text(RULESET)
    director.run("nft", "-f", str(rules))
    # Without this a client's mid-stream packet after the flush is a new connection, NAT'ed again.
    director.run_python(set_code, "net.netfilter.nf_conntrack_tcp_loose", "0")
    assert director.run_python(get_code, "net.netfilter.nf_conntrack_tcp_loose").stdout.strip() == "0"

    go = tmp_path / "go"
    proc = client.popen([sys.executable, "-c", CLIENT, VIP, str(go)], stdout=subprocess.PIPE)
    assert json.loads(_line(proc, 20)) == {"who": ["rs1", "rs2", "rs1", "rs2"]}
    time.sleep(0.5)  # the closed 4th connection's FIN exchange ends in TIME_WAIT

    res = director.run_python(DIRECTOR, VIP, RS["rs1"], RS["rs2"], str(RS_PORT))
    out = json.loads(res.stdout)
    # ipvsadm's ActiveConn/InActConn: rs1 two open, rs2 one open and one closed (TIME_WAIT).
    assert out["before"] == {RS["rs1"]: [2, 0], RS["rs2"]: [1, 1]}
    assert out["fwmark_style"] == out["before"]  # the director's own flow to rs1 is not NAT'ed: not counted
    assert out["threaded"] == out["before"]
    assert out["udp"] == {RS["rs1"]: [0, 0], RS["rs2"]: [0, 0]}
    assert out["flushed"] == 2
    assert out["after"] == {RS["rs1"]: [0, 0], RS["rs2"]: [1, 1]}
    assert out["own"] == "rs1 still"  # flush left the director's own connection alone

    go.write_text("")
    after = json.loads(_line(proc, 20))["after"]
    assert after[1] == "ok"  # rs2's client never noticed
    assert after[0] in ("reset", "dead") and after[2] in ("reset", "dead"), after


def test_sysctl_names_are_checked() -> None:
    from pyrhfos.net.conntrack import get_sysctl, set_sysctl

    for bad in ("../../etc/passwd", "net", "net/ipv4/ip_forward", "net.ipv4..x", ""):
        with pytest.raises(ValueError):
            set_sysctl(bad, 1)
        with pytest.raises(ValueError):
            get_sysctl(bad)
