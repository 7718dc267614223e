"""LLaMA GPU: a self-hosted inference platform built as a microkernel.

This module is the stable surface for plugin authors::

    from llama_gpu import hookimpl, PluginInfo

    class MyFilter:
        PLUGIN_INFO = PluginInfo(name="My filter", category="postprocessing")

        @hookimpl
        def process_response(self, request, response):
            response.text = response.text.strip()
"""

from . import errors
from .kernel.backend import Backend, BatchRunner, GeneratedToken, LoadedModel, LoadOptions, ModelSpec, Sequence
from .kernel.config import Settings
from .kernel.hookspecs import hookimpl, hookspec
from .kernel.kernel import Kernel, KernelState
from .kernel.services import ServiceKey, Services
from .kernel.types import (
    Chunk,
    Credentials,
    Event,
    Identity,
    InferenceRequest,
    InferenceResponse,
    PluginInfo,
)

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BatchRunner",
    "Chunk",
    "Credentials",
    "Event",
    "GeneratedToken",
    "Identity",
    "InferenceRequest",
    "InferenceResponse",
    "Kernel",
    "KernelState",
    "LoadOptions",
    "LoadedModel",
    "ModelSpec",
    "PluginInfo",
    "Sequence",
    "ServiceKey",
    "Services",
    "Settings",
    "__version__",
    "errors",
    "hookimpl",
    "hookspec",
]
