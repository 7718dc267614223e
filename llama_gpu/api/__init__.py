"""The core HTTP API: blueprints, their schemas, per-request helpers and route declarations.

Inference, models, plugins, OpenAI compatibility, health and the OpenAPI document; the
per-request helpers (:mod:`.context`) and route declarations (:mod:`.routing`) serve plugins'
routes too.

The app factory is :func:`llama_gpu.app.create_app`; ``from llama_gpu.api import create_app``
still works (resolved lazily, so importing a blueprint module never imports the dashboard).
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "stop_on_exit"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from .. import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
