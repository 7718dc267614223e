"""The route walk: every route and Socket.IO event refuses callers without credentials, or below its role.

The walk reads the app as it is: every rule of ``app.url_map`` (plugins' routes included)
and every handler of the Socket.IO server. A rule that is not on :data:`PUBLIC` must declare
its permission on the route (``@route(bp, …, permission="<role>")``, read back from the view's
declaration; a Socket.IO handler with ``require("<role>", …)`` in its body), and then answer
401 without credentials, 403 to a key
whose permissions are below the declared role, and neither to a key that holds it. A route
added later without protection fails :func:`test_every_route_refuses_callers_without_its_role`
(and :func:`test_the_walk_catches_an_unprotected_route` shows that it would).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from flask import Blueprint, Flask, jsonify
from werkzeug.routing import Rule
from werkzeug.serving import make_server

from llama_gpu import Kernel, hookimpl
from llama_gpu.api import create_app
from llama_gpu.api.routing import route_spec
from llama_gpu.dashboard.socket import SocketChannel
from llama_gpu.plugins.monitoring.socketio_bridge import CHANNEL_ROLES, CHANNELS

from .conftest import make_settings

ROLES = ("read", "write", "admin")

#: Endpoints anyone may call, and why.
PUBLIC: dict[str, str] = {
    "health.health": "liveness probe",
    "health.ready": "readiness probe",
    "auth.login": "exchanges a password for a token (throttled)",
    "openapi.document": "the API description",
    "openapi.docs": "the API description's page",
    "openapi.assets": "that page's scripts and styles",
    "dashboard.index": "the dashboard page is the login form; its data comes from the API",
    "dashboard.static": "the dashboard's scripts and styles",
    "static": "Flask's static folder",
}

#: Socket.IO handlers the walk knows; any other handler fails the walk until it is added here.
SOCKET_EVENTS: dict[str, Any] = {
    "connect": None,  # authenticates: read at least (checked below)
    "disconnect": None,
    "*": None,  # unknown events: refused in the ack
    # the channels a read key may join; those above ``read`` are walked separately below
    "subscribe": {"channels": [c for c in CHANNELS if CHANNEL_ROLES.get(c, "read") == "read"]},
    "unsubscribe": {"channels": [c for c in CHANNELS if CHANNEL_ROLES.get(c, "read") == "read"]},
    "chat": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    "chat_cancel": {"request_id": "req-none"},
}


def _roles_in(function: Callable[..., Any], depth: int = 2) -> list[str]:
    """The roles ``function`` asks for: ``require("role", …)`` / ``kernel.require(identity, "role", …)``
    in its body, or in the helpers of its module that it calls (``depth`` levels down)."""
    function = inspect.unwrap(function)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError):
        return []
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
        if name == "require":
            found += [a.value for a in node.args[:2] if isinstance(a, ast.Constant) and a.value in ROLES][:1]
        elif isinstance(node.func, ast.Name) and depth > 0:
            helper = getattr(function, "__globals__", {}).get(node.func.id)
            if inspect.isfunction(helper) and helper.__module__ == function.__module__:
                found += _roles_in(helper, depth - 1)
    return found


def declared_role(function: Callable[..., Any]) -> str | None:
    """The role a route declares on itself, else the highest ``function`` asks for; ``None`` when it declares none."""
    spec = route_spec(function)
    if spec is not None:
        return spec.permission
    roles = _roles_in(function)
    return max(roles, key=ROLES.index) if roles else None


def _url(app: Flask, rule: Rule) -> str:
    values = {
        arg: 999999 if "int" in type(rule._converters[arg]).__name__.lower() else "none" for arg in rule.arguments
    }
    with app.test_request_context():
        return app.url_map.bind("localhost").build(rule.endpoint, values)


def walk(app: Flask, keys: dict[str, str]) -> list[str]:
    """Every problem found: unlisted routes without a declared role, and answers that let a caller in."""
    client = app.test_client()
    problems = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint in PUBLIC:
            continue
        role = declared_role(app.view_functions[rule.endpoint])
        if role is None:
            problems.append(f"{rule.endpoint} ({rule.rule}) is not public and declares no permission")
        url = _url(app, rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):

            def call(key: str | None, method: str = method, url: str = url) -> int:
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                body = {} if method in ("POST", "PUT", "PATCH") else None
                return int(client.open(url, method=method, headers=headers, json=body).status_code)

            if (status := call(None)) != 401:
                problems.append(f"{method} {rule.rule} answers {status} without credentials, not 401")
            if role is None:
                continue
            below = ["none", *ROLES[: ROLES.index(role)]]
            for lower in below:
                if (status := call(keys[lower])) != 403:
                    problems.append(f"{method} {rule.rule} (declares {role}) answers {status} to a {lower} key")
            if (status := call(keys[role])) in (401, 403):
                problems.append(f"{method} {rule.rule} refuses ({status}) a {role} key, the role it declares")
    return problems


class Walked:
    """A kernel with auth required (and ``/metrics`` not public), its app, and keys of each role."""

    def __init__(self, tmp_path: Path) -> None:
        self.kernel = Kernel(make_settings(tmp_path, auth="required", metrics_public=False)).start()
        self.app = create_app(kernel=self.kernel)
        accounts = self.kernel.services["accounts"]
        self.keys = {role: accounts.create_key(role, role)[1] for role in ROLES}
        self.keys["none"] = accounts.create_key("no permissions", "read", permissions=[])[1]


@pytest.fixture
def walked(tmp_path: Path) -> Iterator[Walked]:
    w = Walked(tmp_path)
    yield w
    w.kernel.stop(timeout=2)


def test_every_route_refuses_callers_without_its_role(walked: Walked) -> None:
    rules = [r for r in walked.app.url_map.iter_rules() if r.endpoint not in PUBLIC]
    assert len(rules) >= 40, "the walk sees the whole API"
    assert walk(walked.app, walked.keys) == []
    assert set(PUBLIC) <= {r.endpoint for r in walked.app.url_map.iter_rules()}, "no stale public entries"


def test_public_routes_answer_without_credentials(walked: Walked) -> None:
    client = walked.app.test_client()
    for path in ("/health", "/api/v1/openapi.json", "/api/v1/docs", "/"):
        assert client.get(path).status_code == 200, path
    assert client.get("/ready").status_code in (200, 503)
    assert client.post("/api/v1/auth/login", json={"username": "x", "password": "wrong-one"}).status_code == 401


def test_the_walk_catches_an_unprotected_route(tmp_path: Path) -> None:
    added = Blueprint("added_later", __name__)

    @added.post("/api/v1/added-later/<int:thing_id>")
    def forgotten(thing_id: int) -> Any:
        return jsonify({"deleted": thing_id})

    class ThirdParty:
        """A plugin adding a route the way third-party plugins do (``register_routes``)."""

        @hookimpl
        def register_routes(self, register: Callable[[Any], None]) -> None:
            register(added)

    kernel = Kernel(make_settings(tmp_path, auth="required", metrics_public=False))  # public /metrics: walked open
    kernel.load_plugins()
    kernel.register_plugin("third_party", ThirdParty())
    kernel.start()
    try:
        app = create_app(kernel=kernel)
        accounts = kernel.services["accounts"]
        keys = {role: accounts.create_key(role, role)[1] for role in ROLES}
        keys["none"] = accounts.create_key("none", "read", permissions=[])[1]
        problems = walk(app, keys)
        assert problems == [
            "added_later.forgotten (/api/v1/added-later/<int:thing_id>) is not public and declares no permission",
            "POST /api/v1/added-later/<int:thing_id> answers 200 without credentials, not 401",
        ]
    finally:
        kernel.stop(timeout=2)


def test_every_socketio_event_refuses_callers_without_its_role(walked: Walked) -> None:
    handlers = walked.app.extensions["socketio"].server.handlers["/"]
    assert set(handlers) <= set(SOCKET_EVENTS), f"unwalked Socket.IO events: {set(handlers) - set(SOCKET_EVENTS)}"
    server = make_server("127.0.0.1", 0, walked.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        for token in (None, "lgk_" + "x" * 43, walked.keys["none"]):  # nobody, a forged key, no read permission
            client = socketio.Client(reconnection=False)
            with pytest.raises(socketio.exceptions.ConnectionError):
                client.connect(url, auth={"token": token} if token else None, transports=["polling"], wait_timeout=10)
            assert not client.connected
        reader = socketio.Client(reconnection=False)
        reader.connect(url, auth={"token": walked.keys["read"]}, transports=["polling"], wait_timeout=10)
        try:
            for event, payload in SOCKET_EVENTS.items():
                if payload is None:
                    continue
                role = declared_role(getattr(SocketChannel, f"on_{event}")) or "read"
                answer = reader.call(event, payload, timeout=30)
                if role != "read":
                    assert answer["success"] is False, event
                    assert answer["error"]["code"] == "PERMISSION_DENIED", (event, answer)
                else:
                    assert answer.get("error", {}).get("code") not in ("AUTHENTICATION_FAILED", "PERMISSION_DENIED")
            assert declared_role(SocketChannel.on_chat) == "write"
            above_read = [c for c in CHANNELS if CHANNEL_ROLES.get(c, "read") != "read"]
            assert above_read, "no channel needs more than read: the walk below would prove nothing"
            for channel in above_read:  # each channel's own role: a read key is refused it
                answer = reader.call("subscribe", {"channels": [channel]}, timeout=30)
                assert answer["success"] is False and answer["error"]["code"] == "PERMISSION_DENIED", channel
        finally:
            reader.disconnect()
    finally:
        server.shutdown()
        thread.join(10)
