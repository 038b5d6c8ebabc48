"""``python -m florence2_runtime.cli ...``: the ``florence2`` command."""

import sys

from .main import main

sys.exit(main())
