"""The ``florence2`` command: run, bench, export and the errors a user meets."""
