"""Every authorization decision goes through ``check_permission``: route declarations, and the "may it
act on anyone's objects" checks inside handlers (key listing and revocation, cancelling requests)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
from flask.testing import FlaskClient

from llama_gpu import Identity, Kernel, hookimpl


class Policy:
    """A third-party policy: grants or refuses (permission, resource) pairs; silent on the rest."""

    def __init__(self) -> None:
        self.rules: dict[tuple[str, str | None], bool] = {}
        self.asked: list[tuple[str, str | None]] = []

    @hookimpl
    def check_permission(self, identity: Identity | None, permission: str, resource: str | None) -> bool | None:
        self.asked.append((permission, resource))
        return self.rules.get((permission, resource))


@pytest.fixture
def policy() -> Policy:
    return Policy()


@pytest.fixture
def llama_gpu_plugins(policy: Policy) -> Mapping[str, object]:
    return {"policy": policy}


def test_a_route_asks_check_permission_for_its_declared_permission(
    policy: Policy, llama_gpu_client: FlaskClient, llama_gpu_headers: Callable[[str | None], dict[str, str]]
) -> None:
    body = {"text": "hello there", "model": "echo", "max_tokens": 2}
    assert llama_gpu_client.post("/api/v1/infer", json=body, headers=llama_gpu_headers("read")).status_code == 403
    assert ("write", "infer") in policy.asked
    policy.rules[("write", "infer")] = True  # the policy lets read keys generate
    granted = llama_gpu_client.post("/api/v1/infer", json=body, headers=llama_gpu_headers("read"))
    assert granted.status_code == 200 and granted.json["result"]["generated_text"] == "hello there"
    policy.rules[("read", "models")] = False  # and keeps admins off the model list
    refused = llama_gpu_client.get("/api/v1/models", headers=llama_gpu_headers("admin"))
    assert refused.status_code == 403 and refused.json["error"]["code"] == "PERMISSION_DENIED"


def test_seeing_every_key_is_asked_of_check_permission(
    policy: Policy,
    llama_gpu_kernel: Kernel,
    llama_gpu_client: FlaskClient,
    llama_gpu_headers: Callable[[str | None], dict[str, str]],
) -> None:
    def listed() -> int:
        reply = llama_gpu_client.get("/api/v1/auth/keys", headers=llama_gpu_headers("admin"))
        assert reply.status_code == 200, reply.json
        return len(reply.json["keys"])

    assert listed() == 4  # every key of the fixtures: an admin's view
    policy.rules[("admin", "keys")] = False
    assert listed() == 0, "refused the admin view, the key sees only the keys made from it"
    everyone = Identity(id="test", kind="cli", roles=frozenset({"admin"}))
    del policy.rules[("admin", "keys")]  # the key list is asked of check_permission too: let this look pass
    key_id = llama_gpu_kernel.services["accounts"].list_keys(everyone)[0].id  # the read key, not the admin's own
    policy.rules[("admin", "keys")] = False
    revoke = llama_gpu_client.delete(f"/api/v1/auth/keys/{key_id}", headers=llama_gpu_headers("admin"))
    assert revoke.status_code == 404, "not an admin for check_permission: another's key is not found"


def test_cancelling_anyones_request_is_asked_of_check_permission(policy: Policy, llama_gpu_kernel: Kernel) -> None:
    from llama_gpu import InferenceRequest

    llama_gpu_kernel.configure_plugin("echo", {"settings": {"token_delay": 0.05}})
    owner = Identity(id="1", kind="api_key", roles=frozenset({"write"}))
    admin = Identity(id="2", kind="api_key", roles=frozenset({"admin"}))
    stream = llama_gpu_kernel.generate(InferenceRequest(prompt="a b c d e f", model="echo", id="r1", identity=owner))
    try:
        policy.rules[("admin", "requests")] = False
        from llama_gpu.errors import NotFound

        with pytest.raises(NotFound):
            llama_gpu_kernel.cancel_request("r1", admin)
        del policy.rules[("admin", "requests")]
        assert llama_gpu_kernel.cancel_request("r1", admin) == 1
    finally:
        stream.close()
