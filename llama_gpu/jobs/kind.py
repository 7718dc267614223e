"""The job abstraction: a :class:`JobKind` says what a job is; :class:`JobContext` is what it runs with.

A kind checks a request and turns it into a :class:`Submission` (every refusal a 4xx, raised
before anything is stored), executes one job with progress reporting and cooperative cancel
(:meth:`JobKind.execute` returns an :class:`Outcome`), and describes its rows for the API.
Everything that is the same for every kind — the ``jobs`` row, the queue, the heartbeat,
recovery, cancel, the events ``<prefix>.started|progress|completed|failed`` — lives in
:class:`llama_gpu.jobs.service.JobService`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..db.models import Job
    from ..kernel.kernel import Kernel
    from ..kernel.types import Identity


@dataclasses.dataclass(frozen=True)
class JobChannel:
    """The Socket.IO channel that carries a kind's events (one declaration per kind).

    :param name: The channel clients subscribe to.
    :param prefix: Event types starting with it go to the channel (``benchmark.`` → ``benchmarks``).
    :param role: The permission a connection needs to subscribe.
    :param per_owner: Events reach only their owner (the event's ``caller``) and admins.
    """

    name: str
    prefix: str
    role: str = "read"
    per_owner: bool = False


@dataclasses.dataclass
class Submission:
    """What a kind stores for a new job: the row's fields (``config`` is JSON-safe, never a secret)."""

    name: str
    config: dict[str, Any]
    model: str | None = None
    target: str | None = None
    progress: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: What the job needs but must never be stored (an API key): the job then runs in this process.
    secrets: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Run it in this process even where a distributed queue is configured.
    local: bool = False


@dataclasses.dataclass
class Outcome:
    """How a job ended: ``completed``, ``failed`` or ``cancelled``, with an error and results."""

    status: str
    error: str | None = None
    results: dict[str, Any] | None = None
    #: Progress to leave on the row once closed (else what was reported last, bookkeeping removed).
    progress: dict[str, Any] | None = None
    #: The exception that failed the job, for an in-process caller waiting on it (never stored).
    exception: BaseException | None = None


class JobContext:
    """What a running job sees: its row, the kernel, a cancel flag, and a throttled progress reporter."""

    #: Seconds between two progress writes and events of one job (a forced report always goes).
    PROGRESS_INTERVAL = 0.5

    def __init__(
        self,
        job_id: int,
        row: Job,
        kernel: Kernel,
        cancel: threading.Event,
        write_progress: Callable[[dict[str, Any]], bool],
        publish: Callable[[str, dict[str, Any]], None],
        identity: Identity | None = None,
        secrets: dict[str, Any] | None = None,
    ) -> None:
        self.job_id = job_id
        self.row = row
        self.config: dict[str, Any] = row.config if isinstance(row.config, dict) else {}
        self.kernel = kernel
        self.cancel = cancel
        #: Who submitted the job, where it runs in that process (``None`` in a worker).
        self.identity = identity
        #: What the job needs but is never stored (such a job always runs where it was submitted).
        self.secrets = secrets or {}
        self._write_progress = write_progress
        self._publish = publish
        self._last = 0.0

    def report(self, progress: dict[str, Any], *, force: bool = False) -> None:
        """Store ``progress`` on the row and publish ``<prefix>.progress`` (at most twice a second).

        A row closed through another process (cancelled there) sets :attr:`cancel`.
        """
        now = time.monotonic()
        if now - self._last < self.PROGRESS_INTERVAL and not force:
            return
        self._last = now
        if not self._write_progress(progress):
            self.cancel.set()
        self._publish("progress", progress)


class JobKind:
    """One kind of job. Subclasses set the class attributes and implement :meth:`execute` and :meth:`describe`."""

    #: The rows' ``kind``.
    name: ClassVar[str]
    #: The word for one job in messages (``benchmark 3 has already completed``).
    noun: ClassVar[str]
    #: The id field of events and of NOT_FOUND details.
    id_field: ClassVar[str] = "job_id"
    #: The ``status`` events of a running job carry.
    running_status: ClassVar[str] = "running"
    #: The channel of its events.
    channel: ClassVar[JobChannel]
    #: Event types (``<channel.prefix><what>``) and their descriptions.
    events: ClassVar[dict[str, str]]
    #: Whether lists load ``results`` (a benchmark's hold every request: no).
    list_results: ClassVar[bool] = False
    #: Whether a worker process may run it (else it always runs in the process that submitted it).
    remote: ClassVar[bool] = True
    #: Jobs running at once per process, and waiting (all processes together) before SERVER_OVERLOADED.
    max_running: ClassVar[int] = 1
    max_queued: ClassVar[int] = 16

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def event_base(self, row: Job) -> dict[str, Any]:
        """Fields every event of the job carries (its id first; ``caller`` picks the owner's room)."""
        return {self.id_field: row.id, "name": row.name, "model": row.model, "caller": row.owner}

    def owner_limit(self) -> int | None:
        """Jobs of this kind one owner may have queued or running at once (``None``: no limit)."""
        return None

    def start_progress(self, row: Job) -> dict[str, Any]:
        """The progress a job shows once it starts running."""
        return {}

    def error_text(self, exc: BaseException) -> str:
        """The row's ``error`` for an exception ``execute`` raised."""
        return f"{type(exc).__name__}: {exc}"

    def started_data(self, row: Job) -> dict[str, Any]:
        """More fields of ``<prefix>.started``."""
        return {}

    def completed_data(self, row: Job, results: dict[str, Any] | None) -> dict[str, Any]:
        """More fields of ``<prefix>.completed``."""
        return {}

    def execute(self, ctx: JobContext) -> Outcome:
        """Run the job; watch ``ctx.cancel`` and call ``ctx.report`` as it goes. Exceptions fail it."""
        raise NotImplementedError

    def describe(self, row: Job) -> dict[str, Any]:
        """The job as the API shows it."""
        raise NotImplementedError

    def observe(self, row: Job) -> None:
        """Called for each row this process reads (a finished conversion run elsewhere is registered here)."""
