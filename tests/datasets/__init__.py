"""``florence2 label`` and ``florence2 eval`` (``florence2_runtime.datasets``) on the trained toy model."""
