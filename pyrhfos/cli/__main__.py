"""``python -m pyrhfos.cli``: the ``pulse`` command (init scripts and the lab start it so)."""

import sys

from .pulse import main

sys.exit(main())
