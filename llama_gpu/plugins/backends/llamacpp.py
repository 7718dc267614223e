"""The llama.cpp backend: GGUF models through llama-cpp-python.

Settings: ``n_ctx`` (context per sequence, default 4096), ``n_threads`` (0: every core; the
library's default of one thread is half the speed on two cores), ``n_batch`` (tokens per
decode step, prompt chunks included), ``n_gpu_layers`` (-1: every layer when the build can
offload), ``flash_attn`` (``"auto"``, the default as in llama.cpp: on where the device supports it;
true; false), ``prefix_cache`` (reuse a finished sequence's cells for a prompt
that starts the same way), ``kv_size`` (cells of the engine's KV cache, shared by its sequences;
default 8192, 0: ``parallel * n_ctx``), ``use_mmap`` (map the file instead of reading it; default
false: on CPUs with repacked weight layouts (AVX2, AMX) the mapped pages of repacked tensors
stay resident beside their copies, about 70 MB more for the 0.5B model).

The serving engine drives a :class:`~.llamacpp_batch.LlamaBatchRunner`: ``parallel``
sequences (``LLAMA_GPU_PARALLEL``) of ``n_ctx`` tokens each, continuously batched in a
context of their own. The ``Llama`` object holds the weights and the vocabulary with a
minimal context of its own (:data:`HOLDER_CONTEXT` cells; it is never decoded in); ``generate``
(one request outside the engine) runs a one-sequence runner made on first use. Both go through
the model's lock (two threads in one native context abort the process).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from marshmallow import Schema, fields, validate

from ...kernel.backend import Backend, BatchRunner, GeneratedToken, LoadedModel, LoadOptions, ModelSpec, Sequence
from ...kernel.errors import BackendUnavailable, InvalidInput, ModelLoadFailed
from ...kernel.hookspecs import hookimpl
from ...kernel.types import InferenceRequest, PluginInfo
from .chat import DEFAULT_TEMPLATE, ChatTemplate

DEFAULTS: dict[str, Any] = {
    "n_ctx": 4096,
    "n_threads": 0,
    "n_batch": 512,
    "n_gpu_layers": -1,
    "flash_attn": "auto",
    "prefix_cache": True,
    "kv_size": 8192,
    "use_mmap": False,
}
#: Settings of the engine, not of ``Llama()``.
ENGINE_SETTINGS = ("prefix_cache", "kv_size")
#: Cells of the ``Llama`` object's own context: it only holds the weights and vocabulary, every
#: decode runs in a runner's context, so its KV cache and compute buffers are kept minimal.
HOLDER_CONTEXT = 64
#: Largest context of the embedding context (its KV cache is counted in ``memory_bytes``).
EMBED_CONTEXT = 2048


def flash_attn_type(value: bool | str) -> int:
    """llama.cpp's ``flash_attn_type`` for the ``flash_attn`` setting (``"auto"``: wherever the device supports it)."""
    import llama_cpp

    if value == "auto":
        return int(llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO)
    return int(llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if value else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)


