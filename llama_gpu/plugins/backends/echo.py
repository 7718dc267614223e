"""The echo backend: a deterministic model for tests and for a server with no model yet.

It "generates" the prompt back word by word (or reversed, or upper-cased), one token per
word with its leading whitespace, up to ``max_tokens``. Settings: ``mode``
(``echo`` | ``reverse`` | ``upper``) and ``token_delay`` (seconds slept per token, to
exercise streaming, draining and cancellation).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ...kernel.backend import Backend, GeneratedToken, LoadedModel, LoadOptions, ModelSpec
from ...kernel.hookspecs import hookimpl
from ...kernel.types import InferenceRequest, PluginInfo

_WORD = re.compile(r"\s*\S+")
MODES = ("echo", "reverse", "upper")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into words, each with its leading whitespace."""
    return _WORD.findall(text)


class EchoModel(LoadedModel):
    """A loaded echo model; reads its behaviour from the plugin's live settings."""

    backend_name = "echo"

    def __init__(self, spec: ModelSpec, settings: Mapping[str, Any]) -> None:
        super().__init__(spec)
        self._settings = settings

    def generate(self, request: InferenceRequest) -> Iterator[GeneratedToken]:
        """Yield the prompt's words, transformed by ``mode``."""
        mode, delay = self._settings["mode"], self._settings["token_delay"]
        words = tokenize(request.prompt)
        if mode == "reverse":
            words = [(" " if n else "") + w.strip() for n, w in enumerate(reversed(words))]
        for n, word in enumerate(words[: request.max_tokens]):
            if delay:
                time.sleep(delay)
            yield GeneratedToken(text=word.upper() if mode == "upper" else word, token_id=n)

    def tokenize(self, text: str) -> list[int]:
        """One id per word (its position: the echo model has no vocabulary)."""
        return list(range(len(tokenize(text))))


class EchoBackend(Backend):
    """Serves the ``echo`` model."""

    name = "echo"

    def __init__(self, settings: dict[str, Any]) -> None:
        self._settings = settings

    def builtin_models(self) -> list[ModelSpec]:
        """The one ``echo`` model."""
        return [
            ModelSpec(
                id="echo",
                backend=self.name,
                name="Echo (deterministic test model)",
                format="builtin",
                type="base",
                capabilities=("text-generation",),
                architecture="echo",
                parameters=0,
                context_length=1_000_000,
            )
        ]

    def load(self, spec: ModelSpec, path: str | None, options: LoadOptions) -> LoadedModel:
        """Nothing to load: return a model bound to the live settings."""
        return EchoModel(spec, self._settings)


class EchoPlugin:
    """Registers the echo backend and keeps its settings."""

    PLUGIN_INFO = PluginInfo(
        name="Echo backend",
        category="backend",
        description="A deterministic backend that echoes the prompt token by token.",
        default_settings={"mode": "echo", "token_delay": 0.0},
    )

    def __init__(self) -> None:
        self.settings: dict[str, Any] = dict(self.PLUGIN_INFO.default_settings)

    @hookimpl
    def configure(self, settings: Mapping[str, Any]) -> None:
        """Check and apply ``mode`` and ``token_delay``."""
        mode, delay = settings.get("mode", "echo"), settings.get("token_delay", 0.0)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) or not 0 <= delay <= 10:
            raise ValueError(f"token_delay must be a number of seconds in [0, 10], got {delay!r}")
        self.settings.update(mode=mode, token_delay=float(delay))

    @hookimpl
    def register_backends(self, register: Callable[[Backend], None]) -> None:
        """Register the echo backend."""
        register(EchoBackend(self.settings))
