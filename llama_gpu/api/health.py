"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

import psutil
from flask import Blueprint, Response, jsonify

from .. import __version__
from ..kernel.kernel import KernelState
from ..kernel.types import utc_iso
from .context import get_kernel
from .responses import HealthSchema, ReadySchema
from .routing import route

bp = Blueprint("health", __name__)


@route(
    bp,
    "/health",
    permission=None,
    rate_limit=None,
    summary="Liveness",
    response=HealthSchema,
)
def health() -> Response:
    """Liveness: the process answers; says what it holds."""
    kernel = get_kernel()
    process = psutil.Process()
    body: dict[str, Any] = {
        "status": "healthy" if kernel.state is KernelState.STARTED else kernel.state.value,
        "version": __version__,
        "timestamp": utc_iso(),
        "uptime": round(kernel.uptime, 3),
        "models_loaded": kernel.loaded_model_count(),
        "active_connections": kernel.inflight,
        "memory_usage": {"rss_bytes": process.memory_info().rss, "system_percent": psutil.virtual_memory().percent},
    }
    return jsonify(body)


@route(
    bp,
    "/ready",
    permission=None,
    rate_limit=None,
    summary="Readiness (503 while no model can serve)",
    response=ReadySchema,
    responses={503: ("Not ready", ReadySchema)},
)
def ready() -> Response | tuple[Response, int]:
    """Readiness: 503 while the default model cannot serve (loading, failed, missing)."""
    kernel = get_kernel()
    reason = kernel.not_ready()
    if reason:
        return jsonify({"status": "not_ready", "reason": reason}), 503
    return jsonify({"status": "ready", "default_model": kernel.resolve_model("default")})
