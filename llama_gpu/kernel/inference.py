"""One request through the pipeline: model, filters, chunk filters, response filters, events.

The model is acquired first (loaded on demand when ``LLAMA_GPU_AUTOLOAD`` is on) so that
chat messages are rendered with its template before ``prepare_request`` filters see the
prompt.

``start_inference`` does everything that can refuse a request (draining, filters, an
unknown model) before it returns, so an HTTP layer can still answer with a 4xx; the
returned :class:`InferenceStream` then yields chunks. Per-token work touches no event
bus and no database: one event when a request starts and one when it ends.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

from .backend import LoadedModel
from .errors import InferenceFailed, LlamaGPUError
from .types import Chunk, InferenceRequest, InferenceResponse

if TYPE_CHECKING:
    from .kernel import Kernel


class InferenceStream:
    """The chunks of one request; ``response`` is set once they are all consumed."""

    def __init__(self, kernel: Kernel, request: InferenceRequest, model: LoadedModel) -> None:
        self.request = request
        self.model = model
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
        """Cancel: stop generating at the next token and release the request."""
        if self._closed:
            return
        if self._started:
            self._gen.close()  # runs _run's GeneratorExit branch, which finishes the request
        else:
            self._closed = True
            self._finish(ok=False, tokens=0, reason="cancelled")

    def _finish(self, ok: bool, tokens: int, reason: str, error: LlamaGPUError | None = None) -> None:
        self._closed = True
        seconds = self.response.inference_time if self.response else time.perf_counter() - self._admitted
        self._kernel.registry.release(
            self.model.spec.id, tokens=tokens, seconds=seconds, ok=ok, keep_alive=self.request.keep_alive
        )
        self._kernel.leave_request(ok, tokens)
        data: dict[str, Any] = {"request_id": self.request.id, "model": self.model.spec.id}
        if ok and self.response is not None:
            data.update(
                tokens_generated=self.response.completion_tokens,
                inference_time=round(self.response.inference_time, 6),
                backend=self.response.backend,
                finish_reason=self.response.finish_reason,
            )
            self._kernel.publish("inference_completed", data)
        else:
            data.update(reason=reason, error=error.code if error else None)
            self._kernel.publish("inference_failed", data)

    def _run(self) -> Generator[Chunk, None, InferenceResponse]:
        kernel, request, model = self._kernel, self.request, self.model
        start = time.perf_counter()
        first: float | None = None
        texts: list[str] = []
        count = 0
        finish: str | None = None
        position = 0
        try:
            for token in model.generate(request):
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
                prompt_tokens=model.count_tokens(request.prompt),
                completion_tokens=count,
                finish_reason=finish or ("length" if count >= request.max_tokens else "stop"),
                inference_time=time.perf_counter() - start,
                time_to_first_token=first,
            )
            kernel.run_pipeline("process_response", request=request, response=response)
        except GeneratorExit:
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
    model = None
    try:
        if not isinstance(request.prompt, str):
            raise InferenceFailed("request.prompt must be a string")
        model = kernel.registry.acquire(request.model)
        if request.messages is not None:
            request.prompt = model.render_chat(request.messages)
        kernel.run_pipeline("prepare_request", request=request, kernel=kernel)
    except BaseException as exc:
        if model is not None:
            kernel.registry.release(model.spec.id, tokens=0, seconds=0.0, ok=False, keep_alive=request.keep_alive)
        kernel.leave_request(ok=False)
        kernel.publish(
            "inference_failed",
            {
                "request_id": request.id,
                "model": request.model,
                "reason": "refused",
                "error": exc.code if isinstance(exc, LlamaGPUError) else type(exc).__name__,
            },
        )
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
    return InferenceStream(kernel, request, model)
