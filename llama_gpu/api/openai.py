"""The OpenAI-compatible API (``/v1``): the official ``openai`` client works unchanged.

Chat and text completions (streamed as the OpenAI API frames them, ending with
``data: [DONE]``), embeddings, models, and extensions: model load/unload/status and a
batch of chat requests. Errors use the OpenAI shape (see ``errors.py``).
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

from flask import Blueprint, Response, g, jsonify

from ..kernel.backend import LoadOptions
from ..kernel.errors import InvalidInput, LlamaGPUError
from ..kernel.types import Chunk, InferenceRequest, InferenceResponse
from .context import count_of, current_identity, get_kernel, json_body, number_of
from .errors import openai_error_body
from .openai_schemas import (
    COMPLETION_DEFAULT_MAX_TOKENS,
    MAX_LOGPROB_ENTRIES,
    MAX_REQUEST_SEQUENCES,
    BatchSchema,
    ChatCompletionSchema,
    CompletionSchema,
    EmbeddingSchema,
    ModelLoadV1Schema,
    openai_request,
)
from .routing import json_object, route
from .streaming import complete_many, sse_response

bp = Blueprint("openai", __name__, url_prefix="/v1")

OWNER = "llama-gpu"


# ----------------------------------------------------------------------------- helpers
def _check_sizes(sequences: int, max_tokens: int, logprobs: int | None) -> None:
    """INVALID_INPUT (with the limit) when a request asks for too many sequences or log-probabilities."""
    if sequences > MAX_REQUEST_SEQUENCES:
        raise InvalidInput(
            f"the request asks for {sequences} sequences (prompts x best_of, or n); at most {MAX_REQUEST_SEQUENCES}",
            details={"field": "best_of", "sequences": sequences, "limit": MAX_REQUEST_SEQUENCES},
        )
    if logprobs is not None:
        entries = sequences * max_tokens * (logprobs + 1)
        if entries > MAX_LOGPROB_ENTRIES:
            raise InvalidInput(
                f"the request asks for {entries} log-probabilities (sequences x max_tokens x (top_logprobs + 1)); "
                f"at most {MAX_LOGPROB_ENTRIES}",
                details={"field": "logprobs", "entries": entries, "limit": MAX_LOGPROB_ENTRIES},
            )


def _usage(responses: list[InferenceResponse]) -> dict[str, int]:
    prompt = responses[0].prompt_tokens if responses else 0
    completion = sum(r.completion_tokens for r in responses)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _chat_logprobs(chunks: list[Chunk]) -> dict[str, Any]:
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {
        "content": [
            {
                **entry(c.text, c.logprob or 0.0),
                "top_logprobs": [entry(t, lp) for t, lp in (c.top_logprobs or {}).items()],
            }
            for c in chunks
        ]
    }


def _completion_logprobs(chunks: list[Chunk], offset: int) -> dict[str, Any]:
    offsets, position = [], offset
    for c in chunks:
        offsets.append(position)
        position += len(c.text)
    return {
        "tokens": [c.text for c in chunks],
        "token_logprobs": [c.logprob for c in chunks],
        "top_logprobs": [c.top_logprobs for c in chunks],
        "text_offset": offsets,
    }


def _sse(events: Iterator[dict[str, Any]], on_close: Callable[[], None]) -> Response:
    """Stream as the OpenAI API does: errors in its shape, then ``[DONE]``."""
    return sse_response(
        events,
        on_close,
        error_event=lambda exc: {"error": openai_error_body(cast(LlamaGPUError, exc))["error"]},
        catch=LlamaGPUError,
        done="[DONE]",
    )


# ----------------------------------------------------------------------------- chat
@route(
    bp,
    "/chat/completions",
    methods=("POST",),
    permission="write",
    resource="chat",
    rate_limit="infer",
    summary="OpenAI chat completions",
    body=ChatCompletionSchema,
    response=json_object("id", "object", "choices"),
    streamable=True,
    streams=True,
    cost=lambda body: number_of(body.get("n")),
)
def chat_completions() -> Response:
    """Chat completion, streamed or not, with ``n`` choices."""
    body = json_body()
    logprobs = ChatCompletionSchema.logprobs_of(body)
    _check_sizes(body["n"], ChatCompletionSchema.max_tokens_of(body), logprobs)
    requests = ChatCompletionSchema().to_requests(body, id=g.request_id, identity=current_identity())
    created, cid = int(time.time()), f"chatcmpl-{g.request_id}"
    if body["stream"]:
        return _stream_chat(requests, body, cid, created)
    results = [(done.response, done.chunks) for done in complete_many(get_kernel(), requests, together=True)]
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": response.text},
            "logprobs": _chat_logprobs(chunks) if logprobs is not None else None,
            "finish_reason": _finish(response.finish_reason),
        }
        for i, (response, chunks) in enumerate(results)
    ]
    return jsonify(
        {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": results[0][0].model,
            "system_fingerprint": None,
            "choices": choices,
            "usage": _usage([r for r, _ in results]),
        }
    )


def _stream_chat(requests: list[InferenceRequest], body: dict[str, Any], cid: str, created: int) -> Response:
    head = {"id": cid, "object": "chat.completion.chunk", "created": created, "system_fingerprint": None}

    def choice(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}

    return _stream_choices(
        requests,
        head,
        body,
        start=lambda i, _request: [choice(i, {"role": "assistant", "content": ""})],
        chunk=lambda i, request, c: choice(
            i, {"content": c.text}, logprobs=_chat_logprobs([c]) if request.logprobs is not None else None
        ),
        finish=lambda i, reason: choice(i, {}, reason),
    )


def _stream_choices(
    requests: list[InferenceRequest],
    head: dict[str, Any],
    body: dict[str, Any],
    *,
    start: Callable[[int, InferenceRequest], list[dict[str, Any]]],
    chunk: Callable[[int, InferenceRequest, Chunk], dict[str, Any]],
    finish: Callable[[int, str], dict[str, Any]],
) -> Response:
    """Stream the choices one after another as OpenAI frames them; ``include_usage`` adds a last frame."""
    kernel = get_kernel()
    first = kernel.generate(requests[0])  # refusals (bad input, unknown model) answer before streaming
    opened = [first]

    def events() -> Iterator[dict[str, Any]]:
        responses = []
        for index, request in enumerate(requests):
            stream = first if index == 0 else kernel.generate(request)
            if index:
                opened.append(stream)
            model = stream.model.spec.id
            for opening in start(index, request):
                yield {**head, "model": model, "choices": [opening]}
            for item in stream:
                yield {**head, "model": model, "choices": [chunk(index, request, item)]}
            assert stream.response is not None
            responses.append(stream.response)
            yield {**head, "model": model, "choices": [finish(index, _finish(stream.response.finish_reason))]}
        if (body.get("stream_options") or {}).get("include_usage"):
            yield {**head, "model": responses[0].model, "choices": [], "usage": _usage(responses)}

    return _sse(events(), on_close=lambda: [s.close() for s in opened])


# ----------------------------------------------------------------------------- completions
@route(
    bp,
    "/completions",
    methods=("POST",),
    permission="write",
    resource="completions",
    rate_limit="infer",
    summary="OpenAI completions",
    body=CompletionSchema,
    response=json_object("id", "object", "choices"),
    streamable=True,
    streams=True,
    cost=lambda body: count_of(body.get("prompt")) * max(number_of(body.get("best_of")), number_of(body.get("n"))),
)
def completions() -> Response:
    """Text completion for a prompt or a list of prompts; ``best_of`` keeps the likeliest."""
    body = json_body()
    if body.get("suffix"):
        raise InvalidInput("suffix (insertion) is not supported by these models", details={"field": "suffix"})
    prompts = [body["prompt"]] if isinstance(body["prompt"], str) else body["prompt"]
    n, best_of = body["n"], body.get("best_of") or body["n"]
    if best_of < n:
        raise InvalidInput("best_of must be at least n", details={"field": "best_of"})
    if body["stream"] and best_of != n:
        raise InvalidInput("best_of cannot be used with stream", details={"field": "best_of"})
    max_tokens = body.get("max_tokens") or COMPLETION_DEFAULT_MAX_TOKENS
    logprobs = body.get("logprobs")
    sample_logprobs = logprobs if logprobs is not None else (0 if best_of > n else None)
    _check_sizes(len(prompts) * best_of, max_tokens, sample_logprobs)
    identity = current_identity()
    requests = [
        openai_request(
            body,
            id=g.request_id,
            identity=identity,
            prompt=prompt,
            max_tokens=max_tokens,
            logprobs=sample_logprobs,
            index=p * best_of + i,
        )
        for p, prompt in enumerate(prompts)
        for i in range(best_of)
    ]
    created, cid = int(time.time()), f"cmpl-{g.request_id}"
    if body["stream"]:
        return _stream_completions(requests, body, cid, created)
    results = [(done.response, done.chunks) for done in complete_many(get_kernel(), requests, together=True)]
    choices = []
    for p, prompt in enumerate(prompts):
        candidates = results[p * best_of : (p + 1) * best_of]
        if best_of > n:
            candidates = sorted(candidates, key=lambda rc: -sum(c.logprob or 0.0 for c in rc[1]))[:n]
        for response, chunks in candidates:
            prefix = prompt if body["echo"] else ""
            choices.append(
                {
                    "index": len(choices),
                    "text": prefix + response.text,
                    "logprobs": _completion_logprobs(chunks, len(prefix)) if logprobs is not None else None,
                    "finish_reason": _finish(response.finish_reason),
                }
            )
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for p in range(len(prompts)):
        part = _usage([r for r, _ in results[p * best_of : (p + 1) * best_of]])
        usage = {k: usage[k] + part[k] for k in usage}
    return jsonify(
        {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": results[0][0].model,
            "system_fingerprint": None,
            "choices": choices,
            "usage": usage,
        }
    )


def _stream_completions(requests: list[InferenceRequest], body: dict[str, Any], cid: str, created: int) -> Response:
    head = {"id": cid, "object": "text_completion", "created": created}

    def choice(index: int, text: str, finish: str | None = None) -> dict[str, Any]:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}

    return _stream_choices(
        requests,
        head,
        body,
        start=lambda i, request: [choice(i, request.prompt)] if body["echo"] else [],
        chunk=lambda i, _request, c: choice(i, c.text),
        finish=lambda i, reason: choice(i, "", reason),
    )


# ----------------------------------------------------------------------------- embeddings
@route(
    bp,
    "/embeddings",
    methods=("POST",),
    permission="write",
    resource="embeddings",
    rate_limit="infer",
    summary="OpenAI embeddings",
    body=EmbeddingSchema,
    response=json_object("object", "data", "model", "usage"),
)
def embeddings() -> Response:
    """Embeddings of a string, strings, or token arrays; ``float`` or ``base64`` encoded."""
    body = json_body()
    kernel = get_kernel()
    raw = body["input"]
    items = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else raw
    model_id = kernel.resolve_model(body["model"])
    if items and isinstance(items[0], list):  # token arrays are read with the model's own vocabulary
        items = kernel.detokenize(model_id, items)
    vectors = kernel.embed(model_id, items)
    tokens = kernel.count_tokens(model_id, items)
    data = []
    for index, vector in enumerate(vectors):
        encoded: Any = vector
        if body["encoding_format"] == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return jsonify(
        {"object": "list", "data": data, "model": model_id, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    )


# ----------------------------------------------------------------------------- models
def _model_object(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": OWNER}


@route(
    bp,
    "/models",
    permission="read",
    resource="models",
    summary="OpenAI model list",
    response=json_object("object", "data"),
)
def list_models() -> Response:
    """Every known model, as the OpenAI API lists them."""
    kernel = get_kernel()
    created = int(kernel.started_at or time.time())
    return jsonify({"object": "list", "data": [_model_object(model_id, created) for model_id in kernel.model_ids()]})


@route(
    bp,
    "/models/<model_id>",
    permission="read",
    resource="models",
    summary="OpenAI model",
    response=json_object("id", "object"),
)
def get_model(model_id: str) -> Response:
    """One model; ``model_not_found`` (with the available ids) when it does not exist."""
    kernel = get_kernel()
    return jsonify(_model_object(kernel.resolve_model(model_id), int(kernel.started_at or time.time())))


@route(
    bp,
    "/models/<model_id>/status",
    permission="read",
    resource="models",
    rate_limit="models",
    summary="Model status (extension)",
    response=json_object("id", "status", "metrics"),
)
def model_status(model_id: str) -> Response:
    """``GET /v1/models/{id}/status``: load state, memory and live metrics."""
    info = get_kernel().describe_model(model_id)
    perf = info["performance"]
    return jsonify(
        {
            "id": info["id"],
            "object": "model",
            "status": info["status"],
            "backend": info["backend"],
            "memory_usage": info.get("memory_usage", 0),
            "metrics": {
                "total_requests": perf["total_requests"],
                "avg_latency_ms": round(perf["avg_latency"] * 1000, 2),
                "tokens_per_second": perf["tokens_per_second"],
                "last_used": info["last_used"],
            },
        }
    )


@route(
    bp,
    "/models/<model_id>/load",
    methods=("POST",),
    permission="admin",
    resource="models",
    rate_limit="models",
    summary="Load a model (extension)",
    body=ModelLoadV1Schema,
    response=json_object("id", "status"),
    body_required=False,
)
def load_model(model_id: str) -> Response:
    """Load a model (extension)."""
    body = json_body()
    options = LoadOptions(prefer_gpu=body["prefer_gpu"], quantization=body.get("quantization"))
    info = get_kernel().load_model(model_id, backend=body.get("backend"), options=options)
    return jsonify(
        {
            "id": info["id"],
            "object": "model",
            "status": info["status"],
            "backend": info["backend"],
            "memory_usage": info.get("memory_usage", 0),
            "load_time": info.get("load_time"),
        }
    )


@route(
    bp,
    "/models/<model_id>/unload",
    methods=("POST",),
    permission="admin",
    resource="models",
    rate_limit="models",
    summary="Unload a model (extension)",
    response=json_object("id", "status"),
)
def unload_model(model_id: str) -> Response:
    """Unload a model (extension)."""
    freed = get_kernel().unload_model(model_id)
    return jsonify(
        {
            "id": get_kernel().resolve_model(model_id),
            "object": "model",
            "status": "unloaded",
            "freed_memory": freed,
        }
    )


# ----------------------------------------------------------------------------- batch
@route(
    bp,
    "/batch",
    methods=("POST",),
    permission="write",
    resource="chat",
    rate_limit="batch",
    summary="Batch of chat requests (extension)",
    body=BatchSchema,
    response=json_object("object", "responses"),
    cost=lambda body: count_of(body.get("requests")),
)
def batch() -> Response:
    """Several chat requests at once, run concurrently (extension)."""
    body = json_body()
    ids = [item["id"] for item in body["requests"]]
    if len(set(ids)) != len(ids):
        raise InvalidInput("request ids must be unique within a batch", details={"field": "requests"})
    requests = BatchSchema().to_requests(body, id=g.request_id, identity=current_identity())
    created = int(time.time())
    results = [(done.response, done.chunks) for done in complete_many(get_kernel(), requests, together=True)]
    responses = [
        {
            "id": item_id,
            "object": "chat.completion",
            "created": created,
            "model": response.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": response.text},
                    "finish_reason": _finish(response.finish_reason),
                }
            ],
            "usage": _usage([response]),
        }
        for item_id, (response, _) in zip(ids, results, strict=True)
    ]
    return jsonify({"object": "batch_completion", "responses": responses})
