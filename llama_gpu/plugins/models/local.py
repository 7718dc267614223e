"""Models found on disk under ``LLAMA_GPU_MODELS_DIR`` (default ``<data_dir>/models``).

Each ``*.gguf`` file becomes a llama.cpp model; each directory holding a ``config.json``
and ``*.safetensors`` weights becomes a torch model. A directory with only pickle
checkpoints (``.bin``, ``.pt``) and a file that is not a valid GGUF are listed as
unavailable with the reason, never loaded. The id is the file or directory name, lower
case.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...kernel.backend import PICKLE_SUFFIXES, ModelSpec
from ...kernel.hookspecs import hookimpl
from ...kernel.kernel import Kernel
from ...kernel.types import PluginInfo
from .gguf_meta import GGUFError, read_gguf_metadata, summarize

log = logging.getLogger(__name__)


def model_id_for(path: Path) -> str:
    """A model id from a file or folder name (``Foo-7B.Q4_K_M.gguf`` → ``foo-7b.q4_k_m``)."""
    stem = path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.name
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-.") or "model"


def gguf_spec(path: Path) -> ModelSpec:
    """A spec from a GGUF file's header (unavailable, with the reason, when it is unreadable)."""
    spec = ModelSpec(id=model_id_for(path), backend="llamacpp", format="gguf", path=str(path))
    spec.size_bytes = path.stat().st_size
    try:
        info = summarize(read_gguf_metadata(path))
    except (GGUFError, OSError) as exc:
        spec.unavailable = f"not a valid GGUF file: {exc}"
        return spec
    spec.name = info["name"] or spec.id
    spec.architecture, spec.parameters = info["architecture"], info["parameters"]
    spec.vocab_size, spec.context_length = info["vocab_size"], info["context_length"]
    spec.quantization = info["quantization"]
    spec.type = "chat" if info["has_chat_template"] else "base"
    spec.capabilities = ("text-generation", "chat") if info["has_chat_template"] else ("text-generation",)
    return spec


def hf_spec(path: Path) -> ModelSpec | None:
    """A spec from a Hugging Face directory, or ``None`` when it is not one."""
    config_file = path / "config.json"
    if not config_file.is_file():
        return None
    spec = ModelSpec(id=model_id_for(path), backend="torch", format="safetensors", path=str(path), name=path.name)
    weights = list(path.glob("*.safetensors"))
    if not weights:
        pickles = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
        spec.unavailable = (
            f"only pickle checkpoints ({', '.join(pickles)}): they can run code when loaded and are refused; "
            "convert them to safetensors"
            if pickles
            else "no *.safetensors weights"
        )
        return spec
    spec.size_bytes = sum(w.stat().st_size for w in weights)
    try:
        config: dict[str, Any] = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        spec.unavailable = f"config.json is not valid JSON: {exc}"
        return spec
    architectures = config.get("architectures") or []
    spec.architecture = architectures[0] if architectures else config.get("model_type")
    spec.vocab_size = config.get("vocab_size")
    spec.context_length = config.get("max_position_embeddings")
    spec.quantization = str(config.get("torch_dtype") or config.get("dtype") or "") or None
    causal = any(str(a).endswith("ForCausalLM") for a in architectures)
    if causal:
        chat = _has_chat_template(path)
        spec.type, spec.capabilities = ("chat", ("text-generation", "chat")) if chat else ("base", ("text-generation",))
    else:
        spec.type, spec.capabilities = "embedding", ("embeddings",)
    return spec


def _has_chat_template(path: Path) -> bool:
    tokenizer_config = path / "tokenizer_config.json"
    try:
        return "chat_template" in json.loads(tokenizer_config.read_text()) or (path / "chat_template.jinja").is_file()
    except (OSError, ValueError):
        return False


def discover(folder: Path) -> list[ModelSpec]:
    """Every model under ``folder`` (one level deep), sorted by id."""
    if not folder.is_dir():
        return []
    specs = []
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.name.lower().endswith(".gguf"):
            specs.append(gguf_spec(entry))
        elif entry.is_dir():
            spec = hf_spec(entry)
            if spec is not None:
                specs.append(spec)
    return specs


class LocalModels:
    """Declares the models found in the models folder at start-up."""

    PLUGIN_INFO = PluginInfo(
        name="Local models",
        category="models",
        description="GGUF files and Hugging Face safetensors directories under LLAMA_GPU_MODELS_DIR.",
    )

    def __init__(self) -> None:
        self.folder: Path | None = None

    @hookimpl
    def configure(self, kernel: Kernel) -> None:
        """Remember the models folder."""
        self.folder = Path(kernel.settings.models_path)

    @hookimpl
    def register_models(self, register: Callable[[ModelSpec], None]) -> None:
        """Declare each model found; an id already taken is skipped with a warning."""
        for spec in discover(self.folder) if self.folder else []:
            try:
                register(spec)
            except ValueError:
                log.warning("model %s in %s skipped: its id is already taken", spec.id, spec.path)
