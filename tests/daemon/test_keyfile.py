"""The heartbeat key file (issue 13, item 3): opened without following a link, checked on the open
descriptor (regular file, owned by root, mode 0600), and long enough."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from pyrhfos.config.model import Config
from pyrhfos.daemon.startup import MIN_KEY_BYTES, StartupError, read_heartbeat_key

GOOD = b"correct horse battery staple"


def keyed(path: Path) -> Config:
    return replace(Config(), heartbeat_key=str(path))


def key_file(tmp_path: Path, data: bytes = GOOD, mode: int = 0o600) -> Path:
    path = tmp_path / "pulse.key"
    path.write_bytes(data)
    path.chmod(mode)
    return path


def refusal(path: Path) -> str:
    with pytest.raises(StartupError) as e:
        read_heartbeat_key(keyed(path))
    return str(e.value)


def test_a_good_key_is_read_without_its_newline(tmp_path: Path) -> None:
    assert read_heartbeat_key(keyed(key_file(tmp_path, GOOD + b"\n"))) == GOOD


def test_a_symbolic_link_is_not_followed(tmp_path: Path) -> None:
    link = tmp_path / "link.key"
    link.symlink_to(key_file(tmp_path))
    assert "is a symbolic link" in refusal(link)


def test_a_key_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = key_file(tmp_path)
    os.chown(path, 1, 1)  # needs root, as the daemon does
    assert "must belong to root" in refusal(path)


def test_a_key_others_may_read_is_refused(tmp_path: Path) -> None:
    assert "must be 0600" in refusal(key_file(tmp_path, mode=0o640))


def test_a_short_key_is_refused_with_the_minimum(tmp_path: Path) -> None:
    message = refusal(key_file(tmp_path, b"x" * (MIN_KEY_BYTES - 1)))
    assert f"use at least {MIN_KEY_BYTES}" in message
    assert read_heartbeat_key(keyed(key_file(tmp_path, b"x" * MIN_KEY_BYTES))) == b"x" * MIN_KEY_BYTES


def test_a_fifo_does_not_hang_the_start(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)
    assert "not a regular file" in refusal(fifo)


def test_an_empty_or_missing_key_is_refused(tmp_path: Path) -> None:
    assert "is empty" in refusal(key_file(tmp_path, b"\n"))
    assert "No such file" in refusal(tmp_path / "absent.key")
