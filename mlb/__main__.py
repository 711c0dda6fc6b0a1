"""``python -m mlb``: the ``mlb`` command, e.g. ``torchrun --nproc-per-node 2 -m mlb train ...``."""

import sys

from mlb.cli import main

sys.exit(main())
