"""The errors of checkpoint and adapter loading (both ``ValueError``: the user gave something unusable)."""


class CheckpointError(ValueError):
    """The checkpoint cannot be found or loaded; the message says why."""


class AdapterError(CheckpointError):
    """An adapter cannot be found, read, mapped or merged exactly; the message says which and why."""
