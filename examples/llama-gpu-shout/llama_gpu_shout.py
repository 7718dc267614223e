"""An example third-party plugin: upper-cases every streamed chunk and the final text.

Settings: ``suffix`` (appended to the final text, default ``""``). It also adds a route,
``POST /api/v1/shout`` (``{"text"}`` → ``{"shouted"}``, write permission), declared with
:func:`llama_gpu.api.routing.route` like the built-in routes: the server enforces its
permission and rate-limit group and lists it in the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import Blueprint, Response, jsonify
from marshmallow import Schema, fields, validate

from llama_gpu import Chunk, InferenceRequest, InferenceResponse, PluginInfo, hookimpl
from llama_gpu.api.context import json_body
from llama_gpu.api.routing import json_object, route

bp = Blueprint("shout", __name__)


class ShoutSchema(Schema):
    """The body of ``POST /api/v1/shout``."""

    text = fields.String(required=True, validate=validate.Length(1, 10_000))


@route(
    bp,
    "/api/v1/shout",
    methods=("POST",),
    permission="write",
    rate_limit="infer",
    summary="Shout a text back (the example plugin's route)",
    body=ShoutSchema,
    response=json_object("shouted"),
)
def shout() -> Response:
    """Upper-case ``text``."""
    return jsonify({"shouted": json_body()["text"].upper()})


class ShoutFilter:
    """A post-processing filter; one instance per kernel."""

    PLUGIN_INFO = PluginInfo(
        name="Shout",
        category="postprocessing",
        description="Upper-cases responses (an example plugin).",
        default_settings={"suffix": ""},
    )

    def __init__(self) -> None:
        self.suffix = ""

    @hookimpl
    def configure(self, settings: Mapping[str, Any]) -> None:
        suffix = settings.get("suffix", "")
        if not isinstance(suffix, str) or len(suffix) > 32:
            raise ValueError("suffix must be a string of at most 32 characters")
        self.suffix = suffix

    @hookimpl
    def register_routes(self, register: Callable[[Any], None]) -> None:
        register(bp)

    @hookimpl
    def process_chunk(self, chunk: Chunk) -> None:
        chunk.text = chunk.text.upper()

    @hookimpl
    def process_response(self, request: InferenceRequest, response: InferenceResponse) -> None:
        response.text = response.text.upper() + self.suffix
        response.metadata["shouted"] = True
