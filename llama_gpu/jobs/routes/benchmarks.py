"""Benchmark jobs over REST: start, list, describe, follow, fetch results, cancel.

- ``POST /api/v1/benchmarks`` (write) ``{"config": {...}}`` or ``{name, models, prompts, metrics, config}``
  (one job per model; the prompts are the dataset) → 202 ``{success, benchmark_id, benchmark_ids, status,
  created_at, estimated_completion}``. Without ``api_base`` the job targets this server's own configured
  address (``LLAMA_GPU_HOST``/``LLAMA_GPU_PORT``, never the request's ``Host``) with an API key of its own
  that has the caller's role and tier and expires at the job's deadline; ``api_base`` (another server)
  needs the admin role. A job's longest run time (runs times ``max_time_per_run``) is at most
  ``LLAMA_GPU_MAX_BENCHMARK_SECONDS``, and a caller has at most ``LLAMA_GPU_MAX_BENCHMARK_JOBS`` active jobs.
- ``GET /api/v1/benchmarks`` (read) the caller's jobs, newest first (``limit`` ≤ 100, ``offset``, ``status``;
  ``next_offset`` when there are more); an admin sees all. Listings carry summaries, never full results.
- ``GET /api/v1/benchmarks/{id}``, ``/{id}/status``, ``/{id}/results`` (409 until the job has finished).
- ``POST /api/v1/benchmarks/{id}/cancel`` (write): a queued or running job ends ``cancelled``.

Another caller's job answers 404, like one that does not exist.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, Response, jsonify

from ...api.context import current_identity, get_kernel, json_body, query_args
from ...api.routing import json_object, route
from ...api.schemas import BenchmarkCreateSchema, BenchmarkListQuerySchema
from ...kernel.errors import Conflict, InvalidInput, PermissionDenied
from ...kernel.types import utc_iso
from .. import FINISHED, iso
from ..benchmark import planned_seconds
from ..keys import BENCHMARKS

bp = Blueprint("benchmarks", __name__, url_prefix="/api/v1/benchmarks")


def _jobs() -> Any:
    return get_kernel().service(BENCHMARKS)


def _configs(body: dict[str, Any], is_admin: bool) -> tuple[list[Any], bool]:
    """One validated :class:`BenchmarkConfig` per model, and whether they target this server."""
    from ...bench import BenchmarkConfig
    from ...bench.errors import ConfigurationError

    raw = dict(body["config"])
    models = body.get("models")
    if models and "api_model_name" in raw:
        raise InvalidInput("give either models or config.api_model_name, not both", details={"field": "models"})
    if not models and "api_model_name" not in raw:
        raise InvalidInput("config.api_model_name (or models) is required", details={"field": "config.api_model_name"})
    self_target = "api_base" not in raw
    if not self_target and not is_admin:
        raise PermissionDenied("benchmarking another server (api_base) needs the admin role")
    if self_target and "api_key" in raw:
        raise InvalidInput("api_key goes with api_base; this server's own key is made for the job")
    if self_target:  # the configured address, never the client's Host / X-Forwarded-Host (SSRF)
        raw["api_base"] = get_kernel().settings.self_url + "/v1"
    if body.get("prompts"):
        raw["dataset_name"] = "prompts.jsonl"  # replaced by the job's own file
    raw.setdefault("server_info", {})
    configs = []
    for model in models or [raw["api_model_name"]]:
        if self_target:
            get_kernel().resolve_model(model)  # MODEL_NOT_FOUND now, not a failed job later
        try:
            configs.append(BenchmarkConfig.from_dict({**raw, "api_model_name": model}))
        except ConfigurationError as exc:
            raise InvalidInput(f"config.{exc}", details={"field": f"config.{exc.field}"}) from None
    tokens = get_kernel().settings.max_tokens_limit
    for scenario in configs[0].scenarios:
        most = _most_tokens(scenario)
        if most > tokens:
            raise InvalidInput(
                f"scenario {scenario.text} asks for up to {most:g} tokens a request; the limit is {tokens}",
                details={"field": "config.traffic_scenario", "tokens": most, "limit": tokens},
            )
    limit = get_kernel().settings.max_benchmark_seconds
    for config in configs:
        seconds = planned_seconds(config)
        if seconds > limit:
            raise InvalidInput(
                f"the benchmark may run {seconds:g} s (runs x max_time_per_run); the limit is {limit:g} s",
                details={"field": "config.max_time_per_run", "seconds": seconds, "limit": limit},
            )
    return configs, self_target


def _most_tokens(scenario: Any) -> float:
    """The most input or output tokens one request of ``scenario`` asks for (normal: mean + 4 sigma)."""
    p = scenario.params
    if scenario.kind == "N":
        return max(p[0] + 4 * p[1], p[2] + 4 * p[3])
    return max(p, default=0.0)


@route(
    bp,
    "",
    methods=("POST",),
    permission="write",
    resource="benchmarks",
    rate_limit="benchmarks",
    summary="Start a benchmark job (one per model) against this server or, for an admin, another one (202)",
    body=BenchmarkCreateSchema,
    response=json_object("success", "benchmark_id", "benchmark_ids", "status", "created_at", "estimated_completion"),
    status=202,
)
def create_benchmark() -> tuple[Response, int]:
    """Queue one benchmark job per model."""
    identity = current_identity()
    body = json_body()
    configs, self_target = _configs(body, get_kernel().check_permission(identity, "admin", "benchmarks"))
    jobs = _jobs()
    extra = {"metrics": body.get("metrics"), "models": body.get("models")}
    rows = []
    for config in configs:
        name = body.get("name") or f"{config.api_model_name} benchmark"
        if len(configs) > 1 and body.get("name"):
            name = f"{body['name']} ({config.api_model_name})"
        rows.append(
            jobs.submit(name, config, identity, self_target=self_target, prompts=body.get("prompts"), extra=extra)
        )
    created = rows[0].created_at
    total = sum(planned_seconds(c) for c in configs)
    eta = (created if created.tzinfo else created.replace(tzinfo=dt.UTC)) + dt.timedelta(seconds=total)
    return jsonify(
        {
            "success": True,
            "benchmark_id": rows[0].id,
            "benchmark_ids": [row.id for row in rows],
            "status": rows[0].status,
            "created_at": iso(created),
            "estimated_completion": iso(eta),
            "timestamp": utc_iso(),
        }
    ), 202


@route(
    bp,
    "",
    permission="read",
    resource="benchmarks",
    rate_limit="benchmarks",
    summary="The caller's benchmark jobs (all, for an admin), newest first",
    response=json_object("success", "benchmarks", "total"),
    query=BenchmarkListQuerySchema,
)
def list_benchmarks() -> Response:
    """The caller's jobs (every job for an admin), newest first."""
    identity = current_identity()
    query = query_args()
    limit, offset = query["limit"], query["offset"]
    rows = _jobs().list(identity, limit=limit + 1, status=query["status"], offset=offset)
    more = len(rows) > limit
    rows = rows[:limit]
    return jsonify(
        {
            "success": True,
            "benchmarks": [_jobs().kind.describe(r) for r in rows],
            "total": len(rows),
            "limit": limit,
            "offset": offset,
            "next_offset": offset + limit if more else None,
        }
    )


