"""The ``conversion`` job kind and the ``conversions`` plugin that runs it.

A job re-quantizes a GGUF file (a registered model or a file in the models directory) into a new
file in the models directory, through :func:`llama_gpu.convert.quantize.quantize` in a child
process, or converts a Hugging Face safetensors directory (Qwen2, Llama) to GGUF first
(:func:`llama_gpu.convert.hf.convert_checkpoint`). The result is registered in the catalog
(owner ``local_models``) where the job ran, and by every other instance that reads the finished
row (a worker shares the models directory with the servers), so it can be loaded straight away.

Events: ``convert.started``, ``convert.progress`` (at most two a second), ``convert.completed``
and ``convert.failed`` (a cancelled job ends with ``status: "cancelled"``), on the channel
``convert`` (admins only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..convert import quantize as q
from ..db.models import Job
from ..kernel.errors import Conflict, InvalidInput
from ..kernel.hookspecs import hookimpl
from ..kernel.types import Identity, PluginInfo
from .keys import CONVERSIONS
from .kind import JobChannel, JobContext, JobKind, Outcome, Submission
from .service import JobService
from .store import PRIVATE_PROGRESS, iso

log = logging.getLogger(__name__)

#: Who owns the models that conversions add to the catalog (unloading that plugin drops them too).
CATALOG_OWNER = "local_models"


class ConversionKind(JobKind):
    """GGUF re-quantization and Hugging Face → GGUF conversion."""

    name = "conversion"
    noun = "conversion"
    id_field = "job_id"
    running_status = "processing"
    channel = JobChannel("convert", "convert.", role="admin")
    events = {
        "convert.started": "A model conversion job started running",
        "convert.progress": "A running conversion job's phase and progress (at most two a second)",
        "convert.completed": "A conversion job finished; its output file and size reduction",
        "convert.failed": "A conversion job failed or was cancelled",
    }
    list_results = True  # a conversion's results are a few fields
    max_running, max_queued = 1, 8

    @property
    def models_dir(self) -> Path:
        """Where sources are looked up and outputs are written."""
        return Path(self.kernel.settings.models_path)

    def plan(
        self, source_model: str, quantization: str, output: str | None, target_format: str, busy: list[Job]
    ) -> dict[str, Any]:
        """Check a conversion request and work out its files (every refusal is a 4xx, raised now)."""
        if target_format != "gguf":
            raise InvalidInput("target_format must be 'gguf'", details={"field": "target_format"})
        name = q.quant_name(quantization)
        folder = self.models_dir
        source, model_id = q.resolve_source(source_model, folder, self.kernel.registry)
        checkpoint = source.is_dir()
        if checkpoint:
            from ..convert import hf

            hf.check_source(source)
            meta: dict[str, Any] = {}
            source_bytes = hf.checkpoint_bytes(source)
        else:
            meta = q.check_gguf(source)
            source_bytes = source.stat().st_size
        folder.mkdir(parents=True, exist_ok=True)
        if output:
            target = q.inside(folder, output, "output")
            if not target.name.lower().endswith(".gguf"):
                raise InvalidInput("output must end in .gguf", details={"field": "output"})
        else:
            target = q.default_output(source, name, folder)
        if target.resolve() == source.resolve():
            raise InvalidInput("output must differ from the source", details={"field": "output"})
        from ..plugins.models.local import model_id_for

        new_id = model_id_for(target)
        if target.exists() or target.with_name(target.name + ".partial").exists():
            raise Conflict(f"{target.name} exists already in the models directory", details={"field": "output"})
        if any(spec.id == new_id for spec in self.kernel.registry.specs()):
            raise Conflict(f"a model {new_id!r} exists already; choose another output", details={"field": "output"})
        writing = [row for row in busy if (row.config or {}).get("output_path") == str(target)]
        if writing:
            raise Conflict(f"conversion {writing[0].id} is writing {target.name} already", details={"field": "output"})
        needed = source_bytes * 3 if checkpoint else q.expected_size(source, name, meta)
        q.check_disk(target, needed)
        return {
            "source_model": source_model,
            "source_kind": "safetensors" if checkpoint else "gguf",
            "source_id": model_id,
            "source_path": str(source),
            "source_bytes": source_bytes,
            "output_path": str(target),
            "output_file": target.name,
            "model_id": new_id,
            "quantization": name,
            "target_format": target_format,
            "expected_bytes": needed,
            "estimated_duration": q.estimate_seconds_for(source_bytes * (2 if checkpoint else 1)),
            "source_file_type": meta.get("general.file_type"),
        }

    def event_base(self, row: Job) -> dict[str, Any]:
        """The job id, source, quantization and output file."""
        plan = row.config or {}
        return {
            "job_id": row.id,
            "source_model": plan.get("source_model"),
            "quantization": plan.get("quantization"),
            "output_file": plan.get("output_file"),
        }

    def start_progress(self, row: Job) -> dict[str, Any]:
        """Phase ``starting``."""
        return {"phase": "starting", "progress": 0.0}

    def started_data(self, row: Job) -> dict[str, Any]:
        """The estimated duration."""
        return {"estimated_duration": (row.config or {}).get("estimated_duration")}

    def completed_data(self, row: Job, results: dict[str, Any] | None) -> dict[str, Any]:
        """The output file, sizes and duration."""
        return dict(results or {})

    def error_text(self, exc: BaseException) -> str:
        """A project error's message, else the exception."""
        return getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"

    def execute(self, ctx: JobContext) -> Outcome:
        """Quantize (or convert, then quantize) into the output file, then register it."""
        plan = ctx.config
        output = Path(plan["output_path"])

        def on_progress(progress: dict[str, Any]) -> None:
            ctx.report(progress, force=progress["phase"] in ("done", "verifying"))

        try:
            if plan.get("source_kind") == "safetensors":
                from ..convert.hf import convert_checkpoint

                result = convert_checkpoint(
                    Path(plan["source_path"]), output, plan["quantization"], on_progress=on_progress, cancel=ctx.cancel
                )
            else:
                result = q.quantize(
                    Path(plan["source_path"]), output, plan["quantization"], on_progress=on_progress, cancel=ctx.cancel
                )
        except q.ConversionCancelled:
            return Outcome("cancelled", error="cancelled")
        except Exception as exc:  # quantize() removed any partial output
            if not isinstance(exc, q.LlamaGPUError):
                log.exception("conversion job %d failed", ctx.job_id)
            return Outcome("failed", error=self.error_text(exc), exception=exc)
        results = {
            "output_file": output.name,
            "output_path": str(output),
            "model_id": plan["model_id"],
            "source_bytes": result.source_bytes,
            "output_bytes": result.output_bytes,
            "size_reduction": result.size_reduction,
            "duration": result.seconds,
        }
        try:
            self.register(output)
        except Exception as exc:  # noqa: BLE001 - registered badly: fail the job, keep no orphan file
            output.unlink(missing_ok=True)
            return Outcome("failed", error=self.error_text(exc), exception=exc)
        return Outcome("completed", results=results, progress={"phase": "done", "progress": 1.0})

    def register(self, output: Path) -> None:
        """Add the new file to the catalog so that it can be loaded at once."""
        from ..plugins.models.local import gguf_spec

        spec = gguf_spec(output)
        if spec.unavailable:
            raise q.ConversionFailed(f"the output does not read back: {spec.unavailable}")
        self.kernel.registry.add_model(spec, CATALOG_OWNER)
        self.kernel.publish("model_status", {"model": spec.id, "status": "unloaded", "reason": "converted"})

    def observe(self, row: Job) -> None:
        """A conversion that finished in another process (a worker): register its output here too."""
        results = row.results if row.status == "completed" and isinstance(row.results, dict) else None
        if not results or not results.get("model_id"):
            return
        if any(spec.id == results["model_id"] for spec in self.kernel.registry.specs()):
            return
        output = Path(str(results.get("output_path") or ""))
        if output.is_file():
            try:
                self.register(output)
            except Exception:  # the row stays as it is; loading the file says why
                log.warning("could not register the output of conversion %d", row.id, exc_info=True)

    def describe(self, row: Job) -> dict[str, Any]:
        """A conversion as the API shows it."""
        plan = row.config if isinstance(row.config, dict) else {}
        results = row.results if isinstance(row.results, dict) else {}
        progress = {k: v for k, v in (row.progress or {}).items() if k not in PRIVATE_PROGRESS}
        status = "processing" if row.status in ("queued", "running") else row.status
        return {
            "job_id": row.id,
            "status": status,
            "state": row.status,
            "source_model": plan.get("source_model"),
            "target_format": plan.get("target_format", "gguf"),
            "quantization": plan.get("quantization"),
            "optimization": plan.get("optimization"),
            "output_file": results.get("output_file") or (plan.get("output_file") if status == "processing" else None),
            "model_id": results.get("model_id") if results else None,
            "source_bytes": plan.get("source_bytes"),
            "output_bytes": results.get("output_bytes"),
            "size_reduction": results.get("size_reduction"),
            "duration": results.get("duration"),
            "estimated_duration": plan.get("estimated_duration"),
            "progress": progress.get("progress", 1.0 if row.status == "completed" else 0.0),
            "phase": progress.get("phase"),
            "error": row.error,
            "created_at": iso(row.created_at),
            "started_at": iso(row.started_at),
            "finished_at": iso(row.finished_at),
        }


