"""The skip policy of the whole suite (``tests`` and ``clients/python/tests``).

Under ``LLAMA_GPU_REQUIRE_SERVICES=1`` (CI) a skipped test is a failure, whatever skipped it
(a missing service, a missing browser or nginx, a ``skipif`` whose condition broke), so a
test can never vanish while CI stays green. Tests marked ``gpu`` are the exception: whether
they run depends on the machine having an NVIDIA GPU. Without the variable (a laptop with no
PostgreSQL), skips stay skips, with their reason.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

# pytester: tests/test_skip_policy.py runs this hook in an inner session; llama_gpu.testing: the fixtures for
# plugin authors (also its pytest11 entry point once installed: same name, so it is registered once)
pytest_plugins = ["pytester", "llama_gpu.testing"]

REQUIRE = "LLAMA_GPU_REQUIRE_SERVICES"
MODEL_STORE = "LLAMA_GPU_MODEL_STORE"


@pytest.fixture(scope="session", autouse=True)
def shared_model_store(tmp_path_factory: pytest.TempPathFactory) -> Generator[str, None, None]:
    """One model store for the whole run, servers started in subprocesses included (through the environment).

    Without it every fresh data dir assembles the 491 MB Qwen file again (about 12 GB written per run).
    A store the caller set already is kept.
    """
    given = os.environ.get(MODEL_STORE)
    store = given or str(tmp_path_factory.mktemp("model-store"))
    os.environ[MODEL_STORE] = store
    yield store
    if given is None:
        del os.environ[MODEL_STORE]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Turn a skip into a failure under ``LLAMA_GPU_REQUIRE_SERVICES=1``, except for ``gpu`` tests."""
    report = yield
    required = os.environ.get(REQUIRE) == "1"
    # an expected failure (xfail) is reported as skipped too, and is not a skip
    if required and report.skipped and not hasattr(report, "wasxfail") and item.get_closest_marker("gpu") is None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"{REQUIRE}=1 and this test was skipped ({reason}); only tests marked `gpu` may skip"
    return report
