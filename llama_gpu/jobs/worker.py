"""``llama-gpu worker``: a process that runs queued jobs (RQ over Redis) with a kernel of its own.

The worker starts a kernel from the same settings as the servers (the same database and models
directory; no model is preloaded), then an RQ :class:`~rq.SimpleWorker` on the job queue: each
RQ job is ``perform(kind, job_id)``, which runs the job's row through the kind's
:class:`~llama_gpu.jobs.service.JobService` exactly as a server's pool thread would (status,
progress, heartbeat and results in the ``jobs`` table). Its events reach the dashboards of every
server through the Socket.IO message queue in the same Redis. SIGTERM or SIGINT cancels the
running job (it closes its row as ``cancelled`` with what it measured) and stops the worker.
"""

from __future__ import annotations

import logging
import socket
import uuid
from types import FrameType
from typing import Any

from ..kernel.config import Settings
from ..kernel.errors import ConfigurationError
from ..kernel.kernel import Kernel
from ..plugins.monitoring import SOCKETIO
from .service import JobService

log = logging.getLogger(__name__)

#: The kernel of this worker process (set by :func:`run_worker`).
_kernel: Kernel | None = None


def services(kernel: Kernel) -> dict[str, JobService]:
    """The job services of ``kernel`` by kind name."""
    return {s.KIND.name: s for s in kernel.services.values() if isinstance(s, JobService)}


def perform(kind: str, job_id: int) -> str:
    """Run job ``job_id`` of ``kind`` here (the RQ job function); its final status, or ``skipped``."""
    if _kernel is None:
        raise RuntimeError("llama_gpu.jobs.worker.perform runs inside `llama-gpu worker`")
    service = services(_kernel).get(kind)
    if service is None:
        raise RuntimeError(f"this worker has no plugin for {kind} jobs")
    outcome = service.run_here(int(job_id))
    return outcome.status if outcome is not None else "skipped"


def _worker_class() -> type[Any]:
    from rq import SimpleWorker

    class JobWorker(SimpleWorker):
        """An RQ worker in this process (no fork: the kernel is made once) that cancels its job on stop."""

        def request_stop(self, signum: int, frame: FrameType | None) -> None:
            """Cancel the running job (cooperatively), then stop after it as RQ does."""
            if _kernel is not None:
                for service in services(_kernel).values():
                    service.cancel_all("the worker is stopping")
            super().request_stop(signum, frame)

    return JobWorker


def run_worker(settings: Settings, queue: str, *, burst: bool = False, name: str | None = None) -> None:
    """Serve ``queue`` until stopped (``burst``: until it is empty)."""
    global _kernel
    if not settings.redis_url:
        raise ConfigurationError("llama-gpu worker needs LLAMA_GPU_REDIS_URL (the queue lives in Redis)")
    from redis import Redis
    from rq import Queue

    connection = Redis.from_url(settings.redis_url)
    connection.ping()  # fail now, clearly, when Redis is away
    kernel = Kernel(settings).start()
    _kernel = kernel
    try:
        from flask_socketio import SocketIO

        # emits go through Redis to every server's Socket.IO clients (no app: write-only)
        kernel.services.setdefault(SOCKETIO, SocketIO(message_queue=settings.redis_url))
        worker = _worker_class()(
            [Queue(queue, connection=connection)],
            connection=connection,
            name=name or f"llama-gpu-{socket.gethostname()}-{uuid.uuid4().hex[:6]}",
        )
        log.info("worker %s serving queue %s", worker.name, queue)
        worker.work(burst=burst, with_scheduler=False, logging_level=settings.log_level.upper())
    finally:
        _kernel = None
        kernel.stop(timeout=10)
        connection.close()
