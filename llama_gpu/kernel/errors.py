"""The error hierarchy used everywhere.

Every error the platform raises on purpose is a :class:`LlamaGPUError`. Each class
carries a stable machine-readable ``code`` and the HTTP ``status`` the API answers
with, so the HTTP layer needs one handler for all of them. The codes are the
contract with clients: never rename one.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AuthenticationFailed",
    "BackendUnavailable",
    "ConfigurationError",
    "Conflict",
    "InferenceFailed",
    "InsufficientMemory",
    "InvalidInput",
    "LlamaGPUError",
    "MethodNotAllowed",
    "ModelLoadFailed",
    "ModelNotFound",
    "ModelNotLoaded",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PluginEssential",
    "PluginFailed",
    "PluginLoadFailed",
    "PluginNotFound",
    "PluginNotLoaded",
    "RateLimitExceeded",
    "RequestCancelled",
    "ServerOverloaded",
    "ServiceUnavailable",
    "UnsupportedMediaType",
    "all_error_classes",
]


class LlamaGPUError(Exception):
    """Base of every deliberate error: a code, an HTTP status, a message, details."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500
    #: Seconds a client should wait before retrying (sent as ``Retry-After``).
    retry_after: int | None = None

    def __init__(self, message: str | None = None, *, details: dict[str, Any] | None = None) -> None:
        self.message = message or self.__class__.__doc__ or self.code
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of the envelope."""
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidInput(LlamaGPUError):
    """Request validation failed."""

    code, status = "INVALID_INPUT", 400


class AuthenticationFailed(LlamaGPUError):
    """Missing or invalid credentials."""

    code, status = "AUTHENTICATION_FAILED", 401


class PermissionDenied(LlamaGPUError):
    """The caller may not do this."""

    code, status = "PERMISSION_DENIED", 403


class NotFound(LlamaGPUError):
    """No such resource."""

    code, status = "NOT_FOUND", 404


class ModelNotFound(NotFound):
    """The model does not exist."""

    code = "MODEL_NOT_FOUND"


class PluginNotFound(NotFound):
    """The plugin is not installed, or not known under that id."""

    code = "PLUGIN_NOT_FOUND"


class MethodNotAllowed(LlamaGPUError):
    """The method is not allowed on this resource."""

    code, status = "METHOD_NOT_ALLOWED", 405


class Conflict(LlamaGPUError):
    """The request conflicts with the current state."""

    code, status = "CONFLICT", 409


class PluginEssential(Conflict):
    """An essential plugin cannot be unloaded."""

    code = "PLUGIN_ESSENTIAL"


class PluginNotLoaded(Conflict):
    """The plugin is not loaded."""

    code = "PLUGIN_NOT_LOADED"


class ModelNotLoaded(Conflict):
    """The model exists but is not loaded."""

    code = "MODEL_NOT_LOADED"


class RequestCancelled(Conflict):
    """The request was cancelled (``DELETE /api/v1/requests/{id}``) before it finished."""

    code = "REQUEST_CANCELLED"


class PayloadTooLarge(LlamaGPUError):
    """The request body is larger than the limit."""

    code, status = "PAYLOAD_TOO_LARGE", 413


class UnsupportedMediaType(LlamaGPUError):
    """The request body is not of a supported content type."""

    code, status = "UNSUPPORTED_MEDIA_TYPE", 415


class RateLimitExceeded(LlamaGPUError):
    """Too many requests."""

    code, status = "RATE_LIMIT_EXCEEDED", 429


class ModelLoadFailed(LlamaGPUError):
    """Loading the model failed."""

    code, status = "MODEL_LOAD_FAILED", 500


class InferenceFailed(LlamaGPUError):
    """Inference failed."""

    code, status = "INFERENCE_FAILED", 500


class PluginLoadFailed(LlamaGPUError):
    """Loading the plugin failed."""

    code, status = "PLUGIN_LOAD_FAILED", 500


class PluginFailed(LlamaGPUError):
    """A plugin raised while handling the request."""

    code, status = "PLUGIN_FAILED", 500


class InsufficientMemory(LlamaGPUError):
    """Not enough GPU or CPU memory."""

    code, status = "INSUFFICIENT_MEMORY", 503


class BackendUnavailable(LlamaGPUError):
    """The requested backend is not available."""

    code, status = "BACKEND_UNAVAILABLE", 503


class ServerOverloaded(LlamaGPUError):
    """The server is at capacity; retry later."""

    code, status = "SERVER_OVERLOADED", 503
    retry_after = 1


class ServiceUnavailable(LlamaGPUError):
    """The server is not accepting requests (starting, draining or stopped)."""

    code, status = "SERVICE_UNAVAILABLE", 503
    retry_after = 5


class ConfigurationError(LlamaGPUError):
    """The configuration is invalid; raised at start-up, before serving."""

    code, status = "CONFIGURATION_ERROR", 500


def all_error_classes() -> list[type[LlamaGPUError]]:
    """Every error class, the base included (for documentation and tests)."""
    seen: list[type[LlamaGPUError]] = []
    stack: list[type[LlamaGPUError]] = [LlamaGPUError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen
