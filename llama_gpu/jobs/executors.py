"""Where jobs run: a bounded thread pool in this process, or RQ workers behind Redis.

- :class:`ThreadExecutor` (the embedded default): ``max_running`` threads per kind in the server
  process (:class:`concurrent.futures.ThreadPoolExecutor`); a job not yet started can be taken
  back.
- :class:`QueueExecutor` (when ``LLAMA_GPU_REDIS_URL`` is set): the job's id goes on an `RQ
  <https://python-rq.org>`_ queue and a ``llama-gpu worker`` process, on this machine or
  another, runs it (:func:`llama_gpu.jobs.worker.perform`). RQ was chosen over Celery and
  Dramatiq because it needs nothing but the Redis the deployment already has (for rate limits
  and Socket.IO), has no broker abstraction or result backend to configure, and its worker is
  a plain process we can start with our own kernel inside (``SimpleWorker``: no fork per
  job, so the kernel and its database pool are made once). The job's state — status,
  progress, results, cancellation — lives in the ``jobs`` table, not in RQ, so every instance
  reads and changes it the same way and the queue only carries "run job 12 of kind benchmark".
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

#: The RQ queue jobs go on unless ``LLAMA_GPU_JOBS_QUEUE`` names another.
DEFAULT_QUEUE = "llama-gpu-jobs"


class ThreadExecutor:
    """Runs jobs on at most ``max_running`` threads of this process."""

    local = True

    def __init__(self, name: str, max_running: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_running), thread_name_prefix=f"{name}-job")
        self._futures: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()

    def submit(self, job_id: int, run: Callable[[int], Any]) -> None:
        """Queue ``run(job_id)`` on the pool."""
        future = self._pool.submit(run, job_id)
        with self._lock:
            self._futures[job_id] = future
        future.add_done_callback(lambda _: self._forget(job_id))

    def take_back(self, job_id: int) -> bool:
        """Remove a job that has not started; False when it runs (or ran) already."""
        with self._lock:
            future = self._futures.get(job_id)
        return future is not None and future.cancel()

    def _forget(self, job_id: int) -> None:
        with self._lock:
            self._futures.pop(job_id, None)

    def close(self) -> None:
        """Drop waiting jobs; running ones finish on their own (they were cancelled)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


class QueueExecutor:
    """Puts jobs on an RQ queue in Redis for ``llama-gpu worker`` processes."""

    local = False

    def __init__(self, redis_url: str, queue: str, kind: str, timeout: float) -> None:
        self.redis_url = redis_url
        self.queue_name = queue
        self.kind = kind
        self.timeout = timeout
        self._queue: Any = None
        self._lock = threading.Lock()

    @property
    def queue(self) -> Any:
        """The RQ queue (connected on first use, so a server starts while Redis is away)."""
        with self._lock:
            if self._queue is None:
                from redis import Redis
                from rq import Queue

                self._queue = Queue(self.queue_name, connection=Redis.from_url(self.redis_url))
            return self._queue

    def submit(self, job_id: int, run: Callable[[int], Any]) -> None:
        """Enqueue ``perform(kind, job_id)`` (``run`` is for local executors only)."""
        self.queue.enqueue(
            "llama_gpu.jobs.worker.perform",
            self.kind,
            job_id,
            job_id=self.rq_id(job_id),
            job_timeout=int(self.timeout),
            result_ttl=3600,
            failure_ttl=24 * 3600,
            description=f"{self.kind} {job_id}",
        )

    def rq_id(self, job_id: int) -> str:
        """The RQ job id of our job ``job_id`` (unique across databases sharing one Redis)."""
        return (
            f"llama-gpu-{self.kind}-{job_id}-{uuid.uuid5(uuid.NAMESPACE_URL, self.redis_url + self.queue_name).hex[:8]}"
        )

    def take_back(self, job_id: int) -> bool:
        """Cancel the RQ job if it still waits (the row is closed either way; a worker skips closed rows)."""
        try:
            from rq.job import Job as RQJob

            RQJob.fetch(self.rq_id(job_id), connection=self.queue.connection).cancel()
        except Exception:  # gone already, or being run: the row decides
            log.debug("could not cancel RQ job of %s %d", self.kind, job_id, exc_info=True)
        return False

    def close(self) -> None:
        """Close the Redis connection; waiting jobs stay in the queue for the workers."""
        with self._lock:
            queue, self._queue = self._queue, None
        if queue is not None:
            queue.connection.close()
