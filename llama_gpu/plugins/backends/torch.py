"""The PyTorch backend: Hugging Face models (safetensors folders, or GGUF files) run with torch.

Settings: ``threads`` (torch CPU threads; 0: every core) and ``cache_converted`` (keep a
GGUF, dequantised on first load, as safetensors under ``<data_dir>/cache/torch/`` so the
next load is fast). Pickle checkpoints (``pytorch_model.bin``, ``*.pt``…) are refused:
only safetensors and GGUF files are read, and no remote code is run.

Decoding is written by hand over the model's KV cache (prefill, then one token per step)
so that every sampler option behaves as in the llama.cpp backend; ``generate_batch``
decodes several prompts at once with left padding. torch and transformers are imported
inside functions: the server starts without them.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ...kernel.backend import PICKLE_SUFFIXES, Backend, BatchRunner, GeneratedToken, LoadedModel, LoadOptions, ModelSpec
from ...kernel.errors import BackendUnavailable, InferenceFailed, InvalidInput, LlamaGPUError, ModelLoadFailed
from ...kernel.hookspecs import hookimpl
from ...kernel.types import InferenceRequest, PluginInfo
from .chat import DEFAULT_TEMPLATE, ChatTemplate
from .sampling import AlignedBatchRunner, RowDecoder, decode

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {"threads": 0, "cache_converted": True}
#: Accepted ``quantization`` values and the torch dtype each means.
DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16"}
DTYPES.update(fp16="float16", float16="float16")
#: Tokens that end a turn in common chat formats (stop like EOS when the vocabulary has them).
END_OF_TURN = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end|>")


def _fingerprint(path: Path) -> str:
    """16 hex digits that change when the file does (size and modification time; no hashing)."""
    st = path.stat()
    return hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


def _stored_bytes_per_param(folder: Path) -> int:
    """Bytes per parameter of a safetensors folder, from the first file's header (2 if unclear)."""
    try:
        first = sorted(folder.glob("*.safetensors"))[0]
        with first.open("rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        dtype = next(v["dtype"] for k, v in header.items() if k != "__metadata__")
        return {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}.get(dtype, 2)
    except (OSError, ValueError, IndexError, StopIteration, KeyError, TypeError):
        return 2


class TorchModel(LoadedModel):
    """A transformers model and its tokenizer, used under a lock."""

    backend_name = "torch"

    def __init__(
        self,
        spec: ModelSpec,
        model: Any,
        tokenizer: Any,
        *,
        device: str,
        embedding: bool,
        n_ctx: int,
        source: str,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(spec)
        self._model, self._tokenizer = model, tokenizer
        self._lock = threading.Lock()
        #: Guards tokenizer encoding (a fast tokenizer refuses concurrent use while padding changes).
        self._text_lock = threading.Lock()
        #: Guards scoring (a forward pass of its own, so it never waits on a running generation).
        self._score_lock = threading.Lock()
        self.device, self.embedding, self.n_ctx = device, embedding, n_ctx
        #: Where the weights came from: ``safetensors``, ``gguf`` or ``cache`` (a converted GGUF).
        self.source, self.cache_dir = source, cache_dir
        self.template: ChatTemplate | None = None
        self.template_source = "none"
        vocab = tokenizer.get_vocab()
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = set(gen_eos if isinstance(gen_eos, list) else [gen_eos]) | {tokenizer.eos_token_id}
        self.eos_ids = {int(i) for i in eos if i is not None} | {vocab[t] for t in END_OF_TURN if t in vocab}
        self._pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
        self._keep_last = "logits_to_keep" in inspect.signature(model.forward).parameters
        if not embedding:
            own = getattr(tokenizer, "chat_template", None)
            self.template_source = "model" if own else ("configured" if spec.chat_template else "default")
            self.template = ChatTemplate(
                own or spec.chat_template or DEFAULT_TEMPLATE,
                bos_token=tokenizer.bos_token or "",
                eos_token=tokenizer.eos_token or "",
                model_id=spec.id,
            )

    def _require(self) -> Any:
        if self._model is None:
            raise InferenceFailed(f"model {self.spec.id!r} was unloaded", details={"model": self.spec.id})
        return self._model

    # text ---------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text``: no special tokens added, special-token text kept as plain text."""
        with self._text_lock:
            return list(self._tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def detokenize(self, ids: list[int]) -> str:
        """Text of token ids."""
        bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < len(self._tokenizer)]
        if bad:
            raise InvalidInput(f"token ids out of range [0, {len(self._tokenizer)})", details={"invalid": bad[:10]})
        return str(self._tokenizer.decode(ids))

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """The prompt for ``messages`` from the model's (sandboxed) chat template."""
        if self.template is None:
            return super().render_chat(messages)
        return self.template.render(messages)

    def _prompt_ids(self, request: InferenceRequest) -> list[int]:
        chat = request.messages is not None
        bos = self._tokenizer.bos_token
        add = not (chat and bos and request.prompt.startswith(bos))
        with self._text_lock:
            ids = self._tokenizer(request.prompt, add_special_tokens=add, split_special_tokens=not chat)["input_ids"]
        if not ids:
            raise InvalidInput("the prompt is empty", details={"field": "prompt"})
        if len(ids) + request.max_tokens > self.n_ctx:
            raise InvalidInput(
                f"prompt ({len(ids)} tokens) plus max_tokens ({request.max_tokens}) exceeds the context "
                f"of {self.n_ctx} tokens",
                details={"context_length": self.n_ctx, "prompt_tokens": len(ids), "max_tokens": request.max_tokens},
            )
        return list(ids)

    # generation -----------------------------------------------------------------------------
    def generate(self, request: InferenceRequest) -> Iterator[GeneratedToken]:
        """Sample token by token; stop at end-of-generation, a stop string or ``max_tokens``."""
        for step in self.decode_steps([request]):
            for _, token in step:
                yield token

    def generate_batch(self, requests: list[InferenceRequest]) -> list[list[GeneratedToken]]:
        """Complete several prompts in one batch (left-padded); each row stops on its own."""
        out: list[list[GeneratedToken]] = [[] for _ in requests]
        for step in self.decode_steps(requests):
            for row, token in step:
                out[row].append(token)
        return out

    def batch_runner(self, parallel: int) -> BatchRunner:
        """Step-aligned batches of up to ``parallel`` requests (see :class:`AlignedBatchRunner`)."""
        return AlignedBatchRunner(self, parallel)

    def check(self, request: InferenceRequest) -> list[int]:
        """Refuse what this model cannot serve; return the prompt's token ids."""
        if self.embedding:
            raise InvalidInput(f"model {self.spec.id!r} is an embedding model", details={"model": self.spec.id})
        if request.response_format == "json_object":
            raise InvalidInput(
                "response_format json_object needs grammar-constrained sampling, which the torch backend lacks; "
                "load the model with the llama.cpp backend",
                details={"field": "response_format", "backend": "torch"},
            )
        return self._prompt_ids(request)

    def decode_steps(self, requests: list[InferenceRequest]) -> Iterator[list[tuple[int, GeneratedToken]]]:
        """Decode ``requests`` together; per forward pass, the ``(row, token)`` pairs produced."""
        prompts = [self.check(r) for r in requests]
        yield from self.decode_rows(self.row_decoders(requests, prompts), prompts)

    def decode_rows(
        self, rows: list[RowDecoder], prompts: list[list[int]]
    ) -> Iterator[list[tuple[int, GeneratedToken]]]:
        """Decode prepared rows (a row marked ``done`` from outside stops early) under the model's lock."""
        import torch

        if not rows:
            return
        with self._lock, torch.inference_mode():
            yield from decode(self._require(), rows, prompts, self._pad_id, self.device, self._keep_last)

    def row_decoders(self, requests: list[InferenceRequest], prompts: list[list[int]]) -> list[RowDecoder]:
        """The decoding state of each request."""
        return [
            RowDecoder(r, p, self._tokenizer, self.eos_ids, self._pad_id)
            for r, p in zip(requests, prompts, strict=True)
        ]

    # scoring --------------------------------------------------------------------------------
    def score(self, text: str) -> list[float] | None:
        """Log-probabilities of ``text``'s tokens (BOS first where the tokenizer adds one), one forward pass."""
        import torch

        if self.embedding:
            return None
        with self._text_lock:
            ids = list(self._tokenizer(text, add_special_tokens=True, split_special_tokens=True)["input_ids"])
        if len(ids) > self.n_ctx:
            raise InvalidInput(
                f"text of {len(ids)} tokens exceeds the context of {self.n_ctx} tokens",
                details={"tokens": len(ids), "context_length": self.n_ctx},
            )
        if len(ids) < 2:
            return []
        with self._score_lock, torch.no_grad():
            model = self._require()
            inputs = torch.tensor([ids], device=self.device)
            logits = model(input_ids=inputs, use_cache=False).logits[0, :-1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            return logprobs.gather(1, inputs[0, 1:, None])[:, 0].cpu().tolist()

    # embeddings -----------------------------------------------------------------------------
    def embed(self, texts: list[str]) -> list[list[float]]:
        """Mean-pooled (over the attention mask), L2-normalised vectors, one per text."""
        import torch

        if not self.embedding:
            return super().embed(texts)
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise InvalidInput("input must be a non-empty list of strings", details={"field": "input"})
        vectors: list[list[float]] = []
        with self._lock, torch.inference_mode():
            model = self._require()
            for start in range(0, len(texts), 32):
                with self._text_lock:
                    enc = self._tokenizer(
                        texts[start : start + 32],
                        padding=True,
                        truncation=True,
                        max_length=self.n_ctx,
                        return_tensors="pt",
                    ).to(self.device)
                hidden = model(**enc).last_hidden_state.float()
                weights = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                vectors.extend(torch.nn.functional.normalize(pooled, dim=-1).cpu().tolist())
        return vectors

    # accounting -----------------------------------------------------------------------------
    @property
    def memory_bytes(self) -> int:
        """Bytes of the parameters."""
        if self._model is None:
            return 0
        return sum(p.numel() * p.element_size() for p in self._model.parameters())

    def describe(self) -> dict[str, Any]:
        """Device, dtype, parameter count, context and where the weights came from."""
        model = self._model
        return {
            "device": self.device,
            "dtype": str(model.dtype).removeprefix("torch.") if model is not None else None,
            "parameters": sum(p.numel() for p in model.parameters()) if model is not None else 0,
            "n_ctx": self.n_ctx,
            "source": self.source,
            "chat_template": self.template_source,
        }

    def close(self) -> None:
        """Drop the model and free its memory."""
        import torch

        with self._lock:
            self._model = None
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()


class TorchBackend(Backend):
    """Loads safetensors folders and GGUF files with transformers."""

    name = "torch"

    def __init__(self, settings: Mapping[str, Any], data_dir: str | None = None) -> None:
        self._settings = settings
        #: Root of the conversion cache (``<data_dir>/cache/torch``); set by the plugin's ``configure``.
        self.data_dir = data_dir

    def is_available(self) -> bool:
        """Whether torch and transformers are installed."""
        return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))

    def supports(self, spec: ModelSpec) -> bool:
        """Safetensors folders and GGUF files."""
        return spec.format in ("safetensors", "gguf")

    def estimate_memory(self, spec: ModelSpec, options: LoadOptions) -> int:
        """Parameters times bytes per value of the dtype it will load in, plus a margin."""
        wanted = DTYPES.get((options.quantization or "").lower())
        if wanted is None:
            gpu = options.device == "cuda" or (options.device is None and options.prefer_gpu and self._cuda())
            wanted = "bfloat16" if gpu else "float32"
        per = 4 if wanted == "float32" else 2
        path = Path(spec.path) if spec.path else None
        if spec.parameters:
            size = spec.parameters * per
        elif path is not None and path.is_dir():
            stored = sum(f.stat().st_size for f in path.glob("*.safetensors"))
            size = stored * per // _stored_bytes_per_param(path)
        elif spec.size_bytes or (path is not None and path.is_file()):
            size = (spec.size_bytes or path.stat().st_size) * per  # a ~4-bit GGUF grows ~per times unpacked
        else:
            return 0
        return int(size * 1.1) + 64 * 1024 * 1024

    def _cuda(self) -> bool:
        if not self.is_available():
            return False
        import torch

        return bool(torch.cuda.is_available())

    def load(self, spec: ModelSpec, path: str | None, options: LoadOptions) -> TorchModel:
        """Load ``path`` on the chosen device and dtype; a GGUF is dequantised (and cached)."""
        if not self.is_available():
            raise BackendUnavailable("torch and transformers are not installed (pip install 'llama-gpu[torch]')")
        device, dtype = self._placement(spec, options)
        path = path or spec.path
        if not path or not Path(path).exists():
            raise ModelLoadFailed(f"model file of {spec.id!r} not found: {path}", details={"path": path})
        import torch

        torch.set_num_threads(int(self._settings.get("threads") or os.cpu_count() or 1))
        try:
            return self._load(spec, Path(path), device, getattr(torch, dtype), options)
        except LlamaGPUError:
            raise
        except Exception as exc:  # transformers reports bad files in many ways: wrap them all
            raise ModelLoadFailed(
                f"could not load {spec.id!r} from {Path(path).name} with torch: {type(exc).__name__}: {exc}. "
                "The file may be truncated, corrupt or of an unsupported architecture.",
                details={"model": spec.id, "path": str(path)},
            ) from exc

    def _placement(self, spec: ModelSpec, options: LoadOptions) -> tuple[str, str]:
        import torch

        device = options.device
        if device is None:
            device = "cuda" if options.prefer_gpu and torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda") and not re.fullmatch(r"cuda:\d+", device):
            raise InvalidInput(f"device must be cpu or cuda, got {device!r}", details={"field": "device"})
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable(
                "CUDA was asked for but torch sees no CUDA device here (or this torch build has no CUDA support)",
                details={"backend": self.name, "device": device},
            )
        wanted = (options.quantization or "").lower()
        if spec.quantization and wanted == spec.quantization.lower():
            wanted = ""  # the file's own quantization: load it the default way
        if wanted and wanted not in DTYPES:
            raise InvalidInput(
                f"the torch backend loads models as {', '.join(DTYPES)}; got quantization {options.quantization!r}",
                details={"field": "quantization", "choices": list(DTYPES)},
            )
        gpu = device.startswith("cuda")
        bf16 = gpu and torch.cuda.is_bf16_supported()
        dtype = DTYPES[wanted] if wanted else ("bfloat16" if bf16 else "float16") if gpu else "float32"
        if dtype == "float16" and not gpu:
            raise InvalidInput("fp16 is for CUDA only; use fp32 or bf16 on the CPU", details={"field": "quantization"})
        if dtype == "bfloat16" and gpu and not bf16:
            raise InvalidInput("this GPU has no bfloat16; use fp16 or fp32", details={"field": "quantization"})
        return device, dtype

    def _load(self, spec: ModelSpec, path: Path, device: str, dtype: Any, options: LoadOptions) -> TorchModel:
        if path.is_dir():
            _check_folder(path)
            return self._build(spec, path, None, device, dtype, options, None)
        cache = self._cache_dir(spec, path)
        if cache is not None and any(cache.glob("*.safetensors")):
            try:
                model = self._build(spec, cache, None, device, dtype, options, cache)
            except Exception as exc:  # noqa: BLE001 - a damaged or stale cache is converted again
                log.warning("conversion cache %s does not load (%s); converting %s again", cache, exc, path.name)
                shutil.rmtree(cache, ignore_errors=True)
            else:
                log.info("loaded %s from the conversion cache %s", spec.id, cache)
                return model
        return self._build(spec, path.parent, path.name, device, dtype, options, cache)

    def _build(
        self,
        spec: ModelSpec,
        folder: Path,
        gguf: str | None,
        device: str,
        dtype: Any,
        options: LoadOptions,
        cache: Path | None,
    ) -> TorchModel:
        """Load from a safetensors ``folder``, or from the GGUF file ``gguf`` in it (then fill ``cache``)."""
        import torch
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, GgufConfig

        common: dict[str, Any] = {"local_files_only": True, "gguf_file": gguf}
        config = AutoConfig.from_pretrained(folder, **common)
        archs = getattr(config, "architectures", None) or []
        embedding = "embeddings" in spec.capabilities or bool(archs and all("For" not in a for a in archs))
        auto = AutoModel if embedding else AutoModelForCausalLM
        tokenizer = AutoTokenizer.from_pretrained(folder, **common)
        if gguf is None:
            gpu_map = device if device != "cpu" else None
            model = auto.from_pretrained(folder, dtype=dtype, use_safetensors=True, device_map=gpu_map, **common)
        else:  # dequantise in float32, keep a safetensors copy, then cast and move
            model = auto.from_pretrained(
                folder, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True), **common
            )
            if cache is not None:
                _save_cache(model, tokenizer, cache)
            model = model.to(dtype=dtype, device=device)
        model.eval()
        limit = options.n_ctx or getattr(config, "max_position_embeddings", None) or spec.context_length or 4096
        source = "gguf" if gguf else ("cache" if folder == cache else "safetensors")
        kept = str(cache) if cache is not None and cache.is_dir() else None
        return TorchModel(
            spec, model, tokenizer, device=device, embedding=embedding, n_ctx=int(limit), source=source, cache_dir=kept
        )

    def _cache_dir(self, spec: ModelSpec, path: Path) -> Path | None:
        if not self._settings.get("cache_converted", True) or not self.data_dir:
            return None
        safe_id = re.sub(r"[^A-Za-z0-9._-]", "_", spec.id)
        return Path(self.data_dir) / "cache" / "torch" / f"{safe_id}-{_fingerprint(path)}"


