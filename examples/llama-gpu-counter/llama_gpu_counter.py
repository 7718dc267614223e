"""An example model backend: ``counter`` counts from the prompt's number (deterministic, no weights)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from llama_gpu import (
    Backend,
    GeneratedToken,
    InferenceRequest,
    LoadedModel,
    LoadOptions,
    ModelSpec,
    PluginInfo,
    hookimpl,
)


class CounterModel(LoadedModel):
    """``"7"`` → ``" 8 9 10 …"``, one number per token, up to ``max_tokens`` (from 0 without a number)."""

    backend_name = "counter"

    def generate(self, request: InferenceRequest) -> Iterator[GeneratedToken]:
        """Count on from the last number of the prompt."""
        words = request.prompt.split()
        start = int(words[-1]) if words and words[-1].lstrip("-").isdigit() else 0
        for n in range(request.max_tokens):
            yield GeneratedToken(text=f" {start + n + 1}", token_id=n)
        yield GeneratedToken(text="", finish_reason="length")

    def tokenize(self, text: str) -> list[int]:
        """One token per word."""
        return list(range(len(text.split())))


class CounterBackend(Backend):
    """Serves the one ``counter`` model."""

    name = "counter"

    def builtin_models(self) -> list[ModelSpec]:
        """The model this backend brings."""
        return [ModelSpec(id="counter", backend=self.name, name="Counter", format="builtin", type="base")]

    def load(self, spec: ModelSpec, path: str | None, options: LoadOptions) -> LoadedModel:
        """Nothing to read from disk."""
        return CounterModel(spec)


class CounterPlugin:
    """The plugin: registers the backend (its model comes with it)."""

    PLUGIN_INFO = PluginInfo(name="Counter", category="backend", description="A counting model (an example).")

    @hookimpl
    def register_backends(self, register: Callable[[Backend], None]) -> None:
        """Offer the ``counter`` backend."""
        register(CounterBackend())
