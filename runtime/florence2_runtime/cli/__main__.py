"""``python -m florence2_runtime.cli ...``: the ``florence2`` command."""

import sys

from .command import main

sys.exit(main())
