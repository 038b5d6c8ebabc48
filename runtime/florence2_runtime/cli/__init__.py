"""The command line: ``florence2`` (:mod:`.command`) and its sub-commands ``run`` (:mod:`.run`), ``bench``
(:mod:`.bench`), ``compare`` (:mod:`.compare`); argparse value types (:mod:`.argtypes`). ``serve`` lives in :mod:`florence2_runtime.server.cli`, ``export`` and ``demo``
in ``florence2_export``; both are imported only when their sub-command runs (``export`` with an install
hint when torch is missing).

The package offers ``main`` (the ``florence2`` entry point; ``python -m florence2_runtime.cli`` runs it)
and ``build_parser`` (the whole argument parser, for tests and generated references).

May import: every lower layer (errors, generation, inputs, engine, tasks, model); :mod:`florence2_runtime.server`
and ``florence2_export`` only lazily, inside the sub-command that needs them.
"""

from .command import build_parser, main

__all__ = ["build_parser", "main"]
