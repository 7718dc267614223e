"""The service keys of the job plugins (import-light: the HTTP layer and the CLI import these)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llama_gpu.kernel.services import ServiceKey

if TYPE_CHECKING:
    from .service import JobService

__all__ = ["BENCHMARKS", "CONVERSIONS", "EVALUATIONS"]

#: Benchmark jobs, shared by the ``benchmarks`` plugin.
BENCHMARKS: ServiceKey[JobService] = ServiceKey("benchmarks", plugin="benchmarks")
#: Conversion jobs, shared by the ``conversions`` plugin.
CONVERSIONS: ServiceKey[JobService] = ServiceKey("conversions", plugin="conversions")
#: Evaluation jobs, shared by the ``evaluations`` plugin.
EVALUATIONS: ServiceKey[JobService] = ServiceKey("evaluations", plugin="evaluations")
