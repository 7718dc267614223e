"""The README's examples run, in order, against the live server (``LLAMA_GPU_URL``, ``LLAMA_GPU_API_KEY``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import LiveServer

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    """The ```python fenced blocks of a Markdown text."""
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def test_the_readme_has_the_examples() -> None:
    blocks = python_blocks(README.read_text())
    joined = "\n".join(blocks)
    for call in ("infer(", "stream_infer(", "batch_infer(", "list_models(", "load_model(", "list_plugins(",
                 "get_system_status(", "get_metrics(", "create_socket(", "subscribe(", "chat("):  # fmt: skip
        assert call in joined, call
    assert len(blocks) >= 9


def test_the_readme_examples_run(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLAMA_GPU_URL", live.url)
    monkeypatch.setenv("LLAMA_GPU_API_KEY", live.keys["admin"])
    namespace: dict[str, object] = {"__name__": "readme"}
    try:
        for n, block in enumerate(python_blocks(README.read_text())):
            try:
                exec(compile(block, f"{README}:block{n}", "exec"), namespace)
            except Exception as exc:
                pytest.fail(f"README block {n} failed: {type(exc).__name__}: {exc}\n{block}")
    finally:
        socket = namespace.get("socket")
        if socket is not None and hasattr(socket, "disconnect"):
            socket.disconnect()
        if hasattr(namespace.get("client"), "unload_model"):
            namespace["client"].unload_model("qwen2.5-coder-0.5b-instruct")  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    assert "HELLO THERE" in out and "MODEL_NOT_FOUND 404" in out and "done: req_" in out
