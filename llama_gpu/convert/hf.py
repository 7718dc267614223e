"""Hugging Face safetensors directory → GGUF (f32 / f16 / bf16) through the ``gguf`` library.

Supported: :data:`ARCHITECTURES` (Qwen2, Llama and Gemma 3 text causal LMs) with a byte-level
BPE ``tokenizer.json`` (GPT-2 style, as Qwen2 and Llama 3 ship; Gemma's own SentencePiece-style
tokenizer is refused, with the reason). Hyper-parameters come from
``config.json``; tokens, token types, merges, BOS/EOS/PAD ids and the chat template from
``tokenizer.json`` / ``tokenizer_config.json`` (``gguf.SpecialVocab``). Weights are read with
``safetensors`` only: pickle checkpoints (``.bin``, ``.pt``) are refused, because unpickling
can run code and this converter does not try ``torch.load(weights_only=True)`` either.
Llama's Q/K projections are permuted for llama.cpp's rotary layout, as ``convert_hf_to_gguf.py``
does. The GGUF is written to ``<output>.partial`` and renamed when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..kernel.backend import PICKLE_SUFFIXES
from ..kernel.errors import Conflict, InvalidInput
from . import quantize as q

#: ``architectures[0]`` of config.json → (gguf MODEL_ARCH name, tokenizer pre-tokenizer name, permute Q/K).
ARCHITECTURES: dict[str, tuple[str, str, bool]] = {
    "Qwen2ForCausalLM": ("QWEN2", "qwen2", False),
    "LlamaForCausalLM": ("LLAMA", "llama-bpe", True),
    "Gemma3ForCausalLM": ("GEMMA3", "default", False),
}
#: llama.cpp's Gemma 3: every sixth layer attends globally, the others in a sliding window with rope base 10000.
GEMMA3_PATTERN, GEMMA3_LOCAL_ROPE = 6, 10000.0
#: Output types of the converter (quantized types go through llama.cpp's quantizer afterwards).
OUTTYPES = ("f32", "f16", "bf16")


def check_source(folder: Path) -> dict[str, Any]:
    """config.json of a convertible checkpoint; INVALID_INPUT saying why otherwise."""
    config_file = folder / "config.json"
    if not folder.is_dir() or not config_file.is_file():
        raise InvalidInput(f"{folder.name} is not a Hugging Face checkpoint (no config.json)")
    if not list(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise InvalidInput(
                f"{folder.name} has only pickle checkpoints ({', '.join(pickles)}): loading them can run arbitrary "
                "code, so they are refused (no torch.load, not even weights_only); convert them to safetensors",
                details={"field": "source_model", "files": pickles},
            )
        raise InvalidInput(f"{folder.name} has no *.safetensors weights", details={"field": "source_model"})
    try:
        config: dict[str, Any] = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{folder.name}/config.json is not valid JSON: {exc}") from None
    arch = (config.get("architectures") or [None])[0]
    if arch not in ARCHITECTURES:
        raise InvalidInput(
            f"architecture {arch!r} cannot be converted; supported: {', '.join(ARCHITECTURES)}",
            details={"field": "source_model", "architecture": arch, "supported": list(ARCHITECTURES)},
        )
    sizes = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    bad = [k for k in sizes if not isinstance(config.get(k), int) or isinstance(config.get(k), bool) or config[k] < 1]
    if bad:
        raise InvalidInput(
            f"{folder.name}/config.json lacks positive integers for {', '.join(bad)}", details={"field": "source_model"}
        )
    ropes = _ropes(config)
    rope_types = {r.get("rope_type") or r.get("type") or "default" for r in ropes.values()}
    if rope_types - {"default"}:
        raise InvalidInput(
            f"rope type {sorted(rope_types - {'default'})} is not supported by this converter yet "
            "(only plain rotary embeddings)",
            details={"field": "source_model", "rope_type": sorted(rope_types)},
        )
    if arch == "Gemma3ForCausalLM":
        _check_gemma3(folder, config, ropes)
    elif config.get("hidden_act", "silu") != "silu" or config.get("use_sliding_window"):
        raise InvalidInput(
            f"{folder.name} has an unusual activation or sliding-window attention, which this converter does not map",
            details={"field": "source_model"},
        )
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise InvalidInput(f"{folder.name} has no tokenizer.json (a byte-level BPE tokenizer is needed)")
    _tokenizer_json(folder)
    return config


def _tokenizer_json(folder: Path) -> dict[str, Any]:
    """tokenizer.json, when it is a byte-level BPE tokenizer; INVALID_INPUT otherwise."""
    try:
        data: dict[str, Any] = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{folder.name}/tokenizer.json is not valid JSON: {exc}") from None
    model = data.get("model") or {}
    fallback = bool(model.get("byte_fallback"))
    if model.get("type") != "BPE" or fallback or not isinstance(model.get("vocab"), dict):
        raise InvalidInput(
            "only byte-level BPE tokenizers (GPT-2 style, as Qwen2 and Llama 3 use) can be converted; "
            f"this one is {model.get('type')!r}" + (" with byte_fallback (SentencePiece style)" if fallback else ""),
            details={"field": "source_model"},
        )
    return data


def _ropes(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Rotary settings by layer type (``"all"`` when one set covers every layer)."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope and all(isinstance(v, dict) for v in rope.values()):
        return dict(rope)
    rope = dict(rope)
    if "rope_theta" in config:
        rope.setdefault("rope_theta", config["rope_theta"])
    return {"all": rope}


def _check_gemma3(folder: Path, config: dict[str, Any], ropes: dict[str, dict[str, Any]]) -> None:
    """What llama.cpp's Gemma 3 assumes: refuse a checkpoint that differs, rather than convert it wrongly."""
    n_layers = int(config["num_hidden_layers"])
    head_dim = int(config.get("head_dim") or 256)
    expected = [
        "full_attention" if i % GEMMA3_PATTERN == GEMMA3_PATTERN - 1 else "sliding_attention" for i in range(n_layers)
    ]
    problems = []
    if config.get("layer_types") not in (None, expected):
        problems.append(f"layer_types other than llama.cpp's pattern (every {GEMMA3_PATTERN}th layer global)")
    if config.get("final_logit_softcapping") or config.get("attn_logit_softcapping"):
        problems.append("logit soft-capping")
    if int(config.get("query_pre_attn_scalar") or head_dim) != head_dim:
        problems.append("query_pre_attn_scalar different from head_dim")
    if config.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        problems.append(f"activation {config.get('hidden_activation')!r}")
    local = (ropes.get("sliding_attention") or {}).get("rope_theta") or config.get("rope_local_base_freq")
    if local is not None and float(local) != GEMMA3_LOCAL_ROPE:
        problems.append(f"a local rope base other than {GEMMA3_LOCAL_ROPE:g}")
    if problems:
        raise InvalidInput(
            f"{folder.name}: this Gemma 3 variant cannot be converted faithfully ({'; '.join(problems)})",
            details={"field": "source_model"},
        )


