"""One error envelope for every failure: the native one, and the OpenAI shape under ``/v1/``.

``{"success": false, "error": {"code", "message", "details"}, "request_id", "timestamp"}``;
``{"error": {"type", "code", "message", "details", "param"}}`` for OpenAI clients.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from ..kernel.errors import LlamaGPUError, MethodNotAllowed, NotFound, PayloadTooLarge
from ..kernel.types import utc_iso

log = logging.getLogger(__name__)

_HTTP_CODES: dict[int, type[LlamaGPUError]] = {404: NotFound, 405: MethodNotAllowed, 413: PayloadTooLarge}


def envelope(error: LlamaGPUError) -> Response:
    """Render ``error`` with its HTTP status (and ``Retry-After``).

    The native envelope everywhere, except under ``/v1/`` where OpenAI clients expect
    their own shape.
    """
    if request.path.startswith("/v1/"):
        body = openai_error_body(error)
    else:
        body = {
            "success": False,
            "error": error.to_dict(),
            "request_id": getattr(g, "request_id", None),
            "timestamp": utc_iso(),
        }
    response = jsonify(body)
    response.status_code = error.status
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def openai_error_body(error: LlamaGPUError) -> dict[str, Any]:
    """``{"error": {"type", "code", "message", "details"}}`` as the OpenAI API shapes errors."""
    kind = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "invalid_request_error",
        409: "invalid_request_error",
        413: "invalid_request_error",
        415: "invalid_request_error",
        429: "rate_limit_error",
    }.get(error.status, "server_error")
    return {
        "error": {
            "type": kind,
            "code": error.code.lower(),
            "message": error.message,
            "details": error.details,
            "param": error.details.get("field"),
        }
    }


def _from_http(exc: HTTPException) -> LlamaGPUError:
    cls = _HTTP_CODES.get(exc.code or 500)
    if cls is not None:
        return cls(exc.description or cls.__doc__)
    error = LlamaGPUError(exc.description or exc.name)
    error.code = f"HTTP_{exc.code}"  # type: ignore[misc]
    error.status = exc.code or 500  # type: ignore[misc]
    return error


def register_error_handlers(app: Flask) -> None:
    """Install the handlers that turn every exception into the envelope."""

    @app.errorhandler(LlamaGPUError)
    def _llama_error(exc: LlamaGPUError) -> Response:
        if exc.status >= 500:
            log.error("%s: %s", exc.code, exc.message)
        return envelope(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return envelope(_from_http(exc))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return envelope(LlamaGPUError("internal server error; see the server log", details={}))
