"""This host as the kernel sees it: its IPv4 addresses and its interfaces (psutil, socket)."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address

import psutil


def local_ipv4_addresses() -> list[IPv4Address]:
    """Every IPv4 address configured on this host's interfaces."""
    found: list[IPv4Address] = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET:
                ip = IPv4Address(a.address)
                if ip not in found:
                    found.append(ip)
    return found


def interface_exists(name: str) -> bool:
    """Does the interface ``name`` exist here (``eth0``, not the alias label ``eth0:1``)?"""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True
