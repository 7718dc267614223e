"""Input limits: refuse prompts and token budgets over the configured limits, before queueing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import InvalidInput
from ...kernel.hookspecs import hookimpl
from ...kernel.kernel import Kernel
from ...kernel.types import InferenceRequest, PluginInfo


class LimitsFilter:
    """Checks prompt length and ``max_tokens``; settings override ``LLAMA_GPU_MAX_*``."""

    PLUGIN_INFO = PluginInfo(
        name="Input limits",
        category="preprocessing",
        description="Refuses prompts longer than max_input_length and max_tokens above max_tokens_limit.",
        priority=0,
        fail_closed=True,
    )

    def __init__(self) -> None:
        self.overrides: dict[str, int] = {}

    @hookimpl
    def configure(self, settings: Mapping[str, Any]) -> None:
        """Accept ``max_input_length`` and ``max_tokens_limit`` as positive integers."""
        overrides = {}
        for key in ("max_input_length", "max_tokens_limit"):
            if key in settings:
                value = settings[key]
                if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                    raise ValueError(f"{key} must be a positive integer, got {value!r}")
                overrides[key] = value
        self.overrides = overrides

    @hookimpl(tryfirst=True)
    def prepare_request(self, request: InferenceRequest, kernel: Kernel) -> None:
        """Raise INVALID_INPUT with the limits in the details."""
        max_length = self.overrides.get("max_input_length", kernel.settings.max_input_length)
        max_tokens = self.overrides.get("max_tokens_limit", kernel.settings.max_tokens_limit)
        field = request.metadata.get("input_field", "text")
        if len(request.prompt) > max_length:
            raise InvalidInput(
                f"input text exceeds maximum length of {max_length} characters",
                details={"max_length": max_length, "provided_length": len(request.prompt), "field": field},
            )
        if not 1 <= request.max_tokens <= max_tokens:
            raise InvalidInput(
                f"max_tokens must be between 1 and {max_tokens}",
                details={"max_tokens_limit": max_tokens, "provided": request.max_tokens, "field": "max_tokens"},
            )
