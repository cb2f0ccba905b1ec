"""The ``pulse`` command's entry point: its first word picks the command, and only that command's module
is loaded, so ``pulse status`` (init scripts, piranha-gui, monitoring) does not pay for the daemon's.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..daemon.control import COMMANDS


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Imported per word on purpose (see the docstring): the daemon's imports cost ~0.1 s and 9 MB.
    if argv and argv[0] in COMMANDS:
        from . import client

        return client.main(argv)
    if argv and argv[0] == "sync":
        from . import sync

        return sync.main(argv[1:])
    if argv and argv[0] == "simulate":
        from . import simulate

        return simulate.main(argv[1:])
    from . import pulse

    return pulse.main(argv)
