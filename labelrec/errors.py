"""Errors shared by every layer."""


class ModelError(RuntimeError):
    """A model directory or backbone cannot be used."""
