"""The benchmark suite: load tests of any OpenAI-compatible server (LLaMA GPU, llama-cpp-python's, others).

>>> from llama_gpu.bench import Benchmark, BenchmarkConfig
>>> cfg = BenchmarkConfig(api_base="http://127.0.0.1:5000/v1", api_model_name="echo")  # doctest: +SKIP
>>> Benchmark(cfg).run().aggregated_metrics["ttft"]["p90"]  # doctest: +SKIP

The metric definitions follow genai-bench and vLLM's ``bench serve`` (see :mod:`.metrics`).
"""

from __future__ import annotations

from .config import BenchmarkConfig
from .errors import APIError, BenchError, BenchmarkError, ConfigurationError, DatasetError
from .metrics import RequestMetrics
from .runner import Benchmark, BenchmarkResult

__all__ = [
    "APIError",
    "BenchError",
    "Benchmark",
    "BenchmarkConfig",
    "BenchmarkError",
    "BenchmarkResult",
    "ConfigurationError",
    "DatasetError",
    "RequestMetrics",
]
