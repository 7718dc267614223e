"""Model evaluation and metric history: ``POST /api/v1/models/{id}/evaluate``, ``GET /api/v1/metrics/history``.

An evaluation runs each prompt on the model's engine (real TTFT, latency and tokens/s), scores
each reference text with :meth:`LoadedModel.score` (perplexity ``exp(-mean logprob)``; ``null``
with a note where the backend cannot score), applies the metric plugins registered through
``register_benchmark_metrics``, and stores one ``benchmark_runs`` row of kind ``evaluation``,
written in a single unit of work. The history lists the numbers of stored evaluations'
summaries and benchmarks' aggregated metrics as points over time.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import time
from typing import Any

from flask import Blueprint, Response, g, jsonify
from sqlalchemy import DateTime, func, select

from ..bench.jobs import owner_of
from ..kernel.errors import InvalidInput, LlamaGPUError
from ..kernel.kernel import Kernel
from ..kernel.types import Identity, InferenceRequest, utc_iso
from .context import count_of, current_identity, get_kernel, json_body, query_args
from .routing import json_object, route
from .schemas import EvaluateSchema, MetricsHistoryQuerySchema

bp = Blueprint("evaluate", __name__, url_prefix="/api/v1")

#: Per-prompt figures summarised as means (the summary also has counts and totals).
MEANS = ("perplexity", "latency", "time_to_first_token", "tokens_per_second")


def _run_prompt(
    kernel: Kernel, model: str, item: dict[str, Any], config: dict[str, Any], identity: Identity | None
) -> tuple[dict[str, Any], Any]:
    """Generate for one prompt, streaming, and time it; return its result and its bench metrics."""
    from ..bench.metrics import RequestMetrics

    inference = InferenceRequest(
        prompt=item["text"],
        model=model,
        max_tokens=config["max_tokens"],
        temperature=config["temperature"],
        top_p=config["top_p"],
        seed=config["seed"],
        identity=identity,
        endpoint="evaluate",
    )
    start = time.perf_counter()
    first: float | None = None
    stamps: list[float] = []
    stream = kernel.generate(inference)
    try:
        for chunk in stream:
            now = time.perf_counter() - start
            if chunk.text:
                first = now if first is None else first
                stamps.append(now)
    finally:
        stream.close()
    latency = time.perf_counter() - start
    response = stream.response
    assert response is not None
    tokens = response.completion_tokens
    decode = latency - (first or 0.0)
    result = {
        "prompt": item["text"],
        "generated_text": response.text,
        "prompt_tokens": response.prompt_tokens,
        "completion_tokens": tokens,
        "finish_reason": response.finish_reason,
        "backend": response.backend,
        "latency": round(latency, 6),
        "time_to_first_token": round(first, 6) if first is not None else None,
        # decode speed after the first token where there are several, else over the whole request
        "tokens_per_second": round((tokens - 1) / decode if tokens > 1 and decode > 0 else tokens / latency, 3),
    }
    metrics = RequestMetrics(
        scenario="evaluation",
        input_tokens=response.prompt_tokens,
        output_tokens=tokens,
        requested_output_tokens=config["max_tokens"],
        ttft=first,
        e2e_latency=latency,
        itl=[b - a for a, b in itertools.pairwise(stamps)],
    )
    return result, metrics


def _perplexity(kernel: Kernel, model_id: str, reference: str | None) -> tuple[float | None, int, str | None]:
    """The perplexity of ``reference`` under the model, the tokens scored, and a note when there is none."""
    if reference is None:
        return None, 0, "no reference text given"
    model = kernel.registry.acquire(model_id)
    start, ok = time.perf_counter(), False
    try:
        scores = model.score(reference)
        ok = True
    finally:
        kernel.registry.release(model_id, tokens=0, seconds=time.perf_counter() - start, ok=ok, keep_alive=None)
    if scores is None:
        return None, 0, f"the {model.backend_name or 'model'}'s backend cannot score text: no perplexity"
    if not scores:
        return None, 0, "the reference is too short to score (a single token)"
    return math.exp(-sum(scores) / len(scores)), len(scores), None


def _summary(results: list[dict[str, Any]], custom: dict[str, float | None]) -> dict[str, Any]:
    summary: dict[str, Any] = {"prompts": len(results)}
    for key in MEANS:
        values = [r[key] for r in results if isinstance(r.get(key), (int, float))]
        summary[key] = round(sum(values) / len(values), 6) if values else None
    summary["completion_tokens"] = sum(r["completion_tokens"] for r in results)
    summary["prompt_tokens"] = sum(r["prompt_tokens"] for r in results)
    if custom:
        summary["custom"] = custom
    return summary


def _custom_metrics(kernel: Kernel, wanted: list[str] | None, metrics: list[Any]) -> dict[str, float | None]:
    """Values of the registered metric plugins (those named in ``wanted``, or all); ``None`` where one raises."""
    registered = kernel.benchmark_metrics()
    unknown = sorted(set(wanted or ()) - set(registered))
    if unknown:
        raise InvalidInput(
            f"unknown metrics: {', '.join(unknown)}", details={"field": "metrics", "available": sorted(registered)}
        )
    values: dict[str, float | None] = {}
    for name, fn in registered.items():
        if wanted is not None and name not in wanted:
            continue
        try:
            value = fn(metrics)
        except Exception:  # noqa: BLE001 - a metric plugin that fails gives None, as in benchmarks
            value = None
        values[name] = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
    return values


def _store(kernel: Kernel, row: dict[str, Any]) -> int | None:
    """Write the evaluation's row in one unit of work; its id, or ``None`` without a database."""
    db = kernel.services.get("db")
    if db is None:
        return None
    from ..db import BenchmarkRun
    from ..db.models import summary_of

    with db.session() as session:
        run = BenchmarkRun(kind="evaluation", summary=summary_of("evaluation", row.get("results")), **row)
        session.add(run)
        session.flush()
        return int(run.id)


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
    """Run prompts on a model: perplexity of the references, tokens/s, latency, TTFT; stored as a run."""
    identity = current_identity()
    body = json_body()
    kernel = get_kernel()
    spec = kernel.registry.resolve(model_id)  # MODEL_NOT_FOUND before anything runs
    config = body["config"]
    if body["metrics"] is not None:
        _custom_metrics(kernel, body["metrics"], [])  # unknown names: 400 before any work
    started = dt.datetime.now(dt.UTC)
    results: list[dict[str, Any]] = []
    collected: list[Any] = []
    stored = {"name": f"evaluation of {spec.id}", "model": spec.id, "target": spec.id, "started_at": started}
    stored["owner"] = owner_of(identity)[:64]
    stored["config"] = {"prompts": len(body["prompts"]), "metrics": body["metrics"], **config}
    try:
        for item in body["prompts"]:
            result, metrics = _run_prompt(kernel, spec.id, item, config, identity)
            perplexity, scored, note = _perplexity(kernel, spec.id, item["reference"])
            result.update(reference=item["reference"], perplexity=perplexity, scored_tokens=scored)
            if note:
                result["note"] = note
            results.append(result)
            collected.append(metrics)
        summary = _summary(results, _custom_metrics(kernel, body["metrics"], collected))
    except Exception as exc:
        error = f"{exc.code}: {exc.message}" if isinstance(exc, LlamaGPUError) else f"{type(exc).__name__}: {exc}"
        _store(
            kernel,
            {
                **stored,
                "status": "failed",
                "error": error,
                "results": {"results": results},
                "finished_at": dt.datetime.now(dt.UTC),
            },
        )
        raise
    finished = dt.datetime.now(dt.UTC)
    evaluation = {"results": results, "summary": summary}
    run_id = _store(kernel, {**stored, "status": "completed", "results": evaluation, "finished_at": finished})
    return jsonify(
        {
            "success": True,
            "evaluation_id": run_id,
            "model": spec.id,
            "backend": results[0].get("backend") if results else None,
            **evaluation,
            "started_at": utc_iso(started),
            "finished_at": utc_iso(finished),
        }
    )


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
    identity = g.get("identity")
    kernel = get_kernel()
    db = kernel.services.get("db")
    points: list[dict[str, Any]] = []
    more = False
    limit, offset = query["limit"], query["offset"]
    if db is not None:
        from ..db import BenchmarkRun

        moment = func.coalesce(BenchmarkRun.finished_at, BenchmarkRun.created_at, type_=DateTime(timezone=True))
        statement = select(
            BenchmarkRun.id, BenchmarkRun.kind, BenchmarkRun.model, BenchmarkRun.summary, moment.label("moment")
        ).where(BenchmarkRun.status == "completed", BenchmarkRun.kind.in_(("benchmark", "evaluation")))
        if identity is None or not identity.has("admin"):  # a caller sees the figures of its own runs
            statement = statement.where(BenchmarkRun.owner == owner_of(identity))
        if query["model"] is not None:
            statement = statement.where(BenchmarkRun.model == query["model"])
        if start is not None:
            statement = statement.where(moment >= start)
        if end is not None:
            statement = statement.where(moment <= end)
        statement = statement.order_by(moment.desc(), BenchmarkRun.id.desc()).offset(offset).limit(limit + 1)
        with db.session() as session:
            runs = session.execute(statement).all()
        more = len(runs) > limit
        for run in reversed(runs[:limit]):  # oldest first within the page
            for metric, value in (run.summary or {}).items():
                if query["metric"] is None or metric == query["metric"]:
                    points.append(
                        {
                            "timestamp": utc_iso(run.moment),
                            "run_id": run.id,
                            "kind": run.kind,
                            "model": run.model,
                            "metric": metric,
                            "value": value,
                        }
                    )
    return jsonify(
        {
            "success": True,
            "points": points,
            "count": len(points),
            "next_offset": offset + limit if more else None,
            "timestamp": utc_iso(),
        }
    )
