"""Rate limits: the hook, the built-in ``rate_limits`` plugin, its headers and 429s, proxies, Redis."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, g
from flask.testing import FlaskClient

from llama_gpu import Kernel, hookimpl
from llama_gpu.api import create_app
from llama_gpu.api.context import rate_limit_group, require
from llama_gpu.kernel.errors import ConfigurationError
from llama_gpu.kernel.types import Credentials, Identity, RateLimitStatus
from llama_gpu.plugins.auth.ratelimit import DEFAULT_LIMITS, PREMIUM_FACTORS, RateLimiter, parse_overrides

from .conftest import make_settings

INFER = {"text": "a b", "max_tokens": 2}
HOUR = 3600

MakeApp = Callable[..., tuple[Kernel, FlaskClient]]


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[MakeApp]:
    """Start a kernel with rate limits on (plus ``overrides``) and return it with a test client."""
    kernels: list[Kernel] = []

    def make(**overrides: Any) -> tuple[Kernel, FlaskClient]:
        values: dict[str, Any] = {"rate_limits": True, **overrides}
        kernel = Kernel(make_settings(tmp_path / f"k{len(kernels)}", **values)).start()
        kernels.append(kernel)
        return kernel, create_app(kernel=kernel).test_client()

    yield make
    for kernel in kernels:
        kernel.stop(timeout=5)


class KeyAuth:
    """Test authentication: identities by API key."""

    IDENTITIES = {
        "key-a": Identity(id="a", roles=frozenset({"read", "write"})),
        "key-b": Identity(id="b", roles=frozenset({"read", "write"})),
        "key-p": Identity(id="p", roles=frozenset({"read", "write"}), tier="premium"),
        "key-r": Identity(id="r", roles=frozenset({"read"})),
    }

    @hookimpl
    def authenticate(self, credentials: Credentials) -> Identity | None:
        return self.IDENTITIES.get(credentials.api_key or "")


def key(name: str) -> dict[str, str]:
    return {"X-API-Key": f"key-{name}"}


def infer(client: FlaskClient, ip: str = "10.0.0.1", **kwargs: Any) -> Any:
    return client.post("/api/v1/infer", json=INFER, environ_base={"REMOTE_ADDR": ip}, **kwargs)


# ----------------------------------------------------------------------------- the hook
class FixedAnswer:
    """Answers the hook for the ``models`` group with a spent limit; records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[Identity | None, str, str]] = []

    @hookimpl
    def rate_limit(self, identity: Identity | None, group: str, client: str) -> RateLimitStatus | None:
        self.calls.append((identity, group, client))
        if group != "models":
            return None
        return RateLimitStatus(limit=7, remaining=0, reset=time.time() + 42, allowed=False)


