"""Shared fixtures: a fresh kernel and app per test, stopped by the test."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from llama_gpu import Event, Kernel, Settings, hookimpl
from llama_gpu.api import create_app

#: The environment variable the root conftest sets to the run's shared model store.
MODEL_STORE = "LLAMA_GPU_MODEL_STORE"


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings isolated from the environment and from other tests."""
    values: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "drain_timeout": 5.0,
        "autoload_plugins": False,
        "default_model": "echo",
        "preload": False,
        # most tests are about other things: they run open; tests of access turn auth on
        "auth": "off",
        "rate_limits": False,
        # tests use many models: any may load on first use (the default, default-only, is tested on its own)
        "autoload": "any",
        # one model store for the whole run (see the root conftest): Qwen is assembled once, not per data dir
        "model_store": os.environ.get(MODEL_STORE, ""),
    }
    values.update(overrides)
    return Settings.create(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def kernel(settings: Settings) -> Iterator[Kernel]:
    k = Kernel(settings).start()
    yield k
    k.stop(timeout=5)


@pytest.fixture
def app(kernel: Kernel) -> Flask:
    return create_app(kernel=kernel)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class Recorder:
    """A plugin that records every event it receives."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.cond = threading.Condition()

    @hookimpl
    def on_event(self, event: Event) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait_for(self, type: str, timeout: float = 5.0, **match: Any) -> Event:
        """Block until an event of ``type`` whose data contains ``match`` arrives."""

        def found() -> Event | None:
            for event in self.events:
                if event.type == type and all(event.data.get(k) == v for k, v in match.items()):
                    return event
            return None

        with self.cond:
            self.cond.wait_for(lambda: found() is not None, timeout)
            event = found()
        assert event is not None, f"no {type} event with {match}; got {[e.type for e in self.events]}"
        return event


@pytest.fixture
def recorder(kernel: Kernel) -> Recorder:
    rec = Recorder()
    kernel.register_plugin("recorder", rec)
    return rec


@pytest.fixture
def installed_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], None]:
    """Install entry points in the group ``llama_gpu`` as a distribution on ``sys.path``.

    Writes a real ``.dist-info`` (what pip writes) so discovery goes through
    ``importlib.metadata`` exactly as for a pip-installed plugin.
    """

    def install(points: dict[str, str], name: str = "sample-plugins", version: str = "0.3.1") -> None:
        site = tmp_path / f"site-{name}"
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: Sample plugins for tests\n"
            "Author: Test Suite\n"
        )
        lines = "".join(f"{k} = {v}\n" for k, v in points.items())
        (info / "entry_points.txt").write_text(f"[llama_gpu]\n{lines}")
        monkeypatch.syspath_prepend(str(site))

    return install
