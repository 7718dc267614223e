"""Identity and access on SQLite and PostgreSQL: keys, logins, roles, and the security properties.

Each security test here fails without the protection it names (e.g. with a verifier that
accepted any algorithm, ``alg: none`` would pass; with keys listed unfiltered, another key's
keys would show).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import openai
import pytest
import requests
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from werkzeug.serving import make_server

from llama_gpu import Kernel
from llama_gpu.api import create_app
from llama_gpu.cli import main as cli
from llama_gpu.db import ApiKey, User
from llama_gpu.plugins.auth.accounts import Accounts
from llama_gpu.plugins.auth.keys import bootstrap_admin

from .conftest import make_settings
from .db_fixtures import database_url, postgres_url  # noqa: F401 - fixtures: SQLite and PostgreSQL

PASSWORD = "correct horse battery staple"


class Secured:
    """A kernel with auth required, its app and client, and keys of each role."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.kernel = Kernel(make_settings(tmp_path / "data", auth="required", database_url=url)).start()
        self.app: Flask = create_app(kernel=self.kernel)
        self.client: FlaskClient = self.app.test_client()
        self.accounts: Accounts = self.kernel.services["accounts"]
        self.admin_user = self.accounts.create_user("admin", PASSWORD, "admin")
        self.keys = {
            role: self.accounts.create_key(f"{role} key", role, user_id=self.admin_user.id)[1]
            for role in ("read", "write", "admin")
        }

    def call(self, method: str, path: str, key: str | None = None, **kw: Any) -> Any:
        headers = kw.pop("headers", {})
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return self.client.open(path, method=method, headers=headers, **kw)


@pytest.fixture
def secured(tmp_path: Path, database_url: str) -> Iterator[Secured]:  # noqa: F811
    s = Secured(tmp_path, database_url)
    yield s
    s.kernel.stop(timeout=2)


INFER = {"text": "a b c", "max_tokens": 2}


def test_unauthenticated_calls_get_401_and_open_endpoints_stay_open(secured: Secured) -> None:
    for method, path, body in (
        ("POST", "/api/v1/infer", INFER),
        ("GET", "/api/v1/models", None),
        ("GET", "/api/v1/plugins", None),
        ("GET", "/api/v1/auth/keys", None),
    ):
        response = secured.call(method, path, json=body)
        assert response.status_code == 401, path
        assert response.json["error"]["code"] == "AUTHENTICATION_FAILED"
    chat = secured.call("POST", "/v1/chat/completions", json={"model": "echo", "messages": []})
    assert chat.status_code == 401 and chat.json["error"]["code"] == "authentication_failed"
    assert secured.call("GET", "/health").status_code == 200
    assert secured.call("GET", "/ready").status_code in (200, 503)


def test_each_role_gets_what_it_needs_and_no_more(secured: Secured) -> None:
    read, write, admin = (secured.keys[r] for r in ("read", "write", "admin"))
    assert secured.call("GET", "/api/v1/models", read).status_code == 200
    denied = secured.call("POST", "/api/v1/infer", read, json=INFER)
    assert denied.status_code == 403 and denied.json["error"]["code"] == "PERMISSION_DENIED"
    assert secured.call("POST", "/api/v1/infer", write, json=INFER).json["result"]["generated_text"] == "a b"
    assert secured.call("POST", "/api/v1/plugins/echo/load", write, json={}).status_code == 403
    assert secured.call("DELETE", "/api/v1/models/echo/unload", write).status_code == 403
    assert secured.call("GET", "/api/v1/plugins", admin).status_code == 200
    # X-API-Key works as well as Authorization: Bearer
    assert secured.call("GET", "/api/v1/models", headers={"X-API-Key": read}).status_code == 200


