"""One test per hook: each proves the kernel calls it as its spec says."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click
import pytest
from click.testing import CliRunner
from flask import Blueprint, jsonify

from llama_gpu import (
    Backend,
    Chunk,
    Credentials,
    GeneratedToken,
    Identity,
    InferenceRequest,
    InferenceResponse,
    Kernel,
    LoadedModel,
    LoadOptions,
    ModelSpec,
    hookimpl,
)
from llama_gpu.api import create_app
from llama_gpu.errors import AuthenticationFailed, ConfigurationError, InvalidInput, PermissionDenied

from .conftest import Recorder, make_settings


def ask(kernel: Kernel, prompt: str = "one two three", **kw: Any) -> InferenceResponse:
    return kernel.complete(InferenceRequest(prompt=prompt, **kw))


def test_hook_configure(kernel: Kernel) -> None:
    class Configurable:
        seen: list[dict[str, Any]] = []

        @hookimpl
        def configure(self, kernel: Kernel, settings: Mapping[str, Any]) -> None:
            if settings.get("level") == "bad":
                raise ValueError("level must not be bad")
            self.seen.append(dict(settings))

    plugin = Configurable()
    kernel.register_plugin("configurable", plugin, {"settings": {"level": "a"}})
    assert plugin.seen == [{"level": "a"}]
    kernel.configure_plugin("configurable", {"settings": {"level": "b"}})
    assert plugin.seen[-1] == {"level": "b"}
    with pytest.raises(InvalidInput, match="level must not be bad"):
        kernel.configure_plugin("configurable", {"settings": {"level": "bad"}})
    record = kernel.plugins.get("configurable")
    assert record.config.settings == {"level": "b"}, "a refused change keeps the previous settings"

    # settings are read-only for the plugin, and bad settings at load time are a 4xx
    class Mutator:
        @hookimpl
        def configure(self, settings: Mapping[str, Any]) -> None:
            settings["x"] = 1  # type: ignore[index]

    with pytest.raises(InvalidInput, match="refused its settings"):
        kernel.register_plugin("mutator", Mutator())
    assert "mutator" not in kernel.plugins.records


def test_hook_startup(settings: Any) -> None:
    calls: list[str] = []

    class Starter:
        @hookimpl
        def startup(self, kernel: Kernel) -> None:
            calls.append(kernel.state.value)

    kernel = Kernel(settings)
    kernel.load_plugins()
    kernel.register_plugin("starter", Starter())
    assert calls == [], "startup waits for start()"
    kernel.start()
    assert calls == ["created"]
    late = Starter()
    kernel.register_plugin("late", late)
    assert calls == ["created", "started"], "a plugin loaded at runtime gets startup at once"

    class Broken:
        @hookimpl
        def startup(self) -> None:
            raise RuntimeError("no")

    kernel2 = Kernel(settings)
    kernel2.load_plugins()
    kernel2.register_plugin("broken", Broken())
    with pytest.raises(ConfigurationError, match="broken"):
        kernel2.start()
    kernel.stop()


def test_hook_shutdown(settings: Any) -> None:
    calls: list[str] = []

    class Stopper:
        def __init__(self, name: str, fail: bool = False) -> None:
            self.name, self.fail = name, fail

        @hookimpl
        def shutdown(self, kernel: Kernel) -> None:
            calls.append(self.name)
            if self.fail:
                raise RuntimeError("shutdown failed")

    kernel = Kernel(settings).start()
    kernel.register_plugin("one", Stopper("one", fail=True))
    kernel.register_plugin("two", Stopper("two"))
    kernel.register_plugin("three", Stopper("three"))
    kernel.unload_plugin("three")
    assert calls == ["three"], "unloading a plugin calls its shutdown"
    kernel.stop()
    assert sorted(calls) == ["one", "three", "two"], "one failing shutdown does not stop the others"
    assert kernel.state.value == "stopped"


class _Model(LoadedModel):
    def generate(self, request: InferenceRequest) -> Any:
        for n in range(request.max_tokens):
            yield GeneratedToken(text=f"t{n} ", token_id=n)

    def tokenize(self, text: str) -> list[int]:
        return list(range(len(text.split())))


class _Backend(Backend):
    name = "counting"

    def builtin_models(self) -> list[ModelSpec]:
        return [ModelSpec(id="counter", backend=self.name)]

    def load(self, spec: ModelSpec, path: str | None, options: LoadOptions) -> LoadedModel:
        return _Model(spec)


def test_hook_register_backends(kernel: Kernel) -> None:
    class Provider:
        @hookimpl
        def register_backends(self, register: Callable[[Backend], None]) -> None:
            register(_Backend())

    kernel.register_plugin("provider", Provider())
    assert "counting" in kernel.registry.backends()
    assert ask(kernel, model="counter", max_tokens=3).text == "t0 t1 t2 "
    kernel.unload_plugin("provider")
    assert "counting" not in kernel.registry.backends()
    assert "counter" not in [s.id for s in kernel.registry.specs()], "unloading removes the plugin's models"

    class Duplicate:
        @hookimpl
        def register_backends(self, register: Callable[[Backend], None]) -> None:
            register(_Backend())
            register(_Backend())

    from llama_gpu.errors import PluginLoadFailed

    with pytest.raises(PluginLoadFailed, match="registered twice"):
        kernel.register_plugin("duplicate", Duplicate())
    assert "counting" not in kernel.registry.backends(), "a failed load leaves nothing behind"

    class NotABackend:
        @hookimpl
        def register_backends(self, register: Callable[[Any], None]) -> None:
            register("llama")

    with pytest.raises(PluginLoadFailed, match="Backend instances"):
        kernel.register_plugin("notabackend", NotABackend())


def test_hook_register_event_types(kernel: Kernel, recorder: Recorder) -> None:
    class Declares:
        @hookimpl
        def register_event_types(self, register: Callable[[str, str], None]) -> None:
            register("declares.ping", "A ping.")

    kernel.register_plugin("declares", Declares())
    assert kernel.events.types["declares.ping"] == "A ping."
    kernel.publish("declares.ping", {"n": 1})
    assert recorder.wait_for("declares.ping").data == {"n": 1}
    with pytest.raises(InvalidInput, match="unknown event type"):
        kernel.publish("undeclared.type", {})
    kernel.unload_plugin("declares")
    assert "declares.ping" not in kernel.events.types

    class Clash:
        @hookimpl
        def register_event_types(self, register: Callable[[str, str], None]) -> None:
            register("plugin_error", "Taken.")

    from llama_gpu.errors import PluginLoadFailed

    with pytest.raises(PluginLoadFailed, match="declared twice"):
        kernel.register_plugin("clash", Clash())
    assert kernel.events.types["plugin_error"] != "Taken."


def test_hook_register_commands(kernel: Kernel, monkeypatch: pytest.MonkeyPatch) -> None:
    @click.command("hello")
    @click.argument("name")
    def hello(name: str) -> None:
        click.echo(f"hello {name}")

    class Commands:
        @hookimpl
        def register_commands(self, register: Callable[[Any], None]) -> None:
            register(hello)

    before = [c.name for c in kernel.commands()]
    kernel.register_plugin("commands", Commands())
    assert [c.name for c in kernel.commands()] == [*before, "hello"]

    from llama_gpu import cli

    monkeypatch.setattr(cli, "_kernel", lambda **_: kernel)
    group = cli.LlamaGPUGroup(name="llama-gpu", commands=dict(cli.main.commands))
    result = CliRunner().invoke(group, ["hello", "world"])
    assert result.exit_code == 0, result.output
    assert result.output == "hello world\n"
    assert "hello" in CliRunner().invoke(group, ["--help"]).output


def test_hook_register_routes(settings: Any) -> None:
    bp = Blueprint("extra", __name__, url_prefix="/extra")

    @bp.get("/ping")
    def ping() -> Any:
        return jsonify({"pong": True})

    class Routes:
        @hookimpl
        def register_routes(self, register: Callable[[Any], None]) -> None:
            register(bp)

    kernel = Kernel(settings)
    kernel.load_plugins()
    kernel.register_plugin("routes", Routes())
    app = create_app(kernel=kernel)
    try:
        response = app.test_client().get("/extra/ping")
        assert response.status_code == 200
        assert response.json == {"pong": True}
        assert response.headers["X-API-Version"] == "1.0"
    finally:
        kernel.stop()


def test_hook_collect_metrics(kernel: Kernel) -> None:
    class Metrics:
        @hookimpl
        def collect_metrics(self) -> Mapping[str, float]:
            return {"widgets": 3.0}

    class BrokenMetrics:
        @hookimpl
        def collect_metrics(self) -> Mapping[str, float]:
            raise RuntimeError("sensor gone")

    kernel.register_plugin("metrics", Metrics())
    kernel.register_plugin("brokenmetrics", BrokenMetrics())
    ask(kernel)
    metrics = kernel.collect_metrics()
    assert metrics["metrics.widgets"] == 3.0
    assert metrics["core.requests_total"] == 1.0
    assert metrics["core.tokens_generated_total"] == 3.0
    assert not any(k.startswith("brokenmetrics.") for k in metrics), "a failing collector is skipped"
    assert kernel.plugins.get("brokenmetrics").total_failures == 1


def test_hook_prepare_request(kernel: Kernel) -> None:
    class Rewriter:
        @hookimpl
        def prepare_request(self, request: InferenceRequest, kernel: Kernel) -> None:
            request.prompt = request.prompt.replace("cat", "dog")
            request.metadata["rewritten"] = True

    kernel.register_plugin("rewriter", Rewriter())
    request = InferenceRequest(prompt="my cat sleeps")
    assert kernel.complete(request).text == "my dog sleeps"
    assert request.metadata["rewritten"] is True

    class Refuser:
        @hookimpl
        def prepare_request(self, request: InferenceRequest) -> None:
            if "secret" in request.prompt:
                raise InvalidInput("no secrets", details={"field": "text"})

    kernel.register_plugin("refuser", Refuser())
    with pytest.raises(InvalidInput, match="no secrets"):
        ask(kernel, "the secret is")
    assert kernel.plugins.get("refuser").total_failures == 0, "a deliberate refusal is not a plugin failure"
    assert kernel.inflight == 0


def test_hook_process_chunk(kernel: Kernel) -> None:
    seen: list[int] = []

    class Chunker:
        @hookimpl
        def process_chunk(self, request: InferenceRequest, chunk: Chunk) -> None:
            seen.append(chunk.index)
            if chunk.text.strip() == "two":
                chunk.dropped = True
            chunk.text = chunk.text.replace("three", "3")

    kernel.register_plugin("chunker", Chunker())
    stream = kernel.generate(InferenceRequest(prompt="one two three"))
    chunks = [c.text for c in stream]
    assert chunks == ["one", " 3"]
    assert seen == [0, 1, 2]
    assert stream.response is not None and stream.response.text == "one 3"


def test_hook_process_response(kernel: Kernel) -> None:
    class Responder:
        @hookimpl
        def process_response(self, request: InferenceRequest, response: InferenceResponse) -> None:
            response.text = f"[{response.text}]"
            response.metadata["by"] = "responder"

    kernel.register_plugin("responder", Responder())
    response = ask(kernel, "a b")
    assert response.text == "[a b]"
    assert response.metadata == {"by": "responder"}


def test_hook_authenticate(kernel: Kernel) -> None:
    class Keys:
        @hookimpl
        def authenticate(self, credentials: Credentials) -> Identity | None:
            if credentials.api_key == "good":
                return Identity(id="app", roles=frozenset({"read"}))
            if credentials.api_key == "revoked":
                raise AuthenticationFailed("key revoked")
            return None

    kernel.register_plugin("keys", Keys())
    assert kernel.authenticate(Credentials(api_key="good")) == Identity(id="app", roles=frozenset({"read"}))
    with pytest.raises(AuthenticationFailed, match="revoked"):
        kernel.authenticate(Credentials(api_key="revoked"))
    # nobody recognises it: the built-in open-access default answers last
    assert kernel.authenticate(Credentials(api_key="other")).id == "anonymous"  # type: ignore[union-attr]
    kernel.unload_plugin("keys")
    assert kernel.authenticate(Credentials(api_key="good")).id == "anonymous"  # type: ignore[union-attr]


def test_hook_check_permission(kernel: Kernel, app: Any) -> None:
    reader = Identity(id="r", roles=frozenset({"read"}))
    assert kernel.check_permission(reader, "read")
    assert not kernel.check_permission(reader, "admin")
    assert not kernel.check_permission(None, "read"), "nobody answering denies"
    with pytest.raises(PermissionDenied):
        kernel.require(reader, "admin")
    with pytest.raises(AuthenticationFailed):
        kernel.require(None, "admin")

    class ReadOnlyPlugins:
        @hookimpl(tryfirst=True)
        def check_permission(self, permission: str, resource: str | None) -> bool | None:
            return False if resource == "plugins" and permission == "admin" else None

    kernel.register_plugin("readonly", ReadOnlyPlugins())
    client = app.test_client()
    response = client.delete("/api/v1/plugins/limits/unload")
    assert response.status_code == 403
    assert response.json["error"]["code"] == "PERMISSION_DENIED"
    assert client.get("/api/v1/plugins").status_code == 200


def test_hook_on_event(kernel: Kernel, recorder: Recorder) -> None:
    request = InferenceRequest(prompt="x y")
    kernel.complete(request)
    started = recorder.wait_for("inference_started", request_id=request.id)
    completed = recorder.wait_for("inference_completed", request_id=request.id)
    assert started.data["model"] == "echo"
    assert completed.data["tokens_generated"] == 2
    assert completed.data["backend"] == "echo"


def test_settings_from_env_and_bad_values(tmp_path: Any) -> None:
    s = make_settings(tmp_path)
    assert s.port == 5000
    from llama_gpu import Settings

    env = {"LLAMA_GPU_PORT": "8080", "LLAMA_GPU_PLUGINS": "a, b", "LLAMA_GPU_AUTOLOAD_PLUGINS": "no"}
    parsed = Settings.from_env(env)
    assert (parsed.port, parsed.plugins, parsed.autoload_plugins) == (8080, ("a", "b"), False)
    for bad in (
        {"LLAMA_GPU_PORT": "eighty"},
        {"LLAMA_GPU_PORT": "0"},
        {"LLAMA_GPU_PORT": "70000"},
        {"LLAMA_GPU_AUTOLOAD_PLUGINS": "perhaps"},
        {"LLAMA_GPU_LOG_LEVEL": "LOUD"},
        {"LLAMA_GPU_DRAIN_TIMEOUT": "-1"},
        {"LLAMA_GPU_MAX_INPUT_LENGTH": "-5"},
    ):
        with pytest.raises(ConfigurationError) as info:
            Settings.from_env(bad)
        assert next(iter(bad)) in info.value.message
    with pytest.raises(ConfigurationError, match="unknown setting"):
        Settings.create(nonsense=1)
