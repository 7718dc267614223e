"""One settings model: a plugin's schema, filled from defaults, old variables, LLAMA_GPU_<PLUGIN>_<KEY>, the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from llama_gpu import Kernel, Settings
from llama_gpu.cli import main
from llama_gpu.errors import ConfigurationError, InvalidInput
from llama_gpu.kernel.plugin_settings import env_name

from .conftest import make_settings


def limiter(kernel: Kernel):  # type: ignore[no-untyped-def]
    return kernel.plugins.get("rate_limits").obj


def test_variable_names_are_the_plugin_id_and_the_key() -> None:
    assert env_name("rate_limits", "overrides") == "LLAMA_GPU_RATE_LIMITS_OVERRIDES"
    assert env_name("my-plugin", "token_delay") == "LLAMA_GPU_MY_PLUGIN_TOKEN_DELAY"


def test_the_old_variable_is_an_alias_and_the_new_one_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_GPU_RATE_LIMIT_OVERRIDES", "infer=10/5")  # today's name
    monkeypatch.setenv("LLAMA_GPU_MONITORING_INTERVAL", "0.5")
    settings = Settings.from_env(data_dir=str(tmp_path / "data"), preload=False, default_model="echo")
    kernel = Kernel(settings).start()
    try:
        assert limiter(kernel).limits["infer"] == (10, 5) and limiter(kernel).enabled
        assert kernel.plugins.get("monitoring").obj.interval == 0.5
        described = kernel.plugin_settings("rate_limits")
        assert described["overrides"] == {
            "value": "infer=10/5",
            "source": "LLAMA_GPU_RATE_LIMIT_OVERRIDES",
            "env": "LLAMA_GPU_RATE_LIMITS_OVERRIDES",
            "alias": "LLAMA_GPU_RATE_LIMIT_OVERRIDES",
        }
    finally:
        kernel.stop(timeout=5)

    monkeypatch.setenv("LLAMA_GPU_RATE_LIMITS_OVERRIDES", "infer=20/7")  # the plugin's own name wins
    monkeypatch.setenv("LLAMA_GPU_RATE_LIMITS_ENABLED", "false")
    kernel = Kernel(Settings.from_env(data_dir=str(tmp_path / "two"), preload=False, default_model="echo")).start()
    try:
        assert limiter(kernel).limits["infer"] == (20, 7) and not limiter(kernel).enabled
        assert kernel.plugin_settings("rate_limits")["enabled"]["source"] == "LLAMA_GPU_RATE_LIMITS_ENABLED"
    finally:
        kernel.stop(timeout=5)


def test_a_bad_variable_fails_the_start_naming_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_GPU_MONITORING_INTERVAL", "-1")
    with pytest.raises(ConfigurationError, match=r"monitoring.*interval"):
        Kernel(make_settings(tmp_path)).start()


def test_put_validates_once_and_a_refusal_changes_nothing(client: FlaskClient, kernel: Kernel) -> None:
    before = kernel.plugins.get("rate_limits").config_dict()
    for bad in ({"fallback_seconds": -1}, {"redis_timeout": "soon"}, {"no_such_key": 1}, {"enabled": "maybe"}):
        response = client.put("/api/v1/plugins/rate_limits/config", json={"config": {"settings": bad}})
        assert response.status_code == 400, response.json
        error = response.json["error"]
        assert error["code"] == "INVALID_INPUT" and set(error["details"]["fields"]) == set(bad)
        assert error["details"]["plugin_id"] == "rate_limits"
        assert kernel.plugins.get("rate_limits").config_dict() == before
    response = client.put(
        "/api/v1/plugins/rate_limits/config", json={"config": {"settings": {"overrides": "infer=3/1"}}}
    )
    assert response.status_code == 200, response.json
    assert limiter(kernel).limits["infer"] == (3, 1)
    assert kernel.plugin_settings("rate_limits")["overrides"]["source"] == "configured"
    with pytest.raises(InvalidInput, match="log_capacity"):
        kernel.configure_plugin("monitoring", {"settings": {"log_capacity": 5}})


def test_the_cli_shows_the_effective_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_GPU_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LLAMA_GPU_PRELOAD", "false")
    monkeypatch.setenv("LLAMA_GPU_RATE_LIMITS_REDIS_TIMEOUT", "2")
    result = CliRunner().invoke(main, ["plugins", "config", "rate_limits", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["redis_timeout"]["value"] == 2.0
    assert shown["redis_timeout"]["source"] == "LLAMA_GPU_RATE_LIMITS_REDIS_TIMEOUT"
    assert shown["key_prefix"] == {
        "value": "llama_gpu",
        "source": "default",
        "env": "LLAMA_GPU_RATE_LIMITS_KEY_PREFIX",
        "alias": None,
    }
    table = CliRunner().invoke(main, ["plugins", "config", "monitoring"])
    assert table.exit_code == 0 and "LLAMA_GPU_MONITORING_INTERVAL or LLAMA_GPU_METRICS_INTERVAL" in table.output
    missing = CliRunner().invoke(main, ["plugins", "config", "nope"])
    assert missing.exit_code != 0 and "nope" in missing.output


def test_the_llamacpp_settings_are_a_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: FlaskClient, kernel: Kernel
) -> None:
    monkeypatch.setenv("LLAMA_GPU_LLAMACPP_N_BATCH", "256")
    monkeypatch.setenv("LLAMA_GPU_LLAMACPP_FLASH_ATTN", "false")
    own = Kernel(make_settings(tmp_path)).start()
    try:
        assert own.plugins.get("llamacpp").obj.settings["n_batch"] == 256
        assert own.plugins.get("llamacpp").obj.settings["flash_attn"] is False
        assert own.plugin_settings("llamacpp")["n_batch"]["source"] == "LLAMA_GPU_LLAMACPP_N_BATCH"
    finally:
        own.stop(timeout=5)
    monkeypatch.delenv("LLAMA_GPU_LLAMACPP_N_BATCH")
    monkeypatch.delenv("LLAMA_GPU_LLAMACPP_FLASH_ATTN")
    plugin = kernel.plugins.get("llamacpp")
    before, applied = plugin.config_dict(), dict(plugin.obj.settings)
    for bad in ({"flash_attn": "on"}, {"n_ctx": 8}, {"n_batch": True}, {"bogus": 1}):
        response = client.put("/api/v1/plugins/llamacpp/config", json={"config": {"settings": bad}})
        assert response.status_code == 400, response.json
        error = response.json["error"]
        assert error["code"] == "INVALID_INPUT" and set(error["details"]["fields"]) == set(bad)
        assert plugin.config_dict() == before and plugin.obj.settings == applied
    response = client.put("/api/v1/plugins/llamacpp/config", json={"config": {"settings": {"n_batch": 128}}})
    assert response.status_code == 200, response.json
    assert plugin.obj.settings["n_batch"] == 128


def test_the_request_log_retention_is_a_persistence_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: FlaskClient, kernel: Kernel
) -> None:
    def retention(k: Kernel) -> float:
        return k.plugins.get("persistence").obj.request_log_retention_days

    own = Kernel(make_settings(tmp_path / "old", request_log_retention_days=7.0)).start()  # today's name: an alias
    try:
        assert retention(own) == 7.0
        assert own.plugin_settings("persistence")["request_log_retention_days"]["alias"] == (
            "LLAMA_GPU_REQUEST_LOG_RETENTION_DAYS"
        )
    finally:
        own.stop(timeout=5)
    monkeypatch.setenv("LLAMA_GPU_PERSISTENCE_REQUEST_LOG_RETENTION_DAYS", "3")  # the plugin's own name wins
    own = Kernel(make_settings(tmp_path / "new", request_log_retention_days=7.0)).start()
    try:
        assert retention(own) == 3.0
        assert own.services["monitoring"]._request_log_retention_days() == 3.0
    finally:
        own.stop(timeout=5)
    monkeypatch.delenv("LLAMA_GPU_PERSISTENCE_REQUEST_LOG_RETENTION_DAYS")
    before, kept = kernel.plugins.get("persistence").config_dict(), retention(kernel)
    for bad in ({"request_log_retention_days": -1}, {"request_log_retention_days": "long"}):
        response = client.put("/api/v1/plugins/persistence/config", json={"config": {"settings": bad}})
        assert response.status_code == 400, response.json
        error = response.json["error"]
        assert error["code"] == "INVALID_INPUT" and set(error["details"]["fields"]) == set(bad)
        assert kernel.plugins.get("persistence").config_dict() == before and retention(kernel) == kept