def test_login_gives_a_token_that_authenticates(secured: Secured) -> None:
    response = secured.call("POST", "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    assert response.status_code == 200, response.json
    body = response.json
    assert body["expires_in"] == 3600 and body["user"]["role"] == "admin"
    assert body["user"]["permissions"] == ["admin", "read", "write"]
    secret_file = Path(secured.kernel.settings.data_dir) / "jwt-secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600  # generated once, readable by the owner only
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert {"exp", "iat", "sub"} <= set(claims) and jwt.get_unverified_header(body["token"])["alg"] == "HS256"
    me = secured.call("GET", "/v1/auth/user", body["token"]).json["user"]
    assert me["kind"] == "user" and me["name"] == "admin" and me["role"] == "admin"
    wrong = secured.call("POST", "/api/v1/auth/login", json={"username": "admin", "password": "nope-nope"})
    assert wrong.status_code == 401 and wrong.json["error"]["code"] == "AUTHENTICATION_FAILED"
    nobody = secured.call("POST", "/api/v1/auth/login", json={"username": "ghost", "password": "whatever1"})
    assert nobody.status_code == 401 and nobody.json["error"]["message"] == wrong.json["error"]["message"]


def test_failed_logins_are_throttled(secured: Secured) -> None:
    for _ in range(5):
        response = secured.call("POST", "/api/v1/auth/login", json={"username": "admin", "password": "guess-guess"})
        assert response.status_code == 401
    throttled = secured.call("POST", "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    assert throttled.status_code == 429 and throttled.json["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert int(throttled.headers["Retry-After"]) >= 1


def _forge(claims: dict[str, Any], header: dict[str, Any]) -> str:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64(header)}.{b64(claims)}."


def test_bad_tokens_are_refused(secured: Secured) -> None:
    good = secured.call("POST", "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}).json["token"]
    now = int(time.time())
    claims = {"sub": str(secured.admin_user.id), "iat": now, "exp": now + 600, "role": "admin"}
    head, payload, signature = good.split(".")
    tampered_claims = json.loads(base64.urlsafe_b64decode(payload + "==")) | {"sub": "999"}
    tampered = ".".join(
        (head, base64.urlsafe_b64encode(json.dumps(tampered_claims).encode()).rstrip(b"=").decode(), signature)
    )
    bad_tokens = {
        "tampered": tampered,
        "alg none": _forge(claims, {"alg": "none", "typ": "JWT"}),
        "other secret": jwt.encode(claims, "another secret entirely, 32+ bytes long", algorithm="HS256"),
        "expired": jwt.encode(claims | {"exp": now - 10}, secured.accounts._secret, algorithm="HS256"),
        "no exp": jwt.encode(
            {k: v for k, v in claims.items() if k != "exp"}, secured.accounts._secret, algorithm="HS256"
        ),
        "HS512": jwt.encode(claims, secured.accounts._secret, algorithm="HS512"),
        "garbage": "a.b.c",
    }
    assert secured.call("GET", "/v1/auth/user", good).status_code == 200
    for name, token in bad_tokens.items():
        response = secured.call("GET", "/v1/auth/user", token)
        assert response.status_code == 401, name
        assert response.json["error"]["code"] == "authentication_failed"


def test_a_key_creates_keys_with_at_most_its_own_permissions(secured: Secured) -> None:
    write = secured.keys["write"]
    made = secured.call("POST", "/v1/auth/keys", write, json={"name": "reader", "permissions": ["read"]})
    assert made.status_code == 200, made.json
    reader = made.json["api_key"]
    assert reader.startswith("lgk_") and made.json["permissions"] == ["read"]
    assert secured.call("GET", "/api/v1/models", reader).status_code == 200
    assert secured.call("POST", "/api/v1/infer", reader, json=INFER).status_code == 403
    escalate = secured.call("POST", "/v1/auth/keys", write, json={"name": "x", "permissions": ["admin"]})
    assert escalate.status_code == 403 and escalate.json["error"]["code"] == "permission_denied"
    smuggled = secured.call("POST", "/v1/auth/keys", reader, json={"name": "x", "role": "admin"})
    assert smuggled.status_code == 400  # unknown fields are refused, not ignored
    from_reader = secured.call("POST", "/v1/auth/keys", reader, json={"name": "sub"}).json
    assert from_reader["permissions"] == ["read"]
    expiring = secured.call("POST", "/v1/auth/keys", write, json={"name": "e", "expires_in": "30d"}).json
    expires = dt.datetime.fromisoformat(expiring["expires"])
    assert dt.timedelta(days=29) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=30)
    for bad in (
        {"name": ""},
        {"name": "x", "expires_in": "soon"},
        {"name": "x", "expires_in": 5},
        {"name": "x", "permissions": ["root"]},
    ):
        assert secured.call("POST", "/v1/auth/keys", write, json=bad).status_code == 400, bad


def test_a_key_cannot_see_or_revoke_another_keys_keys(secured: Secured) -> None:
    a, b = secured.keys["write"], secured.keys["read"]
    a_child = secured.call("POST", "/v1/auth/keys", a, json={"name": "a-child", "permissions": ["read"]}).json
    b_child = secured.call("POST", "/v1/auth/keys", b, json={"name": "b-child"}).json
    b_list = secured.call("GET", "/api/v1/auth/keys", b).json["keys"]
    assert [k["name"] for k in b_list] == ["b-child"]
    stolen = secured.call("DELETE", f"/api/v1/auth/keys/{a_child['key_id']}", b)
    assert stolen.status_code == 404
    assert secured.call("GET", "/api/v1/models", a_child["api_key"]).status_code == 200
    revoked = secured.call("DELETE", f"/api/v1/auth/keys/{a_child['key_id']}", a)
    assert revoked.status_code == 200 and revoked.json["key"]["revoked_at"]
    refused = secured.call("GET", "/api/v1/models", a_child["api_key"])
    assert refused.status_code == 401 and "revoked" in refused.json["error"]["message"]
    everything = secured.call("GET", "/api/v1/auth/keys", secured.keys["admin"]).json["keys"]
    assert {"a-child", "b-child"} <= {k["name"] for k in everything}
    assert secured.call("GET", "/api/v1/models", b_child["api_key"]).status_code == 200


def test_expired_and_unknown_keys_are_refused(secured: Secured) -> None:
    key, secret = secured.accounts.create_key("short", "read", expires_in=3600)
    assert secured.call("GET", "/api/v1/models", secret).status_code == 200
    with secured.accounts.db.session() as session:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        session.execute(update(ApiKey).where(ApiKey.id == key.id).values(expires_at=past))
    expired = secured.call("GET", "/api/v1/models", secret)
    assert expired.status_code == 401 and "expired" in expired.json["error"]["message"]
    for forged in (secret[:-4] + "AAAA", "lgk_" + "x" * 43, "not-a-key", "lgk_" + "x" * 500):
        assert secured.call("GET", "/api/v1/models", forged).status_code == 401


def test_no_secret_appears_in_responses_or_logs(secured: Secured, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    admin = secured.keys["admin"]
    created = secured.call("POST", "/v1/auth/keys", admin, json={"name": "n"}).json
    secret = created["api_key"]
    bodies = [
        secured.call("GET", "/api/v1/auth/keys", admin).get_data(as_text=True),
        secured.call("GET", "/v1/auth/user", secret).get_data(as_text=True),
        secured.call("GET", "/api/v1/models", secret[:-1] + "!").get_data(as_text=True),
        secured.call("POST", "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD + "x"}).get_data(
            as_text=True
        ),
        secured.call("DELETE", f"/api/v1/auth/keys/{created['key_id']}", admin).get_data(as_text=True),
    ]
    with secured.accounts.db.session() as session:
        hashes = [k.key_hash for k in session.scalars(select(ApiKey))]
        hashes += [u.password_hash for u in session.scalars(select(User))]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in (*bodies, logged):
        for secret_value in (secret, *secured.keys.values(), PASSWORD, *hashes, secured.accounts._secret):
            assert secret_value not in text
    assert created["prefix"] in bodies[0] and "key_hash" not in bodies[0]


def test_sql_looking_input_is_inert(secured: Secured) -> None:
    injection = "admin' OR '1'='1' --"
    response = secured.call("POST", "/api/v1/auth/login", json={"username": injection, "password": "x' OR 1=1 --"})
    assert response.status_code == 401
    name = "x'); DROP TABLE api_keys; --"
    made = secured.call("POST", "/v1/auth/keys", secured.keys["write"], json={"name": name})
    assert made.status_code == 200
    listed = secured.call("GET", "/api/v1/auth/keys", secured.keys["write"]).json["keys"]
    assert [k["name"] for k in listed] == [name]
    assert secured.call("GET", "/api/v1/models", secured.keys["read"]).status_code == 200  # the table is still there
    assert secured.call("DELETE", "/api/v1/auth/keys/1%20OR%201=1", secured.keys["write"]).status_code == 404


def test_openai_client_with_a_key_and_without(secured: Secured) -> None:
    server = make_server("127.0.0.1", 0, secured.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/v1"
        client = openai.OpenAI(base_url=base, api_key=secured.keys["write"], max_retries=0)
        reply = client.completions.create(model="echo", prompt="hello there", max_tokens=5)
        assert reply.choices[0].text == "hello there"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base, api_key="lgk_wrong", max_retries=0).models.list()
        with pytest.raises(openai.PermissionDeniedError):
            openai.OpenAI(base_url=base, api_key=secured.keys["read"], max_retries=0).completions.create(
                model="echo", prompt="hi", max_tokens=2
            )
    finally:
        server.shutdown()


def test_cli_users_and_keys(tmp_path: Path, database_url: str) -> None:  # noqa: F811
    env = {"LLAMA_GPU_DATABASE_URL": database_url, "LLAMA_GPU_DATA_DIR": str(tmp_path / "data")}
    runner = CliRunner()
    made = runner.invoke(
        cli, ["users", "create", "--username", "ops", "--password", PASSWORD, "--role", "write"], env=env
    )
    assert made.exit_code == 0, made.output
    again = runner.invoke(cli, ["users", "create", "--username", "ops", "--password", PASSWORD], env=env)
    assert again.exit_code == 2 and "CONFLICT" in again.output
    weak = runner.invoke(cli, ["users", "create", "--username", "weak", "--password", "short"], env=env)
    assert weak.exit_code == 2 and "at least 8" in weak.output
    key = runner.invoke(cli, ["keys", "create", "--name", "app", "--role", "read", "--expires-in", "30d"], env=env)
    assert key.exit_code == 0, key.output
    secret = key.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"lgk_[A-Za-z0-9_-]{43}", secret)
    listing = runner.invoke(cli, ["keys", "list"], env=env)
    assert listing.exit_code == 0 and secret[:12] in listing.output and secret not in listing.output
    key_id = listing.output.split()[0]
    assert runner.invoke(cli, ["keys", "revoke", key_id], env=env).exit_code == 0
    bad = runner.invoke(cli, ["keys", "create", "--name", "x", "--expires-in", "tomorrow"], env=env)
    assert bad.exit_code == 2 and "expires_in" in bad.output
    kernel = Kernel(make_settings(tmp_path / "data", auth="required", database_url=database_url)).start()
    try:
        client = create_app(kernel=kernel).test_client()
        response = client.get("/api/v1/models", headers={"Authorization": f"Bearer {secret}"})
        assert response.status_code == 401 and "revoked" in response.json["error"]["message"]
    finally:
        kernel.stop()


def test_first_start_creates_the_admin_once(tmp_path: Path, database_url: str) -> None:  # noqa: F811
    settings = make_settings(tmp_path / "data", auth="required", database_url=database_url)
    first = bootstrap_admin(settings)
    assert first is not None and first[0] == "admin" and first[2].startswith("lgk_")
    assert bootstrap_admin(settings) is None


def test_serve_prints_a_working_key_once(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LLAMA_GPU_DATA_DIR": str(tmp_path / "data"),
        "LLAMA_GPU_DEFAULT_MODEL": "echo",
        "LLAMA_GPU_AUTOLOAD_PLUGINS": "0",
    }
    port = _free_port()
    command = [sys.executable, "-c", "from llama_gpu.cli import main; main()", "serve", "--port", str(port)]

    def start() -> tuple[subprocess.Popen[str], str]:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "serving on" in line:
                return process, "".join(lines)
        process.kill()
        raise AssertionError("".join(lines))

    process, output = start()
    try:
        key = re.search(r"lgk_[A-Za-z0-9_-]{43}", output)
        assert key is not None, output
        base = f"http://127.0.0.1:{port}"
        assert _wait_ok(f"{base}/health")
        ok = requests.post(
            f"{base}/api/v1/infer", json=INFER, headers={"Authorization": f"Bearer {key.group()}"}, timeout=30
        )
        assert ok.status_code == 200, ok.text
        assert requests.post(f"{base}/api/v1/infer", json=INFER, timeout=30).status_code == 401
    finally:
        process.terminate()
        process.wait(30)
    process, output = start()
    process.terminate()
    process.wait(30)
    assert "lgk_" not in output, "the key is printed on the first start only"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ok(url: str) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return True
        except requests.ConnectionError:
            time.sleep(0.2)
    return False


def test_with_auth_off_a_key_that_does_not_verify_is_ignored(tmp_path: Path) -> None:
    kernel = Kernel(make_settings(tmp_path / "data", auth="off")).start()
    try:
        client = create_app(kernel=kernel).test_client()
        anyone = client.get("/v1/auth/user", headers={"Authorization": "Bearer not-a-real-key"})
        assert anyone.status_code == 401  # anonymous: there is no user to show
        assert client.post("/api/v1/infer", json=INFER, headers={"Authorization": "Bearer x"}).status_code == 200
        key = kernel.services["accounts"].create_key("real", "read")[1]
        who = client.get("/v1/auth/user", headers={"Authorization": f"Bearer {key}"}).json["user"]
        assert who["kind"] == "api_key" and who["permissions"] == ["read"]  # a valid key still counts
    finally:
        kernel.stop()
