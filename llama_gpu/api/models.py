"""Model management: list, describe, load, unload (``/api/v1/models``)."""

from __future__ import annotations

import re
import time
from typing import Any

import psutil
from flask import Blueprint, Response, jsonify

from ..kernel.backend import LoadOptions
from ..kernel.errors import InvalidInput
from .context import get_kernel, json_body
from .routing import json_object, route
from .schemas import ModelLoadSchema

bp = Blueprint("models", __name__, url_prefix="/api/v1/models")


def human_bytes(value: int | None) -> str | None:
    """``6979321856`` → ``"6.5GB"`` (the API document's style)."""
    if value is None:
        return None
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1024
    return None  # pragma: no cover


def human_params(count: int | None) -> str | None:
    """``494032768`` → ``"0.5B"``, ``268098176`` → ``"268M"``."""
    if not count:
        return None
    return f"{count / 1e9:.1f}B" if count >= 1e9 * 0.45 else f"{round(count / 1e6)}M"


def parse_memory(value: str | int, total: int) -> int:
    """``"80%"``, ``"8GB"``, ``"512MB"`` or a byte count → bytes."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%|B|KB|MB|GB|TB)?\s*", value, re.IGNORECASE)
    if not match:
        raise InvalidInput("max_memory must look like '80%', '8GB' or a byte count", details={"field": "max_memory"})
    number, unit = float(match.group(1)), (match.group(2) or "B").upper()
    if unit == "%":
        return int(total * number / 100)
    return int(number * 1024 ** ("B", "KB", "MB", "GB", "TB").index(unit))


def summary(info: dict[str, Any]) -> dict[str, Any]:
    """One model in ``GET /models``."""
    item = {
        "id": info["id"],
        "name": info["name"],
        "size": human_params(info["parameters"]),
        "type": info["type"],
        "loaded": info["loaded"],
        "backend": info["backend"],
        "capabilities": info["capabilities"],
    }
    if info["loaded"]:
        item["memory_usage"] = human_bytes(info["memory_usage"])
    else:
        item["estimated_memory"] = human_bytes(info.get("estimated_memory"))
    if "unavailable" in info:
        item["unavailable"] = info["unavailable"]
    return item


@route(
    bp,
    "",
    permission="read",
    resource="models",
    rate_limit="models",
    summary="List models",
    response=json_object("success", "models", "total_models", "loaded_models"),
)
def list_models() -> Response:
    """Every known model, loaded or not."""
    kernel = get_kernel()
    infos = [kernel.describe_model(model_id) for model_id in kernel.model_ids()]
    return jsonify(
        {
            "success": True,
            "models": [summary(i) for i in infos],
            "total_models": len(infos),
            "loaded_models": sum(i["loaded"] for i in infos),
        }
    )


@route(
    bp,
    "/<model_id>",
    permission="read",
    resource="models",
    rate_limit="models",
    summary="Describe a model",
    response=json_object("success", "model"),
)
def get_model(model_id: str) -> Response:
    """Catalog facts, state and live performance of one model."""
    info = get_kernel().describe_model(model_id)
    model = {
        key: info.get(key)
        for key in ("id", "name", "architecture", "parameters", "vocab_size", "context_length", "loaded", "backend")
    }
    model.update(
        quantization=info["quantization"],
        memory_usage=human_bytes(info.get("memory_usage")) if info["loaded"] else None,
        performance=info["performance"],
        type=info["type"],
        format=info["format"],
        capabilities=info["capabilities"],
        status=info["status"],
    )
    if info["loaded"]:
        model["runtime"] = info["runtime"]
        model["engine"] = info.get("engine")
    return jsonify({"success": True, "model": model})


@route(
    bp,
    "/<model_id>/load",
    methods=("POST",),
    permission="admin",
    resource="models",
    rate_limit="models",
    summary="Load a model",
    body=ModelLoadSchema,
    body_required=False,
    response=json_object("success", "message", "model"),
)
def load_model(model_id: str) -> Response:
    """Load a model, choosing backend, quantization, memory cap and GPU preference."""
    body = json_body()
    max_memory = body.get("max_memory")
    options = LoadOptions(
        prefer_gpu=body["prefer_gpu"],
        quantization=body.get("quantization"),
        n_ctx=body.get("n_ctx"),
        max_memory=parse_memory(max_memory, psutil.virtual_memory().total) if max_memory is not None else None,
    )
    start = time.perf_counter()
    info = get_kernel().load_model(model_id, backend=body.get("backend"), options=options)
    return jsonify(
        {
            "success": True,
            "message": "Model loaded successfully",
            "model": {
                "id": info["id"],
                "loaded": info["loaded"],
                "backend": info["backend"],
                "memory_usage": human_bytes(info.get("memory_usage")),
                "load_time": round(info.get("load_time") or time.perf_counter() - start, 3),
            },
        }
    )


@route(
    bp,
    "/<model_id>/unload",
    methods=("DELETE",),
    permission="admin",
    resource="models",
    rate_limit="models",
    summary="Unload a model",
    response=json_object("success", "message", "freed_memory"),
)
def unload_model(model_id: str) -> Response:
    """Unload a model and report the memory freed."""
    freed = get_kernel().unload_model(model_id)
    return jsonify({"success": True, "message": "Model unloaded successfully", "freed_memory": human_bytes(freed)})
