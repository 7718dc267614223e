"""The job service: one plugin per kind, the same queue, rows, heartbeat, cancel and events for all.

A subclass sets :attr:`JobService.KIND` (a :class:`~llama_gpu.jobs.kind.JobKind`) and its
``PLUGIN_INFO``. A submitted job is a ``jobs`` row that goes ``queued`` → ``running`` →
``completed`` | ``failed`` | ``cancelled``. It runs on this process's bounded pool, or — with
``LLAMA_GPU_REDIS_URL`` set and a kind that may run remotely — on an RQ queue that ``llama-gpu
worker`` processes consume (see :mod:`llama_gpu.jobs.executors`). Either way the row is the
truth: status, progress and results are read from it by any instance, and a job cancelled
through any instance (its row closed there) stops at its next progress write or heartbeat
where it runs. At most ``max_queued`` jobs of a kind wait (SERVER_OVERLOADED beyond), and a
kind may limit the active jobs of one owner (RATE_LIMIT_EXCEEDED).

Events: ``<prefix>started``, ``<prefix>progress`` (at most two a second), and one of
``<prefix>completed`` / ``<prefix>failed`` (a cancelled job ends with ``failed``, ``status:
"cancelled"``); the Socket.IO bridge sends them to the kind's channel.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from ..db import DATABASE
from ..db.models import Job, utcnow
from ..kernel.errors import Conflict, NotFound, RateLimitExceeded, ServerOverloaded, ServiceUnavailable
from ..kernel.hookspecs import hookimpl
from ..kernel.kernel import Kernel
from ..kernel.services import ServiceKey
from ..kernel.types import Event, Identity, PluginInfo
from .executors import DEFAULT_QUEUE, QueueExecutor, ThreadExecutor
from .kind import JobContext, JobKind, Outcome, Submission
from .store import FINISHED, PRIVATE_PROGRESS, QUEUED_IN, JobStore

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LocalJob:
    """A job this process holds: waiting in its pool, or running here."""

    id: int
    identity: Identity | None = None
    #: What the job needs but is never stored (a foreign server's API key): such a job runs here.
    secrets: dict[str, Any] = dataclasses.field(default_factory=dict)
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    started: bool = False
    outcome: Outcome | None = None


def owner_of(identity: Identity | None) -> str:
    """The owner of the jobs ``identity`` starts: :attr:`Identity.owner` (its user), else itself."""
    if identity is None:
        return "anonymous"
    return identity.owner or f"{identity.kind}:{identity.id}"


class JobService:
    """Submits, runs, lists and cancels the jobs of one kind (a plugin; subclasses set ``KIND``)."""

    KIND: ClassVar[type[JobKind]]
    PLUGIN_INFO: ClassVar[PluginInfo]
    #: The service's key in ``kernel.services`` (:mod:`llama_gpu.jobs.keys`).
    SERVICE: ClassVar[ServiceKey[JobService]]
    #: Seconds between heartbeats of this process's rows; a row silent for STALE_AFTER is abandoned.
    HEARTBEAT = 5.0
    STALE_AFTER = 30.0
    #: Seconds a cancel request waits for a job running here to close its row.
    CANCEL_WAIT = 10.0
    #: Seconds a stopping server waits for its running jobs.
    STOP_WAIT = 10.0

    def __init__(self) -> None:
        self.max_running = self.KIND.max_running
        self.max_queued = self.KIND.max_queued
        self.kernel: Kernel | None = None
        self.kind: JobKind | None = None
        self.instance = uuid.uuid4().hex[:12]
        self.executor: ThreadExecutor | None = None
        self.queue: QueueExecutor | None = None
        self._settings: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._local: dict[int, LocalJob] = {}
        self._recovered = False
        self._closed = threading.Event()
        self._beater: threading.Thread | None = None

    @property
    def noun(self) -> str:
        """The word for one job."""
        return self.KIND.noun

    # ---------------------------------------------------------------- plugin hooks
    @hookimpl
    def register_event_types(self, register: Callable[[str, str], None]) -> None:
        """Declare the kind's ``started``, ``progress``, ``completed`` and ``failed`` events."""
        for name, description in self.KIND.events.items():
            register(name, description)

    @hookimpl
    def configure(self, kernel: Kernel, settings: Mapping[str, Any]) -> None:
        """Plugin settings: ``queue`` (the RQ queue name) and ``executor`` (``threads`` to stay in-process)."""
        self._settings = dict(settings)

    @hookimpl
    def startup(self, kernel: Kernel) -> None:
        """Pick the executor and share the service as ``kernel.services[SERVICE]`` (the database is used later)."""
        self.kernel = kernel
        self.kind = self.KIND(kernel)
        self._closed.clear()
        queue = str(self._settings.get("queue") or os.environ.get("LLAMA_GPU_JOBS_QUEUE") or DEFAULT_QUEUE)
        executor = str(self._settings.get("executor") or os.environ.get("LLAMA_GPU_JOBS_EXECUTOR") or "")
        self.executor = ThreadExecutor(self.noun, self.max_running)
        if kernel.settings.redis_url and self.KIND.remote and executor != "threads":
            timeout = float(kernel.settings.max_benchmark_seconds) * 2 + 3600
            self.queue = QueueExecutor(kernel.settings.redis_url, queue, self.KIND.name, timeout)
        kernel.services[self.SERVICE] = self

    @hookimpl
    def on_event(self, event: Event) -> None:
        """A draining kernel refuses requests: stop the jobs now rather than let them count errors."""
        if event.type == "kernel_state" and event.data.get("state") == "draining":
            self.cancel_all("the server is stopping")

    @hookimpl
    def shutdown(self, kernel: Kernel) -> None:
        """Cancel this process's jobs, close their rows, stop sharing the service."""
        self._closed.set()
        running = self.cancel_all("the server stopped")
        deadline = time.monotonic() + self.STOP_WAIT
        for job in running:
            job.done.wait(max(deadline - time.monotonic(), 0.0))
        for job in running:  # still running after the wait: close the row, the late write will not reopen it
            if not job.done.is_set():
                self.store.finish(job.id, "failed", error="the server stopped before the job could finish")
        for executor in (self.executor, self.queue):
            if executor is not None:
                executor.close()
        if self._beater is not None:
            self._beater.join(2.0)
            self._beater = None
        kernel.services.discard(self.SERVICE, self)

    @hookimpl
    def collect_metrics(self) -> dict[str, float]:
        """Jobs running and waiting in this process."""
        with self._lock:
            running = sum(1 for j in self._local.values() if j.started)
            return {
                f"{self.noun}_jobs_running": float(running),
                f"{self.noun}_jobs_queued": float(len(self._local) - running),
            }

    # ---------------------------------------------------------------- the service
    @property
    def store(self) -> JobStore:
        """The kind's rows in the shared database."""
        assert self.kernel is not None, f"the {self.noun} jobs plugin is not started"
        return JobStore(self.kernel.service(DATABASE), self.KIND.name)

    def is_admin(self, identity: Identity | None) -> bool:
        """Whether ``identity`` sees and manages every owner's jobs (asked of ``check_permission``)."""
        return self.kernel is not None and self.kernel.check_permission(identity, "admin")

    def owner_of(self, identity: Identity | None) -> str:
        """Who owns the jobs ``identity`` starts."""
        return owner_of(identity)

    def submit_job(self, submission: Submission, identity: Identity | None) -> Job:
        """Store and queue one job; SERVER_OVERLOADED when too many wait, RATE_LIMIT_EXCEEDED per owner."""
        return self._submit(submission, identity)[0]

    def run_and_wait(self, submission: Submission, identity: Identity | None, timeout: float) -> tuple[Job, Outcome]:
        """Submit a job to this process's pool and wait for its outcome (SERVICE_UNAVAILABLE when it never ran)."""
        row, local = self._submit(dataclasses.replace(submission, local=True), identity)
        assert local is not None
        if not local.done.wait(timeout):
            self.cancel(row.id, identity)
        if local.outcome is None:
            closed = self.store.get(row.id)
            raise ServiceUnavailable(
                f"{self.noun} {row.id} did not run: {closed.error if closed is not None else 'gone'}",
                details={self.KIND.id_field: row.id},
            )
        return row, local.outcome

    def _submit(self, submission: Submission, identity: Identity | None) -> tuple[Job, LocalJob | None]:
        assert self.kind is not None and self.executor is not None
        self.check_capacity()
        owner = owner_of(identity)
        self._check_owner_limit(owner)
        queue = self.queue if not (submission.secrets or submission.local) else None
        holder = self.instance if queue is None else QUEUED_IN + queue.queue_name
        row = self.store.insert(
            name=submission.name[:255],
            target=submission.target[:255] if submission.target else None,
            config={**submission.config, "owner": owner},
            owner=owner[:64],
            status="queued",
            model=submission.model[:255] if submission.model else None,
            progress={**submission.progress, "instance": holder, "heartbeat": time.time()},
        )
        if queue is None:
            local = self._hold(LocalJob(row.id, identity=identity, secrets=submission.secrets))
            self.executor.submit(row.id, self.run_here)
            return row, local
        try:
            queue.submit(row.id, self.run_here)
        except Exception as exc:  # Redis away: no job is left queued for nobody, and the caller gets a 503
            self.store.finish(row.id, "failed", error=f"could not queue the job: {type(exc).__name__}: {exc}")
            error = ServiceUnavailable(
                f"the job queue is unreachable: {type(exc).__name__}", details={self.KIND.id_field: row.id}
            )
            error.retry_after = 30
            raise error from exc
        return row, None

    def check_capacity(self) -> None:
        """SERVER_OVERLOADED when ``max_queued`` jobs of the kind wait already (in every process)."""
        self.recover()
        queued = self.store.count("queued")
        if queued >= self.max_queued:
            error = ServerOverloaded(
                f"{queued} {self.noun} jobs are waiting; try again later",
                details={"queued": queued, "max_queued": self.max_queued},
            )
            error.retry_after = 30
            raise error

    def _check_owner_limit(self, owner: str) -> None:
        limit = self.kind.owner_limit() if self.kind is not None else None
        if limit is None:
            return
        active = self.store.count("queued", "running", owner=owner)
        if active >= limit:
            error = RateLimitExceeded(
                f"{active} {self.noun} jobs of yours are queued or running; at most {limit} at once",
                details={"active": active, "limit": limit},
            )
            error.retry_after = 30
            raise error

    def get(self, job_id: int, identity: Identity | None) -> Job:
        """A row the caller may see (its own, or any for an admin); NOT_FOUND otherwise."""
        if not self._recovered:
            self.recover()
        row = self.store.get(job_id)
        if row is None or not self.visible(row, identity):
            raise NotFound(f"no {self.noun} {job_id}", details={self.KIND.id_field: job_id})
        if self.kind is not None:
            self.kind.observe(row)
        return row

    def list(self, identity: Identity | None, limit: int = 50, status: str | None = None, offset: int = 0) -> list[Job]:
        """A page of the caller's rows (all for an admin), newest first; ``results`` only where the kind lists them."""
        self.recover()
        owner = None if self.is_admin(identity) else owner_of(identity)
        rows = self.store.list(owner=owner, status=status, limit=limit, offset=offset, results=self.KIND.list_results)
        if self.kind is not None:
            for row in rows:
                self.kind.observe(row)
        return rows

    def visible(self, row: Job, identity: Identity | None, owner: str | None = None) -> bool:
        """Whether ``identity`` (whose owner is ``owner``, when known) may see ``row``."""
        if self.is_admin(identity):
            return True
        owner = owner if owner is not None else owner_of(identity)
        stored = row.owner or (row.config.get("owner") if isinstance(row.config, dict) else None)
        return stored == owner

    def cancel(self, job_id: int, identity: Identity | None) -> Job:
        """Cancel a queued or running job the caller may manage; CONFLICT when it has finished."""
        row = self.get(job_id, identity)
        if row.status in FINISHED:
            raise Conflict(f"{self.noun} {job_id} has already {row.status}", details={"status": row.status})
        with self._lock:
            local = self._local.get(job_id)
        taken = local is not None and not local.started and self._take_back(local)
        if local is not None and not taken:
            local.cancel.set()  # the job closes its row, with what it did so far
            local.done.wait(self.CANCEL_WAIT)
        elif local is None:  # in the queue, or running in another process (it sees the closed row at its next write)
            queued = row.status == "queued"
            if queued and self.queue is not None:
                self.queue.take_back(job_id)
            self.store.finish(job_id, "cancelled", error="cancelled before it started" if queued else "cancelled")
            if queued:
                self._publish_end(row, "cancelled", "cancelled before it started", None)
        return self.get(job_id, identity)

    def _take_back(self, local: LocalJob, reason: str = "cancelled before it started") -> bool:
        """Remove a job waiting in this process's pool and close its row; False when it started meanwhile."""
        executor = self.executor
        if executor is None or not executor.take_back(local.id):
            return False
        self._release(local)
        row = self.store.get(local.id)
        self.store.finish(local.id, "cancelled", error=reason)
        if row is not None and reason == "cancelled before it started":
            self._publish_end(row, "cancelled", reason, None)
        return True

    def cancel_all(self, reason: str) -> list[LocalJob]:
        """Cancel every job of this process (waiting ones are closed at once); returns the running ones."""
        with self._lock:
            jobs = list(self._local.values())
        running = []
        for job in jobs:
            if job.started or not self._take_back(job, reason):
                job.cancel.set()
                running.append(job)
        return running

    def recover(self) -> int:
        """Mark rows of processes that stopped beating as failed."""
        closed = self.store.recover(self.instance, self.STALE_AFTER, self.noun)
        if closed:
            log.warning("marked %d %s job(s) of stopped processes as failed", closed, self.noun)
        self._recovered = True
        return closed

    # ---------------------------------------------------------------- running
    def run_here(self, job_id: int) -> Outcome | None:
        """Run job ``job_id`` in this process (a pool thread, or a worker); ``None`` when it was closed before."""
        assert self.kind is not None and self.kernel is not None
        with self._lock:
            local = self._local.get(job_id)
        if local is None:
            local = self._hold(LocalJob(job_id))
        local.started = True
        try:
            return self._run(local)
        except Exception:  # a job's failure must never take the service down
            log.exception("%s job %d failed unexpectedly", self.noun, job_id)
            self.store.finish(job_id, "failed", error="internal error; see the server log")
            return None
        finally:
            self._release(local)

    def _run(self, local: LocalJob) -> Outcome | None:
        assert self.kind is not None and self.kernel is not None
        kind, store, job_id = self.kind, self.store, local.id
        row = store.get(job_id)
        start = {**kind.start_progress(row), **self._stamp()} if row is not None else {}
        if row is None or not store.write(job_id, ("queued",), status="running", started_at=utcnow(), progress=start):
            return None  # cancelled (or failed as abandoned) before it started
        if local.cancel.is_set():  # cancelled while it was being picked up
            store.finish(job_id, "cancelled", error="cancelled")
            return None
        base = kind.event_base(row)
        running = {**base, "status": kind.running_status}
        self._publish(f"{kind.channel.prefix}started", {**running, **kind.started_data(row)})
        ctx = JobContext(
            job_id,
            row,
            self.kernel,
            local.cancel,
            lambda progress: store.write(job_id, ("running",), progress={**progress, **self._stamp()}),
            lambda what, data: self._publish(f"{kind.channel.prefix}{what}", {**running, **data}),
            identity=local.identity,
            secrets=local.secrets,
        )
        try:
            outcome = kind.execute(ctx)
        except Exception as exc:  # reported on the row and the bus
            log.exception("%s job %d failed", self.noun, job_id)
            outcome = Outcome("failed", error=kind.error_text(exc), exception=exc)
        local.outcome = outcome
        store.finish(job_id, outcome.status, error=outcome.error, results=outcome.results)
        if outcome.progress is not None:
            store.write(job_id, (outcome.status,), progress=outcome.progress)
        self._publish_end(row, outcome.status, outcome.error, outcome.results)
        return outcome

    def _hold(self, local: LocalJob) -> LocalJob:
        with self._lock:
            self._local[local.id] = local
            if self._beater is None or not self._beater.is_alive():
                self._beater = threading.Thread(target=self._beat, name=f"{self.noun}-heartbeat", daemon=True)
                self._beater.start()
        return local

    def _release(self, local: LocalJob) -> None:
        with self._lock:
            self._local.pop(local.id, None)
        local.done.set()

    def _stamp(self) -> dict[str, Any]:
        return {"instance": self.instance, "heartbeat": time.time()}

    def _beat(self) -> None:
        while not self._closed.wait(self.HEARTBEAT):
            with self._lock:
                jobs = dict(self._local)
            if not jobs:
                continue
            try:
                for job_id in self.store.beat(set(jobs), self._stamp()):
                    if jobs[job_id].started:  # closed through another process: stop it here
                        jobs[job_id].cancel.set()
            except Exception:  # the next beat tries again
                log.warning("%s heartbeat failed", self.noun, exc_info=True)

    def _publish_end(self, row: Job, status: str, error: str | None, results: dict[str, Any] | None) -> None:
        assert self.kind is not None
        base = self.kind.event_base(row)
        if status == "completed":
            self._publish(
                f"{self.KIND.channel.prefix}completed",
                {**base, "status": status, **self.kind.completed_data(row, results)},
            )
        else:
            self._publish(f"{self.KIND.channel.prefix}failed", {**base, "status": status, "error": error})

    def _publish(self, type: str, data: dict[str, Any]) -> None:
        if self.kernel is not None:
            self.kernel.publish(type, data)


__all__ = ["PRIVATE_PROGRESS", "JobService", "LocalJob", "owner_of"]
