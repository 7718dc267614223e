"""The example third-party plugin: pip-installed, loaded and unloaded through the API, no restart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from llama_gpu import Kernel
from llama_gpu.app import create_app

from .conftest import make_settings

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "llama-gpu-shout"


@pytest.fixture(scope="module")
def shout_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install`` the example into a folder of its own (the test venv stays untouched)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        timeout=300,
    )
    assert list(target.glob("llama_gpu_shout-1.2.0.dist-info"))
    return target


def text_of(client: FlaskClient) -> str:
    response = client.post("/api/v1/infer", json={"text": "quiet please"})
    assert response.status_code == 200, response.json
    return response.json["result"]["generated_text"]


def test_example_plugin_loads_and_unloads_at_runtime(
    client: FlaskClient, shout_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert text_of(client) == "quiet please"
    plugins = {p["id"] for p in client.get("/api/v1/plugins").json["plugins"]}
    assert "shout" not in plugins

    monkeypatch.syspath_prepend(str(shout_site))  # the package is now installed; the server keeps running
    listed = {p["id"]: p for p in client.get("/api/v1/plugins").json["plugins"]}
    assert listed["shout"]["status"] == "available"
    assert listed["shout"]["version"] == "1.2.0"
    assert listed["shout"]["package"] == "llama-gpu-shout"
    assert listed["shout"]["category"] == "unknown", "listing does not import the plugin's code"
    assert "llama_gpu_shout" not in sys.modules

    response = client.post("/api/v1/plugins/shout/load", json={"config": {"priority": 10, "settings": {"suffix": "!"}}})
    assert response.status_code == 200, response.json
    assert response.json["plugin"]["status"] == "loaded"
    assert text_of(client) == "QUIET PLEASE!"
    streamed = client.post("/api/v1/infer", json={"text": "quiet please", "stream": True}).get_data(as_text=True)
    assert '"token": "QUIET"' in streamed and '"final_text": "QUIET PLEASE!"' in streamed

    bad = client.put("/api/v1/plugins/shout/config", json={"config": {"settings": {"suffix": 7}}})
    assert bad.status_code == 400 and bad.json["error"]["code"] == "INVALID_INPUT"
    assert text_of(client) == "QUIET PLEASE!", "a refused configuration changes nothing"

    assert client.delete("/api/v1/plugins/shout/unload").status_code == 200
    assert text_of(client) == "quiet please"
    listed = {p["id"]: p for p in client.get("/api/v1/plugins").json["plugins"]}
    assert listed["shout"]["status"] == "available"
    assert listed["shout"]["category"] == "postprocessing"
    assert listed["shout"]["author"] == "LLaMA GPU examples"


def test_the_example_plugin_adds_a_documented_route(
    tmp_path: Path, shout_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed before the server starts, the plugin's ``register_routes`` blueprint is served,
    guarded by its declaration and listed in the OpenAPI document."""
    monkeypatch.syspath_prepend(str(shout_site))
    kernel = Kernel(make_settings(tmp_path, auth="required", autoload_plugins=True)).start()
    try:
        client = create_app(kernel=kernel).test_client()
        accounts = kernel.services["accounts"]
        writer, reader = (accounts.create_key(role, role)[1] for role in ("write", "read"))
        body = {"text": "hello"}
        assert client.post("/api/v1/shout", json=body).status_code == 401
        refused = client.post("/api/v1/shout", json=body, headers={"Authorization": f"Bearer {reader}"})
        assert refused.status_code == 403 and refused.json["error"]["code"] == "PERMISSION_DENIED"
        shouted = client.post("/api/v1/shout", json=body, headers={"Authorization": f"Bearer {writer}"})
        assert shouted.status_code == 200 and shouted.json == {"shouted": "HELLO"}
        bad = client.post("/api/v1/shout", json={"text": 7}, headers={"Authorization": f"Bearer {writer}"})
        assert bad.status_code == 400 and bad.json["error"]["details"]["errors"] == {"text": ["Not a valid string."]}

        operation = client.get("/api/v1/openapi.json").json["paths"]["/api/v1/shout"]["post"]
        assert operation["summary"] == "Shout a text back (the example plugin's route)"
        assert operation["security"] == [{"bearer": []}, {"apiKey": []}]
        assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/Shout")
        assert operation["tags"] == ["shout"] and "429" in operation["responses"]
    finally:
        kernel.stop(timeout=2)
