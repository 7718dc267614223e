"""Streams cannot exhaust the server: 100 idle sockets from one key, under gunicorn, leave everyone else answered.

One ``llama-gpu serve --production`` (gunicorn, ``llama_gpu/gunicorn_conf.py``: one gthread worker
with ``LLAMA_GPU_MAX_STREAMS + 16`` threads), auth required, the echo model. The caps are
small here (8 per identity, 20 per address, 30 in all: 46 threads), so that without them
100 idle connections would take every thread and ``/health`` would hang.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import signal
import socket as pysocket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio
import websocket

from .servers import free_port, wait_until_answers

pytestmark = pytest.mark.timeout(600)

CLI = str(Path(sys.executable).with_name("llama-gpu"))
PER_IDENTITY, PER_ADDRESS, TOTAL = 8, 20, 30
ATTACKERS = 100


@dataclasses.dataclass
class Server:
    url: str
    keys: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str, key: str | None = None, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return requests.get(self.url + path, headers=headers, timeout=60, **kw)

    def stream(self, key: str) -> requests.Response:
        body = {"text": "one two three", "model": "echo", "max_tokens": 8}
        return requests.post(
            self.url + "/api/v1/stream_infer", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not Path(CLI).exists():
        pytest.skip("the llama-gpu command is not installed (pip install -e .)")
    pytest.importorskip("gunicorn")
    tmp = tmp_path_factory.mktemp("stream-caps")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLAMA_GPU_")},
        "HF_HUB_OFFLINE": "1",
        "LLAMA_GPU_DATA_DIR": str(tmp / "data"),
        "LLAMA_GPU_AUTH": "required",
        "LLAMA_GPU_JWT_SECRET": uuid.uuid4().hex * 2,
        "LLAMA_GPU_DEFAULT_MODEL": "echo",
        "LLAMA_GPU_PRELOAD": "false",
        "LLAMA_GPU_AUTOLOAD_PLUGINS": "false",
        "LLAMA_GPU_RATE_LIMITS": "false",
        "LLAMA_GPU_SOCKET_CONNECTS_PER_MINUTE": "0",
        "LLAMA_GPU_MAX_STREAMS_PER_IDENTITY": str(PER_IDENTITY),
        "LLAMA_GPU_MAX_STREAMS_PER_ADDRESS": str(PER_ADDRESS),
        "LLAMA_GPU_MAX_STREAMS": str(TOTAL),
        "LLAMA_GPU_DRAIN_TIMEOUT": "5",
    }

    def cli(*args: str) -> str:
        done = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("users", "create", "--username", "admin", "--password", "correct horse battery staple", "--role", "admin")
    keys = {n: cli("keys", "create", "--name", n, "--role", "write").strip().splitlines()[-1] for n in ("a", "b")}
    log = tmp / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [CLI, "serve", "--production", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(proc, url + "/health", log, timeout=240, every=0.3)
        yield Server(url, keys, proc, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _connect(url: str, key: str) -> tuple[socketio.Client | None, Any]:
    client = socketio.Client(reconnection=False)
    refusals: list[Any] = []
    client.on("connect_error", refusals.append)
    try:
        client.connect(url, auth={"token": key}, transports=["websocket"], wait_timeout=30)
    except socketio.exceptions.ConnectionError as exc:
        return None, refusals[0] if refusals else str(exc)
    return client, None


def _stream_from(server: Server, key: str, source: str) -> tuple[int, str]:
    """A stream_infer from another loopback address (``source``, e.g. 127.0.0.2): status and body."""
    port = int(server.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(source, 0))
    try:
        body = json.dumps({"text": "one two three", "model": "echo", "max_tokens": 8})
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        connection.request("POST", "/api/v1/stream_infer", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def _others_are_answered(server: Server, *, same_address_streams: bool = True) -> None:
    """/health, /ready, key b's ordinary request and its stream (from another address too) all answer."""
    assert server.get("/health").status_code == 200
    assert server.get("/ready").status_code in (200, 503)  # answered: 503 only while no model serves
    assert server.get("/api/v1/models", server.keys["b"]).status_code == 200
    if same_address_streams:
        streamed = server.stream(server.keys["b"])
        assert streamed.status_code == 200 and '"is_complete": true' in streamed.text
    status, text = _stream_from(server, server.keys["b"], "127.0.0.2")
    assert status == 200 and '"is_complete": true' in text, text