def _tokenizer(folder: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    import gguf

    data = _tokenizer_json(folder)
    model = data.get("model") or {}
    by_id: dict[int, str] = {int(i): t for t, i in model["vocab"].items()}
    kinds: dict[int, int] = {}
    for added in data.get("added_tokens") or []:
        by_id[int(added["id"])] = added["content"]
        special = added.get("special", False)
        kinds[int(added["id"])] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
    size = max(vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for i in range(size):
        if i in by_id:
            tokens.append(by_id[i])
            types.append(int(kinds.get(i, gguf.TokenType.NORMAL)))
        else:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
    return tokens, types


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Llama's Q/K rows from Hugging Face's rotary layout to llama.cpp's (interleaved halves)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def convert_hf(
    folder: Path,
    output: Path,
    outtype: str = "f16",
    *,
    on_progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Write ``folder`` (a safetensors checkpoint) as a GGUF file at ``output``; its path.

    INVALID_INPUT for what cannot be converted (see :func:`check_source`); a partial file is
    removed on any failure (``should_stop`` returning true stops it, raising ``InterruptedError``).
    """
    import gguf
    from safetensors import safe_open

    if outtype not in OUTTYPES:
        raise InvalidInput(f"outtype must be one of {', '.join(OUTTYPES)}")
    config = check_source(folder)
    arch_name, pre, permute = ARCHITECTURES[config["architectures"][0]]
    arch = getattr(gguf.MODEL_ARCH, arch_name)
    n_layers = int(config["num_hidden_layers"])
    n_head = int(config["num_attention_heads"])
    n_head_kv = int(config.get("num_key_value_heads") or n_head)
    hidden = int(config["hidden_size"])
    vocab_size = int(config["vocab_size"])
    names = gguf.get_tensor_name_map(arch, n_layers)
    partial = output.with_name(output.name + ".partial")
    writer = gguf.GGUFWriter(str(partial), gguf.MODEL_ARCH_NAMES[arch])
    try:
        writer.add_name(folder.name)
        writer.add_context_length(int(config.get("max_position_embeddings") or 2048))
        writer.add_embedding_length(hidden)
        writer.add_block_count(n_layers)
        writer.add_feed_forward_length(int(config["intermediate_size"]))
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_head_kv)
        head_dim = int(config.get("head_dim") or hidden // n_head)
        writer.add_rope_dimension_count(head_dim)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        ropes = _ropes(config)
        rope = ropes.get("full_attention") or ropes.get("all") or {}
        default_theta = 1_000_000.0 if arch_name == "GEMMA3" else 10000.0
        writer.add_rope_freq_base(float(rope.get("rope_theta") or default_theta))
        if arch_name == "GEMMA3":
            writer.add_sliding_window(int(config.get("sliding_window") or 4096))
        writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps") or 1e-6))
        writer.add_vocab_size(vocab_size)
        file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}.get(
            outtype, gguf.LlamaFileType.MOSTLY_BF16
        )
        writer.add_file_type(int(file_type))
        tokens, types = _tokenizer(folder, vocab_size)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        gguf.SpecialVocab(folder, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer)

        files = sorted(folder.glob("*.safetensors"))
        keys: list[tuple[Path, str]] = []
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                keys.extend((file, k) for k in f.keys())  # noqa: SIM118 - safe_open has keys()
        for done, (file, key) in enumerate(keys, 1):
            if should_stop is not None and should_stop():
                raise InterruptedError("the conversion was cancelled")
            if key.endswith((".rotary_emb.inv_freq", "attn.masked_bias")):
                continue
            name = names.get_name(key, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise InvalidInput(f"tensor {key!r} has no GGUF name for {arch_name}; not a supported layout")
            with safe_open(str(file), framework="pt") as f:
                data = f.get_tensor(key).float().numpy()
            if arch_name == "GEMMA3" and key.endswith("norm.weight"):
                data = data + 1.0  # Gemma's RMSNorm scales by (1 + weight); llama.cpp's by weight
            if permute and key.endswith("q_proj.weight"):
                data = _permute(data, n_head)
            elif permute and key.endswith("k_proj.weight"):
                data = _permute(data, n_head_kv)
            if data.ndim >= 2 and outtype == "f16":
                writer.add_tensor(name, data.astype(np.float16))
            elif data.ndim >= 2 and outtype == "bf16":
                bits = gguf.quants.quantize(data, gguf.GGMLQuantizationType.BF16)
                writer.add_tensor(name, bits, raw_shape=data.shape, raw_dtype=gguf.GGMLQuantizationType.BF16)
            else:
                writer.add_tensor(name, data.astype(np.float32))
            if on_progress is not None:
                on_progress(done / max(len(keys), 1) * 0.5)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        if on_progress is not None:
            on_progress(1.0)
        os.replace(partial, output)
    except BaseException:
        with contextlib.suppress(Exception):  # the partial file goes anyway
            writer.close()
        partial.unlink(missing_ok=True)
        raise
    return output


def checkpoint_bytes(folder: Path) -> int:
    """The size of a checkpoint's safetensors weights."""
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def convert_checkpoint(
    folder: Path,
    output: Path,
    quantization: str,
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    cancel: threading.Event | None = None,
) -> q.Result:
    """Convert ``folder`` to GGUF (f16, or the asked f32/f16/bf16), then quantize it with llama.cpp.

    The f16 intermediate is removed whatever happens; CONVERSION_CANCELLED when ``cancel`` is set.
    """
    name = q.quant_name(quantization)
    check_source(folder)
    if output.exists():
        raise Conflict(f"{output.name} exists already; choose another output", details={"field": "output"})
    source_bytes = checkpoint_bytes(folder)
    q.check_disk(output, source_bytes * 3)
    start = time.monotonic()
    estimate = q.estimate_seconds_for(source_bytes * 2)

    def report(phase: str, fraction: float) -> None:
        if on_progress is not None:
            on_progress(
                {
                    "phase": phase,
                    "progress": round(fraction, 3),
                    "elapsed": round(time.monotonic() - start, 2),
                    "estimated_duration": estimate,
                }
            )

    direct = name in OUTTYPES
    first = output if direct else output.with_name(output.name + ".f16")
    share = 1.0 if direct else 0.5
    try:
        convert_hf(
            folder,
            first,
            name if direct else "f16",
            on_progress=lambda f: report("converting", min(f, 0.99) * share),
            should_stop=cancel.is_set if cancel is not None else None,
        )
    except InterruptedError:
        raise q.ConversionCancelled("the conversion was cancelled") from None
    if not direct:
        try:
            q.quantize(
                first,
                output,
                name,
                on_progress=lambda e: report("quantizing", 0.5 + min(e["progress"], 0.99) * 0.5),
                cancel=cancel,
            )
        finally:
            first.unlink(missing_ok=True)
    else:
        q.check_gguf(output)
    report("done", 1.0)
    return q.Result(
        output=output,
        source_bytes=source_bytes,
        output_bytes=output.stat().st_size,
        seconds=round(time.monotonic() - start, 3),
    )
