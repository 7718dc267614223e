"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

import psutil
from flask import Blueprint, Response, jsonify

from .. import __version__
from ..kernel.errors import LlamaGPUError
from ..kernel.kernel import KernelState
from ..kernel.types import utc_iso
from .context import get_kernel
from .routing import json_object, route

bp = Blueprint("health", __name__)


@route(
    bp,
    "/health",
    permission=None,
    rate_limit=None,
    summary="Liveness",
    response=json_object("status", "version", "uptime"),
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
        "models_loaded": len(kernel.registry.loaded()),
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
    response=json_object("status"),
    responses={503: ("Not ready", json_object("status"))},
)
def ready() -> Response | tuple[Response, int]:
    """Readiness: 503 while the default model cannot serve (loading, failed, missing)."""
    kernel = get_kernel()
    reason = None
    if kernel.state is not KernelState.STARTED:
        reason = f"kernel is {kernel.state.value}"
    else:
        try:
            state = kernel.registry.state("default")
            backend = kernel.registry.backends().get(state.spec.backend)
            if state.status == "loaded":
                pass
            elif state.status == "loading":
                reason = f"the default model {state.spec.id!r} is loading"
            elif state.status == "failed":
                reason = f"the default model {state.spec.id!r} failed to load: {state.error}"
            elif state.spec.unavailable:
                reason = f"the default model {state.spec.id!r} is unavailable: {state.spec.unavailable}"
            elif backend is None or not backend.is_available():
                reason = f"backend {state.spec.backend!r} of the default model is not available"
            elif not kernel.settings.may_autoload(state.spec.id):
                reason = f"the default model {state.spec.id!r} is not loaded"
        except LlamaGPUError as exc:
            reason = exc.message
    if reason:
        return jsonify({"status": "not_ready", "reason": reason}), 503
    return jsonify({"status": "ready", "default_model": kernel.registry.resolve("default").id})