def test_100_idle_sockets_of_one_key_leave_the_server_answering(server: Server) -> None:
    held: list[socketio.Client] = []
    refusals: list[Any] = []
    try:
        for _ in range(ATTACKERS):
            client, refusal = _connect(server.url, server.keys["a"])
            if client is not None:
                held.append(client)
            else:
                refusals.append(refusal)
        assert len(held) == PER_IDENTITY, refusals[:3]
        assert len(refusals) == ATTACKERS - PER_IDENTITY
        for refusal in refusals:
            assert refusal["data"]["code"] == "RATE_LIMIT_EXCEEDED", refusal
            assert refusal["data"]["details"]["scope"] == "identity"
            assert refusal["data"]["details"]["limit"] == PER_IDENTITY
        _others_are_answered(server)
        other, refusal = _connect(server.url, server.keys["b"])  # another key still connects
        assert other is not None, refusal
        other.disconnect()
        # key a's SSE stream counts against the same cap: 429, Retry-After, the error envelope
        refused = server.stream(server.keys["a"])
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        body = refused.json()
        assert body["success"] is False and body["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        assert body["error"]["details"]["scope"] == "identity"
    finally:
        for client in held:
            client.disconnect()
    # once its sockets are closed, key a streams again (its slots were given back)
    deadline = time.monotonic() + 60
    while (response := server.stream(server.keys["a"])).status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert response.status_code == 200, response.text
    for _ in range(PER_IDENTITY + 2):  # finished streams give their slot back: never 429 one after another
        assert server.stream(server.keys["b"]).status_code == 200


def test_stream_settings_are_checked() -> None:
    from llama_gpu.kernel.config import Settings
    from llama_gpu.kernel.errors import ConfigurationError

    for name in ("max_streams_per_identity", "max_streams_per_address", "max_streams", "socket_connects_per_minute"):
        with pytest.raises(ConfigurationError, match=name.upper()):
            Settings.from_env({f"LLAMA_GPU_{name.upper()}": "-1"})
    with pytest.raises(ConfigurationError, match="SOCKET_RECHECK_INTERVAL"):
        Settings.from_env({"LLAMA_GPU_SOCKET_RECHECK_INTERVAL": "0"})
    assert Settings.from_env({"LLAMA_GPU_MAX_STREAMS": "0"}).max_streams == 0  # 0: no cap


def test_100_idle_unauthenticated_websockets_from_one_address_are_capped(server: Server) -> None:
    ws_url = server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    opened: list[websocket.WebSocket] = []
    statuses: list[int] = []
    try:
        for _ in range(ATTACKERS):
            try:
                opened.append(websocket.create_connection(ws_url, timeout=30))
            except websocket.WebSocketBadStatusException as exc:
                statuses.append(exc.status_code)
                assert json.loads(exc.resp_body)["error"]["details"]["scope"] in ("address", "total")
        assert len(opened) <= PER_ADDRESS and statuses and set(statuses) == {429}
        assert len(opened) + len(statuses) == ATTACKERS
        # every request that holds no stream is answered; streams from this address wait for a free slot,
        # streams from another address do not
        _others_are_answered(server, same_address_streams=False)
        refused = server.stream(server.keys["b"])
        assert refused.status_code == 429 and refused.json()["error"]["details"]["scope"] == "address"
    finally:
        for ws in opened:
            ws.close()


def test_open_sse_streams_hold_their_slot_until_they_end(tmp_path: Path) -> None:
    """Werkzeug, a slow echo model: a key's third open SSE stream is refused (native and /v1), others stream."""
    from .test_socketio import Live

    live = Live(tmp_path, max_streams_per_identity=2, rate_limits=False)
    live.kernel.configure_plugin("echo", {"settings": {"token_delay": 0.2}})
    slow = {"text": " ".join(["w"] * 200), "model": "echo", "max_tokens": 200}
    opened: list[requests.Response] = []
    readers: list[Iterator[Any]] = []  # kept: a dropped line iterator closes its connection (and the stream)

    def post(path: str, key: str, body: dict[str, Any]) -> requests.Response:
        headers = {"Authorization": f"Bearer {live.keys[key]}"}
        return requests.post(live.url + path, json=body, headers=headers, stream=True, timeout=60)

    try:
        for _ in range(2):
            response = post("/api/v1/stream_infer", "write", slow)
            assert response.status_code == 200
            readers.append(response.iter_lines())
            assert next(readers[-1]).startswith(b"data: ")  # streaming: the first token has arrived
            opened.append(response)
        refused = post("/api/v1/stream_infer", "write", slow)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        error = refused.json()["error"]
        assert error["code"] == "RATE_LIMIT_EXCEEDED" and error["details"]["scope"] == "identity"
        assert error["details"]["limit"] == 2
        chat = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        refused_v1 = post("/v1/chat/completions", "write", chat)
        assert refused_v1.status_code == 429 and refused_v1.json()["error"]["code"] == "rate_limit_exceeded"
        # another key of the same user streams, and the refused key's non-stream calls are answered
        other = post("/api/v1/stream_infer", "admin", {**slow, "max_tokens": 3})
        assert other.status_code == 200 and '"is_complete": true' in other.text
        assert live.http("GET", "/api/v1/models", live.keys["write"]).status_code == 200
        opened.pop().close()  # one stream ends: its slot comes back
        deadline = time.monotonic() + 60
        while (again := post("/api/v1/stream_infer", "write", {**slow, "max_tokens": 3})).status_code == 429:
            assert time.monotonic() < deadline, "the closed stream's slot never came back"
            time.sleep(0.2)
        assert again.status_code == 200 and '"is_complete": true' in again.text
    finally:
        for response in opened:
            response.close()
        live.close()


@pytest.mark.parametrize("path", ["/v1/completions", "/api/v1/stream_infer"])
def test_a_client_that_resets_after_the_last_event_gives_its_slot_back(tmp_path: Path, path: str) -> None:
    """Werkzeug skips the response's close() when the client resets the connection after the last chunk
    (a benchmark client does: it stops reading at the end and closes); the slot must come back anyway."""
    import struct
    import threading

    from werkzeug.serving import make_server

    from llama_gpu import Kernel
    from llama_gpu.api import create_app
    from llama_gpu.api.context import STREAMS

    from .conftest import make_settings

    kernel = Kernel(make_settings(tmp_path, max_streams_per_identity=2)).start()
    app = create_app(kernel=kernel)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    limiter = app.extensions[STREAMS]
    body = (
        {"model": "echo", "prompt": "one two three four", "max_tokens": 4, "stream": True}
        if path.startswith("/v1")
        else {"text": "one two three four", "model": "echo", "max_tokens": 4}
    )
    last = b"[DONE]" if path.startswith("/v1") else b'"is_complete": true'
    try:
        for _ in range(5):  # more than the cap of 2: a leaked slot would refuse the third
            payload = json.dumps(body).encode()
            with pysocket.create_connection(("127.0.0.1", server.server_port), timeout=60) as sock:
                head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                sock.sendall(f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
                received = b""
                while last not in received:
                    chunk = sock.recv(65536)
                    assert chunk, received[-300:]
                    received += chunk
                assert b" 200 " in received.split(b"\r\n", 1)[0], received[:200]
                sock.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
            deadline = time.monotonic() + 60
            while limiter.open("total"):
                assert time.monotonic() < deadline, "the stream's slot was never given back"
                time.sleep(0.05)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        kernel.stop(timeout=5)