def _check_folder(path: Path) -> None:
    """Refuse a folder without safetensors weights (pickle checkpoints are never read)."""
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelLoadFailed(
            f"{path.name} holds only pickle checkpoints ({', '.join(pickles[:3])}); pickle checkpoints are "
            "refused because loading them can run arbitrary code: convert the model to safetensors",
            details={"path": str(path), "reason": "pickle_refused"},
        )
    raise ModelLoadFailed(f"no *.safetensors weights in {path}", details={"path": str(path)})


def _save_cache(model: Any, tokenizer: Any, target: Path) -> None:
    """Write the converted model atomically (temp folder, then rename); failures only cost speed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
        log.info("saved the converted model to %s", target)
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("could not cache the converted model in %s: %s", target, exc)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    stem = target.name.rsplit("-", 1)[0]
    for old in target.parent.glob(f"{stem}-*"):  # earlier conversions of a file that changed since
        if old != target and re.fullmatch(re.escape(stem) + r"-[0-9a-f]{16}", old.name):
            shutil.rmtree(old, ignore_errors=True)


class TorchPlugin:
    """Registers the PyTorch backend."""

    PLUGIN_INFO = PluginInfo(
        name="PyTorch backend",
        category="backend",
        description="Hugging Face models (safetensors, or GGUF dequantised) through torch and transformers.",
        default_settings=dict(DEFAULTS),
    )

    def __init__(self) -> None:
        self.settings: dict[str, Any] = dict(DEFAULTS)
        self.backend = TorchBackend(self.settings)

    @hookimpl
    def configure(self, kernel: Any, settings: Mapping[str, Any]) -> None:
        """Check and apply the settings; remember the data folder for the conversion cache."""
        unknown = set(settings) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        threads = settings.get("threads", 0)
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
            raise ValueError(f"threads must be an integer >= 0 (0: every core), got {threads!r}")
        if not isinstance(settings.get("cache_converted", True), bool):
            raise ValueError(f"cache_converted must be true or false, got {settings['cache_converted']!r}")
        self.settings.update(settings)
        self.backend.data_dir = kernel.settings.data_dir

    @hookimpl
    def register_backends(self, register: Callable[[Backend], None]) -> None:
        """Register the PyTorch backend."""
        register(self.backend)
