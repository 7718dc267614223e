"""Background jobs: one abstraction, several kinds, one ``jobs`` table, a pool or a real queue.

- :class:`~llama_gpu.jobs.kind.JobKind`: what a job is (checks its spec, executes with progress
  reporting and cooperative cancel, describes its rows) and the Socket.IO channel of its events.
- :class:`~llama_gpu.jobs.service.JobService`: a plugin per kind that stores, queues, runs,
  lists and cancels them the same way for every kind (:mod:`llama_gpu.jobs.store`).
- Kinds: :mod:`~llama_gpu.jobs.benchmark`, :mod:`~llama_gpu.jobs.conversion`,
  :mod:`~llama_gpu.jobs.evaluation`.
- Execution (:mod:`llama_gpu.jobs.executors`): a bounded thread pool in the server process by
  default; with ``LLAMA_GPU_REDIS_URL`` set, an RQ queue that ``llama-gpu worker`` processes
  (:mod:`llama_gpu.jobs.worker`) consume.
"""

from __future__ import annotations

from .kind import JobChannel, JobContext, JobKind, Outcome, Submission
from .service import JobService, owner_of
from .store import ACTIVE, FINISHED, PRIVATE_PROGRESS, iso

__all__ = [
    "ACTIVE",
    "FINISHED",
    "PRIVATE_PROGRESS",
    "JobChannel",
    "JobContext",
    "JobKind",
    "JobService",
    "Outcome",
    "Submission",
    "channels",
    "iso",
    "owner_of",
]


def channels() -> tuple[JobChannel, ...]:
    """The channel declaration of each built-in kind."""
    from .benchmark import BenchmarkKind
    from .conversion import ConversionKind
    from .evaluation import EvaluationKind

    return tuple(kind.channel for kind in (BenchmarkKind, ConversionKind, EvaluationKind))
