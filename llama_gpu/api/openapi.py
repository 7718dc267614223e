"""The OpenAPI 3 document, generated from the marshmallow schemas, and its browsable page.

``GET /api/v1/openapi.json`` serves the document; ``GET /api/v1/docs`` a Swagger UI page
whose assets come from the ``swagger-ui-bundle`` package (served locally, no CDN). Every
route of the app is described in :data:`OPERATIONS`; a test checks none is missing.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, current_app, jsonify, send_from_directory
from marshmallow import Schema

from .. import __version__
from . import openai_schemas as oa
from . import schemas as native

bp = Blueprint("openapi", __name__)

_OBJECT: dict[str, Any] = {"type": "object"}


def _obj(*required: str) -> dict[str, Any]:
    return {"type": "object", "required": list(required)}


#: Flask endpoint → (summary, request body schema, 200 body as JSON schema, streams SSE).
OPERATIONS: dict[str, tuple[str, type[Schema] | None, dict[str, Any], bool]] = {
    "health.health": ("Liveness", None, _obj("status", "version", "uptime"), False),
    "health.ready": ("Readiness (503 while no model can serve)", None, _obj("status"), False),
    "auth.login": (
        "Log in: a user name and password for a login token (JWT)",
        native.LoginSchema,
        _obj("success", "token", "expires_in", "user"),
        False,
    ),
    "auth.logout": ("Log out: revoke the login token of this call", None, _obj("success", "message"), False),
    "auth_v1.create_key": (
        "Create an API key (shown once) with at most the caller's permissions",
        native.KeyCreateSchema,
        _obj("success", "key_id", "api_key", "expires", "permissions"),
        False,
    ),
    "auth_v1.current_user": ("Who the caller is", None, _obj("success", "user"), False),
    "auth.list_keys": ("The caller's API keys (all, for an admin)", None, _obj("success", "keys", "total"), False),
    "auth.revoke_key": ("Revoke an API key", None, _obj("success", "key"), False),
    "plugins.list_plugins": (
        "List plugins",
        None,
        _obj("success", "plugins", "total_plugins", "loaded_plugins"),
        False,
    ),
    "plugins.load_plugin": (
        "Load an installed plugin",
        native.PluginLoadSchema,
        _obj("success", "message", "plugin"),
        False,
    ),
    "plugins.unload_plugin": ("Unload a plugin", None, _obj("success", "message", "plugin_id"), False),
    "plugins.configure_plugin": ("Configure a plugin", native.PluginConfigureSchema, _obj("success", "config"), False),
    "models.list_models": ("List models", None, _obj("success", "models", "total_models", "loaded_models"), False),
    "models.get_model": ("Describe a model", None, _obj("success", "model"), False),
    "models.load_model": ("Load a model", native.ModelLoadSchema, _obj("success", "message", "model"), False),
    "models.unload_model": ("Unload a model", None, _obj("success", "message", "freed_memory"), False),
    "infer.infer": ("Generate text", native.InferSchema, _obj("success", "result", "metadata"), True),
    "infer.cancel_request": (
        "Cancel a running or queued request (its own key, or an admin)",
        None,
        _obj("success", "request_id", "cancelled"),
        False,
    ),
    "infer.stream_infer": ("Generate text as Server-Sent Events", native.StreamInferSchema, _OBJECT, True),
    "infer.batch_infer": (
        "Generate for several inputs",
        native.BatchInferSchema,
        _obj("success", "results", "metadata"),
        False,
    ),
    "aliases.generate": ("Generate (seed alias)", native.GenerateSchema, _obj("text", "usage", "latency"), True),
    "aliases.generate_stream": ("Generate as Server-Sent Events (seed alias)", native.GenerateSchema, _OBJECT, True),
    "aliases.batch_generate": (
        "Generate for several prompts (seed alias)",
        native.BatchGenerateSchema,
        _obj("results"),
        False,
    ),
    "openai.chat_completions": (
        "OpenAI chat completions",
        oa.ChatCompletionSchema,
        _obj("id", "object", "choices"),
        True,
    ),
    "openai.completions": ("OpenAI completions", oa.CompletionSchema, _obj("id", "object", "choices"), True),
    "openai.embeddings": ("OpenAI embeddings", oa.EmbeddingSchema, _obj("object", "data", "model", "usage"), False),
    "openai.list_models": ("OpenAI model list", None, _obj("object", "data"), False),
    "openai.get_model": ("OpenAI model", None, _obj("id", "object"), False),
    "openai.model_status": ("Model status (extension)", None, _obj("id", "status", "metrics"), False),
    "openai.load_model": ("Load a model (extension)", oa.ModelLoadV1Schema, _obj("id", "status"), False),
    "openai.unload_model": ("Unload a model (extension)", None, _obj("id", "status"), False),
    "openai.batch": ("Batch of chat requests (extension)", oa.BatchSchema, _obj("object", "responses"), False),
    "system.system_status": (
        "Status, uptime, machine use, services and request statistics",
        None,
        _obj("success", "status", "uptime", "version", "system", "services", "statistics"),
        False,
    ),
    "system.system_gpu": ("Every GPU (NVML)", None, _obj("success", "gpu_count", "gpus"), False),
    "system.system_metrics": (
        "Stored metric series over a timeframe",
        None,
        _obj("success", "timeframe", "granularity", "metrics"),
        False,
    ),
    "system.system_logs": ("Recent structured log records (admin)", None, _obj("success", "count", "logs"), False),
    "system.alerts": ("Firing alerts and the alert rules", None, _obj("success", "alerts", "rules"), False),
    "system.prometheus_metrics": ("Metrics in the Prometheus text format", None, {}, False),
    "openapi.document": ("This document", None, _obj("openapi", "paths"), False),
    "openapi.docs": ("Browsable API documentation", None, {}, False),
    "dashboard.index": ("The web dashboard (it logs in and calls this API)", None, {}, False),
    "evaluate.evaluate": (
        "Evaluate a model on prompts: perplexity of reference texts, tokens/s, latency (stored as a run)",
        native.EvaluateSchema,
        _obj("success", "evaluation_id", "model", "results", "summary"),
        False,
    ),
    "evaluate.metrics_history": (
        "Figures of stored evaluations and benchmarks over time",
        None,
        _obj("success", "points"),
        False,
    ),
    "benchmarks.create_benchmark": (
        "Start a benchmark job (one per model) against this server or, for an admin, another one (202)",
        native.BenchmarkCreateSchema,
        _obj("success", "benchmark_id", "benchmark_ids", "status", "created_at", "estimated_completion"),
        False,
    ),
    "benchmarks.list_benchmarks": (
        "The caller's benchmark jobs (all, for an admin), newest first",
        None,
        _obj("success", "benchmarks", "total"),
        False,
    ),
    "benchmarks.get_benchmark": (
        "A benchmark job: config, status, progress, summary",
        None,
        _obj("success", "benchmark"),
        False,
    ),
    "benchmarks.benchmark_status": (
        "A benchmark job's status and progress",
        None,
        _obj("success", "benchmark_id", "status", "progress"),
        False,
    ),
    "benchmarks.benchmark_results": (
        "A finished benchmark job's results (409 until it has finished)",
        None,
        _obj("success", "benchmark_id", "status", "results"),
        False,
    ),
    "benchmarks.cancel_benchmark": (
        "Cancel a queued or running benchmark job",
        None,
        _obj("success", "benchmark_id", "status"),
        False,
    ),
    "convert.create_conversion": (
        "Re-quantize a GGUF model of the models directory into a new GGUF file, as a background job (admin, 202)",
        oa.ConvertSchema,
        _obj("job_id", "status", "estimated_duration", "progress"),
        False,
    ),
    "convert.list_conversions": ("Conversion jobs, newest first (admin)", None, _obj("object", "data"), False),
    "convert.get_conversion": (
        "A conversion job: status, progress, output file, size reduction, duration (admin)",
        None,
        _obj("job_id", "status", "output_file", "size_reduction", "duration", "progress"),
        False,
    ),
    "convert.cancel_conversion": (
        "Cancel a queued or running conversion job; its partial output is removed (admin)",
        None,
        _obj("job_id", "status"),
        False,
    ),
}

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
#: Endpoints with a query string, and its schema.
QUERIES: dict[str, type[Schema]] = {
    "system.system_metrics": native.MetricsQuerySchema,
    "system.system_logs": native.LogsQuerySchema,
    "evaluate.metrics_history": native.MetricsHistoryQuerySchema,
    "benchmarks.list_benchmarks": native.BenchmarkListQuerySchema,
}
#: Endpoints that answer 202 Accepted (work queued), not 200.
ACCEPTED = frozenset({"benchmarks.create_benchmark", "convert.create_conversion"})
#: Endpoints whose 200 answer is neither JSON nor HTML.
PLAIN_TEXT = frozenset({"system.prometheus_metrics"})

#: Endpoints anyone may call, and those of them that are not rate limited either.
OPEN = frozenset(
    {
        "health.health",
        "health.ready",
        "auth.login",
        "openapi.document",
        "openapi.docs",
        "system.prometheus_metrics",
        "dashboard.index",
    }
)
UNLIMITED = OPEN - {"auth.login"}


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
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        entry = OPERATIONS.get(rule.endpoint)
        if entry is None:
            continue
        summary, body, success, streams = entry
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[^/]+$"}}
            for name in rule.arguments
        ]
        if rule.endpoint in QUERIES:
            params = [*params, {"in": "query", "schema": QUERIES[rule.endpoint]}]
        error = {"content": {"application/json": {"schema": OPENAI_ERROR if path.startswith("/v1/") else NATIVE_ERROR}}}
        content: dict[str, Any] = {"application/json": {"schema": success}} if success else {"text/html": {}}
        if rule.endpoint in PLAIN_TEXT:
            content = {"text/plain": {"schema": {"type": "string"}}}
        if streams:
            content["text/event-stream"] = {"schema": {}}  # JSON events (and OpenAI's [DONE])
        operations = {}
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operation: dict[str, Any] = {
                "summary": summary,
                "operationId": f"{rule.endpoint}.{method.lower()}",
                "tags": [rule.endpoint.split(".")[0]],
                "parameters": params,
                "responses": {
                    ("202" if rule.endpoint in ACCEPTED else "200"): {"description": "OK", "content": content},
                    "default": {"description": "Error", **error},
                },
            }
            if rule.endpoint not in OPEN:
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
            if rule.endpoint not in UNLIMITED:
                operation["responses"]["429"] = {"description": "Rate limit exceeded", "headers": RATE_HEADERS, **error}
            if rule.endpoint == "health.ready":
                operation["responses"]["503"] = {
                    "description": "Not ready",
                    "content": {"application/json": {"schema": _obj("status")}},
                }
            if body is not None:
                operation["requestBody"] = {
                    "required": method != "POST" or not rule.endpoint.endswith(("load_model", "load_plugin")),
                    "content": {"application/json": {"schema": body}},
                }
            operations[method.lower()] = operation
        spec.path(path=path, operations=operations)
    return spec.to_dict()


@bp.get("/api/v1/openapi.json")
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


@bp.get("/api/v1/docs")
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


@bp.get("/api/v1/docs/assets/<name>")
def assets(name: str) -> Response:
    """Swagger UI's files, from the installed package."""
    from swagger_ui_bundle import swagger_ui_path

    return send_from_directory(swagger_ui_path, name)
