"""The example model backend and the fixtures plugin authors test with (``llama_gpu.testing``)."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "llama-gpu-counter"


def test_the_example_backend_is_small_and_its_own_tests_pass_with_the_fixtures() -> None:
    """Its tests run as a plugin author runs them: their own pytest session, with only the fixtures plugin."""
    assert len((EXAMPLE / "llama_gpu_counter.py").read_text().splitlines()) <= 60
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLE), str(ROOT)])}
    # -p works before the package is installed; installed, the entry point has the same name, so no clash
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "llama_gpu.testing", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout


def test_the_fixtures_are_a_pytest11_plugin_named_like_their_module() -> None:
    """``-p llama_gpu.testing`` and the installed entry point register one plugin under one name."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    entries = dict(
        line.split("=", 1) for line in config["options.entry_points"]["pytest11"].strip().splitlines() if line
    )
    assert {k.strip(): v.strip() for k, v in entries.items()} == {"llama_gpu.testing": "llama_gpu.testing"}
