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

from ..convert.quantize import OPTIMIZATIONS
from ..kernel.errors import ServiceUnavailable
from .context import get_kernel, json_body, page_query, require
from .openai_schemas import ConvertSchema

bp = Blueprint("convert", __name__, url_prefix="/v1/convert")


def _jobs() -> Any:
    service = get_kernel().services.get("conversions")
    if service is None:
        raise ServiceUnavailable("the conversions plugin is not loaded", details={"plugin_id": "conversions"})
    return service


@bp.post("")
def create_conversion() -> tuple[Response, int]:
    """Queue a conversion (admin)."""
    identity = require("admin", "convert")
    body = json_body(ConvertSchema())
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


@bp.get("")
def list_conversions() -> Response:
    """A page of the conversion jobs, newest first (admin): ``limit`` ≤ 100, ``offset``."""
    identity = require("admin", "convert")
    limit, offset = page_query()
    rows = _jobs().list(identity, limit=limit + 1, offset=offset)
    more = len(rows) > limit
    data = [_jobs().kind.describe(r) for r in rows[:limit]]
    return jsonify({"object": "list", "data": data, "has_more": more, "next_offset": offset + limit if more else None})


@bp.get("/<int:job_id>")
def get_conversion(job_id: int) -> Response:
    """One conversion job: status, progress, output file, size reduction, duration (admin)."""
    identity = require("admin", "convert")
    jobs = _jobs()
    return jsonify(jobs.kind.describe(jobs.get(job_id, identity)))


@bp.post("/<int:job_id>/cancel")
def cancel_conversion(job_id: int) -> Response:
    """Cancel a queued or running conversion; its partial output is removed (admin)."""
    identity = require("admin", "convert")
    jobs = _jobs()
    return jsonify(jobs.kind.describe(jobs.cancel(job_id, identity)))
