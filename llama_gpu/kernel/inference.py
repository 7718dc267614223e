"""One request through the pipeline: model, filters, engine queue, chunk filters, response filters, events.

The cheap ``prepare_request`` filters (limits…) run before the model is acquired (loaded on
demand when ``LLAMA_GPU_AUTOLOAD`` is on, which may evict another), so a request they refuse
never loads or evicts a model. A chat request is the exception: its messages are rendered
with the model's own template first, so its filters see the prompt the model will read. Then
the request joins the model's engine queue (:mod:`.scheduler`).

``start_inference`` does everything that can refuse a request (draining, filters, an
unknown model, a prompt too long, a full queue) before it returns, so an HTTP layer can
still answer with a 4xx or 503; the returned :class:`InferenceStream` then yields chunks
as the engine produces them. Per-token work touches no event bus and no database: one
event when a request starts and one when it ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

from .backend import LoadedModel
from .errors import InferenceFailed, LlamaGPUError, NotFound, RateLimitExceeded
from .scheduler import Job
from .types import Chunk, Identity, InferenceRequest, InferenceResponse

if TYPE_CHECKING:
    from .kernel import Kernel


class InferenceStream:
    """The chunks of one request; ``response`` is set once they are all consumed."""

    def __init__(self, kernel: Kernel, request: InferenceRequest, model: LoadedModel, job: Job) -> None:
        self.request = request
        self.model = model
        self.job = job
        self.response: InferenceResponse | None = None
        self._kernel = kernel
        self._gen = self._run()
        self._admitted = time.perf_counter()
        self._started = False
        self._closed = False

    def __iter__(self) -> Iterator[Chunk]:
        self._started = True
        self.response = yield from self._gen

    def result(self) -> InferenceResponse:
        """Consume the stream and return the response."""
        for _ in self:
            pass
        assert self.response is not None
        return self.response

    def close(self) -> None:
        """Cancel: the engine frees the sequence at its next step, and the request is released."""
        if self._closed:
            return
        self.job.cancel()
        if self._started:
            self._gen.close()  # runs _run's GeneratorExit branch, which finishes the request
        else:
            self._closed = True
            self._finish(ok=False, tokens=0, reason="cancelled")

    def _finish(self, ok: bool, tokens: int, reason: str, error: LlamaGPUError | None = None) -> None:
        self._closed = True
        self._kernel.requests.remove(self)
        seconds = self.response.inference_time if self.response else time.perf_counter() - self._admitted
        self._kernel.registry.release(
            self.model.spec.id, tokens=tokens, seconds=seconds, ok=ok, keep_alive=self.request.keep_alive
        )
        data: dict[str, Any] = {
            "request_id": self.request.id,
            "model": self.model.spec.id,
            "caller": caller_of(self.request),
            "endpoint": self.request.endpoint,
            "latency": round(seconds, 6),
        }
        if ok and self.response is not None:
            data.update(
                prompt_tokens=self.response.prompt_tokens,
                tokens_generated=self.response.completion_tokens,
                time_to_first_token=_round(self.response.time_to_first_token),
                queue_time=_round(self.response.queue_time),
                inference_time=round(self.response.inference_time, 6),
                backend=self.response.backend,
                finish_reason=self.response.finish_reason,
            )
            self._kernel.publish("inference_completed", data)
        else:
            data.update(
                reason=reason,
                error=error.code if error else None,
                status=error.status if error else 499,  # 499: the client went away
                tokens_generated=tokens,
            )
            self._kernel.publish("inference_failed", data)
        self._kernel.sequences.release(self.request.identity)
        # Counted out only after its event is on the bus: a draining stop() that wakes up here
        # must not shut the subscribers (request log, Socket.IO bridge) down before they have it.
        self._kernel.leave_request(ok, tokens)

    def _run(self) -> Generator[Chunk, None, InferenceResponse]:
        kernel, request, model = self._kernel, self.request, self.model
        start = self.job.submitted  # timings include the time spent in the queue
        first: float | None = None
        texts: list[str] = []
        count = 0
        finish: str | None = None
        position = 0
        try:
            for token in self.job.tokens():
                finish = token.finish_reason or finish
                if token.token_id is not None:
                    count += 1  # a marker without a token id (end of stream, flushed text) is no token
                if not token.text:
                    continue
                chunk = Chunk(
                    text=token.text,
                    index=position,
                    token_id=token.token_id,
                    logprob=token.logprob,
                    top_logprobs=token.top_logprobs,
                )
                position += 1
                kernel.run_pipeline("process_chunk", request=request, chunk=chunk)
                if first is None:
                    first = time.perf_counter() - start
                if not chunk.dropped:
                    texts.append(chunk.text)
                    yield chunk
            response = InferenceResponse(
                request_id=request.id,
                model=model.spec.id,
                backend=model.spec.backend,
                text="".join(texts),
                prompt_tokens=self.job.prompt_tokens
                if self.job.prompt_tokens is not None
                else model.count_tokens(request.prompt),
                completion_tokens=count,
                finish_reason=finish or ("length" if count >= request.max_tokens else "stop"),
                inference_time=time.perf_counter() - start,
                time_to_first_token=first,
                queue_time=(self.job.admitted or time.perf_counter()) - self.job.submitted,
            )
            kernel.run_pipeline("process_response", request=request, response=response)
        except GeneratorExit:
            self.job.cancel()
            self._finish(ok=False, tokens=count, reason="cancelled")
            raise
        except LlamaGPUError as exc:
            self._finish(ok=False, tokens=count, reason="error", error=exc)
            raise
        except Exception as exc:
            error = InferenceFailed(f"inference failed: {type(exc).__name__}: {exc}", details={"model": model.spec.id})
            self._finish(ok=False, tokens=count, reason="error", error=error)
            raise error from exc
        self.response = response
        self._finish(ok=True, tokens=count, reason="completed")
        return response


def start_inference(kernel: Kernel, request: InferenceRequest) -> InferenceStream:
    """Admit ``request``, run ``prepare_request`` and resolve its model; raise to refuse."""
    kernel.enter_request()
    model, held = None, False
    try:
        if not isinstance(request.prompt, str):
            raise InferenceFailed("request.prompt must be a string")
        kernel.sequences.reserve(request.identity)
        held = True
        if request.messages is None:  # the prompt is final: refuse before any model is loaded
            kernel.run_pipeline("prepare_request", request=request, kernel=kernel)
        model = kernel.registry.acquire(request.model)
        if request.messages is not None:
            request.prompt = model.render_chat(request.messages)
            kernel.run_pipeline("prepare_request", request=request, kernel=kernel)
        job = kernel.registry.engine(model.spec.id).submit(request)
    except BaseException as exc:
        if held:
            kernel.sequences.release(request.identity)
        if model is not None:
            kernel.registry.release(model.spec.id, tokens=0, seconds=0.0, ok=False, keep_alive=request.keep_alive)
        kernel.publish(
            "inference_failed",
            {
                "request_id": request.id,
                "model": request.model,
                "caller": caller_of(request),
                "endpoint": request.endpoint,
                "reason": "refused",
                "error": exc.code if isinstance(exc, LlamaGPUError) else type(exc).__name__,
                "status": exc.status if isinstance(exc, LlamaGPUError) else 500,
            },
        )
        kernel.leave_request(ok=False)  # after its event, as in InferenceStream._finish
        raise
    kernel.publish(
        "inference_started",
        {
            "request_id": request.id,
            "model": model.spec.id,
            "max_tokens": request.max_tokens,
            "endpoint": request.endpoint,
        },
    )
    stream = InferenceStream(kernel, request, model, job)
    kernel.requests.add(stream)
    return stream


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 6)


def caller_of(request: InferenceRequest) -> str | None:
    """Who made ``request``, as ``<kind>:<id>`` (``None`` when unauthenticated)."""
    who = request.identity
    return f"{who.kind}:{who.id}" if who is not None else None


class SequenceQuota:
    """Sequences each caller has running or queued, all models together, capped per caller.

    One caller (an API key, a login, the anonymous caller of ``LLAMA_GPU_AUTH=off``) may hold
    at most ``limit`` sequences at once (``LLAMA_GPU_MAX_CONCURRENT_SEQUENCES``): one more is
    refused with RATE_LIMIT_EXCEEDED before it is queued, so that one caller cannot take every
    slot of every engine. A request of several sequences (``n``, ``best_of``, a list of prompts,
    a batch) holds one per sequence. Requests of the kernel itself (no identity) are not counted.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    @staticmethod
    def key(identity: Identity | None) -> str | None:
        """Whose sequences these are: the identity's owner, so child keys share it (``None``: the kernel's own)."""
        return None if identity is None else identity.owner or f"{identity.kind}:{identity.id}"

    def reserve(self, identity: Identity | None) -> None:
        """Hold one sequence for ``identity``; RATE_LIMIT_EXCEEDED (429) when it holds the most allowed."""
        key = self.key(identity)
        if key is None:
            return
        with self._lock:
            held = self._held.get(key, 0)
            if held >= self.limit:
                error = RateLimitExceeded(
                    f"{held} sequences of this caller are running or queued; at most {self.limit} at once",
                    details={"running": held, "limit": self.limit},
                )
                error.retry_after = 1
                raise error
            self._held[key] = held + 1

    def release(self, identity: Identity | None) -> None:
        """Give back one sequence of ``identity``."""
        key = self.key(identity)
        if key is None:
            return
        with self._lock:
            left = self._held.get(key, 0) - 1
            if left > 0:
                self._held[key] = left
            else:
                self._held.pop(key, None)

    def held(self, identity: Identity | None) -> int:
        """Sequences ``identity`` holds now."""
        key = self.key(identity)
        with self._lock:
            return self._held.get(key, 0) if key is not None else 0


