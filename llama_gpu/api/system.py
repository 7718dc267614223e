"""Monitoring endpoints: status, GPUs, stored series, logs, alerts, and ``/metrics`` for Prometheus."""

from __future__ import annotations

from typing import Any, cast

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import Schema, ValidationError

from ..kernel.errors import InvalidInput, ServiceUnavailable
from .context import get_kernel, require, utc_timestamp
from .schemas import LogsQuerySchema, MetricsQuerySchema

bp = Blueprint("system", __name__)


def _service(name: str) -> Any:
    service = get_kernel().services.get(name)
    if service is None:
        raise ServiceUnavailable(f"the {name} plugin is not loaded", details={"plugin_id": name})
    return service


def _query(schema: Schema) -> dict[str, Any]:
    repeated = sorted(name for name, values in request.args.lists() if len(values) > 1)
    if repeated:
        raise InvalidInput("query parameters may be given once each", details={"repeated": repeated})
    try:
        return cast(dict[str, Any], schema.load(request.args.to_dict()))
    except ValidationError as exc:
        raise InvalidInput("query validation failed", details={"errors": exc.messages}) from None


def _ok(body: dict[str, Any]) -> Response:
    return jsonify({"success": True, **body, "timestamp": utc_timestamp()})


@bp.get("/api/v1/system/status")
def system_status() -> Response:
    """Status, uptime, version, machine use, services and request statistics."""
    require("read", "system")
    return _ok(_service("monitoring").system_status(web_dashboard="dashboard" in current_app.blueprints))


@bp.get("/api/v1/system/gpu")
def system_gpu() -> Response:
    """Every GPU through NVML (``gpu_count: 0`` where there is none)."""
    require("read", "system")
    return _ok(_service("monitoring").gpu_info())


@bp.get("/api/v1/system/metrics")
def system_metrics() -> Response:
    """Stored series over a timeframe, in buckets of the granularity."""
    require("read", "system")
    from ..plugins.monitoring.samples import GRANULARITIES, TIMEFRAMES

    query = _query(MetricsQuerySchema())
    monitor = _service("monitoring")
    store = monitor.sample_store()
    if store is None:
        raise ServiceUnavailable("no database is configured for stored metrics")
    series = store.series(TIMEFRAMES[query["timeframe"]], GRANULARITIES[query["granularity"]])
    return _ok({**query, "metrics": series})


@bp.get("/api/v1/system/logs")
def system_logs() -> Response:
    """The newest log records of this process (admin)."""
    require("admin", "system")
    query = _query(LogsQuerySchema())
    since = query["since"].timestamp() if query["since"] else None
    logs = _service("monitoring").logs.query(query["level"], query["limit"], since, query["component"])
    return _ok({"count": len(logs), "logs": logs})


@bp.get("/api/v1/monitoring/alerts")
def alerts() -> Response:
    """Firing alerts and the rules in force."""
    require("read", "system")
    alerting = _service("monitoring").alerts
    return _ok({"alerts": alerting.active(), "rules": [rule.describe() for rule in alerting.rules]})


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    """The Prometheus text format (open unless ``LLAMA_GPU_METRICS_PUBLIC=false``)."""
    if not get_kernel().settings.metrics_public:
        require("read", "system")
    body, content_type = _service("prometheus").render()
    return Response(body, mimetype=None, content_type=content_type)
