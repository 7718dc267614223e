"""The suite's skip policy (root ``conftest.py``), run in an inner pytest session."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT_CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"

INNER_TESTS = """
import pytest

def test_runs():
    assert True

@pytest.mark.skipif(True, reason="a service is missing")
def test_skipped_by_condition():
    pass

def test_skipped_at_run_time():
    pytest.skip("no browser here")

@pytest.mark.gpu
@pytest.mark.skipif(True, reason="no CUDA device on this machine")
def test_cuda_only():
    pass

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(re.sub(r"(?m)^pytest_plugins = .*$", "", ROOT_CONFTEST.read_text()))
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    pytester.makepyfile(test_inner=INNER_TESTS)
    return pytester


def test_in_ci_every_skip_but_a_gpu_one_fails(inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_GPU_REQUIRE_SERVICES", "1")
    result = inner.runpytest_subprocess("-rA")
    # a skipif fires in setup, so pytest counts it as an error; either way the run fails
    result.assert_outcomes(passed=1, failed=1, errors=1, skipped=1, xfailed=1)
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_skipped_by_condition*",
            "*skipped (Skipped: a service is missing); only tests marked `gpu` may skip",
            "*test_skipped_at_run_time*",
            "*skipped (Skipped: no browser here)*",
        ]
    )


def test_elsewhere_skips_stay_skips_with_their_reason(inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLAMA_GPU_REQUIRE_SERVICES", raising=False)
    result = inner.runpytest_subprocess("-rs")
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    result.stdout.fnmatch_lines(["*a service is missing*"])
