"""Server-Sent Events and fan-out: how every blueprint streams and runs several requests at once.

:func:`sse_response` frames events as ``data: {json}`` lines and owns the request's stream
slot: the generator's ``finally`` releases it (and cancels what the stream left running)
when the stream ends however it ends, and the response's close does so again (idempotent;
Werkzeug skips ``close()`` after a reset). :func:`complete_many` is the one fan-out: a
bounded pool, the first failure cancelling the others.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, cast

from flask import Response, g, stream_with_context

from ..kernel.inference import InferenceStream
from ..kernel.kernel import Kernel
from ..kernel.streams import StreamLease
from ..kernel.types import Chunk, InferenceRequest, InferenceResponse, new_id

#: Most requests of one fan-out served at the same time (the rest wait for a free worker).
MAX_WORKERS = 16


def native_error_event(exc: BaseException) -> dict[str, Any]:
    """The in-band error event of the native API: ``{"error": {"code", "message"}}``."""
    code = getattr(exc, "code", "INFERENCE_FAILED")
    message = getattr(exc, "message", "inference failed")
    return {"error": {"code": code, "message": message}}


def sse_response(
    events: Iterator[dict[str, Any]],
    on_close: Callable[[], None],
    *,
    error_event: Callable[[BaseException], dict[str, Any]] = native_error_event,
    catch: type[BaseException] = Exception,
    done: str | None = None,
) -> Response:
    """Stream ``events`` as ``data: {json}`` lines, unbuffered; a client that leaves cancels.

    An exception of type ``catch`` raised while streaming (headers are sent) becomes the event
    ``error_event(exc)``; ``done`` (OpenAI's ``[DONE]``) is sent last. ``on_close`` runs when
    the response ends however it ends (even if never iterated).
    """
    lease = g.pop("stream_lease", None)  # the stream slot taken at admission: the response owns it now

    def generate() -> Iterator[str]:
        try:
            try:
                for event in events:
                    yield f"data: {json.dumps(event)}\n\n"
            except catch as exc:
                yield f"data: {json.dumps(error_event(exc))}\n\n"
            if done is not None:
                yield f"data: {done}\n\n"
        finally:
            end_stream(on_close, lease)

    response = Response(stream_with_context(generate()), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.call_on_close(lambda: end_stream(on_close, lease))
    return response


def end_stream(on_close: Callable[[], None], lease: StreamLease | None) -> None:
    """Cancel what the stream left running and give its slot back (idempotent).

    Called when the stream's generator ends and again when the response closes: Werkzeug's
    server skips ``close()`` when the client resets the connection after the last chunk (it
    drains the socket first), so the generator's own end must release the slot too.
    """
    try:
        on_close()
    finally:
        if lease is not None:
            lease.release()


@dataclass
class Completed:
    """One request of a fan-out, served to the end: its response and the chunks it streamed."""

    response: InferenceResponse
    chunks: list[Chunk] = field(default_factory=list)


def complete_many(kernel: Kernel, requests: Sequence[InferenceRequest], *, together: bool = False) -> list[Completed]:
    """Serve ``requests`` concurrently and return them completed, in the same order.

    At most :data:`MAX_WORKERS` are served at once. By default each is admitted when a worker
    takes it (independent items of a batch). ``together=True`` admits every request before any
    is served, all or none (the choices of one OpenAI request: a refusal answers before any
    work, and the sequences join the engine at the same step, so seeded samples repeat). The
    first that fails cancels the others (each stops at its next token; waiting ones never
    start), and once every one has stopped its error is raised.
    """
    if not requests:
        return []
    admitted: list[InferenceStream | None] = [None] * len(requests)
    if together or len(requests) == 1:
        if together and len(requests) > 1 and len({r.model for r in requests}) == 1:  # one engine, one step
            group = new_id("group")
            for request in requests:
                request.group, request.group_size = group, len(requests)
        try:
            for n, request in enumerate(requests):
                admitted[n] = kernel.generate(request)
        except BaseException:
            for stream in admitted:
                if stream is not None:
                    stream.close()
            raise
    if len(requests) == 1:  # nothing to overlap: served on the caller's thread
        stream = cast(InferenceStream, admitted[0])
        try:
            chunks = list(stream)
        finally:
            stream.close()
        assert stream.response is not None
        return [Completed(stream.response, chunks)]
    cancelled = threading.Event()
    lock = threading.Lock()
    failures: list[BaseException] = []

    def run(n: int) -> Completed | None:
        stream = admitted[n]
        try:
            if cancelled.is_set():
                return None
            if stream is None:
                stream = kernel.generate(requests[n])
            chunks = []
            for chunk in stream:
                if cancelled.is_set():
                    return None
                chunks.append(chunk)
            assert stream.response is not None
            return Completed(stream.response, chunks)
        except BaseException as exc:
            with lock:
                failures.append(exc)
            cancelled.set()
            raise
        finally:
            if stream is not None:
                stream.close()  # cancels an unfinished stream; a finished one is left as it is

    with ThreadPoolExecutor(max_workers=min(len(requests), MAX_WORKERS), thread_name_prefix="fanout") as pool:
        futures = [pool.submit(run, n) for n in range(len(requests))]
        wait(futures, return_when=FIRST_EXCEPTION)
        if cancelled.is_set():
            for future in futures:
                future.cancel()
    for stream in admitted:  # admitted together but never taken by a worker (cancelled): end them too
        if stream is not None:
            stream.close()
    if failures:
        raise failures[0]
    return [cast(Completed, future.result()) for future in futures]  # none cancelled: all finished
