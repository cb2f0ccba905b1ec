"""What every pulse command shares: the exit status for a bad file, finding and loading lvs.cf."""

from __future__ import annotations

import argparse
import os
import sys

from ..config import ConfigError, load
from ..config.model import Config
from ..defaults import CONFIG_PATHS

EXIT_CONFIG = 2  # bad lvs.cf, or a file this host cannot run


def add_configfile(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument(
        "-c",
        "--configfile",
        metavar="FILE",
        help=f"lvs.cf to {verb} (default: {{}}, then {{}})".format(*CONFIG_PATHS),
    )


def find_config(given: str | None) -> str:
    if given:
        return given
    for path in CONFIG_PATHS:
        if os.path.exists(path):
            return path
    return CONFIG_PATHS[0]


def load_or_report(path: str) -> Config | None:
    """Load lvs.cf; on errors print them as FILE:LINE:COL lines and return None."""
    try:
        cfg, warnings = load(path)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return None
    for w in warnings:
        print(str(w), file=sys.stderr)
    return cfg
