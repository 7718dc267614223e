"""What a model backend implements.

A backend plugin registers :class:`Backend` instances through ``register_backends``. A
backend knows how to turn a :class:`ModelSpec` into a :class:`LoadedModel`. A loaded model
generates tokens for one request (``generate``); a model that can batch also gives the
serving engine a :class:`BatchRunner`, which steps several sequences together. Models
without one are served one request at a time through :class:`SerialRunner`.
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


@dataclasses.dataclass(eq=False)
class Sequence:
    """One request inside a :class:`BatchRunner` (compared by identity)."""

    request: InferenceRequest
    #: Prompt token ids, set by ``BatchRunner.prepare`` when the backend tokenizes up front.
    prompt: list[int] | None = None
    #: The backend's own per-sequence state.
    state: Any = None


class BatchRunner(abc.ABC):
    """Steps the sequences of one model together; driven by the model's engine thread.

    ``prepare`` runs in the request's thread (it may refuse the request); every other
    method runs on the engine thread only, so implementations need no locks of their own
    against each other.
    """

    #: Sequences that can be active at once.
    max_sequences: int = 1

    def prepare(self, seq: Sequence) -> None:  # noqa: B027 - optional: nothing to check by default
        """Check and tokenize ``seq.request``; raise :class:`InvalidInput` to refuse it."""

    def can_admit(self, active: int) -> bool:
        """Whether one more sequence can join now, with ``active`` sequences running."""
        return active < self.max_sequences

    @abc.abstractmethod
    def admit(self, seq: Sequence) -> None:
        """Add a prepared sequence; it takes part from the next ``step``."""

    @abc.abstractmethod
    def step(self) -> list[tuple[Sequence, list[GeneratedToken]]]:
        """Run one decode step for every active sequence; return each one's new tokens.

        A list that ends with a ``finish_reason`` ends its sequence: the runner has
        already released it.
        """

    @abc.abstractmethod
    def drop(self, seq: Sequence) -> None:
        """Remove an active sequence that has not finished (cancelled or failed) and free it."""

    def stats(self) -> dict[str, float]:
        """Figures of the last step (``batch_tokens``, ``decode_seconds``…)."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free what the runner holds; called once when the engine stops."""


class SerialRunner(BatchRunner):
    """Serves a model one request at a time through its ``generate``, a token per step."""

    max_sequences = 1

    def __init__(self, model: LoadedModel) -> None:
        self._model = model
        self._seq: Sequence | None = None
        self._tokens: Iterator[GeneratedToken] | None = None
        self._produced = 0

    def admit(self, seq: Sequence) -> None:
        """Start generating for ``seq``."""
        self._seq, self._tokens, self._produced = seq, self._model.generate(seq.request), 0

    def step(self) -> list[tuple[Sequence, list[GeneratedToken]]]:
        """The next token of the running request (and its end)."""
        seq, tokens = self._seq, self._tokens
        if seq is None or tokens is None:
            return []
        try:
            token = next(tokens, None)
        except BaseException:
            self.drop(seq)
            raise
        if token is None:  # a generator that ends without a marker: say why it ended
            self.drop(seq)
            reason = "length" if self._produced >= seq.request.max_tokens else "stop"
            return [(seq, [GeneratedToken(text="", finish_reason=reason)])]
        self._produced += token.token_id is not None
        if token.finish_reason is not None:
            self.drop(seq)
        return [(seq, [token])]

    def drop(self, seq: Sequence) -> None:
        """Close the generation (the model releases its lock)."""
        if self._tokens is not None:
            self._tokens.close()
        self._seq = self._tokens = None


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

    def score(self, text: str) -> list[float] | None:
        """Log-probabilities (natural log) of the tokens of ``text`` under the model, for perplexity.

        ``text`` is tokenized as a prompt (with BOS where the model expects one); item ``i`` is
        ``log p(token[i + 1] | token[0..i])``, so the first token (BOS when there is one) has no
        score. ``None`` when the backend cannot score (the default). Perplexity is
        ``exp(-mean(scores))``.
        """
        return None

    @property
    def memory_bytes(self) -> int:
        """Memory the model holds (0 when negligible or unknown)."""
        return 0

    def describe(self) -> dict[str, Any]:
        """Live facts about the loaded model (device, context…) for model info."""
        return {"device": self.device}

    def batch_runner(self, parallel: int) -> BatchRunner:
        """The runner the serving engine drives, for up to ``parallel`` sequences.

        The default serves one request at a time through ``generate``; backends that
        batch return their own.
        """
        return SerialRunner(self)

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
