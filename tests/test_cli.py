"""The ``llama-gpu`` command, run as a user runs it (a subprocess of the installed script)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import llama_gpu

SCRIPT = str(Path(sys.executable).parent / "llama-gpu")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def test_plugins_list_shows_the_builtins_with_versions() -> None:
    result = run("plugins", "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "VERSION", "STATUS"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    for plugin_id in ("core", "open_access", "echo", "limits"):
        assert rows[plugin_id][1] == llama_gpu.__version__
        assert rows[plugin_id][2] == "loaded"
    as_json = json.loads(run("plugins", "list", "--json").stdout)
    assert {p["id"] for p in as_json} >= {"core", "echo"}


def test_version_and_bad_configuration() -> None:
    assert run("version").stdout.strip() == llama_gpu.__version__
    assert llama_gpu.__version__ in run("--version").stdout
    bad = run("plugins", "list", env={"LLAMA_GPU_PLUGIN_FAILURE_THRESHOLD": "many"})
    assert bad.returncode == 2
    assert "CONFIGURATION_ERROR" in bad.stderr and "LLAMA_GPU_PLUGIN_FAILURE_THRESHOLD" in bad.stderr
    assert "Traceback" not in bad.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_health(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "LLAMA_GPU_DATA_DIR": str(tmp_path),
        "LLAMA_GPU_DEFAULT_MODEL": "echo",
        "LLAMA_GPU_AUTH": "off",
    }
    proc = subprocess.Popen(
        [SCRIPT, "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    body = json.load(response)
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.2)
        assert body is not None and body["status"] == "healthy"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/infer",
            data=b'{"text": "served for real"}',
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.load(response)["result"]["generated_text"] == "served for real"
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
    assert f"serving on http://127.0.0.1:{port}" in output
    assert proc.returncode == 0, "SIGTERM stops the server cleanly"
    assert (tmp_path).is_dir()
