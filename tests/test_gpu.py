"""The CUDA paths for real, checked against the driver's own ``nvidia-smi`` (``make test-gpu``).

Every test here is marked ``gpu`` and skips on a machine without an NVIDIA GPU (the one skip CI allows). On a GPU
machine they load the bundled Qwen GGUF with every layer offloaded, and compare ``/api/v1/system/gpu`` and the
``llama_gpu_gpu_*`` metrics with what ``nvidia-smi`` prints.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from llama_gpu import InferenceRequest, Kernel
from llama_gpu.api import create_app

from .conftest import make_settings
from .gpus import nvidia_smi, nvml_gpu_count

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not nvidia_smi() or nvml_gpu_count() == 0, reason="no NVIDIA GPU on this machine"),
    pytest.mark.timeout(900),
]
QWEN = "qwen2.5-coder-0.5b-instruct"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FlaskClient]:
    kernel = Kernel(make_settings(tmp_path)).start()
    yield create_app(kernel=kernel).test_client()
    kernel.stop(timeout=5)


def gpu_rows(client: FlaskClient) -> list[dict[str, Any]]:
    """``/api/v1/system/gpu`` once the sampler has read every GPU."""
    expected = len(nvidia_smi())
    deadline = time.monotonic() + 60
    while True:
        body = client.get("/api/v1/system/gpu").get_json()
        if body["gpu_count"] == expected or time.monotonic() > deadline:
            return list(body["gpus"])
        time.sleep(0.2)


def test_gpu_endpoint_matches_nvidia_smi(client: FlaskClient) -> None:
    smi = nvidia_smi()
    gpus = gpu_rows(client)
    assert [(g["id"], g["name"], g["uuid"]) for g in gpus] == [(r["index"], r["name"], r["uuid"]) for r in smi]
    for gpu, row in zip(gpus, smi, strict=True):
        assert abs(gpu["memory_total"] / 2**20 - row["memory_total_mib"]) <= 1, (gpu, row)
        assert 0 <= gpu["memory_used"] <= gpu["memory_total"]


def test_gpu_metrics_match_nvidia_smi(client: FlaskClient) -> None:
    smi = nvidia_smi()
    gpu_rows(client)  # the sampler has run
    text = client.get("/metrics").get_data(as_text=True)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert [s.value for s in families["llama_gpu_gpus"].samples] == [len(smi)]
    totals = {s.labels["gpu"]: s.value for s in families["llama_gpu_gpu_memory_total_bytes"].samples}
    assert sorted(totals) == sorted(str(r["index"]) for r in smi)
    for row in smi:
        assert abs(totals[str(row["index"])] / 2**20 - row["memory_total_mib"]) <= 1


def test_llamacpp_offloads_every_layer_to_the_gpu(tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    if not llama_cpp.llama_supports_gpu_offload():
        pytest.fail("a GPU is here but llama-cpp-python was built without CUDA: `make test-gpu` rebuilds it")
    kernel = Kernel(make_settings(tmp_path, default_model=QWEN)).start()
    try:
        runtime = kernel.load_model(QWEN, backend="cuda")["runtime"]
        assert runtime["device"] == "cuda" and runtime["n_gpu_layers"] == -1, runtime
        answer = kernel.complete(
            InferenceRequest(prompt="The capital of France is", model=QWEN, max_tokens=8, temperature=0.0)
        )
        assert "Paris" in answer.text, answer.text
        assert os.getpid() in compute_pids(), "this process holds no memory on any GPU"
    finally:
        kernel.stop(timeout=10)


def compute_pids() -> set[int]:
    """The processes NVML lists as using a GPU for compute."""
    import pynvml

    pynvml.nvmlInit()
    try:
        pids = set()
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pids |= {p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)}
        return pids
    finally:
        pynvml.nvmlShutdown()
