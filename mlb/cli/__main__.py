"""``python -m mlb.cli``: the same as the ``mlb`` console script."""

import sys

from mlb.cli import main

sys.exit(main())