class RunningRequests:
    """The requests in flight, by request id, so that they can be cancelled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, list[InferenceStream]] = {}

    def add(self, stream: InferenceStream) -> None:
        """Track ``stream`` until it finishes."""
        with self._lock:
            self._streams.setdefault(stream.request.id, []).append(stream)

    def remove(self, stream: InferenceStream) -> None:
        """Stop tracking ``stream``."""
        with self._lock:
            streams = self._streams.get(stream.request.id, [])
            if stream in streams:
                streams.remove(stream)
            if not streams:
                self._streams.pop(stream.request.id, None)

    def __len__(self) -> int:
        with self._lock:
            return sum(map(len, self._streams.values()))

    def cancel(self, request_id: str, identity: Identity | None, admin: bool = False) -> int:
        """Cancel the requests with ``request_id`` that ``identity`` owns (any, when ``admin``).

        Returns how many were cancelled; NOT_FOUND when there is none the caller may see,
        so that request ids of other keys are not revealed.
        """
        with self._lock:
            streams = [s for s in self._streams.get(request_id, []) if _may_cancel(identity, s.request, admin)]
        if not streams:
            raise NotFound(f"no running request {request_id!r}", details={"request_id": request_id})
        for stream in streams:
            stream.job.cancel()  # the engine ends it; its reader gets REQUEST_CANCELLED
        return len(streams)


def _may_cancel(identity: Identity | None, request: InferenceRequest, admin: bool) -> bool:
    if identity is None:
        return False
    if admin:
        return True
    owner = request.identity
    return owner is not None and owner.kind == identity.kind and owner.id == identity.id
