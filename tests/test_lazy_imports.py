"""Heavy libraries stay out of a server that serves only the GGUF default model.

``llama-gpu serve`` runs as a real process with ``PYTHONPROFILEIMPORTTIME=1``, which makes
Python write one line per imported module to stderr; once the default model is ready the
list must hold none of torch, transformers, sentence-transformers and the other heavy
libraries that only a PyTorch model, an evaluation or a report needs. Each of them costs
tens to hundreds of MB of resident memory in every server process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from .servers import free_port, wait_until_answers

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'llama-gpu[gguf]')")
pytestmark = pytest.mark.timeout(900)

CLI = str(Path(sys.executable).parent / "llama-gpu")
QWEN = "qwen2.5-coder-0.5b-instruct"
#: Top-level modules that no part of serving a GGUF model needs.
HEAVY = ("torch", "transformers", "sentence_transformers", "matplotlib", "openpyxl", "pandas", "sklearn", "scipy")


def imported_modules(importtime_log: str) -> set[str]:
    """Top-level names of the modules in ``-X importtime`` output."""
    names = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                names.add(name.split(".")[0])
    return names


def test_importtime_parser_sees_a_heavy_import() -> None:
    """The check below can fail: a process that imports ``json.decoder`` is seen importing ``json``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import json.decoder"], capture_output=True, text=True, check=True
    )
    assert "json" in imported_modules(done.stderr)
    assert "torch" not in imported_modules(done.stderr)


def test_serving_the_gguf_default_model_imports_no_heavy_library(tmp_path: Path) -> None:
    if not Path(CLI).exists():
        pytest.skip("the llama-gpu command is not installed (pip install -e .)")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLAMA_GPU_")},
        "HF_HUB_OFFLINE": "1",
        "PYTHONPROFILEIMPORTTIME": "1",
        "LLAMA_GPU_DATA_DIR": str(tmp_path / "data"),
        "LLAMA_GPU_AUTH": "off",
        "LLAMA_GPU_DEFAULT_MODEL": QWEN,
    }
    log = tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_answers(proc, url + "/ready", log, timeout=600, every=0.5)  # 200 once the model is loaded
        model = requests.get(f"{url}/api/v1/models/{QWEN}", timeout=30).json()["model"]
        assert model["loaded"] and model["backend"] == "llamacpp"
        answer = requests.post(
            f"{url}/v1/completions", json={"model": QWEN, "prompt": "Hello", "max_tokens": 2}, timeout=300
        )
        assert answer.status_code == 200, answer.text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    modules = imported_modules(log.read_text(errors="replace"))
    assert "llama_cpp" in modules and "flask" in modules, "the import log covers the serving process"
    assert not modules & set(HEAVY), f"imported by a GGUF-only server: {sorted(modules & set(HEAVY))}"
