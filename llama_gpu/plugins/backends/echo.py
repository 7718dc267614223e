"""The echo backend: a deterministic model for tests and for a server with no model yet.

It "generates" the prompt back word by word (or reversed, or upper-cased), one token per
word with its leading whitespace, up to ``max_tokens``. Settings: ``mode``
(``echo`` | ``reverse`` | ``upper``) and ``token_delay`` (seconds slept per token, to
exercise streaming, draining and cancellation). Its engine batches like a real one: each
step sleeps ``token_delay`` once and gives every running request its next word.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ...kernel.backend import Backend, BatchRunner, GeneratedToken, LoadedModel, LoadOptions, ModelSpec, Sequence
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
        """Yield the prompt's words, transformed by ``mode``, then the end marker."""
        for token in self.words(request):
            if token.token_id is not None and self._settings["token_delay"]:
                time.sleep(self._settings["token_delay"])
            yield token

    def words(self, request: InferenceRequest) -> Iterator[GeneratedToken]:
        """The completion of ``request`` without delays: one token per word, then the end marker."""
        mode = self._settings["mode"]
        words = tokenize(request.prompt)
        if mode == "reverse":
            words = [(" " if n else "") + w.strip() for n, w in enumerate(reversed(words))]
        for n, word in enumerate(words[: request.max_tokens]):
            yield GeneratedToken(text=word.upper() if mode == "upper" else word, token_id=n)
        yield GeneratedToken(text="", finish_reason="length" if len(words) > request.max_tokens else "stop")

    def batch_runner(self, parallel: int) -> BatchRunner:
        """A runner that steps up to ``parallel`` requests together."""
        return EchoRunner(self, parallel)

    def tokenize(self, text: str) -> list[int]:
        """One id per word (its position: the echo model has no vocabulary)."""
        return list(range(len(tokenize(text))))


class EchoRunner(BatchRunner):
    """Steps every running echo request together, ``token_delay`` per step."""

    def __init__(self, model: EchoModel, parallel: int) -> None:
        self._model = model
        self.max_sequences = parallel
        self._active: dict[Sequence, Iterator[GeneratedToken]] = {}

    def admit(self, seq: Sequence) -> None:
        """Start ``seq``."""
        self._active[seq] = self._model.words(seq.request)

    def step(self) -> list[tuple[Sequence, list[GeneratedToken]]]:
        """Sleep one ``token_delay``; give each request its next word (or its end)."""
        delay = self._model._settings["token_delay"]
        if delay:
            time.sleep(delay)
        out = []
        for seq, words in list(self._active.items()):
            token = next(words)
            if token.finish_reason is not None:
                del self._active[seq]
            out.append((seq, [token]))
        return out

    def drop(self, seq: Sequence) -> None:
        """Forget ``seq``."""
        self._active.pop(seq, None)


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
