"""``llama-gpu convert``: re-quantize a GGUF file on this machine, with a progress bar."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import click

from . import quantize as q


@click.command("convert")
@click.argument("source")
@click.option(
    "--quantization",
    "-q",
    default="q4_k_m",
    show_default=True,
    help=f"Target type: {', '.join(q.QUANT_TYPES)}.",
)
@click.option("--output", "-o", default=None, help="The .gguf to write [<models dir>/<source>-<quantization>.gguf].")
@click.option("--threads", type=int, default=0, show_default=True, help="Quantizer threads (0: every core).")
def convert(source: str, quantization: str, output: str | None, threads: int) -> None:
    """Re-quantize SOURCE with llama.cpp, or convert a Hugging Face checkpoint to GGUF first.

    SOURCE is a .gguf file or a safetensors directory (Qwen2, Llama): a path, or a name in
    LLAMA_GPU_MODELS_DIR.

    The server picks the new file up at its next start; ``POST /v1/convert`` registers it at once.
    """
    from ..kernel.config import Settings

    name = q.quant_name(quantization)
    models_dir = Path(Settings.from_env().models_path)
    path = Path(source).expanduser()
    if not path.exists():
        path = q.inside(models_dir, source, "SOURCE")
        if not path.exists():
            raise click.BadParameter(f"no file {source!r} (nor in {models_dir})", param_hint="SOURCE")
    if output:
        target = Path(output).expanduser()
    else:
        models_dir.mkdir(parents=True, exist_ok=True)
        target = q.default_output(path, name, models_dir)
    bar = click.progressbar(length=1000, label=f"{path.name} → {name}", file=sys.stderr, show_eta=False)
    shown = [0]
    phase = [""]

    def progress(event: dict[str, Any]) -> None:
        now = int(event["progress"] * 1000)
        phase[0] = event["phase"]
        bar.label = f"{path.name} → {name} [{phase[0]}]"
        if now > shown[0]:
            bar.update(now - shown[0])
            shown[0] = now

    cancel = threading.Event()
    try:
        with bar:
            if path.is_dir():
                from .hf import convert_checkpoint

                result = convert_checkpoint(path, target, name, on_progress=progress, cancel=cancel)
            else:
                result = q.quantize(path, target, name, on_progress=progress, cancel=cancel, threads=threads)
    except KeyboardInterrupt:
        cancel.set()
        click.echo("cancelled; partial output removed", err=True)
        sys.exit(130)
    mib = 1 << 20
    change = f"{abs(result.size_reduction) * 100:.1f}% {'smaller' if result.size_reduction >= 0 else 'larger'}"
    click.echo(
        f"wrote {result.output} in {result.seconds:.1f}s: {result.source_bytes / mib:.1f} MiB → "
        f"{result.output_bytes / mib:.1f} MiB ({change})"
    )
