"""Native inference: ``/api/v1/infer``, ``stream_infer``, ``batch_infer``, cancelling, and the seed aliases.

``bp`` serves the native routes; ``aliases_bp`` serves ``/api/v1/generate``,
``/api/v1/generate/stream`` and ``/api/v1/batch/generate`` on the same kernel. Batches run
their items concurrently through :func:`~.streaming.complete_many`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Blueprint, Response, g, jsonify

from ..kernel.inference import InferenceStream
from ..kernel.types import InferenceResponse, new_id, utc_iso
from .context import count_of, current_identity, get_kernel, json_body
from .responses import (
    BatchGenerateResponseSchema,
    BatchInferResponseSchema,
    CancelResponseSchema,
    GenerateResponseSchema,
    InferResponseSchema,
)
from .routing import route
from .schemas import BatchGenerateSchema, BatchInferSchema, GenerateSchema, InferSchema, StreamInferSchema
from .streaming import complete_many, sse_response

bp = Blueprint("infer", __name__, url_prefix="/api/v1")
aliases_bp = Blueprint("aliases", __name__, url_prefix="/api/v1")


@route(
    bp,
    "/infer",
    methods=("POST",),
    permission="write",
    resource="infer",
    rate_limit="infer",
    streamable=True,
    summary="Generate text",
    body=InferSchema,
    response=InferResponseSchema,
    streams=True,
)
def infer() -> Response:
    """Generate text for ``text``; ``stream: true`` answers with Server-Sent Events."""
    started = time.perf_counter()
    body = json_body()
    request = InferSchema().to_request(body, id=g.request_id, identity=current_identity())
    stream = get_kernel().generate(request)
    if body["stream"]:
        return sse_response(_sse_events(stream), on_close=stream.close)
    response = stream.result()
    return jsonify(
        {
            "success": True,
            "result": {
                "generated_text": response.text,
                "tokens_generated": response.completion_tokens,
                "inference_time": round(response.inference_time, 6),
                "model_used": response.model,
                "backend": response.backend,
            },
            "metadata": {
                "request_id": request.id,
                "timestamp": utc_iso(),
                "processing_time": round(time.perf_counter() - started, 6),
            },
        }
    )


@route(
    bp,
    "/requests/<request_id>",
    methods=("DELETE",),
    permission="write",
    resource="requests",
    summary="Cancel a running or queued request (its own key, or an admin)",
    response=CancelResponseSchema,
)
def cancel_request(request_id: str) -> Response:
    """Cancel a running or queued request: its sequence is freed at the engine's next step."""
    identity = current_identity()
    cancelled = get_kernel().cancel_request(request_id, identity)
    return jsonify({"success": True, "request_id": request_id, "cancelled": cancelled})


def _sse_events(stream: InferenceStream) -> Iterator[dict[str, object]]:
    last = None
    for chunk in stream:
        if last is not None:
            yield {"token": last.text, "position": last.index, "is_complete": False}
        last = chunk
    assert stream.response is not None
    final = {"token": last.text if last else "", "position": last.index if last else 0, "is_complete": True}
    final["final_text"] = stream.response.text
    yield final


def _usage(response: InferenceResponse) -> dict[str, int]:
    return {
        "prompt_tokens": response.prompt_tokens,
        "completion_tokens": response.completion_tokens,
        "total_tokens": response.prompt_tokens + response.completion_tokens,
    }


# ---------------------------------------------------------------- native routes
@route(
    bp,
    "/stream_infer",
    methods=("POST",),
    permission="write",
    resource="infer",
    rate_limit="stream",
    summary="Generate text as Server-Sent Events",
    body=StreamInferSchema,
    streams=True,
)
def stream_infer() -> Response:
    """Generate text for ``text`` as Server-Sent Events (``token``, ``position``, ``is_complete``)."""
    body = json_body()
    request = StreamInferSchema().to_request(body, id=g.request_id, identity=current_identity())
    stream = get_kernel().generate(request)
    return sse_response(_sse_events(stream), on_close=stream.close)


@route(
    bp,
    "/batch_infer",
    methods=("POST",),
    permission="write",
    resource="infer",
    rate_limit="batch",
    cost=lambda body: count_of(body.get("inputs")),
    summary="Generate for several inputs",
    body=BatchInferSchema,
    response=BatchInferResponseSchema,
)
def batch_infer() -> Response:
    """Generate text for every item of ``inputs`` concurrently; results in input order."""
    started = time.perf_counter()
    body = json_body()
    items = body["inputs"]
    requests = BatchInferSchema().to_requests(body, id=g.request_id, identity=current_identity())
    responses = [done.response for done in complete_many(get_kernel(), requests)]
    return jsonify(
        {
            "success": True,
            "results": [
                {
                    "id": item["id"],
                    "generated_text": response.text,
                    "tokens_generated": response.completion_tokens,
                    "inference_time": round(response.inference_time, 6),
                }
                for item, response in zip(items, responses, strict=True)
            ],
            "metadata": {
                "batch_id": new_id("batch"),
                "total_processing_time": round(time.perf_counter() - started, 6),
                "items_processed": len(responses),
                "backend": responses[0].backend,
            },
        }
    )


# ---------------------------------------------------------------- seed aliases
@route(
    aliases_bp,
    "/generate",
    methods=("POST",),
    permission="write",
    resource="infer",
    rate_limit="infer",
    streamable=True,
    summary="Generate (seed alias)",
    body=GenerateSchema,
    response=GenerateResponseSchema,
    streams=True,
)
def generate() -> Response:
    """Generate text for ``prompt``: ``{text, usage, latency}``, or events with ``stream: true``."""
    return _generate(stream=None)


@route(
    aliases_bp,
    "/generate/stream",
    methods=("POST",),
    permission="write",
    resource="infer",
    rate_limit="stream",
    summary="Generate as Server-Sent Events (seed alias)",
    body=GenerateSchema,
    streams=True,
)
def generate_stream() -> Response:
    """Generate text for ``prompt`` as Server-Sent Events (``token``, ``finished``; ``usage`` last)."""
    return _generate(stream=True)


def _generate(stream: bool | None) -> Response:
    started = time.perf_counter()
    body = json_body()
    streaming = body["stream"] if stream is None else stream
    request = GenerateSchema().to_request(body, id=g.request_id, identity=current_identity(), stream=streaming)
    generation = get_kernel().generate(request)
    if streaming:
        return sse_response(_generate_events(generation), on_close=generation.close)
    response = generation.result()
    return jsonify(
        {"text": response.text, "usage": _usage(response), "latency": round(time.perf_counter() - started, 6)}
    )


def _generate_events(stream: InferenceStream) -> Iterator[dict[str, object]]:
    for chunk in stream:
        yield {"token": chunk.text, "finished": False}
    assert stream.response is not None
    yield {"token": "", "finished": True, "usage": _usage(stream.response)}


@route(
    aliases_bp,
    "/batch/generate",
    methods=("POST",),
    permission="write",
    resource="infer",
    rate_limit="batch",
    cost=lambda body: count_of(body.get("requests")),
    summary="Generate for several prompts (seed alias)",
    body=BatchGenerateSchema,
    response=BatchGenerateResponseSchema,
)
def batch_generate() -> Response:
    """Generate text for every item of ``requests`` concurrently: ``{results: [{text, usage}]}``."""
    body = json_body()
    requests = BatchGenerateSchema().to_requests(body, id=g.request_id, identity=current_identity())
    responses = [done.response for done in complete_many(get_kernel(), requests)]
    return jsonify({"results": [{"text": r.text, "usage": _usage(r)} for r in responses]})
