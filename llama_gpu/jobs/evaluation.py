"""The ``evaluation`` job kind and the ``evaluations`` plugin that runs it.

An evaluation runs each prompt on the model's engine (real TTFT, latency and tokens/s), scores
each reference text with :meth:`LoadedModel.score` (perplexity ``exp(-mean logprob)``; ``None``
with a note where the backend cannot score), and applies the metric plugins registered through
``register_benchmark_metrics``. It always runs in the process that submitted it (the model is
served there, and the caller's identity counts its requests): ``POST /api/v1/models/{id}/evaluate``
submits it and waits for it, so the endpoint stays synchronous.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from typing import Any

from ..db.models import Job
from ..kernel.errors import InvalidInput, LlamaGPUError
from ..kernel.hookspecs import hookimpl
from ..kernel.kernel import Kernel
from ..kernel.types import Identity, InferenceRequest, PluginInfo
from .keys import EVALUATIONS
from .kind import JobChannel, JobContext, JobKind, Outcome, Submission
from .service import JobService, owner_of

#: Per-prompt figures summarised as means (the summary also has counts and totals).
MEANS = ("perplexity", "latency", "time_to_first_token", "tokens_per_second")


def run_prompt(
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


def perplexity(kernel: Kernel, model_id: str, reference: str | None) -> tuple[float | None, int, str | None]:
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


def summarise(results: list[dict[str, Any]], custom: dict[str, float | None]) -> dict[str, Any]:
    """Counts, totals and the means of :data:`MEANS` over the prompts, and the custom metrics."""
    summary: dict[str, Any] = {"prompts": len(results)}
    for key in MEANS:
        values = [r[key] for r in results if isinstance(r.get(key), (int, float))]
        summary[key] = round(sum(values) / len(values), 6) if values else None
    summary["completion_tokens"] = sum(r["completion_tokens"] for r in results)
    summary["prompt_tokens"] = sum(r["prompt_tokens"] for r in results)
    if custom:
        summary["custom"] = custom
    return summary


def custom_metrics(kernel: Kernel, wanted: list[str] | None, metrics: list[Any]) -> dict[str, float | None]:
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


class EvaluationKind(JobKind):
    """Prompts run on one model: perplexity of references, tokens/s, latency, TTFT, custom metrics."""

    name = "evaluation"
    noun = "evaluation"
    id_field = "evaluation_id"
    channel = JobChannel("evaluations", "evaluation.", role="read", per_owner=True)
    events = {
        "evaluation.started": "A model evaluation started running",
        "evaluation.progress": "A running evaluation's prompts done (at most two a second)",
        "evaluation.completed": "An evaluation finished; its summary",
        "evaluation.failed": "An evaluation failed or was cancelled",
    }
    list_results = True
    remote = False
    max_running, max_queued = 4, 64

    def submission(self, model_id: str, body: dict[str, Any], identity: Identity | None) -> Submission:
        """The row of one evaluation; MODEL_NOT_FOUND and unknown metrics are refused now."""
        spec = self.kernel.registry.resolve(model_id)
        if body["metrics"] is not None:
            custom_metrics(self.kernel, body["metrics"], [])  # unknown names: 400 before any work
        config = {"prompts": len(body["prompts"]), "metrics": body["metrics"], **body["config"]}
        return Submission(
            name=f"evaluation of {spec.id}",
            config={**config, "items": body["prompts"], "owner": owner_of(identity)},
            model=spec.id,
            target=spec.id,
        )

    def error_text(self, exc: BaseException) -> str:
        """``CODE: message`` for a project error."""
        return f"{exc.code}: {exc.message}" if isinstance(exc, LlamaGPUError) else f"{type(exc).__name__}: {exc}"

    def execute(self, ctx: JobContext) -> Outcome:
        """Run and score each prompt as the submitter; a failure keeps the prompts done so far."""
        stored, model = ctx.config, str(ctx.row.model)
        config = {k: stored.get(k) for k in ("max_tokens", "temperature", "top_p", "seed")}
        results: list[dict[str, Any]] = []
        collected: list[Any] = []
        try:
            for item in stored.get("items") or []:
                if ctx.cancel.is_set():
                    return Outcome("cancelled", error="cancelled", results={"results": results})
                result, metrics = run_prompt(self.kernel, model, item, config, ctx.identity)
                value, scored, note = perplexity(self.kernel, model, item["reference"])
                result.update(reference=item["reference"], perplexity=value, scored_tokens=scored)
                if note:
                    result["note"] = note
                results.append(result)
                collected.append(metrics)
                ctx.report({"completed": len(results), "prompts": stored.get("prompts")})
            summary = summarise(results, custom_metrics(self.kernel, stored.get("metrics"), collected))
        except Exception as exc:  # noqa: BLE001 - the job fails with what ran; the caller gets the error
            return Outcome("failed", error=self.error_text(exc), results={"results": results}, exception=exc)
        return Outcome("completed", results={"results": results, "summary": summary})

    def completed_data(self, row: Job, results: dict[str, Any] | None) -> dict[str, Any]:
        """The summary."""
        return {"summary": (results or {}).get("summary")}

    def describe(self, row: Job) -> dict[str, Any]:
        """An evaluation as the API shows it."""
        from ..kernel.types import utc_iso

        results = row.results if isinstance(row.results, dict) else {}
        per_prompt = results.get("results") or []
        return {
            "success": True,
            "evaluation_id": row.id,
            "model": row.model,
            "backend": per_prompt[0].get("backend") if per_prompt else None,
            "results": per_prompt,
            "summary": results.get("summary"),
            "started_at": utc_iso(row.started_at) if row.started_at else None,
            "finished_at": utc_iso(row.finished_at) if row.finished_at else None,
        }


class EvaluationJobs(JobService):
    """The ``evaluations`` plugin: evaluations as jobs, shared as ``kernel.services[EVALUATIONS]``."""

    KIND = EvaluationKind
    SERVICE = EVALUATIONS
    PLUGIN_INFO = PluginInfo(
        name="Model evaluation",
        category="models",
        description="Perplexity, latency and custom metrics of a model over given prompts, stored as jobs.",
    )

    @hookimpl
    def register_routes(self, register: Callable[[Any], None]) -> None:
        """The ``evaluate`` blueprint (its routes declare their permissions and schemas)."""
        from .routes.evaluate import bp

        register(bp)

    #: Seconds ``evaluate`` waits for the job before it gives up (and cancels it).
    WAIT = 3600.0

    def evaluate(self, model_id: str, body: dict[str, Any], identity: Identity | None) -> Job:
        """Run an evaluation now and return its finished row; a failure raises the prompt's own error."""
        kind = self.kind
        assert isinstance(kind, EvaluationKind), "the evaluations plugin is not started"
        row, outcome = self.run_and_wait(kind.submission(model_id, body, identity), identity, self.WAIT)
        if outcome.exception is not None:
            raise outcome.exception
        finished = self.store.get(row.id)
        assert finished is not None
        return finished
