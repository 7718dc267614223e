"""GGUF → GGUF re-quantization through llama-cpp-python's binding of llama.cpp's quantizer.

:func:`quantize` runs ``llama_model_quantize`` in a child process (``python -m
llama_gpu.convert.quantize SRC DST FTYPE``) so that it can be killed: the quantizer has no
progress callback and cannot be interrupted in-process. Progress is estimated from how much of
the expected output has been written and from the time elapsed. The output is written to
``<output>.partial`` and renamed only when the child succeeded and the result reads back as a
GGUF; on failure or cancel the partial file is removed.

:func:`resolve_source` is the safety gate for sources named by API callers: a registered model
id, or a file name inside the models directory — never a URL, an absolute path or a path that
leaves the folder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..kernel.errors import Conflict, InvalidInput, LlamaGPUError, NotFound

#: Quantization names → the ``LLAMA_FTYPE_*`` constant of llama.cpp, and bits per weight
#: (roughly, for the size estimate and the disk-space check).
QUANT_TYPES: dict[str, tuple[str, float]] = {
    "q4_0": ("LLAMA_FTYPE_MOSTLY_Q4_0", 4.5),
    "q4_1": ("LLAMA_FTYPE_MOSTLY_Q4_1", 5.0),
    "q5_0": ("LLAMA_FTYPE_MOSTLY_Q5_0", 5.5),
    "q5_1": ("LLAMA_FTYPE_MOSTLY_Q5_1", 6.0),
    "q8_0": ("LLAMA_FTYPE_MOSTLY_Q8_0", 8.5),
    "q2_k": ("LLAMA_FTYPE_MOSTLY_Q2_K", 3.4),
    "q3_k_m": ("LLAMA_FTYPE_MOSTLY_Q3_K_M", 3.9),
    "q4_k_s": ("LLAMA_FTYPE_MOSTLY_Q4_K_S", 4.6),
    "q4_k_m": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", 4.9),
    "q5_k_s": ("LLAMA_FTYPE_MOSTLY_Q5_K_S", 5.5),
    "q5_k_m": ("LLAMA_FTYPE_MOSTLY_Q5_K_M", 5.7),
    "q6_k": ("LLAMA_FTYPE_MOSTLY_Q6_K", 6.6),
    "f16": ("LLAMA_FTYPE_MOSTLY_F16", 16.0),
    "bf16": ("LLAMA_FTYPE_MOSTLY_BF16", 16.0),
    "f32": ("LLAMA_FTYPE_ALL_F32", 32.0),
}
#: What ``optimization`` picks when no quantization is given.
OPTIMIZATIONS: dict[str, str] = {"size": "q4_k_m", "balanced": "q5_k_m", "quality": "q8_0"}
#: Bytes per second the estimate assumes (llama.cpp re-quantizes a 250 MB model in about a second).
THROUGHPUT = 250e6
#: Free space kept on top of the expected output.
DISK_MARGIN = 64 << 20
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


class InsufficientStorage(LlamaGPUError):
    """Not enough free disk space for the output."""

    code, status = "INSUFFICIENT_STORAGE", 507


class ConversionFailed(LlamaGPUError):
    """The quantizer failed (a corrupt source, an unsupported tensor type…)."""

    code, status = "CONVERSION_FAILED", 500


class ConversionCancelled(LlamaGPUError):
    """The job was cancelled; its partial output was removed."""

    code, status = "CONVERSION_CANCELLED", 409


def quant_name(name: str) -> str:
    """The canonical (lower-case) quantization name; INVALID_INPUT listing the known ones."""
    key = str(name).strip().lower()
    if key not in QUANT_TYPES:
        raise InvalidInput(
            f"unknown quantization {name!r}; supported: {', '.join(QUANT_TYPES)}",
            details={"field": "quantization", "supported": list(QUANT_TYPES)},
        )
    return key


def ftype_of(name: str) -> int:
    """The ``llama_ftype`` value of a quantization name."""
    import llama_cpp

    return int(getattr(llama_cpp, QUANT_TYPES[quant_name(name)][0]))


def check_gguf(path: Path) -> dict[str, Any]:
    """The header of a GGUF source (INVALID_INPUT when it does not read as one)."""
    from ..plugins.models.gguf_meta import GGUFError, read_gguf_metadata

    try:
        return read_gguf_metadata(path)
    except (GGUFError, OSError, ValueError, IndexError) as exc:
        raise InvalidInput(f"{path.name} is not a valid GGUF file: {exc}", details={"field": "source_model"}) from None


def inside(folder: Path, name: str, field: str = "source_model") -> Path:
    """``folder / name`` resolved, refusing URLs, absolute paths and anything that leaves ``folder``."""
    if not name or "\x00" in name or _SCHEME.match(name) or "://" in name:
        raise InvalidInput(f"{field} must be a model id or a file name in the models directory, not a URL")
    candidate = Path(name)
    if candidate.is_absolute() or name.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", name):
        raise InvalidInput(f"{field} must be relative to the models directory (no absolute paths, no '..')")
    root = folder.resolve()
    try:
        resolved = (root / candidate).resolve()
    except (OSError, RuntimeError) as exc:
        raise InvalidInput(f"{field} is not a usable file name: {exc}") from None
    if not resolved.is_relative_to(root) or resolved == root:
        raise InvalidInput(f"{field} leaves the models directory")
    return resolved


def resolve_source(name: str, models_dir: Path, registry: Any | None = None) -> tuple[Path, str | None]:
    """The GGUF file or Hugging Face directory named by a registered model id or a name in the models directory.

    Returns the path and the model id (``None`` for a plain file or folder). NOT_FOUND when
    neither exists, INVALID_INPUT for URLs, traversal and other formats, CONFLICT for a
    registered model whose file is not there yet (an embedded model not assembled: load it once).
    """
    if registry is not None and name not in ("", "default"):
        spec = next((s for s in registry.specs() if s.id == name), None)
        if spec is not None:
            if spec.format not in ("gguf", "safetensors"):
                raise InvalidInput(
                    f"model {name!r} is {spec.format}, not GGUF or safetensors; it cannot be converted",
                    details={"field": "source_model", "format": spec.format},
                )
            path = spec.path
            if (not path or not Path(path).exists()) and spec.locate is not None and not spec.unavailable:
                try:  # an embedded model: assemble its file from its packages (what a first load does)
                    path = spec.locate(lambda _fraction: None)
                except Exception:  # noqa: BLE001 - any failure to assemble it: the clear 409 below, never a 500
                    path = None
            if not path or not Path(path).exists():
                raise Conflict(
                    f"model {name!r} has no file on disk yet; load it once, then convert it",
                    details={"field": "source_model"},
                )
            return Path(path), spec.id
    path = inside(models_dir, name)
    try:
        found, folder = path.is_file(), path.is_dir()
    except OSError as exc:  # a name the file system refuses (too long…)
        raise InvalidInput(f"source_model is not a usable file name: {exc.strerror}") from None
    if folder:
        return path, None
    if not found:
        raise NotFound(
            f"no model {name!r} and no file of that name in the models directory", details={"field": "source_model"}
        )
    if not path.name.lower().endswith(".gguf"):
        raise InvalidInput(
            f"{path.name} is not a .gguf file (nor a Hugging Face directory)", details={"field": "source_model"}
        )
    return path, None


def expected_size(source: Path, quantization: str, meta: dict[str, Any] | None = None) -> int:
    """Bytes the output is expected to take (from the parameter count, else the source size)."""
    params = int((meta or {}).get("parameters") or 0)
    bits = QUANT_TYPES[quant_name(quantization)][1]
    if params:
        return int(params * bits / 8) + (8 << 20)
    return source.stat().st_size * 4 if bits > 16 else source.stat().st_size * 2


def estimate_seconds(source: Path) -> float:
    """Seconds a re-quantization of ``source`` should take (an estimate)."""
    return estimate_seconds_for(source.stat().st_size)


def estimate_seconds_for(size: int) -> float:
    """Seconds a conversion that reads ``size`` bytes should take (an estimate)."""
    return round(1.0 + size / THROUGHPUT, 1)


def check_disk(output: Path, needed: int) -> None:
    """INSUFFICIENT_STORAGE unless the output's folder has ``needed`` bytes (plus a margin) free."""
    free = shutil.disk_usage(output.parent).free
    if free < needed + DISK_MARGIN:
        raise InsufficientStorage(
            f"not enough disk space: {needed + DISK_MARGIN} bytes needed, {free} free in {output.parent}",
            details={"needed": needed + DISK_MARGIN, "free": free},
        )


