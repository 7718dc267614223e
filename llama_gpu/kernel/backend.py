"""What a model backend implements.

A backend plugin registers :class:`Backend` instances through ``register_backends``. A
backend knows how to turn a :class:`ModelSpec` into a :class:`LoadedModel`; a loaded
model generates tokens for one request at a time (the serving engine decides how many
requests share it).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from .errors import InvalidInput
from .types import InferenceRequest

#: Checkpoint files that are Python pickles: loading one can run code, so none is ever read.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

#: Called with a fraction in [0, 1] while a model file is prepared.
Progress = Callable[[float], None]


@dataclasses.dataclass
class ModelSpec:
    """A model the server knows of, loaded or not."""

    id: str
    backend: str
    name: str | None = None
    path: str | None = None
    #: ``gguf``, ``safetensors`` (a Hugging Face directory) or ``builtin``.
    format: str | None = None
    type: str = "base"
    capabilities: tuple[str, ...] = ("text-generation",)
    architecture: str | None = None
    parameters: int | None = None
    vocab_size: int | None = None
    context_length: int | None = None
    quantization: str | None = None
    size_bytes: int | None = None
    #: Chat template for models whose file carries none (Jinja2, rendered sandboxed).
    chat_template: str | None = None
    #: Makes the model file available (e.g. assembles it from packages) and returns its path.
    locate: Callable[[Progress], str] | None = dataclasses.field(default=None, repr=False)
    #: Why the model cannot be loaded here, or ``None`` when it can.
    unavailable: str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """How to load a model, as asked by an operator (``POST /models/{id}/load``)."""

    #: ``cuda`` or ``cpu``; ``None`` picks CUDA when available and ``prefer_gpu``.
    device: str | None = None
    prefer_gpu: bool = True
    #: A quantization or dtype (``q4_k_m``, ``bf16``, ``fp32``…); ``None`` keeps the model's own.
    quantization: str | None = None
    #: Context length per sequence; ``None`` for the backend's default.
    n_ctx: int | None = None
    #: Refuse the load when the model is expected to need more bytes than this.
    max_memory: int | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class GeneratedToken:
    """One token out of a backend."""

    text: str
    token_id: int | None = None
    logprob: float | None = None
    #: The most likely alternatives at this position and their log-probabilities.
    top_logprobs: dict[str, float] | None = None
    #: Set on the last token when the backend knows why generation ended (``stop``/``length``).
    finish_reason: str | None = None


class LoadedModel(abc.ABC):
    """A model in memory, ready to generate.

    A loaded model is used by one request at a time unless the backend says otherwise;
    implementations guard their native objects (a ``Llama`` aborts the process when two
    threads use it at once).
    """

    #: The backend that loaded it and the device it runs on.
    backend_name: str = ""
    device: str = "cpu"

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    @abc.abstractmethod
    def generate(self, request: InferenceRequest) -> Iterator[GeneratedToken]:
        """Yield the tokens of one completion of ``request.prompt``, at most ``max_tokens``.

        The last item may be a marker without ``token_id`` that carries ``finish_reason``
        (and any text held back). Callers must exhaust or ``close()`` the iterator: a
        model may hold its lock while a generation is open.
        """

    @abc.abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """The token ids of ``text`` (no special tokens added)."""

    def detokenize(self, ids: list[int]) -> str:
        """The text of token ids."""
        raise InvalidInput(f"model {self.spec.id!r} cannot detokenize")

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is for this model."""
        return len(self.tokenize(text))

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """Render chat messages into a prompt with the model's chat template."""
        raise InvalidInput(f"model {self.spec.id!r} has no chat template", details={"model": self.spec.id})

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One embedding vector per text."""
        raise InvalidInput(f"model {self.spec.id!r} does not produce embeddings", details={"model": self.spec.id})

    @property
    def memory_bytes(self) -> int:
        """Memory the model holds (0 when negligible or unknown)."""
        return 0

    def describe(self) -> dict[str, Any]:
        """Live facts about the loaded model (device, context…) for model info."""
        return {"device": self.device}

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

    def supports(self, spec: ModelSpec) -> bool:
        """Whether this backend can load ``spec`` (by its format)."""
        return spec.backend == self.name

    def estimate_memory(self, spec: ModelSpec, options: LoadOptions) -> int:
        """Bytes of memory loading ``spec`` is expected to take (0 when unknown)."""
        return 0

    @abc.abstractmethod
    def load(self, spec: ModelSpec, path: str | None, options: LoadOptions) -> LoadedModel:
        """Load ``spec`` from ``path`` (``None`` for models without a file) and return it ready."""
