"""Pytest fixtures for plugin authors (a ``pytest11`` plugin, active once ``llama-gpu`` is installed).

A plugin's tests start in a few lines: override :func:`llama_gpu_plugins` with the plugins
under test, and ask for the server around them::

    import pytest
    from my_plugin import MyBackend

    @pytest.fixture
    def llama_gpu_plugins():
        return {"my_backend": MyBackend()}

    def test_it_answers(llama_gpu_client, llama_gpu_headers):
        reply = llama_gpu_client.post("/api/v1/infer", json={"text": "hi", "model": "my-model"},
                                      headers=llama_gpu_headers("write"))
        assert reply.status_code == 200

The kernel is real (built-in plugins, an SQLite database in a temporary folder, auth
required) and is stopped after each test. Without the installed entry point, load the
fixtures with ``pytest -p llama_gpu.testing``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from .kernel.config import Settings
from .kernel.kernel import Kernel
from .plugins.auth import ACCOUNTS

#: The roles a key may have, lowest first.
ROLES = ("read", "write", "admin")
#: Built-ins a plugin's tests rarely need and that would load real models.
HEAVY_PLUGINS = ("llamacpp", "torch", "embedded_models", "local_models")


@pytest.fixture
def llama_gpu_plugins() -> Mapping[str, object]:
    """The plugins under test, by id: override this fixture in your ``conftest.py`` or test module."""
    return {}


@pytest.fixture
def llama_gpu_settings(tmp_path: Path) -> dict[str, Any]:
    """Settings of the test kernel (override, or extend with ``{**defaults, ...}``): isolated and light."""
    return {
        "data_dir": str(tmp_path / "llama-gpu"),
        "auth": "required",
        "rate_limits": False,
        "autoload_plugins": False,
        "preload": False,
        "default_model": "echo",
        "autoload": "any",
        "drain_timeout": 5.0,
        "disable_plugins": HEAVY_PLUGINS,
    }


@pytest.fixture
def llama_gpu_kernel(llama_gpu_settings: dict[str, Any], llama_gpu_plugins: Mapping[str, object]) -> Iterator[Kernel]:
    """A started kernel with the built-ins and :func:`llama_gpu_plugins` loaded; stopped afterwards."""
    kernel = Kernel(Settings.create(**llama_gpu_settings))
    kernel.load_plugins()
    for plugin_id, plugin in llama_gpu_plugins.items():
        kernel.register_plugin(plugin_id, plugin)  # before start(): their routes reach the app
    kernel.start()
    try:
        yield kernel
    finally:
        kernel.stop(timeout=5)


@pytest.fixture
def llama_gpu_app(llama_gpu_kernel: Kernel) -> Flask:
    """The Flask app around :func:`llama_gpu_kernel` (the plugins' routes included)."""
    from .app import create_app

    return create_app(kernel=llama_gpu_kernel)


@pytest.fixture
def llama_gpu_client(llama_gpu_app: Flask) -> FlaskClient:
    """A Flask test client of :func:`llama_gpu_app`."""
    return llama_gpu_app.test_client()


@pytest.fixture
def llama_gpu_keys(llama_gpu_kernel: Kernel) -> dict[str, str]:
    """An API key of each role (``read``, ``write``, ``admin``) and ``none`` (a key without permissions)."""
    accounts = llama_gpu_kernel.service(ACCOUNTS)
    keys = {role: accounts.create_key(f"test {role}", role)[1] for role in ROLES}
    keys["none"] = accounts.create_key("test none", "read", permissions=[])[1]
    return keys


@pytest.fixture
def llama_gpu_headers(llama_gpu_keys: dict[str, str]) -> Callable[[str | None], dict[str, str]]:
    """``headers(role)``: the ``Authorization`` header of that role's key (``None``: no header)."""

    def headers(role: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {llama_gpu_keys[role]}"} if role else {}

    return headers
