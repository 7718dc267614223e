"""One error envelope for every failure of the native API.

``{"success": false, "error": {"code", "message", "details"}, "request_id", "timestamp"}``
"""

from __future__ import annotations

import logging

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
        from .openai import openai_error_body

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