class ConversionJobs(JobService):
    """The ``conversions`` plugin: conversion jobs, shared as ``kernel.services[CONVERSIONS]``."""

    KIND = ConversionKind
    SERVICE = CONVERSIONS
    PLUGIN_INFO = PluginInfo(
        name="Model conversion",
        category="models",
        description="GGUF re-quantization (llama.cpp's quantizer) as background jobs with progress and cancel.",
    )

    @hookimpl
    def register_routes(self, register: Callable[[Any], None]) -> None:
        """The ``convert`` blueprint (its routes declare their permissions and schemas)."""
        from .routes.convert import bp

        register(bp)

    def submit_conversion(
        self,
        source_model: str,
        quantization: str,
        identity: Identity | None,
        *,
        output: str | None = None,
        optimization: str | None = None,
        target_format: str = "gguf",
    ) -> Job:
        """Check and queue one conversion; SERVER_OVERLOADED when the queue is full."""
        kind = self.kind
        assert isinstance(kind, ConversionKind), "the conversions plugin is not started"
        self.check_capacity()  # before the checks read the source
        plan = kind.plan(source_model, quantization, output, target_format, self.store.active())
        submission = Submission(
            name=f"{source_model} → {plan['quantization']}",
            config={**plan, "optimization": optimization},
            model=plan["source_id"] or Path(plan["source_path"]).name,
            progress={"phase": "queued", "progress": 0.0},
        )
        return self.submit_job(submission, identity)
