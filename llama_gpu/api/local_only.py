"""The guard of ``LLAMA_GPU_AUTH=off``: only this machine's pages may talk to an open server.

With authentication off every caller is an admin, so a web page the operator visits must
not be able to reach the server through the browser:

- **DNS rebinding** (as in Ollama's CVE-2024-28224): a page on ``evil.example`` whose name
  is re-pointed at 127.0.0.1 sends ``Host: evil.example``. Every request, the Socket.IO
  handshake included, must name a loopback host (``localhost``, ``*.localhost``,
  ``127.0.0.0/8``, ``::1``) or one of ``LLAMA_GPU_TRUSTED_HOSTS``.
- **Cross-site requests**: a page elsewhere can POST to ``http://127.0.0.1:5000`` (a
  "simple" request needs no CORS preflight). A state-changing request (any method but GET,
  HEAD, OPTIONS) and every Socket.IO request that carries an ``Origin`` must come from the
  server's own origin (same host and port) or a trusted host. Clients that send no
  ``Origin`` (curl, SDKs) are not browsers and pass.

Refusals are 403 ``PERMISSION_DENIED`` in the usual envelope. With authentication on and
``LLAMA_GPU_TRUSTED_HOSTS`` set, the same middleware checks ``Host`` alone (loopback names
or the trusted ones), answering 400 ``INVALID_INPUT`` as Flask's ``TRUSTED_HOSTS`` would,
but for IPv6 loopback and the Socket.IO transport too. It is a WSGI middleware (inside
ProxyFix, outside Socket.IO) so that the Socket.IO transport is covered too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from ..kernel.config import ENV_PREFIX, is_loopback
from ..kernel.errors import InvalidInput, LlamaGPUError, PermissionDenied
from ..kernel.types import utc_iso

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _hostname(netloc: str) -> str | None:
    try:
        return urlsplit("//" + netloc).hostname
    except ValueError:
        return None


def trusted_name(netloc: str, trusted: tuple[str, ...]) -> bool:
    """Whether the host of ``netloc`` is in ``trusted`` (an entry ``.example.com`` also matches subdomains)."""
    name = (_hostname(netloc) or "").rstrip(".")
    for entry in (e.lower() for e in trusted):
        if name and (name == entry.lstrip(".") or (entry.startswith(".") and name.endswith(entry))):
            return True
    return False


def host_allowed(netloc: str, trusted: tuple[str, ...]) -> bool:
    """Whether ``netloc`` (``Host`` header: name and optional port) is loopback or trusted."""
    name = _hostname(netloc)
    return bool(name) and (is_loopback(name or "") or trusted_name(netloc, trusted))


def refusal(environ: dict[str, Any], trusted: tuple[str, ...], open_server: bool = True) -> LlamaGPUError | None:
    """Why this request may not reach the server, or ``None``.

    ``open_server`` (``auth=off``): refuse foreign hosts and origins with 403; else refuse
    only a ``Host`` that is neither loopback nor trusted, with 400.
    """
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    if not open_server:
        if host_allowed(host, trusted):
            return None
        return InvalidInput(
            f"Host {host[:100]!r} is not one of {ENV_PREFIX}TRUSTED_HOSTS (or a loopback name)",
            details={"host": host[:100], "reason": "host_not_allowed"},
        )
    if not host_allowed(host, trusted):
        return PermissionDenied(
            f"with {ENV_PREFIX}AUTH=off this server answers only to loopback host names "
            f"(and {ENV_PREFIX}TRUSTED_HOSTS); Host {host[:100]!r} refused",
            details={"host": host[:100], "reason": "host_not_allowed"},
        )
    origin = environ.get("HTTP_ORIGIN")
    path = environ.get("PATH_INFO", "")
    state_changing = environ.get("REQUEST_METHOD", "GET").upper() not in SAFE_METHODS or path.startswith("/socket.io")
    if origin is None or not state_changing:
        return None
    netloc = urlsplit(origin).netloc.lower() if origin != "null" else ""
    if netloc and (netloc == host.lower() or trusted_name(netloc, trusted)):
        return None
    return PermissionDenied(
        f"with {ENV_PREFIX}AUTH=off a browser request must come from this server's own pages; "
        f"Origin {origin[:100]!r} refused",
        details={"origin": origin[:100], "reason": "origin_not_allowed"},
    )


class LocalOnly:
    """WSGI middleware: refuse what :func:`refusal` refuses, pass the rest to ``app``."""

    def __init__(
        self, app: Callable[..., Iterable[bytes]], trusted_hosts: tuple[str, ...], open_server: bool = True
    ) -> None:
        self.app = app
        self.trusted = tuple(trusted_hosts)
        self.open_server = open_server

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Answer a refused request with its error (403 or 400), else call the app."""
        error = refusal(environ, self.trusted, self.open_server)
        if error is None:
            return self.app(environ, start_response)
        if environ.get("PATH_INFO", "").startswith("/v1/"):
            from .errors import openai_error_body

            body: dict[str, Any] = openai_error_body(error)
        else:
            body = {"success": False, "error": error.to_dict(), "request_id": None, "timestamp": utc_iso()}
        data = json.dumps(body).encode()
        start_response(
            f"{error.status} {HTTPStatus(error.status).phrase.upper()}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
        )
        return [data]
