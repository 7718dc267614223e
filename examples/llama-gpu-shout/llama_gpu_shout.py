"""An example third-party plugin: upper-cases every streamed chunk and the final text.

Settings: ``suffix`` (appended to the final text, default ``""``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_gpu import Chunk, InferenceRequest, InferenceResponse, PluginInfo, hookimpl


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
    def process_chunk(self, chunk: Chunk) -> None:
        chunk.text = chunk.text.upper()

    @hookimpl
    def process_response(self, request: InferenceRequest, response: InferenceResponse) -> None:
        response.text = response.text.upper() + self.suffix
        response.metadata["shouted"] = True
