"""The monitoring plugins' HTTP surface, registered through ``register_routes`` like any plugin's.

:data:`bp` (the ``monitoring`` plugin's): status, GPUs, stored series, logs, alerts.
:data:`metrics_bp` (the ``prometheus`` plugin's): ``/metrics`` in the Prometheus text format.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from ...api.context import get_kernel, query_args
from ...api.routing import json_object, route
from ...api.schemas import LogsQuerySchema, MetricsQuerySchema
from ...kernel.errors import ServiceUnavailable
from ...kernel.types import utc_iso
from . import MONITORING, PROMETHEUS
from .samples import GRANULARITIES, TIMEFRAMES

bp = Blueprint("system", __name__)
metrics_bp = Blueprint("prometheus", __name__)


def _ok(body: dict[str, Any]) -> Response:
    return jsonify({"success": True, **body, "timestamp": utc_iso()})


@route(
    bp,
    "/api/v1/system/status",
    permission="read",
    resource="system",
    summary="Status, uptime, machine use, services and request statistics",
    response=json_object("success", "status", "uptime", "version", "system", "services", "statistics"),
)
def system_status() -> Response:
    """Status, uptime, version, machine use, services and request statistics."""
    return _ok(get_kernel().service(MONITORING).system_status(web_dashboard="dashboard" in current_app.blueprints))


@route(
    bp,
    "/api/v1/system/gpu",
    permission="read",
    resource="system",
    summary="Every GPU (NVML)",
    response=json_object("success", "gpu_count", "gpus"),
)
def system_gpu() -> Response:
    """Every GPU through NVML (``gpu_count: 0`` where there is none)."""
    return _ok(get_kernel().service(MONITORING).gpu_info())


@route(
    bp,
    "/api/v1/system/metrics",
    permission="read",
    resource="system",
    summary="Stored metric series over a timeframe",
    query=MetricsQuerySchema,
    response=json_object("success", "timeframe", "granularity", "metrics"),
)
def system_metrics() -> Response:
    """Stored series over a timeframe, in buckets of the granularity."""
    query = query_args()
    monitor = get_kernel().service(MONITORING)
    store = monitor.sample_store()
    if store is None:
        raise ServiceUnavailable("no database is configured for stored metrics")
    series = store.series(TIMEFRAMES[query["timeframe"]], GRANULARITIES[query["granularity"]])
    return _ok({**query, "metrics": series})


@route(
    bp,
    "/api/v1/system/logs",
    permission="admin",
    resource="system",
    summary="Recent structured log records (admin)",
    query=LogsQuerySchema,
    response=json_object("success", "count", "logs"),
)
def system_logs() -> Response:
    """The newest log records of this process (admin)."""
    query = query_args()
    since = query["since"].timestamp() if query["since"] else None
    logs = get_kernel().service(MONITORING).logs.query(query["level"], query["limit"], since, query["component"])
    return _ok({"count": len(logs), "logs": logs})


@route(
    bp,
    "/api/v1/monitoring/alerts",
    permission="read",
    resource="system",
    summary="Firing alerts and the alert rules",
    response=json_object("success", "alerts", "rules"),
)
def alerts() -> Response:
    """Firing alerts and the rules in force."""
    alerting = get_kernel().service(MONITORING).alerts
    return _ok({"alerts": alerting.active(), "rules": [rule.describe() for rule in alerting.rules]})


@route(
    metrics_bp,
    "/metrics",
    permission="read",
    resource="system",
    open_when=lambda kernel: kernel.settings.metrics_public,
    summary="Metrics in the Prometheus text format",
    content="text",
)
def prometheus_metrics() -> Response:
    """The Prometheus text format (open unless ``LLAMA_GPU_METRICS_PUBLIC=false``)."""
    body, content_type = get_kernel().service(PROMETHEUS).render()
    return Response(body, mimetype=None, content_type=content_type)
