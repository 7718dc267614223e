"""Sample plugins with defects, loaded through real entry points by the tests."""

from __future__ import annotations

from llama_gpu import Chunk, PluginInfo, hookimpl


class Fine:
    """A working filter that tags every chunk."""

    PLUGIN_INFO = PluginInfo(name="Fine", category="postprocessing", description="Tags chunks.")

    @hookimpl
    def process_chunk(self, chunk: Chunk) -> None:
        chunk.text = chunk.text + "~"


class RaisesOnInit:
    """A plugin whose construction fails."""

    def __init__(self) -> None:
        raise RuntimeError("cannot initialise")


class Misspelled:
    """A plugin that implements a hook that does not exist."""

    @hookimpl
    def proces_chunk(self, chunk: Chunk) -> None:
        chunk.text = ""
