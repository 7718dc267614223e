"""Model conversion jobs over the OpenAI-style ``/v1`` API (admin only; errors in the OpenAI shape).

- ``POST /v1/convert`` ``{source_model, target_format: "gguf", quantization, optimization?, output?}`` →
  202 ``{job_id, status: "processing", estimated_duration, progress}``. ``source_model`` is a
  registered model id, a .gguf file or a Hugging Face safetensors directory (Qwen2, Llama) in the
  models directory (no URLs, no paths out of it);
  without ``quantization``, ``optimization`` (``size`` / ``balanced`` / ``quality``) picks one.
- ``GET /v1/convert`` the jobs, newest first; ``GET /v1/convert/{job_id}`` one job
  ``{job_id, status, output_file, size_reduction, duration, progress, …}``.
- ``POST /v1/convert/{job_id}/cancel``: a queued or running job ends ``cancelled``, its partial
  output removed.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from ...api.context import current_identity, get_kernel, json_body, page_query
from ...api.openai_schemas import ConvertSchema
from ...api.routing import json_object, route
from ...api.schemas import PageQuerySchema
from ...convert.quantize import OPTIMIZATIONS
from ..keys import CONVERSIONS

bp = Blueprint("convert", __name__, url_prefix="/v1/convert")


def _jobs() -> Any:
    return get_kernel().service(CONVERSIONS)


@route(
    bp,
    "",
    methods=("POST",),
    permission="admin",
    resource="convert",
    rate_limit="models",
    summary="Re-quantize a GGUF model of the models directory into a new GGUF file, as a background job (admin, 202)",
    body=ConvertSchema,
    response=json_object("job_id", "status", "estimated_duration", "progress"),
    status=202,
)
def create_conversion() -> tuple[Response, int]:
    """Queue a conversion (admin)."""
    identity = current_identity()
    body = json_body()
    quantization = body.get("quantization") or OPTIMIZATIONS.get(body.get("optimization") or "size")
    row = _jobs().submit_conversion(
        body["source_model"],
        quantization,
        identity,
        output=body.get("output"),
        optimization=body.get("optimization"),
        target_format=body["target_format"],
    )
    info = _jobs().kind.describe(row)
    keys = ("job_id", "status", "estimated_duration", "progress", "source_model", "quantization", "output_file")
    return jsonify({k: info[k] for k in keys}), 202


@route(
    bp,
    "",
    permission="admin",
    resource="convert",
    rate_limit="models",
    summary="Conversion jobs, newest first (admin)",
    response=json_object("object", "data"),
    query=PageQuerySchema,
)
def list_conversions() -> Response:
    """A page of the conversion jobs, newest first (admin): ``limit`` ≤ 100, ``offset``."""
    identity = current_identity()
    limit, offset = page_query()
    rows = _jobs().list(identity, limit=limit + 1, offset=offset)
    more = len(rows) > limit
    data = [_jobs().kind.describe(r) for r in rows[:limit]]
    return jsonify({"object": "list", "data": data, "has_more": more, "next_offset": offset + limit if more else None})


@route(
    bp,
    "/<int:job_id>",
    permission="admin",
    resource="convert",
    rate_limit="models",
    summary="A conversion job: status, progress, output file, size reduction, duration (admin)",
    response=json_object("job_id", "status", "output_file", "size_reduction", "duration", "progress"),
)
def get_conversion(job_id: int) -> Response:
    """One conversion job: status, progress, output file, size reduction, duration (admin)."""
    identity = current_identity()
    jobs = _jobs()
    return jsonify(jobs.kind.describe(jobs.get(job_id, identity)))


@route(
    bp,
    "/<int:job_id>/cancel",
    methods=("POST",),
    permission="admin",
    resource="convert",
    rate_limit="models",
    summary="Cancel a queued or running conversion job; its partial output is removed (admin)",
    response=json_object("job_id", "status"),
)
def cancel_conversion(job_id: int) -> Response:
    """Cancel a queued or running conversion; its partial output is removed (admin)."""
    identity = current_identity()
    jobs = _jobs()
    return jsonify(jobs.kind.describe(jobs.cancel(job_id, identity)))