@route(
    bp,
    "/<int:benchmark_id>",
    permission="read",
    resource="benchmarks",
    rate_limit="benchmarks",
    summary="A benchmark job: config, status, progress, summary",
    response=json_object("success", "benchmark"),
)
def get_benchmark(benchmark_id: int) -> Response:
    """One job: its configuration, status, progress and summary metrics."""
    identity = current_identity()
    jobs = _jobs()
    return jsonify({"success": True, "benchmark": jobs.kind.describe(jobs.get(benchmark_id, identity))})


@route(
    bp,
    "/<int:benchmark_id>/status",
    permission="read",
    resource="benchmarks",
    rate_limit="benchmarks",
    summary="A benchmark job's status and progress",
    response=json_object("success", "benchmark_id", "status", "progress"),
)
def benchmark_status(benchmark_id: int) -> Response:
    """A job's status and progress."""
    identity = current_identity()
    jobs = _jobs()
    info = jobs.kind.describe(jobs.get(benchmark_id, identity))
    keys = ("benchmark_id", "status", "progress", "error", "created_at", "started_at", "finished_at")
    return jsonify({"success": True, **{k: info[k] for k in keys}})


@route(
    bp,
    "/<int:benchmark_id>/results",
    permission="read",
    resource="benchmarks",
    rate_limit="benchmarks",
    summary="A finished benchmark job's results (409 until it has finished)",
    response=json_object("success", "benchmark_id", "status", "results"),
)
def benchmark_results(benchmark_id: int) -> Response:
    """A finished job's full results (a cancelled job's cover what ran); 409 before it has finished."""
    identity = current_identity()
    row = _jobs().get(benchmark_id, identity)
    if row.status not in FINISHED:
        raise Conflict(
            f"benchmark {benchmark_id} is {row.status}; results come when it has finished",
            details={"status": row.status},
        )
    if row.results is None:
        raise Conflict(
            f"benchmark {benchmark_id} {row.status} without results: {row.error}",
            details={"status": row.status, "error": row.error},
        )
    return jsonify({"success": True, "benchmark_id": row.id, "status": row.status, "results": row.results})


@route(
    bp,
    "/<int:benchmark_id>/cancel",
    methods=("POST",),
    permission="write",
    resource="benchmarks",
    rate_limit="benchmarks",
    summary="Cancel a queued or running benchmark job",
    response=json_object("success", "benchmark_id", "status"),
)
def cancel_benchmark(benchmark_id: int) -> Response:
    """Cancel a queued or running job (the caller's own, or any for an admin)."""
    identity = current_identity()
    row = _jobs().cancel(benchmark_id, identity)
    return jsonify({"success": True, "benchmark_id": row.id, "status": row.status})
