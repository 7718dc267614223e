"""The ``llama-gpu`` command, run as a user runs it (a subprocess of the installed script)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
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
    # a clean stop writes what it served: the request is in the data dir's database
    with contextlib.closing(sqlite3.connect(tmp_path / "llama-gpu.db")) as db:
        rows = db.execute("SELECT model, status FROM request_log").fetchall()
    assert rows == [("echo", 200)], rows


def test_bootstrap_admin_writes_its_secret_to_a_0600_file_not_to_stdout(tmp_path: Path) -> None:
    """The admin's password and key go to a new 0600 file; stdout (a container's log) never has them."""
    from llama_gpu.api import create_app

    data = tmp_path / "data"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLAMA_GPU_")},
        "LLAMA_GPU_DATA_DIR": str(data),
        "LLAMA_GPU_AUTH": "required",
        "LLAMA_GPU_PRELOAD": "false",
        "LLAMA_GPU_DEFAULT_MODEL": "echo",
        "LLAMA_GPU_AUTOLOAD_PLUGINS": "false",
    }
    secret = tmp_path / "admin-credentials"
    done = run("bootstrap-admin", "--secret-file", str(secret), env=env)
    assert done.returncode == 0, done.stderr
    assert secret.stat().st_mode & 0o777 == 0o600
    fields = dict(line.split(": ", 1) for line in secret.read_text().splitlines())
    assert set(fields) == {"user", "password", "api_key"} and fields["api_key"].startswith("lgk_")
    for value in (fields["password"], fields["api_key"]):
        assert value not in done.stdout and value not in done.stderr
    assert str(secret) in done.stdout

    again = run("bootstrap-admin", "--secret-file", str(secret), env=env)  # a rerun (compose up again)
    assert again.returncode == 0 and "nothing to do" in again.stderr
    assert dict(line.split(": ", 1) for line in secret.read_text().splitlines()) == fields  # left as it was
    stale = tmp_path / "stale"
    stale.write_text("old")
    fresh = {**env, "LLAMA_GPU_DATA_DIR": str(tmp_path / "fresh")}
    refused = run("bootstrap-admin", "--secret-file", str(stale), env=fresh)  # never overwrites a file
    assert refused.returncode == 2 and "exists already" in refused.stderr and stale.read_text() == "old"
    other = tmp_path / "second"
    nothing = run("bootstrap-admin", "--secret-file", str(other), env=env)
    assert nothing.returncode == 0 and "nothing to do" in nothing.stderr and not other.exists()

    app = create_app({"data_dir": str(data), "auth": "required", "preload": False, "default_model": "echo"})
    try:
        client = app.test_client()
        assert client.get("/api/v1/models").status_code == 401
        headers = {"Authorization": f"Bearer {fields['api_key']}"}
        assert client.get("/api/v1/plugins", headers=headers).status_code == 200  # the key is an admin's
    finally:
        app.extensions["llama_gpu"].stop()
