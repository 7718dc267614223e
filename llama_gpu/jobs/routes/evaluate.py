"""Model evaluation and metric history: ``POST /api/v1/models/{id}/evaluate``, ``GET /api/v1/metrics/history``.

An evaluation is a job of kind ``evaluation`` (:mod:`llama_gpu.jobs.evaluation`): the endpoint
submits it to this process's job pool and answers when it has finished, with its per-prompt
results and summary (a prompt that fails answers with its own error; the failed job keeps what
ran). The history lists the numbers of stored evaluations' summaries and benchmarks' aggregated
metrics as points over time.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from ...api.context import count_of, current_identity, get_kernel, json_body, query_args
from ...api.routing import json_object, route
from ...api.schemas import EvaluateSchema, MetricsHistoryQuerySchema
from ...db import DATABASE
from ...kernel.errors import InvalidInput
from ...kernel.types import utc_iso
from .. import owner_of
from ..keys import EVALUATIONS
from ..store import metric_history

bp = Blueprint("evaluate", __name__, url_prefix="/api/v1")


@route(
    bp,
    "/models/<model_id>/evaluate",
    methods=("POST",),
    permission="write",
    resource="models",
    rate_limit="infer",
    summary="Evaluate a model on prompts: perplexity of reference texts, tokens/s, latency (stored as a run)",
    body=EvaluateSchema,
    response=json_object("success", "evaluation_id", "model", "results", "summary"),
    cost=lambda body: count_of(body.get("prompts")),
)
def evaluate(model_id: str) -> Response:
    """Run prompts on a model: perplexity of the references, tokens/s, latency, TTFT; stored as a job."""
    identity = current_identity()
    body = json_body()
    jobs = get_kernel().service(EVALUATIONS)
    return jsonify(jobs.kind.describe(jobs.evaluate(model_id, body, identity)))


@route(
    bp,
    "/metrics/history",
    permission="read",
    resource="metrics",
    summary="Figures of stored evaluations and benchmarks over time",
    response=json_object("success", "points"),
    query=MetricsHistoryQuerySchema,
)
def metrics_history() -> Response:
    """Points ``{timestamp, run_id, kind, model, metric, value}`` of the caller's stored runs (an admin: all).

    A page holds the points of at most ``limit`` (≤ 100) runs, newest runs first from ``offset``;
    the figures come from each run's stored ``summary``, never its full results.
    """
    query = query_args()
    start, end = query["start_date"], query["end_date"]
    if start is not None and end is not None and start > end:
        raise InvalidInput("start_date is after end_date", details={"field": "start_date"})
    identity = current_identity()
    kernel = get_kernel()
    db = kernel.services.get(DATABASE)
    points: list[dict[str, Any]] = []
    more = False
    limit, offset = query["limit"], query["offset"]
    if db is not None:
        found, more = metric_history(
            db,
            owner=None if kernel.check_permission(identity, "admin", "metrics") else owner_of(identity),
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
            "timestamp": utc_iso(),
        }
    )
