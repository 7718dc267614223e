"""``POST /api/v1/infer``: one request through the kernel, as JSON or Server-Sent Events."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

from flask import Blueprint, Response, g, jsonify, stream_with_context

from ..kernel.inference import InferenceStream
from ..kernel.types import InferenceRequest
from .context import get_kernel, json_body, require, utc_timestamp
from .schemas import InferSchema

bp = Blueprint("infer", __name__, url_prefix="/api/v1")


@bp.post("/infer")
def infer() -> Response:
    """Generate text for ``text``; ``stream: true`` answers with Server-Sent Events."""
    started = time.perf_counter()
    identity = require("write", "infer")
    body = json_body(InferSchema())
    request = InferenceRequest(
        prompt=body["text"],
        model=body["model"],
        max_tokens=body["max_tokens"],
        temperature=body["temperature"],
        top_p=body["top_p"],
        stream=body["stream"],
        id=g.request_id,
        identity=identity,
        metadata={"input_field": "text"},
    )
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
                "timestamp": utc_timestamp(),
                "processing_time": round(time.perf_counter() - started, 6),
            },
        }
    )


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


def sse_response(events: Iterator[dict[str, object]], on_close: Callable[[], None]) -> Response:
    """Stream ``events`` as ``data: {json}`` lines, unbuffered; a client that leaves cancels.

    ``on_close`` runs when the response ends however it ends (even if never iterated).
    """

    def generate() -> Iterator[str]:
        try:
            for event in events:
                yield f"data: {json.dumps(event)}\n\n"
        except Exception as exc:  # noqa: BLE001 - headers are sent: report the error in-band
            code = getattr(exc, "code", "INFERENCE_FAILED")
            message = getattr(exc, "message", "inference failed")
            yield f"data: {json.dumps({'error': {'code': code, 'message': message}})}\n\n"
        finally:
            on_close()

    response = Response(stream_with_context(generate()), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.call_on_close(on_close)
    return response
