"""The OpenAPI 3 document, generated from the marshmallow schemas, and its browsable page.

``GET /api/v1/openapi.json`` serves the document; ``GET /api/v1/docs`` a Swagger UI page
whose assets come from the ``swagger-ui-bundle`` package (served locally, no CDN). The
document is built from the declaration of every route of the app (:func:`~.routing.route`),
plugins' routes included; a test checks none is missing.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, current_app, jsonify, send_from_directory

from .. import __version__
from .context import EXTENSION
from .routing import RouteSpec, route, route_spec

bp = Blueprint("openapi", __name__)

_OBJECT: dict[str, Any] = {"type": "object"}


def _obj(*required: str) -> dict[str, Any]:
    return {"type": "object", "required": list(required)}


NATIVE_ERROR = {
    "type": "object",
    "required": ["success", "error"],
    "properties": {"success": {"type": "boolean"}, "error": _obj("code", "message", "details")},
}
OPENAI_ERROR = {"type": "object", "required": ["error"], "properties": {"error": _obj("type", "code", "message")}}
#: Headers of a rate-limited response (every response of a limited endpoint carries the first three).
RATE_HEADERS = {
    name: {"description": text, "schema": {"type": "integer"}}
    for name, text in (
        ("X-RateLimit-Limit", "Calls allowed per window in this endpoint group"),
        ("X-RateLimit-Remaining", "Calls left in the window"),
        ("X-RateLimit-Reset", "When the window resets, seconds since the epoch"),
        ("Retry-After", "Seconds to wait before retrying"),
    )
}


def _content(declared: RouteSpec) -> dict[str, Any]:
    if declared.content == "text":
        content: dict[str, Any] = {"text/plain": {"schema": {"type": "string"}}}
    elif declared.content == "html":
        content = {"text/html": {}}
    else:
        content = {"application/json": {"schema": declared.response or _OBJECT}}
    if declared.streams:
        content["text/event-stream"] = {"schema": {}}  # JSON events (and OpenAI's [DONE])
    return content


def _operation(
    declared: RouteSpec, endpoint: str, method: str, path: str, arguments: list[str], kernel: Any
) -> dict[str, Any]:
    """The OpenAPI operation of one method of a declared route."""
    error = {"content": {"application/json": {"schema": OPENAI_ERROR if path.startswith("/v1/") else NATIVE_ERROR}}}
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[^/]+$"}}
        for name in sorted(arguments)
    ]
    if declared.query is not None:
        params.append({"in": "query", "schema": declared.query})
    responses: dict[str, Any] = {
        str(declared.status): {"description": "OK", "content": _content(declared)},
        "default": {"description": "Error", **error},
    }
    for status, (description, schema) in declared.responses.items():
        responses[str(status)] = {"description": description, "content": {"application/json": {"schema": schema}}}
    operation: dict[str, Any] = {
        "summary": declared.summary,
        "operationId": f"{endpoint}.{method.lower()}",
        "tags": [endpoint.split(".")[0]],
        "parameters": params,
        "responses": responses,
    }
    if not declared.is_open(kernel):
        operation["security"] = [{"bearer": []}, {"apiKey": []}]
    if declared.counted(kernel):
        responses["429"] = {"description": "Rate limit exceeded", "headers": RATE_HEADERS, **error}
    if declared.body is not None:
        operation["requestBody"] = {
            "required": declared.body_required,
            "content": {"application/json": {"schema": declared.body}},
        }
    return operation


def build_spec(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of every documented route of ``app``."""
    spec = APISpec(
        title="LLaMA GPU",
        version=__version__,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Native API (/api/v1) and OpenAI-compatible API (/v1)."},
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.security_scheme("apiKey", {"type": "apiKey", "in": "header", "name": "X-API-Key"})
    kernel = app.extensions[EXTENSION]
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        declared = route_spec(app.view_functions.get(rule.endpoint))
        if declared is None or not declared.document:
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        operations = {
            method.lower(): _operation(declared, rule.endpoint, method, path, list(rule.arguments), kernel)
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        }
        spec.path(path=path, operations=operations)
    return spec.to_dict()


@route(
    bp,
    "/api/v1/openapi.json",
    permission=None,
    rate_limit=None,
    summary="This document",
    response=_obj("openapi", "paths"),
)
def document() -> Response:
    """The OpenAPI document."""
    return jsonify(build_spec(current_app))


_DOCS_INIT = "SwaggerUIBundle({url: '/api/v1/openapi.json', dom_id: '#ui'});"
#: The docs page's Content-Security-Policy: its own assets and its one inline script (by hash) only.
DOCS_CSP = (
    "default-src 'none'; "
    f"script-src 'self' 'sha256-{base64.b64encode(hashlib.sha256(_DOCS_INIT.encode()).digest()).decode()}'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@route(bp, "/api/v1/docs", permission=None, rate_limit=None, summary="Browsable API documentation", content="html")
def docs() -> Response:
    """Swagger UI over the document, with local assets (and a strict Content-Security-Policy)."""
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>LLaMA GPU API</title>"
        "<link rel='stylesheet' href='/api/v1/docs/assets/swagger-ui.css'></head><body><div id='ui'></div>"
        "<script src='/api/v1/docs/assets/swagger-ui-bundle.js'></script>"
        f"<script>{_DOCS_INIT}</script></body></html>"
    )
    response = Response(page, mimetype="text/html")
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


@route(bp, "/api/v1/docs/assets/<name>", permission=None, rate_limit=None, document=False)
def assets(name: str) -> Response:
    """Swagger UI's files, from the installed package."""
    from swagger_ui_bundle import swagger_ui_path

    return send_from_directory(swagger_ui_path, name)
