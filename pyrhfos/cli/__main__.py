"""``python -m pyrhfos.cli``: the ``pulse`` command (init scripts and the lab start it so)."""

import sys

from .main import main

sys.exit(main())