def gpu_offload_supported() -> bool:
    """Whether this llama-cpp-python build can offload layers to a GPU."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


class LlamaCppModel(LoadedModel):
    """A GGUF model in a ``Llama`` object, used under a lock."""

    backend_name = "llamacpp"

    def __init__(self, spec: ModelSpec, llm: Any, path: str, params: dict[str, Any]) -> None:
        super().__init__(spec)
        self._llm = llm
        self._path = path
        self._params = params
        self._lock = threading.Lock()
        self._embedder: Any = None
        self._grammar: Any = None
        self._runner: Any = None
        self._solo: Any = None  # the one-sequence runner of ``generate``, made on first use
        #: Guards the scoring context (made on first use), apart from ``_lock``: scoring never waits on ``generate``.
        self._score_lock = threading.Lock()
        self._scorer: Any = None
        self.device = "cuda" if params["n_gpu_layers"] else "cpu"
        meta = llm.metadata
        source = meta.get("tokenizer.chat_template")
        self.template_source = "gguf" if source else ("configured" if spec.chat_template else "default")
        self.template = ChatTemplate(
            source or spec.chat_template or DEFAULT_TEMPLATE,
            bos_token=self._piece(llm.token_bos()),
            eos_token=self._piece(llm.token_eos()),
            model_id=spec.id,
        )

    def _piece(self, token: int) -> str:
        if token < 0:
            return ""
        return bytes(self._llm.detokenize([token], special=True)).decode("utf-8", errors="replace")

    # text ---------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text``: no BOS, special-token text kept as plain text."""
        with self._lock:
            return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def detokenize(self, ids: list[int]) -> str:
        """Text of token ids."""
        vocab = self._llm.n_vocab()
        bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < vocab]
        if bad:
            raise InvalidInput(f"token ids out of range [0, {vocab})", details={"invalid": bad[:10]})
        with self._lock:
            return bytes(self._llm.detokenize(ids)).decode("utf-8", errors="replace")

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """The prompt for ``messages`` from the model's (sandboxed) chat template."""
        return self.template.render(messages)

    @property
    def native_model(self) -> Any:
        """The ``llama_model`` pointer (weights and vocabulary)."""
        return self._llm.model

    def prompt_tokens(self, request: InferenceRequest) -> list[int]:
        """The prompt's token ids: BOS unless a chat template wrote it; special tokens parsed in chats."""
        text = request.prompt
        chat = request.messages is not None
        bos = self.template._globals["bos_token"]
        add_bos = not (chat and bos and text.startswith(bos))
        # llama_tokenize only reads the vocabulary: no lock, so request threads never wait on decoding
        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=chat)
        if not tokens:
            raise InvalidInput("the prompt is empty", details={"field": "prompt"})
        return list(tokens)

    def batch_runner(self, parallel: int) -> BatchRunner:
        """A continuous-batching runner for ``parallel`` sequences of ``n_ctx`` tokens each."""
        from .llamacpp_batch import LlamaBatchRunner

        self._runner = LlamaBatchRunner(self, parallel, self._params)
        return self._runner

    # generation ---------------------------------------------------------------------------------
    def generate(self, request: InferenceRequest) -> Iterator[GeneratedToken]:
        """Sample token by token; stop at end-of-generation, a stop string or ``max_tokens``.

        Runs a one-sequence :class:`~.llamacpp_batch.LlamaBatchRunner` (made on first use, so a
        model served by its engine never allocates its cache): the same sampling as the engine's.
        """
        from .llamacpp_batch import LlamaBatchRunner

        seq = Sequence(request)
        with self._lock:
            if self._llm is None:
                raise InvalidInput(f"model {self.spec.id!r} was unloaded", details={"model": self.spec.id})
            if self._solo is None:
                params = {**self._params, "kv_size": self._params["n_ctx"], "prefix_cache": False}
                self._solo = LlamaBatchRunner(self, 1, params)
            runner = self._solo
            runner.prepare(seq)
            runner.admit(seq)
            try:
                while True:
                    for _, tokens in runner.step():
                        yield from tokens
                        if tokens and tokens[-1].finish_reason is not None:
                            return
            finally:
                runner.drop(seq)  # freed at once when it did not finish (closed early, or an error)

    def _json_grammar(self) -> Any:
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        if self._grammar is None:
            self._grammar = LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        return self._grammar

    def logprobs_from(self, pointer: Any, token: int, top_n: int) -> tuple[float, dict[str, float]]:
        """The log-probability of ``token`` and the ``top_n`` best, from a row of logits."""
        import numpy as np

        n_vocab = self._llm.n_vocab()
        logits = np.ctypeslib.as_array(pointer, shape=(n_vocab,)).astype(np.float64)
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())
        top: dict[str, float] = {}
        if top_n > 0:
            for idx in np.argsort(-logprobs)[:top_n]:
                top[self._piece(int(idx))] = float(logprobs[idx])
        return float(logprobs[token]), top

    # scoring ------------------------------------------------------------------------------------
    def score(self, text: str) -> list[float] | None:
        """Log-probabilities of ``text``'s tokens (BOS first where the model adds one; see ``LoadedModel``)."""
        llm = self._llm
        if llm is None:
            raise InvalidInput(f"model {self.spec.id!r} was unloaded", details={"model": self.spec.id})
        # llama_tokenize only reads the vocabulary; add_bos adds BOS only where the model asks for it
        return self.score_tokens(list(llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)))

    def score_tokens(self, tokens: list[int], steps: list[int] | None = None) -> list[float]:
        """``log p(tokens[i + 1] | tokens[..i])`` for each ``i``, in a scoring context of the model's own.

        ``steps``: tokens per decode, in order (see :meth:`.llamacpp_score.Scorer.score`).
        """
        from .llamacpp_score import Scorer

        if not tokens:
            return []
        with self._score_lock:
            if self._llm is None:
                raise InvalidInput(f"model {self.spec.id!r} was unloaded", details={"model": self.spec.id})
            if self._scorer is None:
                params = self._params
                self._scorer = Scorer(self._llm.model, params["n_ctx"], params["n_threads"], params["flash_attn"])
            return self._scorer.score(tokens, steps)

    # embeddings ---------------------------------------------------------------------------------
    def embed(self, texts: list[str]) -> list[list[float]]:
        """Normalised mean-pooled embeddings from a context of their own on the same weights (made on first use)."""
        from .llamacpp_score import Embedder

        with self._lock:
            if self._llm is None:
                raise InvalidInput(f"model {self.spec.id!r} was unloaded", details={"model": self.spec.id})
            if self._embedder is None:
                n_ctx = min(int(self._params["n_ctx"]), EMBED_CONTEXT)
                self._embedder = Embedder(self._llm.model, n_ctx, int(self._params["n_threads"]))
            vectors = []
            for text in texts:
                tokens = list(self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))
                vectors.append(self._embedder.embed(tokens))
            return vectors

    # accounting ---------------------------------------------------------------------------------
    @property
    def memory_bytes(self) -> int:
        """Weights plus context state (the KV cache)."""
        import llama_cpp

        runner = self._runner.kv_bytes if self._runner is not None else 0
        runner += self._scorer.kv_bytes if self._scorer is not None else 0
        runner += self._embedder.kv_bytes if self._embedder is not None else 0
        runner += self._solo.kv_bytes if self._solo is not None else 0
        return (
            int(llama_cpp.llama_model_size(self._llm.model))
            + int(llama_cpp.llama_state_get_size(self._llm.ctx))
            + runner
        )

    def describe(self) -> dict[str, Any]:
        """Device, context and threads in use."""
        return {
            "device": self.device,
            "n_ctx": self._params["n_ctx"],
            "parallel": self._runner.max_sequences if self._runner is not None else 1,
            "n_threads": self._params["n_threads"],
            "n_gpu_layers": self._params["n_gpu_layers"],
            "flash_attn": self._params["flash_attn"],
            "prefix_cache": self._runner.prefix_cache if self._runner is not None else False,
            "kv_cells": self._runner.kv_cells if self._runner is not None else 0,
            "chat_template": self.template_source,
        }

    def close(self) -> None:
        """Free the native model and contexts."""
        with self._score_lock:
            if self._scorer is not None:
                self._scorer.close()
                self._scorer = None
        with self._lock:
            if self._embedder is not None:
                self._embedder.close()
            if self._solo is not None:
                self._solo.close()
                self._solo = None
            if self._llm is not None:
                self._llm.close()
            self._llm = self._embedder = None


