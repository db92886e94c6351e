"""Errors shared by every layer."""


class ModelError(RuntimeError):
    """A model directory or backbone cannot be used."""


class ServiceError(Exception):
    """A request the service answers with ``status`` (an HTTP code) and a message; raised by
    the serving core and the upload handling, mapped to the answer in ``labelrec.service``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}  # e.g. Retry-After with a 429, WWW-Authenticate with a 401
