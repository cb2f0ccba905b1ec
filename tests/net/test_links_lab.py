"""net/links.py in a lab namespace: the initial state of each watched interface, then carrier loss and
return as netlink reports them (the node's eth0 loses carrier when its switch port goes down)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

pytestmark = pytest.mark.lab

WATCH = textwrap.dedent(
    """
    import asyncio, sys
    from pyrhfos.net.links import LinkWatcher

    def report(name, up):
        print(name, "up" if up else "down", flush=True)

    async def main():
        await asyncio.wait_for(LinkWatcher(["eth0", "nosuch0"], report).run(), 20)

    try:
        asyncio.run(main())
    except TimeoutError:
        pass
    """
)


def _line(proc: subprocess.Popen[Any], timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            return line.decode().strip()
    raise AssertionError("no report from the watcher")


def test_carrier_loss_and_return_are_reported(lab: Any) -> None:
    node = lab.add_node("d1", "192.0.2.21")
    proc = node.popen([sys.executable, "-c", WATCH], stdout=subprocess.PIPE)
    try:
        first = {_line(proc), _line(proc)}
        assert first == {"eth0 up", "nosuch0 down"}  # an absent interface carries nothing
        node.link_down("eth0", end="switch")
        assert _line(proc) == "eth0 down"
        node.link_up("eth0", end="switch")
        assert _line(proc) == "eth0 up"
    finally:
        proc.kill()
        proc.wait(5)
