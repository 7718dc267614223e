"""What a model backend implements.

A backend plugin registers :class:`Backend` instances through ``register_backends``. A
backend knows how to turn a :class:`ModelSpec` into a :class:`LoadedModel`; a loaded
model generates tokens for one request at a time (the serving engine decides how many
requests share it).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar

from .types import InferenceRequest


@dataclasses.dataclass
class ModelSpec:
    """A model the server knows of, loaded or not."""

    id: str
    backend: str
    name: str | None = None
    path: str | None = None
    format: str | None = None
    type: str = "base"
    capabilities: tuple[str, ...] = ("text-generation",)
    architecture: str | None = None
    parameters: int | None = None
    vocab_size: int | None = None
    context_length: int | None = None
    quantization: str | None = None
    size_bytes: int | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class GeneratedToken:
    """One token out of a backend."""

    text: str
    token_id: int | None = None


class LoadedModel(abc.ABC):
    """A model in memory, ready to generate."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    @abc.abstractmethod
    def generate(self, request: InferenceRequest) -> Iterator[GeneratedToken]:
        """Yield the tokens of one completion of ``request.prompt``, at most ``max_tokens``."""

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is for this model."""

    @property
    def memory_bytes(self) -> int:
        """Memory the model holds (0 when negligible or unknown)."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to free by default
        """Free the model's memory; called once on unload."""


class Backend(abc.ABC):
    """A way to run models (llama.cpp, torch, echo…)."""

    #: Unique name, used in model specs and in load requests.
    name: ClassVar[str]

    def is_available(self) -> bool:
        """Whether this backend can run on this machine now."""
        return True

    def builtin_models(self) -> list[ModelSpec]:
        """Models this backend provides without configuration."""
        return []

    @abc.abstractmethod
    def load(self, spec: ModelSpec) -> LoadedModel:
        """Load ``spec`` and return it ready to generate."""
