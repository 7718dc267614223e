"""Attacks on access, performed over HTTP (and Socket.IO) against real servers, and refused.

Key lineage (a key's children die with it, never outlive it, belong to its owner and share
its rate limits), secrets (the JWT secret file, ``iss``/``aud``/``jti``, logout, password
hashing, private data files), ``LLAMA_GPU_AUTH=off`` (loopback bind, DNS rebinding,
cross-site requests) and fail-closed access plugins. Each test fails without the protection
it names.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import socketio
from click.testing import CliRunner
from sqlalchemy import select, update
from werkzeug.serving import make_server

from llama_gpu import Kernel, hookimpl
from llama_gpu.api import create_app
from llama_gpu.cli import main as cli
from llama_gpu.db import ApiKey, AuditEvent, RevokedToken, User
from llama_gpu.kernel.errors import ConfigurationError, InvalidInput
from llama_gpu.kernel.types import Credentials, Identity, InferenceRequest, PluginInfo, RateLimitStatus
from llama_gpu.plugins.auth.accounts import PASSWORD_METHOD, jwt_secret

from .conftest import make_settings
from .db_fixtures import database_url, postgres_url  # noqa: F401 - fixtures: SQLite and PostgreSQL
from .test_auth import PASSWORD, Secured

INFER = {"text": "a b c", "max_tokens": 2}


@pytest.fixture
def secured(tmp_path: Path, database_url: str) -> Iterator[Secured]:  # noqa: F811
    s = Secured(tmp_path, database_url)
    yield s
    s.kernel.stop(timeout=2)


def _login(s: Secured, username: str = "admin", password: str = PASSWORD) -> str:
    response = s.call("POST", "/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.json
    return str(response.json["token"])


def _mint(s: Secured, by: str, **body: Any) -> dict[str, Any]:
    response = s.call("POST", "/v1/auth/keys", by, json={"name": "child", **body})
    assert response.status_code == 200, response.json
    return dict(response.json)


def _status(s: Secured, key: str) -> int:
    return int(s.call("GET", "/api/v1/models", key).status_code)


# ------------------------------------------------------------------------------ 2. key lineage
def test_revoking_a_key_revokes_every_key_made_from_it(secured: Secured) -> None:
    parent = _mint(secured, secured.keys["write"], name="parent")
    child = _mint(secured, parent["api_key"], name="child")
    grandchild = _mint(secured, child["api_key"], name="grandchild", permissions=["read"])
    sibling = _mint(secured, secured.keys["write"], name="sibling")
    assert all(_status(secured, k["api_key"]) == 200 for k in (parent, child, grandchild, sibling))
    # attack: keep a foothold by minting keys from a key before it is revoked
    revoked = secured.call("DELETE", f"/api/v1/auth/keys/{parent['key_id']}", secured.keys["write"])
    assert revoked.status_code == 200, revoked.json
    for key in (parent, child, grandchild):
        refused = secured.call("GET", "/api/v1/models", key["api_key"])
        assert refused.status_code == 401 and "revoked" in refused.json["error"]["message"]
    assert _status(secured, sibling["api_key"]) == 200, "keys outside the lineage are untouched"
    assert _status(secured, secured.keys["write"]) == 200
    listed = {k["name"]: k for k in secured.call("GET", "/api/v1/auth/keys", secured.keys["admin"]).json["keys"]}
    assert all(listed[name]["revoked_at"] for name in ("parent", "child", "grandchild"))
    assert listed["sibling"]["revoked_at"] is None
    with secured.accounts.db.session() as session:
        audit = session.scalars(select(AuditEvent).where(AuditEvent.action == "key.revoke")).all()[-1]
        assert audit.details == {"also_revoked": sorted([child["key_id"], grandchild["key_id"]])}


def test_a_key_below_a_revoked_key_is_refused_even_if_it_escaped_the_cascade(secured: Secured) -> None:
    parent = _mint(secured, secured.keys["write"], name="parent")
    child = _mint(secured, parent["api_key"], name="child")
    with secured.accounts.db.session() as session:  # as if the child were minted while the parent was revoked
        session.execute(update(ApiKey).where(ApiKey.id == parent["key_id"]).values(revoked_at=dt.datetime.now(dt.UTC)))
    refused = secured.call("GET", "/api/v1/models", child["api_key"])
    assert refused.status_code == 401
    assert refused.json["error"]["message"] == "a key this API key was made from was revoked"


def test_disabling_a_user_refuses_their_tokens_and_keys_at_once(secured: Secured, database_url: str) -> None:  # noqa: F811
    secured.accounts.create_user("ops", PASSWORD, "write")
    token = _login(secured, "ops")
    own = _mint(secured, token, name="ops key")
    grandchild = _mint(secured, own["api_key"], name="ops grandchild")
    others = secured.keys["write"]
    assert all(_status(secured, k) == 200 for k in (token, own["api_key"], grandchild["api_key"]))
    env = {"LLAMA_GPU_DATABASE_URL": database_url, "LLAMA_GPU_DATA_DIR": secured.kernel.settings.data_dir}
    runner = CliRunner()
    disabled = runner.invoke(cli, ["users", "disable", "ops"], env=env)
    assert disabled.exit_code == 0, disabled.output
    for credential in (token, own["api_key"], grandchild["api_key"]):
        refused = secured.call("GET", "/api/v1/models", credential)
        assert refused.status_code == 401, refused.json
    assert "disabled" in secured.call("GET", "/api/v1/models", grandchild["api_key"]).json["error"]["message"]
    assert _status(secured, others) == 200, "another user's keys still work"
    login = secured.call("POST", "/api/v1/auth/login", json={"username": "ops", "password": PASSWORD})
    assert login.status_code == 401
    assert runner.invoke(cli, ["users", "enable", "ops"], env=env).exit_code == 0
    assert _status(secured, grandchild["api_key"]) == 200
    unknown = runner.invoke(cli, ["users", "disable", "nobody"], env=env)
    assert unknown.exit_code == 2 and "NOT_FOUND" in unknown.output


def test_a_child_key_never_outlives_its_parent(secured: Secured) -> None:
    parent = _mint(secured, secured.keys["write"], name="short", expires_in="1h")
    parent_expiry = dt.datetime.fromisoformat(parent["expires"])
    for body in ({"expires_in": "30d"}, {}):  # attack: a longer-lived (or eternal) child of a short-lived key
        child = _mint(secured, parent["api_key"], **body)
        assert child["expires"] is not None and dt.datetime.fromisoformat(child["expires"]) <= parent_expiry
    shorter = _mint(secured, parent["api_key"], expires_in="10m")
    assert dt.datetime.fromisoformat(shorter["expires"]) < parent_expiry
    with secured.accounts.db.session() as session:  # the parent expires: its children go with it
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        session.execute(update(ApiKey).where(ApiKey.id == parent["key_id"]).values(expires_at=past))
    refused = secured.call("GET", "/api/v1/models", child["api_key"])
    assert refused.status_code == 401 and "expired" in refused.json["error"]["message"]


def test_a_user_sees_and_revokes_the_keys_made_from_their_keys(secured: Secured) -> None:
    secured.accounts.create_user("bob", PASSWORD, "write")
    secured.accounts.create_user("eve", PASSWORD, "write")
    bob, eve = _login(secured, "bob"), _login(secured, "eve")
    first = _mint(secured, bob, name="bob-1")
    second = _mint(secured, first["api_key"], name="bob-2")
    third = _mint(secured, second["api_key"], name="bob-3")
    listed = [k["name"] for k in secured.call("GET", "/api/v1/auth/keys", bob).json["keys"]]
    assert listed == ["bob-1", "bob-2", "bob-3"]
    assert [k["name"] for k in secured.call("GET", "/api/v1/auth/keys", first["api_key"]).json["keys"]] == [
        "bob-2",
        "bob-3",
    ]
    # attack: another user, and a key below, reach for keys that are not theirs
    assert secured.call("GET", "/api/v1/auth/keys", eve).json["keys"] == []
    assert secured.call("DELETE", f"/api/v1/auth/keys/{second['key_id']}", eve).status_code == 404
    assert secured.call("DELETE", f"/api/v1/auth/keys/{first['key_id']}", third["api_key"]).status_code == 404
    assert secured.call("DELETE", f"/api/v1/auth/keys/{second['key_id']}", second["api_key"]).status_code == 404
    assert _status(secured, third["api_key"]) == 200
    revoked = secured.call("DELETE", f"/api/v1/auth/keys/{second['key_id']}", bob)
    assert revoked.status_code == 200
    assert _status(secured, third["api_key"]) == 401 and _status(secured, first["api_key"]) == 200


def test_minting_keys_does_not_multiply_rate_limits(tmp_path: Path) -> None:
    kernel = Kernel(
        make_settings(tmp_path / "data", auth="required", rate_limits=True, rate_limit_overrides="models=4/1")
    ).start()
    try:
        client = create_app(kernel=kernel).test_client()
        accounts = kernel.services["accounts"]
        alice = accounts.create_user("alice", PASSWORD, "write")
        root = accounts.create_key("alice", "write", user_id=alice.id)[1]
        loner = accounts.create_key("no user", "write")[1]
        other = accounts.create_key("another", "write")[1]

        def models(key: str) -> Any:
            return client.get("/api/v1/models", headers={"Authorization": f"Bearer {key}"})

        def mint(key: str) -> str:
            made = client.post("/v1/auth/keys", json={"name": "c"}, headers={"Authorization": f"Bearer {key}"})
            assert made.status_code == 200, made.json
            return str(made.json["api_key"])

        for lineage_root in (root, loner):  # a user's lineage, and a root key's lineage without a user
            children = [mint(lineage_root), mint(lineage_root)]
            children.append(mint(children[0]))
            answers = [models(k).status_code for k in (lineage_root, *children, *children)]
            assert answers[:4] == [200] * 4 and set(answers[4:]) == {429}, answers
            assert models(lineage_root).headers["X-RateLimit-Limit"] == "4"
        assert models(other).status_code == 200, "an unrelated key has its own counter"
    finally:
        kernel.stop(timeout=2)


# ------------------------------------------------------------------------------ 7. secrets
def test_data_folder_secret_and_database_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    kernel = Kernel(make_settings(tmp_path, auth="required")).start()  # data_dir: tmp_path / "data"
    try:
        client = create_app(kernel=kernel).test_client()
        kernel.services["accounts"].create_user("admin", PASSWORD, "admin")
        login = client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
        assert login.status_code == 200
        wal = [p.name for p in data.iterdir() if p.name.endswith("-wal")]
        assert wal == ["llama-gpu.db-wal"], "checked while the database is open"
        assert stat.S_IMODE((data / wal[0]).stat().st_mode) == 0o600
    finally:
        kernel.stop(timeout=2)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    secret = data / "jwt-secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_bytes().strip()) >= 32
    database = [p for p in data.iterdir() if p.name.startswith("llama-gpu.db")]  # with its -wal and -shm
    assert database and {p.name: stat.S_IMODE(p.stat().st_mode) for p in database} == {p.name: 0o600 for p in database}
    assert [p.name for p in data.iterdir() if p.name.endswith(".tmp")] == [], "no temporary file is left"


def test_concurrent_first_starts_agree_on_one_secret(tmp_path: Path) -> None:
    barrier = threading.Barrier(8)
    seen: list[str] = []

    def start() -> None:
        barrier.wait(30)
        seen.append(jwt_secret("", str(tmp_path / "data")))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(seen) == 8 and len(set(seen)) == 1
    assert (tmp_path / "data" / "jwt-secret").read_text().strip() == seen[0]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["jwt-secret"]


@pytest.mark.parametrize("content", ["", "   \n", "tooshort"])
def test_an_empty_or_short_secret_file_is_refused_at_start(tmp_path: Path, content: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "jwt-secret").write_text(content)
    kernel = Kernel(make_settings(tmp_path, auth="required"))  # data_dir: tmp_path / "data"
    with pytest.raises(ConfigurationError, match="at least 32") as info:
        kernel.start()
    assert "jwt-secret" in info.value.message
    kernel.stop(timeout=1)


def test_a_short_configured_secret_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="LLAMA_GPU_JWT_SECRET is 6 bytes"):
        make_settings(tmp_path, jwt_secret="secret")
    result = CliRunner().invoke(
        cli, ["serve"], env={"LLAMA_GPU_JWT_SECRET": "x" * 31, "LLAMA_GPU_DATA_DIR": str(tmp_path / "d")}
    )
    assert result.exit_code == 2 and "at least 32" in result.output
    assert not (tmp_path / "d").exists(), "refused before anything was written"


def test_tokens_must_carry_our_issuer_audience_and_id(secured: Secured) -> None:
    good = _login(secured)
    claims = jwt.decode(good, options={"verify_signature": False})
    assert claims["iss"] == "llama-gpu" and claims["aud"] == "llama-gpu" and len(claims["jti"]) >= 16
    secret = secured.accounts._secret
    forged = {
        "other audience": claims | {"aud": "another-service"},
        "other issuer": claims | {"iss": "someone-else"},
        "no audience": {k: v for k, v in claims.items() if k != "aud"},
        "no issuer": {k: v for k, v in claims.items() if k != "iss"},
        "no jti": {k: v for k, v in claims.items() if k != "jti"},
    }
    assert secured.call("GET", "/v1/auth/user", good).status_code == 200
    for name, payload in forged.items():
        response = secured.call("GET", "/v1/auth/user", jwt.encode(payload, secret, algorithm="HS256"))
        assert response.status_code == 401, name


def test_logout_revokes_the_token_on_the_server(secured: Secured) -> None:
    token, other = _login(secured), _login(secured)
    assert secured.call("GET", "/v1/auth/user", token).status_code == 200
    with secured.accounts.db.session() as session:  # a long-expired entry: the deny-list sheds it
        past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
        session.add(RevokedToken(jti="stale", user_id=1, expires_at=past, revoked_at=past))
    out = secured.call("POST", "/api/v1/auth/logout", token)
    assert out.status_code == 200 and out.json["success"] is True
    # attack: replay the token after logout (stolen from a browser, a log, a proxy)
    for method, path in (("GET", "/v1/auth/user"), ("GET", "/api/v1/models"), ("POST", "/api/v1/auth/logout")):
        replayed = secured.call(method, path, token)
        assert replayed.status_code == 401, path
    assert "revoked" in secured.call("GET", "/api/v1/models", token).json["error"]["message"]
    assert secured.call("GET", "/v1/auth/user", other).status_code == 200, "other sessions stay logged in"
    with secured.accounts.db.session() as session:
        jtis = set(session.scalars(select(RevokedToken.jti)))
    assert jwt.decode(token, options={"verify_signature": False})["jti"] in jtis and "stale" not in jtis
    with_key = secured.call("POST", "/api/v1/auth/logout", secured.keys["read"])
    assert with_key.status_code == 400 and with_key.json["error"]["code"] == "INVALID_INPUT"
    assert secured.call("POST", "/api/v1/auth/logout").status_code == 401


def _legacy_hash(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, maxmem=64 * 2**20, dklen=32)
    b64 = base64.b64encode
    return f"scrypt$16384$8$1${b64(salt).decode()}${b64(digest).decode()}"


def test_passwords_are_hashed_at_owasp_parameters_and_old_hashes_are_renewed(secured: Secured) -> None:
    with secured.accounts.db.session() as session:
        stored = session.scalar(select(User.password_hash).where(User.username == "admin"))
        assert stored is not None and stored.startswith("scrypt:32768:8:3$") and PASSWORD_METHOD == "scrypt:32768:8:3"
        session.execute(update(User).where(User.username == "admin").values(password_hash=_legacy_hash(PASSWORD)))
    wrong = secured.call("POST", "/api/v1/auth/login", json={"username": "admin", "password": "not the one"})
    assert wrong.status_code == 401
    with secured.accounts.db.session() as session:
        assert session.scalar(select(User.password_hash).where(User.username == "admin")).startswith("scrypt$")
    token = _login(secured)  # the old hash still verifies, and is renewed
    assert secured.call("GET", "/v1/auth/user", token).status_code == 200
    with secured.accounts.db.session() as session:
        renewed = session.scalar(select(User.password_hash).where(User.username == "admin"))
    assert renewed is not None and renewed.startswith(PASSWORD_METHOD + "$")
    again = secured.call("POST", "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    assert again.status_code == 200


def test_benchmark_prompt_files_are_private(tmp_path: Path) -> None:
    from llama_gpu.kernel.private import write_private

    target = tmp_path / "data" / "benchmarks" / "prompts.jsonl"
    assert write_private(target, '{"prompt": "x"}\n')
    assert not write_private(target, "other"), "an existing file is never replaced"
    assert target.read_text() == '{"prompt": "x"}\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700


# ------------------------------------------------------------------------------ 9. LLAMA_GPU_AUTH=off
def test_auth_off_refuses_a_public_bind_unless_overridden(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        with pytest.raises(ConfigurationError, match="UNSAFE_OPEN_BIND"):
            make_settings(tmp_path, auth="off", host=host)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert make_settings(tmp_path, auth="off", host=host).host == host
    assert make_settings(tmp_path, auth="off", host="0.0.0.0", unsafe_open_bind=True).unsafe_open_bind
    assert make_settings(tmp_path, auth="required", host="0.0.0.0").host == "0.0.0.0"
    env = {"LLAMA_GPU_AUTH": "off", "LLAMA_GPU_DATA_DIR": str(tmp_path / "d"), "LLAMA_GPU_DEFAULT_MODEL": "echo"}
    refused = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "1"], env=env)
    assert refused.exit_code == 2 and "loopback" in refused.output and "--unsafe-open-bind" in refused.output
    assert not (tmp_path / "d").exists()


def test_auth_off_refuses_rebinding_hosts_and_foreign_origins(tmp_path: Path) -> None:
    kernel = Kernel(make_settings(tmp_path / "data", auth="off", trusted_hosts="llm.internal,.lan")).start()
    try:
        client = create_app(kernel=kernel).test_client()

        def call(method: str, path: str, host: str = "127.0.0.1:5000", origin: str | None = None) -> Any:
            headers = {"Host": host} | ({"Origin": origin} if origin else {})
            body = INFER if method == "POST" and "infer" in path else None
            return client.open(path, method=method, headers=headers, json=body)

        # DNS rebinding: evil.example now resolves to 127.0.0.1, the browser sends its own name
        for host in ("evil.example", "evil.example:5000", "127.0.0.1.evil.example", "localhost.evil.example"):
            response = call("GET", "/api/v1/models", host)
            assert response.status_code == 403, host
            assert response.json["error"]["code"] == "PERMISSION_DENIED"
            assert response.json["error"]["details"]["reason"] == "host_not_allowed"
        openai_shape = call("GET", "/v1/models", "evil.example")
        assert openai_shape.status_code == 403 and openai_shape.json["error"]["code"] == "permission_denied"
        for host in ("localhost", "127.0.0.1:5000", "[::1]:5000", "app.localhost", "llm.internal", "box.lan:80"):
            assert call("GET", "/api/v1/models", host).status_code == 200, host
        # cross-site requests: a page elsewhere POSTs to the open server
        for origin in ("http://evil.example", "null", "http://127.0.0.1:8080", "http://localhost:5000"):
            response = call("POST", "/api/v1/infer", origin=origin)
            assert response.status_code == 403, origin
            assert response.json["error"]["details"]["reason"] == "origin_not_allowed"
            assert call("DELETE", "/api/v1/models/echo/unload", origin=origin).status_code == 403
        assert call("GET", "/api/v1/models", origin="http://evil.example").status_code == 200  # reads: CORS guards
        assert call("POST", "/api/v1/infer", origin="http://127.0.0.1:5000").status_code == 200  # its own pages
        assert call("POST", "/api/v1/infer", origin="https://llm.internal").status_code == 200  # trusted
        assert call("POST", "/api/v1/infer").status_code == 200  # no Origin: not a browser
    finally:
        kernel.stop(timeout=2)


def test_auth_off_socketio_refuses_foreign_origins_and_hosts(tmp_path: Path) -> None:
    kernel = Kernel(make_settings(tmp_path / "data", auth="off")).start()
    server = make_server("127.0.0.1", 0, create_app(kernel=kernel), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        own = socketio.Client(reconnection=False)
        own.connect(url, headers={"Origin": url}, transports=["polling"], wait_timeout=10)
        assert own.connected
        own.disconnect()
        for headers in ({"Origin": "http://evil.example"}, {"Host": "evil.example"}):
            attacker = socketio.Client(reconnection=False)
            with pytest.raises(socketio.exceptions.ConnectionError):
                attacker.connect(url, headers=headers, transports=["polling"], wait_timeout=10)
            assert not attacker.connected
    finally:
        server.shutdown()
        thread.join(10)
        kernel.stop(timeout=2)


# ------------------------------------------------------------------------------ 10. fail closed
class Boom:
    """A third-party plugin whose hook raises a foreign exception."""

    def __init__(self) -> None:
        self.calls = 0

    def fail(self) -> None:
        self.calls += 1
        raise ZeroDivisionError("bug in a third-party plugin")


class BrokenAuthenticate(Boom):
    @hookimpl
    def authenticate(self, credentials: Credentials) -> Identity | None:
        self.fail()
        return None


class BrokenPermission(Boom):
    @hookimpl
    def check_permission(self, identity: Identity | None, permission: str) -> bool | None:
        self.fail()
        return None


class BrokenRateLimit(Boom):
    @hookimpl
    def rate_limit(self, identity: Identity | None, group: str) -> RateLimitStatus | None:
        self.fail()
        return None


class BrokenInputLimit(Boom):
    PLUGIN_INFO = PluginInfo(name="Strict input limits", category="preprocessing", fail_closed=True)

    @hookimpl
    def prepare_request(self, request: InferenceRequest) -> None:
        self.fail()


@pytest.mark.parametrize(
    ("plugin_id", "plugin", "hook"),
    [
        ("sso", BrokenAuthenticate(), "authenticate"),
        ("policy", BrokenPermission(), "check_permission"),
        ("quota", BrokenRateLimit(), "rate_limit"),
        ("strict_limits", BrokenInputLimit(), "prepare_request"),
    ],
)
def test_a_raising_access_plugin_denies_every_request_and_is_never_disabled(
    tmp_path: Path, plugin_id: str, plugin: Boom, hook: str
) -> None:
    kernel = Kernel(make_settings(tmp_path / "data", auth="required", rate_limits=True)).start()
    try:
        client = create_app(kernel=kernel).test_client()
        key = kernel.services["accounts"].create_key("w", "write")[1]
        headers = {"Authorization": f"Bearer {key}"}
        assert client.post("/api/v1/infer", json=INFER, headers=headers).status_code == 200
        kernel.register_plugin(plugin_id, plugin)
        attempts = kernel.settings.plugin_failure_threshold + 3
        # attack: make the plugin fail until the error boundary would switch it off, then walk in
        for _ in range(attempts):
            response = client.post("/api/v1/infer", json=INFER, headers=headers)
            assert response.status_code == 500, response.json
            assert response.json["error"]["code"] == "PLUGIN_FAILED"
            assert response.json["error"]["details"] == {"plugin_id": plugin_id, "hook": hook}
        assert plugin.calls == attempts
        record = kernel.plugins.get(plugin_id)
        assert record.loaded and record.status == "loaded" and record.total_failures == attempts
        assert kernel.fails_closed(record)
        # an admin may still take it out deliberately; then requests are served again
        kernel.unload_plugin(plugin_id)
        assert client.post("/api/v1/infer", json=INFER, headers=headers).status_code == 200
    finally:
        kernel.stop(timeout=2)


def test_the_builtin_input_limits_fail_closed_and_an_ordinary_filter_does_not(kernel: Kernel) -> None:
    assert kernel.fails_closed(kernel.plugins.get("limits"))

    class Ordinary:
        @hookimpl
        def prepare_request(self, request: InferenceRequest) -> None:
            pass

    kernel.register_plugin("ordinary", Ordinary())
    assert not kernel.fails_closed(kernel.plugins.get("ordinary"))
    with pytest.raises(InvalidInput):  # and the built-in still refuses what is over the limit
        kernel.complete(InferenceRequest(prompt="x" * (kernel.settings.max_input_length + 1)))


def test_the_lineage_migration_gives_old_keys_their_owner_and_revokes_below_revoked_ones(
    tmp_path: Path,
    database_url: str,  # noqa: F811
) -> None:
    from alembic import command
    from sqlalchemy import create_engine, text

    from llama_gpu.db.migrate import alembic_config, head_revision, upgrade

    (tmp_path / "db").mkdir(exist_ok=True)  # SQLite's folder (PostgreSQL: a fresh schema)
    command.upgrade(alembic_config(database_url), "0002")
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    now = dt.datetime.now(dt.UTC)
    try:
        with engine.begin() as connection:  # rows as the server before this revision wrote them
            connection.execute(
                text(
                    "INSERT INTO users (id, username, password_hash, role, disabled, created_at) VALUES "
                    "(1, 'old', :h, 'write', false, :now)"
                ),
                {"h": _legacy_hash(PASSWORD), "now": now},
            )
            rows = [  # id, user_id, parent_key_id, revoked
                (1, 1, None, None),
                (2, None, 1, None),
                (3, None, 2, None),
                (4, None, None, now),
                (5, None, 4, None),
                (6, None, 5, None),
            ]
            for key_id, user_id, parent, revoked in rows:
                connection.execute(
                    text(
                        "INSERT INTO api_keys (id, name, prefix, key_hash, role, tier, user_id, parent_key_id, "
                        "created_at, revoked_at) VALUES (:id, 'k', 'lgk_x', :hash, 'read', 'standard', :user, "
                        ":parent, :now, :revoked)"
                    ),
                    {
                        "id": key_id,
                        "hash": f"{key_id:064d}",
                        "user": user_id,
                        "parent": parent,
                        "now": now,
                        "revoked": revoked,
                    },
                )
        assert upgrade(database_url) == head_revision()
        with engine.connect() as connection:
            found = {
                r.id: (r.owner_user_id, r.revoked_at is not None)
                for r in connection.execute(text("SELECT id, owner_user_id, revoked_at FROM api_keys"))
            }
        command.downgrade(alembic_config(database_url), "0002")  # and back: the lineage itself survives
        with engine.connect() as connection:
            parents = {
                r.id: r.parent_key_id for r in connection.execute(text("SELECT id, parent_key_id FROM api_keys"))
            }
        assert parents == {1: None, 2: 1, 3: 2, 4: None, 5: 4, 6: 5}
    finally:
        engine.dispose()
    assert found == {1: (1, False), 2: (1, False), 3: (1, False), 4: (None, True), 5: (None, True), 6: (None, True)}
