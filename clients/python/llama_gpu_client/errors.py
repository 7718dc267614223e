"""Exceptions of the client, one class per family of server error codes.

The server answers every failure with ``{"success": false, "error": {"code", "message",
"details"}, "request_id"}``; :func:`error_from_response` turns that envelope into the
exception class of its ``code`` (falling back on the HTTP status for a code this client
does not know).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIConnectionError",
    "AuthenticationError",
    "ConflictError",
    "InvalidInputError",
    "LlamaGPUError",
    "ModelNotFoundError",
    "ModelNotLoadedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PluginEssentialError",
    "PluginNotFoundError",
    "PluginNotLoadedError",
    "RateLimitError",
    "RequestCancelledError",
    "ServerError",
    "ServerOverloadedError",
    "ServiceUnavailableError",
    "error_for_code",
]


class LlamaGPUError(Exception):
    """Base of every error this client raises.

    ``code`` is the server's stable error code (``MODEL_NOT_FOUND``…), ``status`` the HTTP
    status (``None`` for socket and connection errors), ``details`` the envelope's details,
    ``request_id`` the server's id of the failed request, ``retry_after`` the seconds the
    server asked to wait (``Retry-After``), where it sent one.
    """

    default_code = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        self.code = code or self.default_code
        self.status = status
        self.details: dict[str, Any] = dict(details or {})
        self.request_id = request_id
        self.retry_after = retry_after
        super().__init__(message)

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.code}{status}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, message={self.message!r})"


class APIConnectionError(LlamaGPUError):
    """The server could not be reached, or did not answer in time."""

    default_code = "CONNECTION_ERROR"


class InvalidInputError(LlamaGPUError):
    """The request was refused as invalid (400 ``INVALID_INPUT``); ``details`` names the fields."""

    default_code = "INVALID_INPUT"


class PayloadTooLargeError(InvalidInputError):
    """The request body is over the server's limit (413)."""

    default_code = "PAYLOAD_TOO_LARGE"


class AuthenticationError(LlamaGPUError):
    """Missing, invalid, expired or revoked credentials (401 ``AUTHENTICATION_FAILED``)."""

    default_code = "AUTHENTICATION_FAILED"


class PermissionDeniedError(LlamaGPUError):
    """The credentials lack the permission the call needs (403 ``PERMISSION_DENIED``)."""

    default_code = "PERMISSION_DENIED"


class NotFoundError(LlamaGPUError):
    """No such resource (404)."""

    default_code = "NOT_FOUND"


class ModelNotFoundError(NotFoundError):
    """The model does not exist (404 ``MODEL_NOT_FOUND``)."""

    default_code = "MODEL_NOT_FOUND"


class PluginNotFoundError(NotFoundError):
    """The plugin is not installed (404 ``PLUGIN_NOT_FOUND``)."""

    default_code = "PLUGIN_NOT_FOUND"


class ConflictError(LlamaGPUError):
    """The request conflicts with the server's state (409)."""

    default_code = "CONFLICT"


class ModelNotLoadedError(ConflictError):
    """The model exists but is not loaded (409 ``MODEL_NOT_LOADED``)."""

    default_code = "MODEL_NOT_LOADED"


class PluginNotLoadedError(ConflictError):
    """The plugin is not loaded (409 ``PLUGIN_NOT_LOADED``)."""

    default_code = "PLUGIN_NOT_LOADED"


class PluginEssentialError(ConflictError):
    """An essential plugin cannot be unloaded (409 ``PLUGIN_ESSENTIAL``)."""

    default_code = "PLUGIN_ESSENTIAL"


class RequestCancelledError(ConflictError):
    """The request was cancelled before it finished (``REQUEST_CANCELLED``)."""

    default_code = "REQUEST_CANCELLED"


class RateLimitError(LlamaGPUError):
    """Too many requests (429 ``RATE_LIMIT_EXCEEDED``); ``retry_after`` says when to try again."""

    default_code = "RATE_LIMIT_EXCEEDED"


class ServiceUnavailableError(LlamaGPUError):
    """The server cannot serve now (503: starting, draining, no memory, no backend)."""

    default_code = "SERVICE_UNAVAILABLE"


class ServerOverloadedError(ServiceUnavailableError):
    """The model's queue is full (503 ``SERVER_OVERLOADED``); ``retry_after`` says when to try again."""

    default_code = "SERVER_OVERLOADED"


class ServerError(LlamaGPUError):
    """The server failed (500: inference, model or plugin load failed, internal error)."""

    default_code = "INTERNAL_ERROR"


_BY_CODE: dict[str, type[LlamaGPUError]] = {
    "INVALID_INPUT": InvalidInputError,
    "UNSUPPORTED_MEDIA_TYPE": InvalidInputError,
    "PAYLOAD_TOO_LARGE": PayloadTooLargeError,
    "AUTHENTICATION_FAILED": AuthenticationError,
    "PERMISSION_DENIED": PermissionDeniedError,
    "NOT_FOUND": NotFoundError,
    "MODEL_NOT_FOUND": ModelNotFoundError,
    "PLUGIN_NOT_FOUND": PluginNotFoundError,
    "CONFLICT": ConflictError,
    "MODEL_NOT_LOADED": ModelNotLoadedError,
    "PLUGIN_NOT_LOADED": PluginNotLoadedError,
    "PLUGIN_ESSENTIAL": PluginEssentialError,
    "REQUEST_CANCELLED": RequestCancelledError,
    "RATE_LIMIT_EXCEEDED": RateLimitError,
    "SERVICE_UNAVAILABLE": ServiceUnavailableError,
    "INSUFFICIENT_MEMORY": ServiceUnavailableError,
    "BACKEND_UNAVAILABLE": ServiceUnavailableError,
    "SERVER_OVERLOADED": ServerOverloadedError,
    "INTERNAL_ERROR": ServerError,
    "INFERENCE_FAILED": ServerError,
    "MODEL_LOAD_FAILED": ServerError,
    "PLUGIN_LOAD_FAILED": ServerError,
    "PLUGIN_FAILED": ServerError,
    "CONFIGURATION_ERROR": ServerError,
}
_BY_STATUS: dict[int, type[LlamaGPUError]] = {
    400: InvalidInputError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: InvalidInputError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_for_code(code: str | None, status: int | None = None) -> type[LlamaGPUError]:
    """The exception class of a server error ``code`` (or, for an unknown code, of ``status``)."""
    if code and code in _BY_CODE:
        return _BY_CODE[code]
    if status is not None and status in _BY_STATUS:
        return _BY_STATUS[status]
    if status is not None and status >= 500:
        return ServerError
    return LlamaGPUError


def build_error(
    error: dict[str, Any] | None,
    *,
    status: int | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
    fallback_message: str = "request failed",
) -> LlamaGPUError:
    """The exception for the ``error`` object of an envelope (or of a socket ack / SSE event)."""
    error = error if isinstance(error, dict) else {}
    # the /v1 endpoints (``POST /v1/auth/keys``) send the OpenAI shape, with the code in lower case
    code = error["code"].upper() if isinstance(error.get("code"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else fallback_message
    details = error.get("details") if isinstance(error.get("details"), dict) else {}
    if retry_after is None and isinstance(details.get("retry_after"), int | float):
        retry_after = float(details["retry_after"])
    cls = error_for_code(code, status)
    return cls(
        message,
        code=code or (f"HTTP_{status}" if cls is LlamaGPUError and status else None),
        status=status,
        details=details,
        request_id=request_id,
        retry_after=retry_after,
    )
