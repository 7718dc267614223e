"""The ``benchmarks`` plugin: benchmark jobs run in the background, persisted in ``benchmark_runs``.

:class:`BenchmarkJobs` is shared as ``kernel.services["benchmarks"]``. A submitted job is a
``benchmark_runs`` row (kind ``"benchmark"``) that goes ``queued`` → ``running`` →
``completed`` | ``failed`` | ``cancelled``; at most :attr:`BenchmarkJobs.max_running` run at
once (each on a thread of its own), at most :attr:`BenchmarkJobs.max_queued` wait, and a
submission beyond that is refused with SERVER_OVERLOADED. Each job publishes
``benchmark.started``, ``benchmark.progress`` (at most two a second) and one of
``benchmark.completed`` / ``benchmark.failed`` (a cancelled job ends with ``benchmark.failed``,
``status: "cancelled"``); the Socket.IO bridge sends them to the channel ``benchmarks``.

A job that targets this server itself gets an API key of its own from
``kernel.services["accounts"]``: the caller's role (at most ``write``) and tier, the caller's key as
its parent, an expiry at the job's deadline; it is revoked when the job ends. A job runs at
most ``LLAMA_GPU_MAX_BENCHMARK_SECONDS`` (then it is cancelled), and one owner has at most
``LLAMA_GPU_MAX_BENCHMARK_JOBS`` jobs queued or running (RATE_LIMIT_EXCEEDED beyond). Rows carry, in ``progress``, the
id of the process that owns them and a heartbeat renewed every few seconds: on first use a
process marks rows whose owner stopped beating (a dead process) as failed, and a job
cancelled through another process (the row set to ``cancelled`` there) stops at its next
write here. A stopping kernel cancels its running jobs and closes their rows; the final write
of a job is one transaction, so no record is left half-written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import defer

from ..db.models import BenchmarkRun, summary_of, utcnow
from ..kernel.errors import Conflict, NotFound, RateLimitExceeded, ServerOverloaded
from ..kernel.hookspecs import hookimpl
from ..kernel.kernel import Kernel
from ..kernel.private import write_private
from ..kernel.types import Event, Identity, PluginInfo

log = logging.getLogger(__name__)

#: Event types this plugin publishes.
EVENT_TYPES: dict[str, str] = {
    "benchmark.started": "A benchmark job started running",
    "benchmark.progress": "A running benchmark job's progress (at most two a second)",
    "benchmark.completed": "A benchmark job finished; its summary metrics",
    "benchmark.failed": "A benchmark job failed or was cancelled",
}
ACTIVE = ("queued", "running")
FINISHED = ("completed", "failed", "cancelled")
#: Who revokes the jobs' own keys.
_SYSTEM = Identity(id="benchmarks", kind="system", roles=frozenset({"admin"}), name="benchmarks")
#: Seconds a job may run past its runs' planned time (the last requests finishing) before it is stopped.
DEADLINE_GRACE = 60.0
#: Progress fields that are bookkeeping, not shown to callers.
PRIVATE_PROGRESS = ("instance", "heartbeat")


@dataclasses.dataclass
class Job:
    """One benchmark job of this process."""

    id: int
    config: Any  # BenchmarkConfig
    owner: str
    self_target: bool = False
    user_id: int | None = None
    parent_key_id: int | None = None
    #: The role and tier of the job's own key (the caller's: never more than it has).
    key_role: str = "write"
    key_tier: str = "standard"
    #: Seconds the job may run once started (then it is cancelled and its key has expired).
    max_seconds: float = 1800.0
    timed_out: bool = False
    #: A prompts file written for this job, removed when it ends.
    prompts_file: Path | None = None
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class BenchmarkJobs:
    """Runs benchmark jobs in the background and keeps their rows."""

    PLUGIN_INFO = PluginInfo(
        name="Benchmark jobs",
        category="monitoring",
        description="Benchmarks started through the REST API: background jobs, stored results, live progress.",
    )
    #: Seconds between heartbeats of this process's rows; a row silent for STALE_AFTER is abandoned.
    HEARTBEAT = 5.0
    STALE_AFTER = 30.0
    #: Seconds between two progress events (and progress writes) of one job.
    PROGRESS_INTERVAL = 0.5
    #: Seconds a cancel request waits for a running job to close its row.
    CANCEL_WAIT = 10.0
    #: The rows' ``kind``, the service's name in ``kernel.services``, the word for a job in
    #: messages, the events' prefix and the id field of events (a subclass for another kind of
    #: job changes these; see :class:`llama_gpu.convert.jobs.ConversionJobs`).
    KIND = "benchmark"
    SERVICE = "benchmarks"
    NOUN = "benchmark"
    EVENT_PREFIX = "benchmark"
    ID_FIELD = "benchmark_id"
    #: Whether lists load ``results`` (a benchmark's hold every request: no; a conversion's are a few fields).
    LIST_RESULTS = False

    def __init__(self, max_running: int = 1, max_queued: int = 16) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self.kernel: Kernel | None = None
        self.instance = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        self._running: dict[int, Job] = {}
        self._queue: deque[Job] = deque()
        self._recovered = False
        self._closed = threading.Event()
        self._beater: threading.Thread | None = None

    # ---------------------------------------------------------------- plugin hooks
    @hookimpl
    def register_event_types(self, register: Callable[[str, str], None]) -> None:
        """Declare ``benchmark.started``, ``.progress``, ``.completed`` and ``.failed``."""
        for name, description in EVENT_TYPES.items():
            register(name, description)

    @hookimpl
    def startup(self, kernel: Kernel) -> None:
        """Share the service as ``kernel.services["benchmarks"]`` (the database is used on first need)."""
        self.kernel = kernel
        self._closed.clear()
        kernel.services[self.SERVICE] = self

    @hookimpl
    def on_event(self, event: Event) -> None:
        """A draining kernel refuses requests: stop the jobs now rather than let them count errors."""
        if event.type == "kernel_state" and event.data.get("state") == "draining":
            self.cancel_all("the server is stopping")

    @hookimpl
    def shutdown(self, kernel: Kernel) -> None:
        """Cancel running jobs, close every row of this process, stop sharing the service."""
        self._closed.set()
        running = self.cancel_all("the server stopped")
        deadline = time.monotonic() + 10.0
        for job in running:
            if job.thread is not None:
                job.thread.join(max(deadline - time.monotonic(), 0.0))
        for job in running:  # still running after the wait: close the row, the late write will not reopen it
            if job.thread is not None and job.thread.is_alive():
                self._finish_row(job.id, "failed", error="the server stopped before the job could finish")
        if self._beater is not None:
            self._beater.join(2.0)
        if kernel.services.get(self.SERVICE) is self:
            kernel.services.pop(self.SERVICE, None)

    @hookimpl
    def collect_metrics(self) -> dict[str, float]:
        """Jobs running and waiting in this process."""
        with self._lock:
            return {
                f"{self.NOUN}_jobs_running": float(len(self._running)),
                f"{self.NOUN}_jobs_queued": float(len(self._queue)),
            }

    # ---------------------------------------------------------------- the service
    @property
    def db(self) -> Any:
        """The shared database."""
        assert self.kernel is not None, "the benchmarks plugin is not started"
        return self.kernel.services["db"]

    def submit(
        self,
        name: str,
        config: Any,
        identity: Identity | None,
        *,
        self_target: bool = False,
        prompts: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> BenchmarkRun:
        """Queue one job; SERVER_OVERLOADED when the queue is full.

        :param self_target: The job targets this server and gets an API key of its own.
        :param prompts: The job's dataset (written to a ``.jsonl`` file, removed when the job ends).
        :param extra: More JSON-safe fields to store in the row's ``config``.
        """
        self.recover()
        with self._lock:
            if len(self._queue) >= self.max_queued:
                error = ServerOverloaded(
                    f"{len(self._queue)} benchmark jobs are waiting; try again later",
                    details={"queued": len(self._queue), "max_queued": self.max_queued},
                )
                error.retry_after = 30
                raise error
        owner = self.owner_of(identity)
        self._check_owner_limit(owner, identity)
        prompts_file = None
        if prompts:
            assert self.kernel is not None
            prompts_file = Path(self.kernel.settings.data_dir) / "benchmarks" / f"prompts-{uuid.uuid4().hex}.jsonl"
            write_private(prompts_file, "".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
            config = dataclasses.replace(config, dataset_name=str(prompts_file))
        parent_key_id = int(identity.id) if identity is not None and identity.kind == "api_key" else None
        stored = {
            **(extra or {}),
            "owner": owner,
            "self_target": self_target,
            "parent_key_id": parent_key_id,
            "benchmark": config.to_dict(redact_key=True),
        }
        with self.db.session() as session:
            row = BenchmarkRun(
                name=name[:255],
                target=None if self_target else config.api_base[:255],
                config=stored,
                owner=owner[:64],
                kind="benchmark",
                status="queued",
                model=config.api_model_name[:255],
                progress=self._stamp({}),
            )
            session.add(row)
            session.flush()
            session.expunge(row)
        job = Job(id=row.id, config=config, owner=owner, self_target=self_target, prompts_file=prompts_file)
        if owner.startswith("user:"):
            job.user_id = int(owner[5:])
        job.parent_key_id = parent_key_id
        if identity is not None:
            job.key_role = "write" if identity.has("write") else "read"
            job.key_tier = identity.tier
        if self.kernel is not None:  # the deadline: its runs' time and a minute to finish, at most the setting
            runs = len(config.traffic_scenario or [1]) * len(config.num_users)
            planned = float(config.max_time_per_run) * runs + DEADLINE_GRACE
            job.max_seconds = min(planned, float(self.kernel.settings.max_benchmark_seconds))
        with self._lock:
            self._queue.append(job)
            if self._beater is None:
                self._beater = threading.Thread(target=self._beat, name=f"{self.NOUN}-heartbeat", daemon=True)
                self._beater.start()
        self._dispatch()
        return row

    def _check_owner_limit(self, owner: str, identity: Identity | None) -> None:
        """RATE_LIMIT_EXCEEDED when ``owner`` already has the most active jobs allowed (admins included)."""
        if self.kernel is None:
            return
        limit = int(self.kernel.settings.max_benchmark_jobs)
        with self.db.session() as session:
            active = len(
                session.scalars(
                    select(BenchmarkRun.id).where(
                        BenchmarkRun.kind == self.KIND, BenchmarkRun.owner == owner, BenchmarkRun.status.in_(ACTIVE)
                    )
                ).all()
            )
        if active >= limit:
            error = RateLimitExceeded(
                f"{active} {self.NOUN} jobs of yours are queued or running; at most {limit} at once",
                details={"active": active, "limit": limit},
            )
            error.retry_after = 30
            raise error

    def cancel(self, job_id: int, identity: Identity | None) -> BenchmarkRun:
        """Cancel a queued or running job the caller may manage; CONFLICT when it has finished."""
        row = self.get(job_id, identity)
        if row.status in FINISHED:
            raise Conflict(f"{self.NOUN} {job_id} has already {row.status}", details={"status": row.status})
        with self._lock:
            job = self._running.get(job_id) or next((j for j in self._queue if j.id == job_id), None)
            queued = job is not None and job in self._queue
            if queued and job is not None:
                self._queue.remove(job)
        if job is not None and not queued:
            job.cancel.set()  # the job's thread closes the row, with what it measured so far
            if job.thread is not None:
                job.thread.join(self.CANCEL_WAIT)
        else:  # queued here, or owned by another process (which sees the status at its next write)
            self._finish_row(job_id, "cancelled", error="cancelled before it started" if queued else "cancelled")
            if queued and job is not None:
                self._discard(job)
                self._publish(
                    f"{self.EVENT_PREFIX}.failed", job_id, row, status="cancelled", error="cancelled before it started"
                )
        return self.get(job_id, identity)

    def cancel_all(self, reason: str) -> list[Job]:
        """Cancel every job of this process (queued rows are closed at once); returns the running ones."""
        with self._lock:
            queued, self._queue = list(self._queue), deque()
            running = list(self._running.values())
        for job in queued:
            self._finish_row(job.id, "cancelled", error=reason)
            self._discard(job)
        for job in running:
            job.cancel.set()
        return running

    def get(self, job_id: int, identity: Identity | None) -> BenchmarkRun:
        """A benchmark row the caller may see (its own, or any for an admin); NOT_FOUND otherwise."""
        if not self._recovered:
            self.recover()
        with self.db.session() as session:
            row = session.scalar(select(BenchmarkRun).where(BenchmarkRun.id == job_id, BenchmarkRun.kind == self.KIND))
            if row is not None:
                session.expunge(row)
        if row is None or not self.visible(row, identity):
            raise NotFound(f"no {self.NOUN} {job_id}", details={self.ID_FIELD: job_id})
        return row

    def list(
        self, identity: Identity | None, limit: int = 50, status: str | None = None, offset: int = 0
    ) -> list[BenchmarkRun]:
        """A page of the caller's rows (all for an admin), newest first, without their ``results``.

        Ownership is filtered in SQL on the indexed ``owner`` column; ``results`` (every request
        of a run) is never loaded for a list: use ``summary``.
        """
        self.recover()
        query = select(BenchmarkRun).where(BenchmarkRun.kind == self.KIND)
        if not self.LIST_RESULTS:
            query = query.options(defer(BenchmarkRun.results))
        if status is not None:
            query = query.where(BenchmarkRun.status == status)
        if identity is None or not identity.has("admin"):
            query = query.where(BenchmarkRun.owner == self.owner_of(identity))
        query = query.order_by(BenchmarkRun.created_at.desc(), BenchmarkRun.id.desc()).offset(offset).limit(limit)
        with self.db.session() as session:
            rows = list(session.scalars(query))
            for row in rows:
                session.expunge(row)
        return rows

    def owner_of(self, identity: Identity | None) -> str:
        """Who owns the jobs ``identity`` starts: its user (every key of a user shares them), else itself."""
        return owner_of(identity)

    def visible(self, row: BenchmarkRun, identity: Identity | None, owner: str | None = None) -> bool:
        """Whether ``identity`` (whose :meth:`owner_of` is ``owner``, when known) may see ``row``."""
        if identity is not None and identity.has("admin"):
            return True
        owner = owner if owner is not None else self.owner_of(identity)
        stored = row.owner or (row.config.get("owner") if isinstance(row.config, dict) else None)
        return stored == owner

    def recover(self) -> int:
        """Mark rows of processes that stopped beating as failed (once per process, then on each listing)."""
        now = time.time()
        closed = 0
        with self.db.session() as session:
            rows = session.scalars(
                select(BenchmarkRun).where(BenchmarkRun.kind == self.KIND, BenchmarkRun.status.in_(ACTIVE))
            ).all()
            for row in rows:
                progress = row.progress or {}
                if progress.get("instance") == self.instance:
                    continue
                if now - float(progress.get("heartbeat") or 0.0) > self.STALE_AFTER:
                    row.status, row.finished_at = "failed", utcnow()
                    row.error = f"the server process running this {self.NOUN} stopped"
                    closed += 1
        if closed:
            log.warning("marked %d %s job(s) of stopped processes as failed", closed, self.NOUN)
        self._recovered = True
        return closed

    # ---------------------------------------------------------------- running
    def _dispatch(self) -> None:
        with self._lock:
            while self._queue and len(self._running) < self.max_running and not self._closed.is_set():
                job = self._queue.popleft()
                self._running[job.id] = job
                job.thread = threading.Thread(target=self._run, args=(job,), name=f"{self.NOUN}-{job.id}", daemon=True)
                job.thread.start()

    def _run(self, job: Job) -> None:
        try:
            self._execute(job)
        except Exception:  # a job's failure must never take the service down
            log.exception("%s job %d failed unexpectedly", self.NOUN, job.id)
            self._finish_row(job.id, "failed", error="internal error; see the server log")
        finally:
            self._discard(job)
            with self._lock:
                self._running.pop(job.id, None)
            self._dispatch()

    @staticmethod
    def _discard(job: Job) -> None:
        if job.prompts_file is not None:
            job.prompts_file.unlink(missing_ok=True)

    def _execute(self, job: Job) -> None:
        from . import Benchmark
        from .errors import BenchError

        started = utcnow()
        if not self._write(job.id, ("queued",), status="running", started_at=started, progress=self._stamp({})):
            return  # cancelled through another process before it started
        base = {"name": self._name(job.id), "model": job.config.api_model_name, "caller": job.owner}
        self._publish_raw("benchmark.started", {"benchmark_id": job.id, **base, "status": "running"})
        config, key_id = job.config, None
        accounts = self.kernel.services.get("accounts") if self.kernel is not None else None
        last = [0.0]

        def on_progress(progress: dict[str, Any]) -> None:
            now = time.monotonic()
            run_end = progress.get("completed", 0) + progress.get("errors", 0) >= (
                progress.get("requests_target") or -1
            )
            if now - last[0] < self.PROGRESS_INTERVAL and not run_end:
                return
            last[0] = now
            data = {
                k: progress.get(k)
                for k in (
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
            }
            if not self._write(job.id, ("running",), progress=self._stamp(data)):
                job.cancel.set()  # the row was cancelled elsewhere
            self._publish_raw("benchmark.progress", {"benchmark_id": job.id, **base, "status": "running", **data})

        status, error, results = "failed", None, None
        try:
            if job.self_target:
                if accounts is None:
                    raise RuntimeError("this server has no accounts service to create the benchmark's API key")
                key, secret = accounts.create_key(
                    f"benchmark {job.id}",
                    job.key_role,
                    expires_in=max(1, math.ceil(job.max_seconds)),  # the job's deadline
                    tier=job.key_tier,
                    user_id=job.user_id,
                    parent_key_id=job.parent_key_id,
                    actor="benchmarks",
                )
                key_id = key.id
                config = dataclasses.replace(config, api_key=secret)
            kernel = self.kernel if hasattr(self.kernel, "benchmark_metrics") else None

            def expire() -> None:
                job.timed_out = True
                job.cancel.set()

            timer = threading.Timer(job.max_seconds, expire)
            timer.daemon = True
            timer.start()
            try:
                result = Benchmark(config, on_progress=on_progress, cancel=job.cancel, kernel=kernel).run()
            finally:
                timer.cancel()
            results = result.to_dict()
            cancelled = bool(results.get("benchmark_info", {}).get("cancelled")) or job.cancel.is_set()
            status, error = ("cancelled", "cancelled") if cancelled else ("completed", None)
            if cancelled and job.timed_out:
                error = f"stopped at the maximum duration of {job.max_seconds:g} s"
        except BenchError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # reported on the row and the bus
            log.exception("benchmark job %d failed", job.id)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if key_id is not None and accounts is not None:
                try:
                    accounts.revoke_key(key_id, _SYSTEM)
                except Exception:
                    log.exception("could not revoke the API key of benchmark job %d", job.id)
        self._discard(job)
        self._finish_row(job.id, status, error=error, results=results)
        summary = (results or {}).get("aggregated_metrics") or {}
        scalars = {k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        if status == "completed":
            self._publish_raw(
                "benchmark.completed", {"benchmark_id": job.id, **base, "status": status, "summary": scalars}
            )
        else:
            self._publish_raw("benchmark.failed", {"benchmark_id": job.id, **base, "status": status, "error": error})

    # ---------------------------------------------------------------- rows and events
    def _stamp(self, progress: dict[str, Any]) -> dict[str, Any]:
        return {**progress, "instance": self.instance, "heartbeat": time.time()}

    def _write(self, job_id: int, allowed: tuple[str, ...], **values: Any) -> bool:
        """Update a row whose status is in ``allowed``; False when it is not (cancelled or closed elsewhere)."""
        with self.db.session() as session:
            done = session.execute(
                update(BenchmarkRun).where(BenchmarkRun.id == job_id, BenchmarkRun.status.in_(allowed)).values(**values)
            )
            return bool(done.rowcount)

    def _finish_row(self, job_id: int, status: str, *, error: str | None = None, results: Any = None) -> None:
        """Close a row in one write; a row closed already keeps its status (results are still added)."""
        now = utcnow()
        with self.db.session() as session:
            row = session.get(BenchmarkRun, job_id)
            if row is None:
                return
            if row.status not in FINISHED:
                row.status, row.error = status, error
            if results is not None:
                row.results = results
                row.summary = summary_of(row.kind, results)
            row.finished_at = row.finished_at or now
            progress = {k: v for k, v in (row.progress or {}).items() if k not in PRIVATE_PROGRESS}
            row.progress = progress or None

    def _name(self, job_id: int) -> str:
        with self.db.session() as session:
            return str(session.scalar(select(BenchmarkRun.name).where(BenchmarkRun.id == job_id)) or "")

    def _beat(self) -> None:
        while not self._closed.wait(self.HEARTBEAT):
            with self._lock:
                jobs = {**{j.id: j for j in self._queue}, **self._running}
            if not jobs:
                continue
            try:
                with self.db.session() as session:
                    for row in session.scalars(select(BenchmarkRun).where(BenchmarkRun.id.in_(list(jobs)))):
                        if row.status in ACTIVE:
                            row.progress = self._stamp(dict(row.progress or {}))
                        elif row.id in self._running:  # closed through another process: stop it here
                            jobs[row.id].cancel.set()
            except Exception:  # the next beat tries again
                log.warning("%s heartbeat failed", self.NOUN, exc_info=True)

    def _publish(self, type: str, job_id: int, row: BenchmarkRun, **data: Any) -> None:
        owner = row.config.get("owner") if isinstance(row.config, dict) else None  # its subscribers' room
        self._publish_raw(type, {self.ID_FIELD: job_id, "name": row.name, "model": row.model, "caller": owner, **data})

    def _publish_raw(self, type: str, data: dict[str, Any]) -> None:
        if self.kernel is not None:
            self.kernel.publish(type, data)


def owner_of(identity: Identity | None) -> str:
    """The owner of the runs ``identity`` starts: :attr:`Identity.owner` (set by authentication), else itself."""
    if identity is None:
        return "anonymous"
    return identity.owner or f"{identity.kind}:{identity.id}"


def iso(when: dt.datetime | None) -> str | None:
    """A stored time as ISO-8601 UTC ending in ``Z`` (SQLite returns naive UTC)."""
    if when is None:
        return None
    when = when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
