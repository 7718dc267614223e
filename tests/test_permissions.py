"""Authorization decisions go through ``check_permission``, never a role test in the code that acts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from llama_gpu import Identity, InferenceRequest, Kernel, hookimpl
from llama_gpu.errors import NotFound, RequestCancelled
from llama_gpu.plugins.auth import ACCOUNTS

from .conftest import make_settings
from .test_engine import engine_stats, make_kernel, start_streaming, wait_until

__all__ = ["make_kernel"]  # the fixture, used by name

OWNER = Identity(id="key-1", roles=frozenset({"write"}))
OPERATOR = Identity(id="900", roles=frozenset({"write"}))
ADMIN = Identity(id="901", roles=frozenset({"admin"}))


class Operators:
    """A policy plugin: key 900 may administer running requests and keys (and nothing else)."""

    @hookimpl
    def check_permission(self, identity: Identity | None, permission: str, resource: str | None) -> bool | None:
        if identity is not None and identity.id == "900" and permission == "admin":
            return resource in ("requests", "keys")
        if identity is not None and identity.id == "901" and resource == "keys":
            return False  # this deployment's root may not manage others' keys
        return None


def test_cancelling_another_callers_request_asks_check_permission(make_kernel: Callable[..., Kernel]) -> None:
    kernel = make_kernel(parallel=1, token_delay=0.02)
    running, _ = start_streaming(kernel, max_tokens=100, identity=OWNER)
    wait_until(lambda: engine_stats(kernel)["running"] == 1)
    queued = kernel.generate(InferenceRequest(prompt="never", max_tokens=3, id="queued-1", identity=OWNER))
    with pytest.raises(NotFound):
        kernel.cancel_request("queued-1", OPERATOR)  # a write key: not its request
    kernel.register_plugin("operators", Operators())
    assert kernel.cancel_request("queued-1", OPERATOR) == 1
    with pytest.raises(RequestCancelled):
        queued.result()
    running.job.cancel()


def test_the_accounts_ask_check_permission_who_may_see_and_revoke_all_keys(tmp_path: Path) -> None:
    kernel = Kernel(make_settings(tmp_path)).start()
    try:
        accounts = kernel.service(ACCOUNTS)
        key = accounts.create_key("someone", "read")[0]
        assert [k.id for k in accounts.list_keys(ADMIN)] == [key.id]
        assert accounts.list_keys(OPERATOR) == []
        kernel.register_plugin("operators", Operators())
        assert accounts.list_keys(ADMIN) == []  # the policy took the admin's say over keys away
        assert [k.id for k in accounts.list_keys(OPERATOR)] == [key.id]
        with pytest.raises(NotFound):
            accounts.revoke_key(key.id, ADMIN)
        assert accounts.revoke_key(key.id, OPERATOR).revoked_at is not None
    finally:
        kernel.stop(timeout=5)
