"""The serving engine: one thread per loaded model, a bounded queue, continuous batching.

A request becomes a :class:`Job`. ``Engine.submit`` checks it (the runner tokenizes and
may refuse it) and queues it, or refuses at once with SERVER_OVERLOADED and a
``Retry-After`` when the queue is full. The engine thread admits queued jobs between
decode steps while the runner has room, runs one step for every active sequence, hands
each job its tokens (one queue put per job and step) and retires finished or cancelled
sequences before the next step. A job that waits longer than the queue timeout is
answered and never started. Every accepted job ends with its tokens or an error.

Waiting jobs are admitted by priority with aging: a premium caller's job counts as if it had
been submitted :data:`PREMIUM_HEAD_START` seconds earlier, so it goes before standard jobs
that came up to that long before it, and a standard job that has waited longer than that
goes first: premium is served first, standard is never starved.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

from .backend import BatchRunner, GeneratedToken, Sequence
from .errors import InferenceFailed, LlamaGPUError, RequestCancelled, ServerOverloaded, ServiceUnavailable
from .types import InferenceRequest

log = logging.getLogger(__name__)

#: Samples kept for the engine's medians (time to first token, queue time, token latency).
SAMPLES = 512
#: Seconds over which ``tokens_per_second`` is measured.
RATE_WINDOW = 10.0
#: Seconds of queue time a premium caller's job is credited with (its priority; aging bounds it).
PREMIUM_HEAD_START = 5.0


class Job:
    """One request inside an engine: its sequence, its token queue and its timings."""

    def __init__(self, engine: Engine, seq: Sequence) -> None:
        self.engine = engine
        self.seq = seq
        self.request: InferenceRequest = seq.request
        self.submitted = time.perf_counter()
        identity = self.request.identity
        #: The admission order: earlier goes first (premium callers are credited a head start).
        self.rank = self.submitted - (
            PREMIUM_HEAD_START if identity is not None and identity.tier == "premium" else 0.0
        )
        self.admitted: float | None = None
        self.first_token: float | None = None
        self.tokens_out = 0
        self.cancelled = False
        self.finished = False
        self._out: queue.SimpleQueue[list[GeneratedToken] | BaseException] = queue.SimpleQueue()

    @property
    def prompt_tokens(self) -> int | None:
        """Prompt length in tokens, when the backend tokenized it up front."""
        return None if self.seq.prompt is None else len(self.seq.prompt)

    def tokens(self) -> Iterator[GeneratedToken]:
        """The job's tokens as the engine produces them; raises the job's error if it fails."""
        while True:
            item = self._out.get()
            if isinstance(item, BaseException):
                raise item
            yield from item
            if item and item[-1].finish_reason is not None:
                return

    def cancel(self) -> None:
        """Stop the job: removed from the queue now, or its sequence freed at the next step."""
        self.engine.cancel(self)

    # engine side ---------------------------------------------------------------------------
    def _push(self, tokens: list[GeneratedToken], produced: int) -> None:
        if produced and self.first_token is None:
            self.first_token = time.perf_counter()
        self.tokens_out += produced
        self._out.put(tokens)

    def _fail(self, error: BaseException) -> None:
        self.finished = True
        self._out.put(error)


class Engine:
    """Serves one loaded model: a bounded queue in front of a :class:`BatchRunner` on its own thread."""

    def __init__(self, model_id: str, runner: BatchRunner, *, max_queue: int, queue_timeout: float) -> None:
        self.model_id = model_id
        self.runner = runner
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self._cond = threading.Condition()
        self._waiting: collections.deque[Job] = collections.deque()
        self._active: dict[Sequence, Job] = {}
        self._stopping = False
        self._halt: LlamaGPUError | None = None
        self._counts: collections.Counter[str] = collections.Counter()
        self._ttft: collections.deque[float] = collections.deque(maxlen=SAMPLES)
        self._queue_time: collections.deque[float] = collections.deque(maxlen=SAMPLES)
        self._token_latency: collections.deque[float] = collections.deque(maxlen=SAMPLES)
        self._request_seconds: collections.deque[float] = collections.deque(maxlen=64)
        self._steps: collections.deque[tuple[float, int, int, float, float]] = collections.deque(maxlen=SAMPLES)
        self._thread = threading.Thread(target=self._loop, name=f"engine-{model_id}", daemon=True)
        self._thread.start()

    # request side ----------------------------------------------------------------------------
    def submit(self, request: InferenceRequest) -> Job:
        """Check and queue ``request``; refuse at once when the engine is full or stopping."""
        seq = Sequence(request)
        self.runner.prepare(seq)  # tokenizes and checks limits in the caller's thread
        with self._cond:
            if self._stopping:
                raise ServiceUnavailable(
                    f"model {self.model_id!r} is not accepting requests (it is being unloaded, or its engine failed)",
                    details={"model": self.model_id},
                )
            held = len(self._waiting) + len(self._active)
            capacity = self.max_queue + self.runner.max_sequences
            if held >= capacity:
                self._counts["rejected"] += 1
                error = ServerOverloaded(
                    f"model {self.model_id!r} is at capacity ({held} requests running or queued); retry later",
                    details={"model": self.model_id, "running": len(self._active), "waiting": len(self._waiting)},
                )
                error.retry_after = self._retry_after()
                raise error
            job = Job(self, seq)
            self._waiting.append(job)
            self._counts["submitted"] += 1
            self._cond.notify()
        return job

    def _retry_after(self) -> int:
        per_request = statistics.median(self._request_seconds) if self._request_seconds else 1.0
        rounds = (len(self._waiting) + 1) / max(1, self.runner.max_sequences)
        return max(1, min(60, math.ceil(per_request * rounds)))

    def cancel(self, job: Job) -> None:
        """Cancel ``job`` (idempotent)."""
        with self._cond:
            if job.finished or job.cancelled:
                return
            job.cancelled = True
            if job in self._waiting:
                self._waiting.remove(job)
                self._counts["cancelled"] += 1
                job._fail(RequestCancelled("the request was cancelled", details={"request_id": job.request.id}))
            self._cond.notify()

    def stop(self, timeout: float = 0.0, reason: str = "the model was unloaded") -> None:
        """Refuse new jobs, let running ones finish for up to ``timeout`` s, then fail the rest."""
        with self._cond:
            self._stopping = True
            deadline = time.monotonic() + timeout
            while (self._waiting or self._active) and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(min(left, 0.05))
            self._halt = ServiceUnavailable(f"{reason} before the request finished", details={"model": self.model_id})
            self._cond.notify()
        self._thread.join()
        self.runner.close()

    # engine thread ---------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._serve()
        except BaseException:  # a bug here must not leave clients waiting forever
            log.exception("the engine of %s stopped", self.model_id)
            error = InferenceFailed(f"the engine of {self.model_id!r} failed; reload the model", details={})
            with self._cond:
                self._stopping = True
                self._abort_all(error)

    def _serve(self) -> None:
        while True:
            admitted = self._next_jobs()
            if admitted is None:
                return
            for job in admitted:
                try:
                    self.runner.admit(job.seq)
                except Exception as exc:  # noqa: BLE001 - the job carries the error to its client
                    self._end(job, _as_error(exc, self.model_id), "failed")
                    continue
                job.admitted = time.perf_counter()
                self._queue_time.append(job.admitted - job.submitted)
                self._active[job.seq] = job
            self._retire_cancelled()
            if self._active:
                self._step()

    def _next_jobs(self) -> list[Job] | None:
        """Jobs to admit now, waiting while there is nothing to do; ``None`` when stopped."""
        with self._cond:
            while True:
                if self._halt is not None:
                    self._abort_all(self._halt)
                    return None
                self._expire()
                admitted: list[Job] = []
                for job in sorted(self._waiting, key=_rank):  # the queue stays in submission order for _expire
                    if job not in self._waiting:  # taken with its group
                        continue
                    members = self._group_of(job)
                    if not members:
                        continue  # its group is not all queued yet: none of it starts before the rest
                    if not self.runner.can_admit(len(self._active) + len(admitted) + len(members) - 1):
                        break
                    for member in members:
                        self._waiting.remove(member)
                        admitted.append(member)
                if admitted or self._active:
                    return admitted
                self._cond.notify_all()  # a stop() waiting for the engine to be idle
                timeout = self.queue_timeout if self._waiting else None
                self._cond.wait(timeout)

    def _group_of(self, job: Job) -> list[Job]:
        """``job`` with the members of its group, all waiting; empty while some are still to come.

        A group larger than the engine can ever run at once is admitted member by member.
        """
        request = job.request
        if request.group is None or request.group_size <= 1 or request.group_size > self.runner.max_sequences:
            return [job]
        members = [j for j in self._waiting if j.request.group == request.group]
        return members if len(members) >= request.group_size else []

    def _expire(self) -> None:
        if not self._waiting or self.queue_timeout <= 0:
            return
        limit = time.perf_counter() - self.queue_timeout
        while self._waiting and self._waiting[0].submitted < limit:
            job = self._waiting.popleft()
            self._counts["timed_out"] += 1
            error = ServerOverloaded(
                f"the request waited more than {self.queue_timeout:g} s in the queue of {self.model_id!r} "
                "and was not started",
                details={"model": self.model_id, "queue_timeout": self.queue_timeout},
            )
            error.retry_after = self._retry_after()
            job._fail(error)

    def _retire_cancelled(self) -> None:
        for seq, job in list(self._active.items()):
            if job.cancelled:
                self._drop(seq)
                self._end(job, RequestCancelled("the request was cancelled"), "cancelled")

    def _step(self) -> None:
        start = time.perf_counter()
        try:
            results = self.runner.step()
        except Exception as exc:
            log.exception("engine step of %s failed", self.model_id)
            error = _as_error(exc, self.model_id)
            for seq, job in list(self._active.items()):
                self._drop(seq)
                self._end(job, error, "failed")
            return
        elapsed = time.perf_counter() - start
        produced = 0
        for seq, tokens in results:
            job = self._active.get(seq)
            if job is None:
                continue
            count = sum(1 for t in tokens if t.token_id is not None)
            produced += count
            job._push(tokens, count)
            if tokens and tokens[-1].finish_reason is not None:
                del self._active[seq]
                self._end(job, None, "completed")
        figures = self.runner.stats()
        self._steps.append(
            (time.perf_counter(), len(results), produced, elapsed, float(figures.get("decode_seconds", elapsed)))
        )

    def _drop(self, seq: Sequence) -> None:
        self._active.pop(seq, None)
        try:
            self.runner.drop(seq)
        except Exception:
            log.exception("engine of %s could not free a sequence", self.model_id)

    def _end(self, job: Job, error: BaseException | None, outcome: str) -> None:
        now = time.perf_counter()
        self._counts[outcome] += 1
        if error is not None:
            job._fail(error)
        job.finished = True
        if job.first_token is not None:
            self._ttft.append(job.first_token - job.submitted)
            if job.tokens_out > 1:
                self._token_latency.append((now - job.first_token) / (job.tokens_out - 1))
        self._request_seconds.append(now - job.submitted)

    def _abort_all(self, error: LlamaGPUError) -> None:
        while self._waiting:
            job = self._waiting.popleft()
            self._counts["aborted"] += 1
            job._fail(error)
        for seq, job in list(self._active.items()):
            self._drop(seq)
            self._end(job, error, "aborted")
        self._cond.notify_all()

    # figures --------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Running and waiting sequences, batch size, tokens/s and latency medians (ms)."""
        with self._cond:
            running, waiting = len(self._active), len(self._waiting)
        now = time.perf_counter()
        steps = list(self._steps)
        recent = [s for s in steps if s[0] >= now - RATE_WINDOW]
        rate = 0.0
        if recent:
            span = max(now - recent[0][0] + recent[0][3], 1e-9)
            rate = sum(s[2] for s in recent) / span
        overhead = [max(0.0, s[3] - s[4]) for s in steps]
        return {
            "running": running,
            "waiting": waiting,
            "max_sequences": self.runner.max_sequences,
            "max_queue": self.max_queue,
            "batch_size": round(statistics.fmean(s[1] for s in steps), 2) if steps else 0.0,
            "tokens_per_second": round(rate, 2),
            "time_to_first_token_ms": _median_ms(self._ttft),
            "queue_time_ms": _median_ms(self._queue_time),
            "token_latency_ms": _median_ms(self._token_latency),
            "step_ms": _median_ms([s[3] for s in steps]),
            "step_overhead_ms": _median_ms(overhead),
            "requests": dict(self._counts),
        }


def _rank(job: Job) -> float:
    return job.rank


def _median_ms(values: Any) -> float | None:
    values = list(values)
    return round(statistics.median(values) * 1000, 3) if values else None


def _as_error(exc: BaseException, model_id: str) -> LlamaGPUError:
    if isinstance(exc, LlamaGPUError):
        return exc
    return InferenceFailed(f"inference failed: {type(exc).__name__}: {exc}", details={"model": model_id})
