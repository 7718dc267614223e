"""The error hierarchy, re-exported for plugin authors (``from llama_gpu.errors import InvalidInput``)."""

from .kernel.errors import *  # noqa: F403
from .kernel.errors import __all__  # noqa: F401