def test_hook_rate_limit(kernel: Kernel, client: FlaskClient) -> None:
    plugin = FixedAnswer()
    kernel.register_plugin("fixed_limit", plugin)

    refused = client.get("/api/v1/models", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert refused.json["error"]["details"] == {"limit": 7, "group": "models"}
    assert refused.headers["X-RateLimit-Limit"] == "7" and refused.headers["X-RateLimit-Remaining"] == "0"
    assert 40 <= int(refused.headers["Retry-After"]) <= 42
    identity, group, address = plugin.calls[-1]
    assert (group, address) == ("models", "192.0.2.7") and identity is not None and identity.kind == "anonymous"

    # not answering (and the built-in off, as in these settings) means no limit and no headers
    allowed = infer(client)
    assert allowed.status_code == 200 and "X-RateLimit-Limit" not in allowed.headers
    assert plugin.calls[-1][1] == "infer"
    assert kernel.rate_limit(None, "models", "x") is not None and kernel.rate_limit(None, "infer", "x") is None


def test_off_by_setting(client: FlaskClient) -> None:
    response = infer(client)
    assert response.status_code == 200 and "X-RateLimit-Limit" not in response.headers


# ----------------------------------------------------------------------------- headers and 429
def test_headers_count_down_then_429_native(make_app: MakeApp) -> None:
    _, client = make_app(rate_limit_overrides="infer=5/3")
    remaining = []
    for _ in range(3):
        response = infer(client)
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "3"
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
        reset = int(response.headers["X-RateLimit-Reset"])
        assert time.time() < reset <= time.time() + HOUR + 1
    assert remaining == [2, 1, 0]

    refused = infer(client)
    assert refused.status_code == 429
    body = refused.json
    assert body["success"] is False and body["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert body["error"]["details"] == {"limit": 3, "group": "infer"}
    assert body["request_id"] == refused.headers["X-Request-ID"]
    assert 1 <= int(refused.headers["Retry-After"]) <= HOUR
    assert refused.headers["X-RateLimit-Limit"] == "3" and refused.headers["X-RateLimit-Remaining"] == "0"
    assert abs(int(refused.headers["X-RateLimit-Reset"]) - time.time() - int(refused.headers["Retry-After"])) <= 2

    # other groups count apart
    models = client.get("/api/v1/models/echo", environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert models.status_code == 200 and models.headers["X-RateLimit-Limit"] == str(DEFAULT_LIMITS["models"][1])
    streamed = client.post("/api/v1/infer", json={**INFER, "stream": True}, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert streamed.status_code == 200 and streamed.headers["X-RateLimit-Limit"] == str(DEFAULT_LIMITS["stream"][1])
    streamed.close()


def test_429_in_openai_shape_and_stream_group(make_app: MakeApp) -> None:
    _, client = make_app(rate_limit_overrides="infer=5/1,stream=5/1")
    body = {"model": "echo", "prompt": "a b", "max_tokens": 2}
    assert client.post("/v1/completions", json=body).status_code == 200
    refused = client.post("/v1/completions", json=body)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    error = refused.json["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert error["details"] == {"limit": 1, "group": "infer"}
    assert "success" not in refused.json

    # "stream": true counts in the stream group, which still has room
    streamed = client.post("/v1/completions", json={**body, "stream": True})
    assert streamed.status_code == 200 and streamed.headers["X-RateLimit-Remaining"] == "0"
    streamed.close()
    assert client.post("/v1/completions", json={**body, "stream": True}).json["error"]["details"]["group"] == "stream"


@pytest.mark.parametrize(
    ("method", "path", "body", "group"),
    [
        ("POST", "/api/v1/infer", INFER, "infer"),
        ("POST", "/api/v1/infer", {**INFER, "stream": True}, "stream"),
        ("POST", "/api/v1/generate", INFER, "infer"),
        ("POST", "/api/v1/stream_infer", INFER, "stream"),
        ("POST", "/api/v1/generate/stream", INFER, "stream"),
        ("POST", "/api/v1/batch_infer", {"inputs": []}, "batch"),
        ("POST", "/api/v1/batch/generate", {"inputs": []}, "batch"),
        ("POST", "/v1/batch", {}, "batch"),
        ("GET", "/api/v1/models", None, "models"),
        ("POST", "/api/v1/models/echo/load", {}, "models"),
        ("POST", "/v1/models/echo/load", {}, "models"),
        ("POST", "/v1/models/echo/unload", {}, "models"),
        ("GET", "/v1/models/echo/status", None, "models"),
        ("GET", "/api/v1/plugins", None, "plugins"),
        ("PUT", "/api/v1/plugins/limits/config", {}, "plugins"),
        ("POST", "/v1/chat/completions", {"messages": []}, "infer"),
        ("POST", "/v1/chat/completions", {"messages": [], "stream": True}, "stream"),
        ("POST", "/v1/completions", {"stream": False}, "infer"),
        ("POST", "/v1/embeddings", {"input": "x", "stream": True}, "infer"),
        ("POST", "/api/v1/auth/login", {}, "auth"),
        ("GET", "/v1/models", None, "system"),
        ("DELETE", "/api/v1/requests/req_1", None, "system"),
    ],
)
def test_endpoint_groups(app: Flask, method: str, path: str, body: dict[str, Any] | None, group: str) -> None:
    with app.test_request_context(path, method=method, json=body):
        assert rate_limit_group() == group


# ----------------------------------------------------------------------------- who is counted
def test_per_key_and_anonymous_per_address(make_app: MakeApp) -> None:
    kernel, client = make_app(auth="required", rate_limit_overrides="infer=2/1,models=9/2")
    kernel.register_plugin("test_auth", KeyAuth())

    assert [infer(client, headers=key("a")).status_code for _ in range(3)] == [200, 200, 429]
    other = infer(client, headers=key("b"))
    assert other.status_code == 200 and other.headers["X-RateLimit-Remaining"] == "1"
    # the same key from another address is still the same caller
    assert infer(client, ip="10.9.9.9", headers=key("a")).status_code == 429

    # unauthenticated calls are limited per address with the anonymous limit, 401s and 403s included
    first = client.get("/api/v1/models", environ_base={"REMOTE_ADDR": "10.0.0.5"})
    assert first.status_code == 401 and first.headers["X-RateLimit-Limit"] == "2"
    assert client.get("/api/v1/models", environ_base={"REMOTE_ADDR": "10.0.0.5"}).status_code == 401
    assert client.get("/api/v1/models", environ_base={"REMOTE_ADDR": "10.0.0.5"}).status_code == 429
    assert client.get("/api/v1/models", environ_base={"REMOTE_ADDR": "10.0.0.6"}).status_code == 401
    forbidden = client.post("/api/v1/models/echo/load", json={}, headers=key("r"))
    assert forbidden.status_code == 403 and forbidden.headers["X-RateLimit-Limit"] == "9"


def test_anonymous_identity_is_counted_per_address(make_app: MakeApp) -> None:
    _, client = make_app(rate_limit_overrides="infer=9/2")  # auth off: every caller is the anonymous admin
    assert [infer(client, ip="10.1.0.1").status_code for _ in range(3)] == [200, 200, 429]
    fresh = infer(client, ip="10.1.0.2")
    assert fresh.status_code == 200 and fresh.headers["X-RateLimit-Limit"] == "2"


def test_premium_tier(make_app: MakeApp) -> None:
    kernel, client = make_app(auth="required", rate_limit_overrides="infer=2/1")
    kernel.register_plugin("test_auth", KeyAuth())
    premium = infer(client, headers=key("p"))
    assert premium.headers["X-RateLimit-Limit"] == "20" and premium.headers["X-RateLimit-Remaining"] == "19"
    models = client.get("/api/v1/models/echo", headers=key("p"))
    assert models.headers["X-RateLimit-Limit"] == str(DEFAULT_LIMITS["models"][0] * 5)

    limiter = RateLimiter()
    premium_identity, standard = KeyAuth.IDENTITIES["key-p"], KeyAuth.IDENTITIES["key-a"]
    for group, (authenticated, anonymous) in DEFAULT_LIMITS.items():
        factor = 10 if group in ("infer", "batch", "stream") else 5
        assert PREMIUM_FACTORS[group] == factor
        assert limiter.limit_for(group, premium_identity) == authenticated * factor
        assert limiter.limit_for(group, standard) == authenticated
        assert limiter.limit_for(group, None) == anonymous
    assert limiter.limit_for("benchmarks", standard) == DEFAULT_LIMITS["system"][0]


# ----------------------------------------------------------------------------- configuration
def test_overrides_parse() -> None:
    assert parse_overrides("") == {}
    assert parse_overrides(" infer=2000/200, batch = 50/5 ") == {"infer": (2000, 200), "batch": (50, 5)}


@pytest.mark.parametrize(
    "raw", ["infer", "infer=3", "infer=3/x", "infer=-1/2", "infer=0/1", "nope=1/1", "infer=1/1,infer=2/2", "infer=1/1,"]
)
def test_bad_overrides_fail_at_start(tmp_path: Path, raw: str) -> None:
    with pytest.raises(ConfigurationError, match="LLAMA_GPU_RATE_LIMIT_OVERRIDES") as caught:
        parse_overrides(raw)
    assert caught.value.details["variable"] == "LLAMA_GPU_RATE_LIMIT_OVERRIDES"
    kernel = Kernel(make_settings(tmp_path, rate_limits=True, rate_limit_overrides=raw))
    with pytest.raises(ConfigurationError, match="LLAMA_GPU_RATE_LIMIT_OVERRIDES"):
        kernel.start()


def test_bad_redis_url_and_plugin_settings(tmp_path: Path, make_app: MakeApp) -> None:
    with pytest.raises(ConfigurationError, match="LLAMA_GPU_REDIS_URL"):
        Kernel(make_settings(tmp_path, rate_limits=True, redis_url="nosuch://x")).start()
    kernel, _ = make_app()
    with pytest.raises(Exception, match="key_prefix"):
        kernel.configure_plugin("rate_limits", {"settings": {"key_prefix": "bad prefix/"}})


def test_reconfiguring_keeps_the_counters(make_app: MakeApp) -> None:
    kernel, client = make_app(rate_limit_overrides="infer=9/1")
    assert infer(client).status_code == 200
    kernel.configure_plugin("rate_limits", {"settings": {"fallback_seconds": 5}})
    assert infer(client).status_code == 429
    kernel.unload_plugin("rate_limits")
    assert "X-RateLimit-Limit" not in infer(client).headers


# ----------------------------------------------------------------------------- proxies
def test_no_trusted_proxy_ignores_forwarded_for(make_app: MakeApp) -> None:
    _, client = make_app(rate_limit_overrides="infer=9/2")
    codes = [infer(client, ip="10.2.0.1", headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code for n in range(3)]
    assert codes == [200, 200, 429]


def test_one_trusted_proxy_counts_the_last_forwarded_address(make_app: MakeApp) -> None:
    _, client = make_app(rate_limit_overrides="infer=9/2", trusted_proxies=1)
    proxy = "10.3.0.1"

    def via_proxy(forwarded_for: str) -> int:
        return infer(client, ip=proxy, headers={"X-Forwarded-For": forwarded_for}).status_code

    assert [via_proxy("203.0.113.1") for _ in range(2)] == [200, 200]
    assert via_proxy("203.0.113.2") == 200  # another client behind the same proxy
    # a client prepending a fake address is still counted by the address the proxy saw
    assert via_proxy("198.51.100.9, 203.0.113.1") == 429


def test_proxy_fix_sets_the_client_address(make_app: MakeApp) -> None:
    kernel, client = make_app(trusted_proxies=1)
    seen = FixedAnswer()
    kernel.register_plugin("spy", seen)
    infer(client, ip="10.3.0.1", headers={"X-Forwarded-For": "1.2.3.4, 203.0.113.5"})
    assert seen.calls[-1][2] == "203.0.113.5"


# ----------------------------------------------------------------------------- Redis
def redis_url() -> str:
    """The test Redis, or skip (fail when ``LLAMA_GPU_REQUIRE_SERVICES=1``)."""
    url = os.environ.get("LLAMA_GPU_TEST_REDIS_URL", "")
    if not url:
        reason = "LLAMA_GPU_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/0): shared counters not tested"
        if os.environ.get("LLAMA_GPU_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return url


@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    """A Redis URL and a key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    url, prefix = redis_url(), f"llama_gpu_test_{uuid.uuid4().hex[:12]}"
    connection = redis.Redis.from_url(url)
    yield url, prefix
    keys = list(connection.scan_iter(f"{prefix}:*"))
    if keys:
        connection.delete(*keys)
    connection.close()


def test_redis_counters_are_shared_between_instances(make_app: MakeApp, redis_prefix: tuple[str, str]) -> None:
    import redis

    url, prefix = redis_prefix
    kernel_a, client_a = make_app(redis_url=url, rate_limit_overrides="infer=9/3")
    kernel_b, client_b = make_app(redis_url=url, rate_limit_overrides="infer=9/3")
    for kernel in (kernel_a, kernel_b):
        kernel.configure_plugin("rate_limits", {"settings": {"key_prefix": prefix}})

    assert infer(client_a).headers["X-RateLimit-Remaining"] == "2"
    assert infer(client_b).headers["X-RateLimit-Remaining"] == "1"
    assert infer(client_a).status_code == 200
    assert infer(client_b).status_code == 429
    assert infer(client_a).status_code == 429
    assert infer(client_b, ip="10.0.0.2").status_code == 200
    assert list(redis.Redis.from_url(url).scan_iter(f"{prefix}:*")), "no counters under the deployment's prefix"
    assert kernel_a.collect_metrics()["rate_limits.storage_errors_total"] == 0


def test_redis_unreachable_fails_open_to_local_counting(make_app: MakeApp, caplog: pytest.LogCaptureFixture) -> None:
    kernel, client = make_app(redis_url="redis://127.0.0.1:1/0", rate_limit_overrides="infer=9/2")
    with caplog.at_level(logging.ERROR, logger="llama_gpu.plugins.auth.ratelimit"):
        codes = [infer(client).status_code for _ in range(3)]
    assert codes == [200, 200, 429]  # still limited, on this instance's own counters
    assert infer(client, ip="10.0.0.2").headers["X-RateLimit-Remaining"] == "1"
    metrics = kernel.collect_metrics()
    assert metrics["rate_limits.storage_errors_total"] == 1 and metrics["rate_limits.fallback_active"] == 1
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1

    # after fallback_seconds the shared storage is tried again
    kernel.configure_plugin("rate_limits", {"settings": {"fallback_seconds": 0.05}})
    infer(client, ip="10.0.0.3")
    time.sleep(0.1)
    assert infer(client, ip="10.0.0.3").status_code == 200
    assert kernel.collect_metrics()["rate_limits.storage_errors_total"] == 3


def test_status_is_kept_in_g(make_app: MakeApp) -> None:
    kernel, _ = make_app(rate_limit_overrides="system=9/4")
    app = create_app(kernel=kernel)
    with app.test_request_context("/v1/models", environ_base={"REMOTE_ADDR": "10.4.0.1"}):
        require("read", "models")
        require("read", "models")  # counted once per request
        assert isinstance(g.rate_limit, RateLimitStatus) and g.rate_limit.remaining == 3
