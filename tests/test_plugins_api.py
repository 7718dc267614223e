"""The plugin endpoints: list, load, unload, configure, and every way to get them wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from llama_gpu import Kernel
from llama_gpu.api import create_app
from llama_gpu.errors import ConfigurationError
from llama_gpu.kernel.manager import BUILTIN_PLUGINS

from .conftest import make_settings

BUILTINS = [plugin_id for plugin_id, _ in BUILTIN_PLUGINS]

SAMPLES = {
    "fine": "tests.plugins.samples:Fine",
    "raises-on-init": "tests.plugins.samples:RaisesOnInit",
    "misspelled": "tests.plugins.samples:Misspelled",
    "missing-module": "tests.plugins.no_such_module:Plugin",
}


def error(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.json
    body = response.json
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert set(body) == {"success", "error", "request_id", "timestamp"}
    assert set(body["error"]) == {"code", "message", "details"}
    return body["error"]


def infer(client: FlaskClient, text: str = "hello world") -> str:
    response = client.post("/api/v1/infer", json={"text": text})
    assert response.status_code == 200, response.json
    return response.json["result"]["generated_text"]


def test_list_shows_builtins_with_their_metadata(client: FlaskClient) -> None:
    body = client.get("/api/v1/plugins").json
    assert body["success"] is True
    ids = [p["id"] for p in body["plugins"]]
    assert ids[: len(BUILTINS)] == BUILTINS
    assert body["total_plugins"] == len(body["plugins"])
    assert body["loaded_plugins"] == sum(p["status"] == "loaded" for p in body["plugins"]) == len(BUILTINS)
    echo = body["plugins"][BUILTINS.index("echo")]
    for key in ("id", "name", "version", "status", "category", "author", "description"):
        assert echo[key], key
    assert echo["version"] == __import__("llama_gpu").__version__
    assert echo["category"] == "backend"
    assert echo["hooks"] == ["configure", "register_backends"]
    assert echo["config"] == {"enabled": True, "priority": 50, "settings": {}}


def test_load_unload_and_configure_an_installed_plugin(client: FlaskClient, installed_entry_points) -> None:  # type: ignore[no-untyped-def]
    installed_entry_points({"fine": SAMPLES["fine"]})
    listed = {p["id"]: p for p in client.get("/api/v1/plugins").json["plugins"]}
    assert listed["fine"]["status"] == "available"
    assert listed["fine"]["version"] == "0.3.1"
    assert listed["fine"]["author"] == "Test Suite"
    assert infer(client) == "hello world"

    response = client.post("/api/v1/plugins/fine/load", json={"config": {"enabled": True, "priority": 10}})
    assert response.status_code == 200, response.json
    body = response.json
    assert body["success"] is True and body["message"] == "Plugin loaded successfully"
    assert body["plugin"]["id"] == "fine" and body["plugin"]["status"] == "loaded"
    assert body["plugin"]["config"] == {"enabled": True, "priority": 10}
    assert isinstance(body["plugin"]["load_time"], float)
    assert infer(client) == "hello~ world~"

    response = client.put("/api/v1/plugins/fine/config", json={"config": {"priority": 15, "settings": {"a": 1}}})
    assert response.status_code == 200
    assert response.json == {
        "success": True,
        "message": "Plugin configuration updated",
        "config": {"enabled": True, "priority": 15, "settings": {"a": 1}},
    }

    response = client.delete("/api/v1/plugins/fine/unload")
    assert response.json == {"success": True, "message": "Plugin unloaded successfully", "plugin_id": "fine"}
    assert infer(client) == "hello world"
    error(client.delete("/api/v1/plugins/fine/unload"), 409, "PLUGIN_NOT_LOADED")


def test_disable_and_enable_through_config(client: FlaskClient) -> None:
    client.put("/api/v1/plugins/echo/config", json={"config": {"settings": {"mode": "upper"}}})
    assert infer(client) == "HELLO WORLD"
    assert client.put("/api/v1/plugins/limits/config", json={"config": {"enabled": False}}).status_code == 200
    status = {p["id"]: p["status"] for p in client.get("/api/v1/plugins").json["plugins"]}
    assert status["limits"] == "disabled"
    # without the limits filter a long prompt is accepted
    assert client.post("/api/v1/infer", json={"text": "x", "max_tokens": 999_999}).status_code == 200
    assert client.put("/api/v1/plugins/limits/config", json={"config": {"enabled": True}}).status_code == 200
    error(client.post("/api/v1/infer", json={"text": "x", "max_tokens": 999_999}), 400, "INVALID_INPUT")


def test_unknown_plugin_is_404(client: FlaskClient) -> None:
    for method, url in (
        ("post", "/api/v1/plugins/nope/load"),
        ("delete", "/api/v1/plugins/nope/unload"),
        ("put", "/api/v1/plugins/nope/config"),
    ):
        kwargs = {"json": {"config": {}}} if method == "put" else {}
        err = error(getattr(client, method)(url, **kwargs), 404, "PLUGIN_NOT_FOUND")
        assert "echo" in err["details"]["available"]


@pytest.mark.parametrize(
    "plugin_id",
    [
        "os.path",
        "llama_gpu.plugins.core",
        "tests.plugins.samples:Fine",
        "..%2F..%2Fetc%2Fpasswd",
        "a/b",
        "Shout",
        "x" * 65,
        "-x",
        "%2Ftmp%2Fevil.py",
        "subprocess",
    ],
)
def test_module_or_file_paths_are_refused(client: FlaskClient, kernel: Kernel, plugin_id: str) -> None:
    before = sorted(kernel.plugins.pm.list_name_plugin(), key=lambda pair: pair[0])
    response = client.post(f"/api/v1/plugins/{plugin_id}/load")
    assert response.status_code in (400, 404), response.json
    code = response.json["error"]["code"]
    assert code in ("INVALID_INPUT", "PLUGIN_NOT_FOUND", "NOT_FOUND")
    assert sorted(kernel.plugins.pm.list_name_plugin(), key=lambda pair: pair[0]) == before
    import sys

    assert "subprocess" not in kernel.plugins.records
    assert not any(name.startswith("evil") for name in sys.modules)


def test_path_like_id_gets_invalid_input(client: FlaskClient) -> None:
    err = error(client.post("/api/v1/plugins/os.path/load"), 400, "INVALID_INPUT")
    assert "entry-point name" in err["message"]


def test_plugin_outside_allowlist_cannot_be_load(tmp_path: Path, installed_entry_points) -> None:  # type: ignore[no-untyped-def]
    installed_entry_points({"fine": SAMPLES["fine"]})
    kernel = Kernel(make_settings(tmp_path, plugins=("other",), autoload_plugins=True))
    client = create_app(kernel=kernel).test_client()
    try:
        status = {p["id"]: p for p in client.get("/api/v1/plugins").json["plugins"]}
        assert status["fine"]["status"] == "blocked"
        assert "LLAMA_GPU_PLUGINS" in status["fine"]["status_detail"]
        err = error(client.post("/api/v1/plugins/fine/load"), 403, "PERMISSION_DENIED")
        assert err["details"]["reason"] == "not listed in LLAMA_GPU_PLUGINS"
        assert "fine" not in dict(kernel.plugins.pm.list_name_plugin())
    finally:
        kernel.stop()


def test_blocklist_and_autoload(tmp_path: Path, installed_entry_points) -> None:  # type: ignore[no-untyped-def]
    installed_entry_points({"fine": SAMPLES["fine"]})
    kernel = Kernel(make_settings(tmp_path, autoload_plugins=True)).start()
    assert kernel.plugins.get("fine").loaded, "allowed third-party plugins load at start-up"
    kernel.stop()
    kernel = Kernel(make_settings(tmp_path, autoload_plugins=True, disable_plugins=("fine", "limits"))).start()
    try:
        assert kernel.plugins.get("fine").status == "blocked"
        assert kernel.plugins.get("limits").status == "blocked"
        client = create_app(kernel=kernel).test_client()
        error(client.post("/api/v1/plugins/limits/load"), 403, "PERMISSION_DENIED")
    finally:
        kernel.stop()
    with pytest.raises(ConfigurationError, match="essential plugin 'core'"):
        Kernel(make_settings(tmp_path, disable_plugins=("core",))).start()


def test_broken_third_party_plugin_fails_start_up(tmp_path: Path, installed_entry_points) -> None:  # type: ignore[no-untyped-def]
    installed_entry_points({"misspelled": SAMPLES["misspelled"]})
    with pytest.raises(ConfigurationError, match=r"misspelled.*proces_chunk"):
        Kernel(make_settings(tmp_path, autoload_plugins=True)).start()
    kernel = Kernel(make_settings(tmp_path, autoload_plugins=True, disable_plugins=("misspelled",))).start()
    assert kernel.state.value == "started"
    kernel.stop()


@pytest.mark.parametrize("plugin_id", ["raises-on-init", "misspelled", "missing-module"])
def test_load_failure_leaves_kernel_unchanged(
    client: FlaskClient,
    kernel: Kernel,
    installed_entry_points,
    plugin_id: str,  # type: ignore[no-untyped-def]
) -> None:
    installed_entry_points(SAMPLES)
    before_plugins = [(p["id"], p["status"], p["hooks"]) for p in client.get("/api/v1/plugins").json["plugins"]]
    before_types = kernel.events.types
    err = error(client.post(f"/api/v1/plugins/{plugin_id}/load"), 500, "PLUGIN_LOAD_FAILED")
    assert plugin_id in err["message"]
    after_plugins = [(p["id"], p["status"], p["hooks"]) for p in client.get("/api/v1/plugins").json["plugins"]]
    assert after_plugins == before_plugins
    assert kernel.events.types == before_types
    assert infer(client) == "hello world"


def test_essential_plugins_cannot_be_unloaded_or_disabled(client: FlaskClient) -> None:
    for plugin_id in ("core", "open_access"):
        error(client.delete(f"/api/v1/plugins/{plugin_id}/unload"), 409, "PLUGIN_ESSENTIAL")
        error(
            client.put(f"/api/v1/plugins/{plugin_id}/config", json={"config": {"enabled": False}}),
            409,
            "PLUGIN_ESSENTIAL",
        )
    assert client.get("/api/v1/plugins").json["loaded_plugins"] == len(BUILTINS)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"config": {"priority": "high"}}', "application/json"),
        ('{"config": {"priority": 100000}}', "application/json"),
        ('{"config": {"enabled": "yes"}}', "application/json"),
        ('{"config": {"settings": [1, 2]}}', "application/json"),
        ('{"config": {"colour": "red"}}', "application/json"),
        ('{"config": 5}', "application/json"),
        ("[1, 2]", "application/json"),
        ("{not json", "application/json"),
        ('{"config": {}}', "text/plain"),
        ("", "application/json"),
    ],
)
def test_bad_config_bodies_are_4xx_and_change_nothing(client: FlaskClient, body: str, content_type: str) -> None:
    before = client.get("/api/v1/plugins").json["plugins"]
    response = client.put("/api/v1/plugins/echo/config", data=body, content_type=content_type)
    assert 400 <= response.status_code < 500, response.json
    assert response.json["error"]["code"] in ("INVALID_INPUT", "UNSUPPORTED_MEDIA_TYPE")
    assert client.get("/api/v1/plugins").json["plugins"] == before


def test_refused_settings_keep_the_old_ones(client: FlaskClient) -> None:
    ok = client.put("/api/v1/plugins/echo/config", json={"config": {"settings": {"mode": "reverse"}}})
    assert ok.status_code == 200
    err = error(
        client.put("/api/v1/plugins/echo/config", json={"config": {"settings": {"mode": "sideways"}}}),
        400,
        "INVALID_INPUT",
    )
    assert "mode must be one of" in err["message"]
    echo = next(p for p in client.get("/api/v1/plugins").json["plugins"] if p["id"] == "echo")
    assert echo["config"]["settings"] == {"mode": "reverse"}
    assert infer(client, "one two three") == "three two one"
