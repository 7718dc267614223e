"""The ``benchmark`` job kind and the ``benchmarks`` plugin that runs it.

A job is one :class:`~llama_gpu.bench.Benchmark` (a sweep of runs against an OpenAI-compatible
server). A job that targets this server itself goes to the configured address of the process
that runs it (a worker's ``LLAMA_GPU_HOST``/``LLAMA_GPU_PORT`` name the server it benchmarks) and
gets an API key of its own from ``kernel.services[ACCOUNTS]`` there: the caller's role (at most
``write``) and tier, the caller's key as its parent, an expiry at the job's deadline; it is revoked when the job ends. A
job runs at most its runs' planned time plus a minute, and at most
``LLAMA_GPU_MAX_BENCHMARK_SECONDS`` (then it is cancelled); one owner has at most
``LLAMA_GPU_MAX_BENCHMARK_JOBS`` jobs queued or running. The row's ``config`` holds everything a
worker on another machine needs (the prompts too), never a secret: a job with another server's
API key runs in the process it was submitted to.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..db.models import Job
from ..kernel.hookspecs import hookimpl
from ..kernel.private import write_private
from ..kernel.types import Identity, PluginInfo
from ..plugins.auth import ACCOUNTS
from .keys import BENCHMARKS
from .kind import JobChannel, JobContext, JobKind, Outcome, Submission
from .service import JobService, owner_of
from .store import PRIVATE_PROGRESS, iso

log = logging.getLogger(__name__)

#: Who revokes the jobs' own keys.
_SYSTEM = Identity(id="benchmarks", kind="system", roles=frozenset({"admin"}), name="benchmarks")
#: Seconds a job may run past its runs' planned time (the last requests finishing) before it is stopped.
DEADLINE_GRACE = 60.0
#: Progress fields a benchmark reports.
PROGRESS_FIELDS = (
    "run_index",
    "runs_total",
    "scenario",
    "num_users",
    "completed",
    "errors",
    "requests_target",
    "elapsed",
    "max_time",
)


def planned_seconds(config: Any) -> float:
    """Seconds a job's runs take at most once started (runs x ``max_time_per_run``)."""
    return float(config.max_time_per_run) * len(config.traffic_scenario or [1]) * len(config.num_users)


