"""Fixtures of the daemon tests: the example lvs.cf, and a daemon on fakes (rig.py)."""

from __future__ import annotations

import pytest
from rig import EXAMPLE, Rig, build

from pyrhfos.config import loads
from pyrhfos.config.model import Config


@pytest.fixture
def example() -> Config:
    return loads(EXAMPLE.read_text(), str(EXAMPLE))[0]


@pytest.fixture
def rig(example: Config) -> Rig:
    return build(example)
