"""The errors of the benchmark suite: one base class, one subclass per kind of failure."""

from __future__ import annotations


class BenchError(Exception):
    """Base class of every benchmark error."""


class ConfigurationError(BenchError):
    """A benchmark setting is missing or invalid; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class DatasetError(BenchError):
    """A prompt dataset cannot be read or has no usable prompt."""


class APIError(BenchError):
    """The server under test answered with an error (``status`` is the HTTP code, 0 when unreachable)."""

    def __init__(self, message: str, status: int = 0, code: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.code = code
        self.message = message


class BenchmarkError(BenchError):
    """A benchmark could not run (no request succeeded, the output folder cannot be written…)."""
