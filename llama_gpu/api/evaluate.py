"""Model evaluation and metric history: ``POST /api/v1/models/{id}/evaluate``, ``GET /api/v1/metrics/history``.

An evaluation is a job of kind ``evaluation`` (:mod:`llama_gpu.jobs.evaluation`): the endpoint
submits it to this process's job pool and answers when it has finished, with its per-prompt
results and summary (a prompt that fails answers with its own error; the failed job keeps what
ran). The history lists the numbers of stored evaluations' summaries and benchmarks' aggregated
metrics as points over time.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from marshmallow import ValidationError

from ..jobs import owner_of
from ..jobs.store import metric_history
from ..kernel.errors import InvalidInput, ServiceUnavailable
from ..kernel.types import utc_iso
from .context import get_kernel, json_body, require, utc_timestamp
from .schemas import EvaluateSchema, MetricsHistoryQuerySchema

bp = Blueprint("evaluate", __name__, url_prefix="/api/v1")


@bp.post("/models/<model_id>/evaluate")
def evaluate(model_id: str) -> Response:
    """Run prompts on a model: perplexity of the references, tokens/s, latency, TTFT; stored as a job."""
    identity = require("write", "models")
    body = json_body(EvaluateSchema())
    jobs = get_kernel().services.get("evaluations")
    if jobs is None:
        raise ServiceUnavailable("the evaluations plugin is not loaded", details={"plugin_id": "evaluations"})
    return jsonify(jobs.kind.describe(jobs.evaluate(model_id, body, identity)))


@bp.get("/metrics/history")
def metrics_history() -> Response:
    """Points ``{timestamp, run_id, kind, model, metric, value}`` of the caller's stored runs (an admin: all).

    A page holds the points of at most ``limit`` (≤ 100) runs, newest runs first from ``offset``;
    the figures come from each run's stored ``summary``, never its full results.
    """
    g.identity = require("read", "metrics")
    repeated = sorted(name for name, values in request.args.lists() if len(values) > 1)
    if repeated:
        raise InvalidInput("query parameters may be given once each", details={"repeated": repeated})
    try:
        query = MetricsHistoryQuerySchema().load(request.args.to_dict())
    except ValidationError as exc:
        raise InvalidInput("query validation failed", details={"errors": exc.messages}) from None
    start, end = query["start_date"], query["end_date"]
    if start is not None and end is not None and start > end:
        raise InvalidInput("start_date is after end_date", details={"field": "start_date"})
    identity = g.get("identity")
    kernel = get_kernel()
    db = kernel.services.get("db")
    points: list[dict[str, Any]] = []
    more = False
    limit, offset = query["limit"], query["offset"]
    if db is not None:
        found, more = metric_history(
            db,
            owner=None if kernel.check_permission(identity, "admin") else owner_of(identity),
            model=query["model"],
            metric=query["metric"],
            start=start,
            end=end,
            limit=limit,
            offset=offset,
        )
        points = [{"timestamp": utc_iso(p.pop("moment")), **p} for p in found]
    return jsonify(
        {
            "success": True,
            "points": points,
            "count": len(points),
            "next_offset": offset + limit if more else None,
            "timestamp": utc_timestamp(),
        }
    )
