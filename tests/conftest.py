"""Shared pytest fixtures: the network-namespace ``lab`` and a session check that none of it is left."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pyrhfos_lab import lab as labmod

# Every Lab of this pytest process gets a prefix starting with this (pyrh-<pid>-<hex>-).
RUN_PREFIX = f"{labmod.BASE_PREFIX}{os.getpid()}-"


@pytest.fixture
def lab() -> Iterator[labmod.Lab]:
    """A fresh, empty Lab; everything it made is removed afterwards, also when the test fails."""
    reason = labmod.lab_available()
    if reason:
        pytest.skip(reason)
    the_lab = labmod.Lab()
    try:
        yield the_lab
    finally:
        the_lab.teardown()


@pytest.fixture(scope="session", autouse=True)
def _no_namespaces_left() -> Iterator[None]:
    """Sweep leftovers of crashed earlier runs (dead owners only); fail loudly if this run leaks any."""
    usable = labmod.lab_available() is None
    if usable:
        labmod.sweep_stale()
    yield
    if usable:
        left = [ns for ns in labmod.list_netns() if ns.startswith(RUN_PREFIX)]
        if left:
            for ns in left:  # ours (this pid): remove them so the next run starts clean, then fail
                labmod._delete_netns(ns)
            pytest.fail(f"network namespaces left behind by this test run: {left}", pytrace=False)