def default_output(source: Path, quantization: str, models_dir: Path) -> Path:
    """``<models_dir>/<source stem>-<quantization>.gguf``."""
    stem = source.name[: -len(".gguf")] if source.name.lower().endswith(".gguf") else source.name
    return models_dir / f"{stem}-{quant_name(quantization)}.gguf"


def child_command(source: Path, partial: Path, ftype: int, threads: int) -> list[str]:
    """The command line of the child process that runs the quantizer."""
    return [sys.executable, "-m", "llama_gpu.convert.quantize", str(source), str(partial), str(ftype), str(threads)]


@dataclass
class Result:
    """A finished re-quantization."""

    output: Path
    source_bytes: int
    output_bytes: int
    seconds: float

    @property
    def size_reduction(self) -> float:
        """The fraction of the source's size saved (negative when the output is larger)."""
        return round(1.0 - self.output_bytes / self.source_bytes, 4) if self.source_bytes else 0.0


def quantize(
    source: Path,
    output: Path,
    quantization: str,
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    cancel: threading.Event | None = None,
    threads: int = 0,
    poll: float = 0.2,
) -> Result:
    """Re-quantize ``source`` into ``output`` in a child process; progress, cancel, cleanup.

    Raises INVALID_INPUT (a corrupt source), CONFLICT (the output exists), INSUFFICIENT_STORAGE,
    CONVERSION_CANCELLED or CONVERSION_FAILED; no partial output is left behind.
    """
    name = quant_name(quantization)
    meta = check_gguf(source)
    if output.exists():
        raise Conflict(f"{output.name} exists already; choose another output", details={"field": "output"})
    needed = expected_size(source, name, meta)
    check_disk(output, needed)
    partial = output.with_name(output.name + ".partial")
    estimate = estimate_seconds(source)
    start = time.monotonic()

    def report(phase: str, fraction: float) -> None:
        if on_progress is not None:
            elapsed = time.monotonic() - start
            on_progress(
                {
                    "phase": phase,
                    "progress": round(fraction, 3),
                    "elapsed": round(elapsed, 2),
                    "estimated_duration": estimate,
                }
            )

    report("starting", 0.0)
    command = child_command(source, partial, ftype_of(name), threads)
    # not a pipe: llama.cpp logs every tensor, and a full pipe would block it; closed below
    log_file = tempfile.TemporaryFile()  # noqa: SIM115
    try:
        child = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    except OSError as exc:
        log_file.close()
        raise ConversionFailed(f"could not start the quantizer: {exc}") from None
    try:
        while child.poll() is None:
            if cancel is not None and cancel.wait(poll):
                child.kill()
                child.wait(10)
                raise ConversionCancelled("the conversion was cancelled")
            if cancel is None:
                time.sleep(poll)
            written = partial.stat().st_size if partial.exists() else 0
            by_size = written / needed if needed else 0.0
            by_time = (time.monotonic() - start) / estimate if estimate else 0.0
            report("quantizing", min(0.95, max(by_size, by_time * 0.9)))
        if child.returncode != 0:
            log_file.seek(max(0, log_file.tell() - 4000))
            output_tail = log_file.read()
            lines = [ln for ln in output_tail.decode("utf-8", "replace").splitlines() if ln.strip()]
            errors = [ln for ln in lines if "error" in ln.lower() or "failed" in ln.lower()]
            reason = next((ln for ln in errors if "failed to quantize" in ln), errors[0] if errors else "")
            raise ConversionFailed(
                f"llama.cpp could not quantize {source.name} (exit code {child.returncode}): {reason[:300]}",
                details={"exit_code": child.returncode},
            )
        report("verifying", 0.97)
        try:
            check_gguf(partial)
        except InvalidInput as exc:
            raise ConversionFailed(f"the quantizer wrote an unreadable file: {exc.message}") from None
        os.replace(partial, output)
    except BaseException:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        partial.unlink(missing_ok=True)
        raise
    finally:
        log_file.close()
    seconds = round(time.monotonic() - start, 3)
    report("done", 1.0)
    return Result(
        output=output, source_bytes=source.stat().st_size, output_bytes=output.stat().st_size, seconds=seconds
    )


def _main(argv: list[str]) -> int:
    """The child process: ``SRC DST FTYPE [THREADS]``; exit code 0 on success."""
    import llama_cpp

    source, target, ftype = argv[0], argv[1], int(argv[2])
    threads = int(argv[3]) if len(argv) > 3 else 0
    # llama.cpp checks that every tensor lies within the file: a truncated source fails cleanly here
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    params.allow_requantize = True
    code = llama_cpp.llama_model_quantize(source.encode(), target.encode(), params)
    if code != 0:
        print(f"error: llama_model_quantize failed with code {code}", flush=True)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
