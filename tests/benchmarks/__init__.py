"""The scripts in ``benchmarks/`` in their smoke modes, and the pieces they are built from."""
