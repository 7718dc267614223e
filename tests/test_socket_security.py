"""Attacks on the Socket.IO channel, with the real ``socketio.Client`` against a live server on 127.0.0.1.

Each test performs the attack and shows it refused: channels above the caller's role, other
owners' benchmark progress, oversized subscriptions, a revoked key or an expired login token
that stays connected, and connect floods from one address.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import socketio

from .test_socketio import PASSWORD, Live, Peer

pytestmark = pytest.mark.timeout(600)

#: Generous: the re-check runs every 0.5 s here, but the machine may be loaded.
DISCONNECT_DEADLINE = 60.0


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    server = Live(tmp_path_factory.mktemp("socket-security"), socket_recheck_interval=0.5, jwt_expires=3600)
    try:
        yield server
    finally:
        server.close()


def _refused(url: str, token: str | None) -> dict:
    client = socketio.Client(reconnection=False)
    seen: list[dict] = []
    client.on("connect_error", seen.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(url, auth={"token": token} if token else None, transports=["websocket"], wait_timeout=10)
    assert seen, "the refusal carries a reason"
    return seen[0]


def _wait_disconnected(peer: Peer) -> None:
    deadline = time.monotonic() + DISCONNECT_DEADLINE
    while peer.client.connected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not peer.client.connected, "still connected"


# ----------------------------------------------------------------------------- channel roles
def test_admin_channels_refuse_a_read_key(live: Live) -> None:
    peer = Peer(live.url, live.keys["read"])
    try:
        for channel in ("plugin_events", "convert"):
            ack = peer.call("subscribe", {"channels": ["system_metrics", channel]})
            assert ack["success"] is False and ack["error"]["code"] == "PERMISSION_DENIED", ack
            assert ack["error"]["details"] == {"channel": channel, "permission": "admin"}
        # all or none: system_metrics was not joined either; a plugin event does not reach it
        live.kernel.publish("plugin_error", {"plugin_id": "probe", "error": "x"})
        admin = Peer(live.url, live.keys["admin"])
        try:
            assert admin.call("subscribe", {"channels": ["plugin_events", "convert"]})["success"]
            live.kernel.publish("plugin_error", {"plugin_id": "probe2", "error": "x"})
            admin.wait_for("plugin_error", lambda d: d.get("plugin_id") == "probe2")
        finally:
            admin.close()
        assert "plugin_error" not in peer.names()
        assert peer.call("subscribe", {"channels": ["system_metrics"]})["success"]  # still usable
    finally:
        peer.close()


def test_benchmark_progress_reaches_its_owner_only(live: Live) -> None:
    accounts = live.kernel.services["accounts"]
    alice = accounts.create_user("alice", PASSWORD, "write")
    bob = accounts.create_user("bob", PASSWORD, "write")
    alice_key = accounts.create_key("alice", "write", user_id=alice.id)[1]
    bob_key = accounts.create_key("bob", "write", user_id=bob.id)[1]
    peers = {name: Peer(live.url, key) for name, key in (("alice", alice_key), ("bob", bob_key))}
    peers["admin"] = Peer(live.url, live.keys["admin"])
    try:
        for peer in peers.values():
            assert peer.call("subscribe", {"channels": ["benchmarks"]})["success"]
        live.kernel.publish("benchmark.progress", {"benchmark_id": 1, "probe": "a", "caller": f"user:{alice.id}"})
        live.kernel.publish("benchmark.progress", {"benchmark_id": 2, "probe": "b", "caller": f"user:{bob.id}"})
        live.kernel.publish("alert", {"probe": "last"})  # in order: everything before it has been delivered
        for peer in peers.values():
            peer.wait_for("alert", lambda d: d.get("probe") == "last")
        seen = {name: sorted(d["probe"] for e, d in p.events if e == "benchmark.progress") for name, p in peers.items()}
        assert seen == {"alice": ["a"], "bob": ["b"], "admin": ["a", "b"]}
        assert all("caller" not in d for p in peers.values() for e, d in p.events if e == "benchmark.progress")
    finally:
        for peer in peers.values():
            peer.close()


def test_subscriptions_per_call_are_bounded(live: Live) -> None:
    peer = Peer(live.url, live.keys["read"])
    try:
        ack = peer.call("subscribe", {"channels": ["alerts"] * 100_000})
        assert ack["success"] is False and ack["error"]["code"] == "INVALID_INPUT"
        assert ack["error"]["details"]["limit"] == 32 and ack["error"]["details"]["given"] == 100_000
        assert peer.call("subscribe", {"channels": ["alerts", "system_metrics"]})["success"]
    finally:
        peer.close()


# ----------------------------------------------------------------------------- revoked and expired credentials
def test_a_connection_whose_key_is_revoked_is_disconnected(live: Live) -> None:
    accounts = live.kernel.services["accounts"]
    row, key = accounts.create_key("to revoke", "read", user_id=live.user.id)
    peer = Peer(live.url, key)
    bystander = Peer(live.url, live.keys["read"])
    try:
        peer.wait_for("connected")
        response = live.http("DELETE", f"/api/v1/auth/keys/{row.id}", live.keys["admin"])
        assert response.status_code == 200, response.text
        _wait_disconnected(peer)
        ended = peer.wait_for("session_ended")[0]
        assert ended["code"] == "AUTHENTICATION_FAILED"
        assert _refused(live.url, key)["data"]["code"] == "AUTHENTICATION_FAILED"  # and cannot come back
        assert bystander.client.connected and bystander.call("subscribe", {"channels": ["alerts"]})["success"]
    finally:
        peer.close()
        bystander.close()


def test_a_connection_whose_login_token_expires_is_disconnected(tmp_path: Path) -> None:
    server = Live(tmp_path, socket_recheck_interval=0.5, jwt_expires=3)
    try:
        response = server.http("POST", "/api/v1/auth/login", "", json={"username": "admin", "password": PASSWORD})
        assert response.status_code == 200, response.text
        peer = Peer(server.url, response.json()["token"])
        try:
            assert peer.wait_for("connected")[0]["user"]["kind"] == "user"
            _wait_disconnected(peer)  # the token lives 3 s; the re-check ends the connection after that
            assert peer.wait_for("session_ended")[0]["code"] == "AUTHENTICATION_FAILED"
        finally:
            peer.close()
    finally:
        server.close()


# ----------------------------------------------------------------------------- connect floods
def test_failed_connects_are_limited_per_address(tmp_path: Path) -> None:
    server = Live(tmp_path, socket_failures_per_minute=3, socket_connects_per_minute=0)
    try:
        for _ in range(3):
            assert _refused(server.url, "lgk_guess")["data"]["code"] == "AUTHENTICATION_FAILED"
        refusal = _refused(server.url, server.keys["read"])  # even a valid key, from this address, now
        assert refusal["data"]["code"] == "RATE_LIMIT_EXCEEDED"
        assert refusal["data"]["details"]["limit"] == 3 and refusal["data"]["details"]["retry_after"] >= 1
        assert server.http("GET", "/health", "").status_code == 200  # HTTP is not affected
    finally:
        server.close()


def test_connect_attempts_are_limited_per_address(tmp_path: Path) -> None:
    server = Live(tmp_path, socket_connects_per_minute=4)
    try:
        for _ in range(4):
            Peer(server.url, server.keys["read"]).close()
        refusal = _refused(server.url, server.keys["read"])
        assert refusal["data"]["code"] == "RATE_LIMIT_EXCEEDED" and refusal["data"]["details"]["limit"] == 4
    finally:
        server.close()