class LlamaCppBackend(Backend):
    """Loads GGUF files with llama-cpp-python."""

    name = "llamacpp"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self._settings = settings

    def is_available(self) -> bool:
        """Whether llama-cpp-python is installed."""
        return importlib.util.find_spec("llama_cpp") is not None

    def supports(self, spec: ModelSpec) -> bool:
        """GGUF files."""
        return spec.format == "gguf"

    def estimate_memory(self, spec: ModelSpec, options: LoadOptions) -> int:
        """The file (weights are mapped) plus a KV-cache allowance."""
        size = spec.size_bytes or 0
        return int(size * 1.1) + 64 * 1024 * 1024

    def load(self, spec: ModelSpec, path: str | None, options: LoadOptions) -> LoadedModel:
        """Open the GGUF with the configured context, threads and GPU layers."""
        from llama_cpp import Llama

        if options.quantization and spec.quantization and options.quantization.lower() != spec.quantization.lower():
            raise InvalidInput(
                f"model {spec.id!r} is a {spec.quantization} GGUF; other quantizations need a conversion",
                details={"available": [spec.quantization], "requested": options.quantization},
            )
        if path is None or not Path(path).is_file():
            raise ModelLoadFailed(f"model file of {spec.id!r} not found: {path}", details={"path": path})
        params = self._params(options)
        try:
            # The holder's context is never decoded in (see HOLDER_CONTEXT); the runners make their own.
            llm = Llama(
                path,
                verbose=False,
                n_ctx=HOLDER_CONTEXT,
                n_batch=HOLDER_CONTEXT,
                n_ubatch=HOLDER_CONTEXT,
                n_threads=params["n_threads"],
                n_gpu_layers=params["n_gpu_layers"],
                use_mmap=params["use_mmap"],
            )
        except Exception as exc:  # llama.cpp reports a bad file as ValueError; wrap anything
            raise ModelLoadFailed(
                f"llama.cpp could not load {spec.id!r} ({Path(path).name}): {exc}. "
                "The file may be truncated or not a GGUF model.",
                details={"model": spec.id, "path": path},
            ) from exc
        try:
            return LlamaCppModel(spec, llm, path, params)
        except Exception:
            llm.close()
            raise

    def _params(self, options: LoadOptions) -> dict[str, Any]:
        s = {**DEFAULTS, **self._settings, **options.extra}
        n_ctx = options.n_ctx if options.n_ctx is not None else s["n_ctx"]
        threads = s["n_threads"] or os.cpu_count() or 1
        for name, value, low in (("n_ctx", n_ctx, 16), ("n_threads", threads, 1), ("n_batch", s["n_batch"], 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InvalidInput(f"{name} must be an integer >= {low}, got {value!r}", details={"field": name})
        gpu = options.device != "cpu" and (options.device == "cuda" or options.prefer_gpu)
        if options.device == "cuda" and not gpu_offload_supported():
            raise BackendUnavailable(
                "this llama-cpp-python build has no GPU support (install a CUDA build to offload layers)",
                details={"backend": self.name, "device": "cuda"},
            )
        n_gpu_layers = s["n_gpu_layers"] if gpu and gpu_offload_supported() else 0
        return {
            "n_ctx": n_ctx,
            "n_threads": threads,
            "n_batch": s["n_batch"],
            "n_gpu_layers": n_gpu_layers,
            "flash_attn": s["flash_attn"] if s["flash_attn"] == "auto" else bool(s["flash_attn"]),
            "prefix_cache": bool(s["prefix_cache"]),
            "kv_size": s["kv_size"],
            "use_mmap": bool(s["use_mmap"]),
        }


class _Int(fields.Integer):
    """An integer; not a bool or a float (an environment variable's digits give one)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        if isinstance(value, bool | float):
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


class _Bool(fields.Boolean):
    """A bool; of strings only ``true``/``false`` (any case), as an environment variable gives it (not 1, "on")."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise self.make_error("invalid", input=value)


class _FlashAttn(_Bool):
    """``"auto"`` or a bool."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        if isinstance(value, str) and value.lower() == "auto":
            return "auto"
        return super()._deserialize(value, attr, data, **kwargs)


class LlamaCppSettings(Schema):
    """The ``llamacpp`` plugin's settings (``LLAMA_GPU_LLAMACPP_<KEY>``, see the module docstring); unknown: refused."""

    n_ctx = _Int(load_default=DEFAULTS["n_ctx"], validate=validate.Range(min=16))
    n_threads = _Int(load_default=DEFAULTS["n_threads"], validate=validate.Range(min=0))
    n_batch = _Int(load_default=DEFAULTS["n_batch"], validate=validate.Range(min=1))
    n_gpu_layers = _Int(load_default=DEFAULTS["n_gpu_layers"], validate=validate.Range(min=-1))
    flash_attn = _FlashAttn(load_default=DEFAULTS["flash_attn"])
    prefix_cache = _Bool(load_default=DEFAULTS["prefix_cache"])
    kv_size = _Int(load_default=DEFAULTS["kv_size"], validate=validate.Range(min=0))
    use_mmap = _Bool(load_default=DEFAULTS["use_mmap"])


class LlamaCppPlugin:
    """Registers the llama.cpp backend."""

    PLUGIN_INFO = PluginInfo(
        name="llama.cpp backend",
        category="backend",
        description="GGUF models through llama-cpp-python (CPU, or CUDA when the build supports it).",
        default_settings=dict(DEFAULTS),
        settings_schema=LlamaCppSettings,
    )

    def __init__(self) -> None:
        self.settings: dict[str, Any] = dict(DEFAULTS)

    @hookimpl
    def configure(self, settings: Mapping[str, Any]) -> None:
        """Apply the settings, validated by :class:`LlamaCppSettings` (to models loaded from now on)."""
        self.settings.update(settings)

    @hookimpl
    def register_backends(self, register: Callable[[Backend], None]) -> None:
        """Register the llama.cpp backend."""
        register(LlamaCppBackend(self.settings))
