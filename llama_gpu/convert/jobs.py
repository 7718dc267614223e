"""The ``conversions`` plugin: model conversion jobs in the background, persisted in ``benchmark_runs``.

:class:`ConversionJobs` is :class:`~llama_gpu.bench.jobs.BenchmarkJobs` for another kind of
row (``kind = "conversion"``): the same queue (one job runs at a time), heartbeat, recovery of
rows whose process died, cancel and shutdown. It is shared as
``kernel.services["conversions"]``. A job re-quantizes a GGUF file (a registered model or a
file in the models directory) into a new file in the models directory, through
:func:`llama_gpu.convert.quantize.quantize` in a child process, or converts a Hugging Face
safetensors directory (Qwen2, Llama) to GGUF first (:func:`llama_gpu.convert.hf.convert_checkpoint`);
the result is registered in the catalog at once (owner ``local_models``), so it can be loaded
straight away.

Events: ``convert.started``, ``convert.progress`` (at most two a second), ``convert.completed``
and ``convert.failed`` (a cancelled job ends with ``status: "cancelled"``); the Socket.IO
bridge sends them to the channel ``convert``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..bench.jobs import BenchmarkJobs, Job
from ..db.models import BenchmarkRun, utcnow
from ..kernel.errors import Conflict, InvalidInput, ServerOverloaded
from ..kernel.hookspecs import hookimpl
from ..kernel.types import Identity, PluginInfo
from . import quantize as q

log = logging.getLogger(__name__)

#: Event types this plugin publishes.
EVENT_TYPES: dict[str, str] = {
    "convert.started": "A model conversion job started running",
    "convert.progress": "A running conversion job's phase and progress (at most two a second)",
    "convert.completed": "A conversion job finished; its output file and size reduction",
    "convert.failed": "A conversion job failed or was cancelled",
}
#: Who owns the models that conversions add to the catalog (unloading that plugin drops them too).
CATALOG_OWNER = "local_models"


class ConversionJobs(BenchmarkJobs):
    """Runs model conversions in the background and keeps their rows."""

    PLUGIN_INFO = PluginInfo(
        name="Model conversion",
        category="models",
        description="GGUF re-quantization (llama.cpp's quantizer) as background jobs with progress and cancel.",
    )
    KIND = "conversion"
    SERVICE = "conversions"
    NOUN = "conversion"
    EVENT_PREFIX = "convert"
    ID_FIELD = "job_id"

    #: A conversion's results are a few fields: lists show them.
    LIST_RESULTS = True

    def __init__(self, max_running: int = 1, max_queued: int = 8) -> None:
        super().__init__(max_running=max_running, max_queued=max_queued)

    @hookimpl
    def register_event_types(self, register: Callable[[str, str], None]) -> None:
        """Declare ``convert.started``, ``.progress``, ``.completed`` and ``.failed``."""
        for name, description in EVENT_TYPES.items():
            register(name, description)

    # ---------------------------------------------------------------- the service
    @property
    def models_dir(self) -> Path:
        """Where sources are looked up and outputs are written."""
        assert self.kernel is not None, "the conversions plugin is not started"
        return Path(self.kernel.settings.models_path)

    def prepare(
        self,
        source_model: str,
        quantization: str,
        output: str | None = None,
        *,
        target_format: str = "gguf",
    ) -> dict[str, Any]:
        """Check a conversion request and work out its files (every refusal is a 4xx, raised now)."""
        assert self.kernel is not None
        if target_format != "gguf":
            raise InvalidInput("target_format must be 'gguf'", details={"field": "target_format"})
        name = q.quant_name(quantization)
        folder = self.models_dir
        source, model_id = q.resolve_source(source_model, folder, self.kernel.registry)
        checkpoint = source.is_dir()
        if checkpoint:
            from . import hf

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
        with self._lock:
            busy = [j for j in (*self._queue, *self._running.values()) if j.config.get("output_path") == str(target)]
        if busy:
            raise Conflict(f"conversion {busy[0].id} is writing {target.name} already", details={"field": "output"})
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

    def submit_conversion(
        self,
        source_model: str,
        quantization: str,
        identity: Identity | None,
        *,
        output: str | None = None,
        optimization: str | None = None,
        target_format: str = "gguf",
    ) -> BenchmarkRun:
        """Check and queue one conversion; SERVER_OVERLOADED when the queue is full."""
        self.recover()
        with self._lock:
            if len(self._queue) >= self.max_queued:
                error = ServerOverloaded(
                    f"{len(self._queue)} conversions are waiting; try again later",
                    details={"queued": len(self._queue), "max_queued": self.max_queued},
                )
                error.retry_after = 30
                raise error
        plan = self.prepare(source_model, quantization, output, target_format=target_format)
        owner = self.owner_of(identity)
        stored = {**plan, "optimization": optimization, "owner": owner}
        with self.db.session() as session:
            row = BenchmarkRun(
                name=f"{source_model} → {plan['quantization']}"[:255],
                target=None,
                config=stored,
                owner=owner[:64],
                kind=self.KIND,
                status="queued",
                model=(plan["source_id"] or Path(plan["source_path"]).name)[:255],
                progress=self._stamp({"phase": "queued", "progress": 0.0}),
            )
            session.add(row)
            session.flush()
            session.expunge(row)
        job = Job(id=row.id, config=stored, owner=owner)
        with self._lock:
            self._queue.append(job)
            if self._beater is None:
                self._beater = threading.Thread(target=self._beat, name="conversion-heartbeat", daemon=True)
                self._beater.start()
        self._dispatch()
        return row

    def submit(self, *args: Any, **kwargs: Any) -> BenchmarkRun:  # type: ignore[override]
        """Conversions are submitted with :meth:`submit_conversion`."""
        raise TypeError("use submit_conversion() to queue a conversion")

    # ---------------------------------------------------------------- running
    def _execute(self, job: Job) -> None:
        plan = job.config
        if not self._write(
            job.id,
            ("queued",),
            status="running",
            started_at=utcnow(),
            progress=self._stamp({"phase": "starting", "progress": 0.0}),
        ):
            return  # cancelled through another process before it started
        base = {
            "job_id": job.id,
            "source_model": plan["source_model"],
            "quantization": plan["quantization"],
            "output_file": plan["output_file"],
        }
        self._publish_raw(
            "convert.started",
            {**base, "status": "processing", "estimated_duration": plan["estimated_duration"]},
        )
        last = [0.0]

        def on_progress(progress: dict[str, Any]) -> None:
            now = time.monotonic()
            if now - last[0] < self.PROGRESS_INTERVAL and progress["phase"] not in ("done", "verifying"):
                return
            last[0] = now
            if not self._write(job.id, ("running",), progress=self._stamp(progress)):
                job.cancel.set()  # the row was cancelled elsewhere
            self._publish_raw("convert.progress", {**base, "status": "processing", **progress})

        status, error, results = "failed", None, None
        output = Path(plan["output_path"])
        try:
            if plan.get("source_kind") == "safetensors":
                from .hf import convert_checkpoint

                result = convert_checkpoint(
                    Path(plan["source_path"]), output, plan["quantization"], on_progress=on_progress, cancel=job.cancel
                )
            else:
                result = q.quantize(
                    Path(plan["source_path"]), output, plan["quantization"], on_progress=on_progress, cancel=job.cancel
                )
            results = {
                "output_file": output.name,
                "output_path": str(output),
                "model_id": plan["model_id"],
                "source_bytes": result.source_bytes,
                "output_bytes": result.output_bytes,
                "size_reduction": result.size_reduction,
                "duration": result.seconds,
            }
            self._register(output)
            status = "completed"
        except q.ConversionCancelled:
            status, error = "cancelled", "cancelled"
        except Exception as exc:  # reported on the row and the bus; quantize() removed any partial output
            if not isinstance(exc, q.LlamaGPUError):
                log.exception("conversion job %d failed", job.id)
            error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            if status == "failed" and results is not None:  # registered badly: keep no orphan file
                output.unlink(missing_ok=True)
                results = None
        self._finish_row(job.id, status, error=error, results=results)
        if status == "completed":
            self._write(job.id, ("completed",), progress={"phase": "done", "progress": 1.0})
            self._publish_raw("convert.completed", {**base, "status": status, **(results or {})})
        else:
            self._publish_raw("convert.failed", {**base, "status": status, "error": error})

    def _register(self, output: Path) -> None:
        """Add the new file to the catalog so that it can be loaded at once."""
        from ..plugins.models.local import gguf_spec

        assert self.kernel is not None
        spec = gguf_spec(output)
        if spec.unavailable:
            raise q.ConversionFailed(f"the output does not read back: {spec.unavailable}")
        self.kernel.registry.add_model(spec, CATALOG_OWNER)
        self.kernel.publish("model_status", {"model": spec.id, "status": "unloaded", "reason": "converted"})


def describe(row: BenchmarkRun) -> dict[str, Any]:
    """A conversion as the API shows it."""
    from ..bench.jobs import PRIVATE_PROGRESS, iso

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