class BenchmarkKind(JobKind):
    """Load tests against this or another OpenAI-compatible server."""

    name = "benchmark"
    noun = "benchmark"
    id_field = "benchmark_id"
    channel = JobChannel("benchmarks", "benchmark.", role="read", per_owner=True)
    events = {
        "benchmark.started": "A benchmark job started running",
        "benchmark.progress": "A running benchmark job's progress (at most two a second)",
        "benchmark.completed": "A benchmark job finished; its summary metrics",
        "benchmark.failed": "A benchmark job failed or was cancelled",
    }
    max_running, max_queued = 1, 16

    def owner_limit(self) -> int | None:
        """``LLAMA_GPU_MAX_BENCHMARK_JOBS``."""
        return int(self.kernel.settings.max_benchmark_jobs)

    def submission(
        self,
        name: str,
        config: Any,
        identity: Identity | None,
        *,
        self_target: bool,
        prompts: list[str] | None,
        extra: dict[str, Any] | None,
    ) -> Submission:
        """The row of one job (``config`` a validated :class:`~llama_gpu.bench.BenchmarkConfig`)."""
        owner = owner_of(identity)
        planned = planned_seconds(config) + DEADLINE_GRACE
        stored = {
            **(extra or {}),
            "owner": owner,
            "self_target": self_target,
            "parent_key_id": int(identity.id) if identity is not None and identity.kind == "api_key" else None,
            "benchmark": config.to_dict(redact_key=True),
            # what the job's own key gets: the caller's role (never above write) and tier
            "key": {
                "role": "write" if self.kernel.check_permission(identity, "write") else "read",
                "tier": identity.tier if identity is not None else "standard",
                "user_id": int(owner[5:]) if owner.startswith("user:") else None,
            },
            "max_seconds": min(planned, float(self.kernel.settings.max_benchmark_seconds)),
            "prompts": list(prompts or []) or None,
        }
        secrets = {"api_key": config.api_key} if config.api_key and not self_target else {}
        return Submission(
            name=name,
            config=stored,
            model=config.api_model_name,
            target=None if self_target else config.api_base,
            secrets=secrets,
        )

    def execute(self, ctx: JobContext) -> Outcome:
        """Run the benchmark (with a key of its own against this server) until done, cancelled or out of time."""
        from ..bench import Benchmark, BenchmarkConfig
        from ..bench.errors import BenchError

        stored = ctx.config
        raw = {**stored["benchmark"], "api_key": ctx.secrets.get("api_key")}
        if stored.get("self_target"):  # the server as this process knows it (a worker: LLAMA_GPU_HOST/PORT)
            raw["api_base"] = self.kernel.settings.self_url + "/v1"
        prompts_file = None
        if stored.get("prompts"):
            prompts_file = Path(self.kernel.settings.data_dir) / "benchmarks" / f"prompts-{uuid.uuid4().hex}.jsonl"
            write_private(prompts_file, "".join(json.dumps({"prompt": p}) + "\n" for p in stored["prompts"]))
            raw["dataset_name"] = str(prompts_file)
        max_seconds = float(stored.get("max_seconds") or self.kernel.settings.max_benchmark_seconds)
        accounts = self.kernel.services.get(ACCOUNTS)
        key_id, timed_out = None, threading.Event()

        def on_progress(progress: dict[str, Any]) -> None:
            run_end = progress.get("completed", 0) + progress.get("errors", 0) >= (
                progress.get("requests_target") or -1
            )
            ctx.report({k: progress.get(k) for k in PROGRESS_FIELDS}, force=run_end)

        def expire() -> None:
            timed_out.set()
            ctx.cancel.set()

        try:
            config = BenchmarkConfig.from_dict(raw)
            if stored.get("self_target"):
                if accounts is None:
                    raise RuntimeError("this server has no accounts service to create the benchmark's API key")
                key = stored.get("key") or {}
                created, secret = accounts.create_key(
                    f"benchmark {ctx.job_id}",
                    key.get("role", "read"),
                    expires_in=max(1, math.ceil(max_seconds)),  # the job's deadline
                    tier=key.get("tier", "standard"),
                    user_id=key.get("user_id"),
                    parent_key_id=stored.get("parent_key_id"),
                    actor="benchmarks",
                )
                key_id = created.id
                config = dataclasses.replace(config, api_key=secret)
            kernel = self.kernel if hasattr(self.kernel, "benchmark_metrics") else None
            timer = threading.Timer(max_seconds, expire)
            timer.daemon = True
            timer.start()
            try:
                result = Benchmark(config, on_progress=on_progress, cancel=ctx.cancel, kernel=kernel).run()
            finally:
                timer.cancel()
            results = result.to_dict()
            cancelled = bool(results.get("benchmark_info", {}).get("cancelled")) or ctx.cancel.is_set()
            if not cancelled:
                return Outcome("completed", results=results)
            error = f"stopped at the maximum duration of {max_seconds:g} s" if timed_out.is_set() else "cancelled"
            return Outcome("cancelled", error=error, results=results)
        except BenchError as exc:
            return Outcome("failed", error=f"{type(exc).__name__}: {exc}", exception=exc)
        finally:
            if key_id is not None and accounts is not None:
                try:
                    accounts.revoke_key(key_id, _SYSTEM)
                except Exception:
                    log.exception("could not revoke the API key of benchmark job %d", ctx.job_id)
            if prompts_file is not None:
                prompts_file.unlink(missing_ok=True)

    def completed_data(self, row: Job, results: dict[str, Any] | None) -> dict[str, Any]:
        """The summary's scalar metrics."""
        summary = (results or {}).get("aggregated_metrics") or {}
        return {"summary": {k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}}

    def describe(self, row: Job) -> dict[str, Any]:
        """A job as the API shows it (no owner, no bookkeeping, a summary instead of every request)."""
        stored = row.config if isinstance(row.config, dict) else {}
        wanted = stored.get("metrics")
        summary = {k: v for k, v in (row.summary or {}).items() if "." not in k and (not wanted or k in wanted)}
        progress = {k: v for k, v in (row.progress or {}).items() if k not in PRIVATE_PROGRESS} or None
        config = dict(stored.get("benchmark") or {})
        if stored.get("self_target"):
            config.pop("api_key", None)
        return {
            "benchmark_id": row.id,
            "name": row.name,
            "model": row.model,
            "target": row.target or "self",
            "status": row.status,
            "progress": progress,
            "error": row.error,
            "config": config,
            "metrics": wanted,
            "summary": summary or None,
            "created_at": iso(row.created_at),
            "started_at": iso(row.started_at),
            "finished_at": iso(row.finished_at),
        }


class BenchmarkJobs(JobService):
    """The ``benchmarks`` plugin: benchmark jobs, shared as ``kernel.services[BENCHMARKS]``."""

    KIND = BenchmarkKind
    SERVICE = BENCHMARKS
    PLUGIN_INFO = PluginInfo(
        name="Benchmark jobs",
        category="monitoring",
        description="Benchmarks started through the REST API: background jobs, stored results, live progress.",
    )

    @hookimpl
    def register_routes(self, register: Callable[[Any], None]) -> None:
        """The ``benchmarks`` blueprint (its routes declare their permissions and schemas)."""
        from .routes.benchmarks import bp

        register(bp)

    def submit(
        self,
        name: str,
        config: Any,
        identity: Identity | None,
        *,
        self_target: bool = False,
        prompts: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Job:
        """Queue one job; SERVER_OVERLOADED when the queue is full, RATE_LIMIT_EXCEEDED past the owner's jobs."""
        assert self.kind is not None, "the benchmarks plugin is not started"
        kind = self.kind
        assert isinstance(kind, BenchmarkKind)
        submission = kind.submission(name, config, identity, self_target=self_target, prompts=prompts, extra=extra)
        return self.submit_job(submission, identity)
