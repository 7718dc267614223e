"""Streaming text helpers shared by backends: incremental UTF-8 and stop sequences."""

from __future__ import annotations

import codecs


class StopBuffer:
    """Releases streamed text, holding back what may be the start of a stop sequence.

    ``push`` returns the text safe to emit and whether a stop sequence was hit (the
    stop sequence itself and what follows it are never emitted).
    """

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self._held = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push_bytes(self, data: bytes) -> tuple[str, bool]:
        """Add raw bytes (a token's piece); incomplete UTF-8 waits for the next piece."""
        return self.push(self._decoder.decode(data))

    def push(self, text: str) -> tuple[str, bool]:
        """Add decoded text; return (text to emit, stopped)."""
        if not self.stops:
            return text, False
        held = self._held + text
        cut = min((i for i in (held.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self._held = ""
            return held[:cut], True
        keep = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(held)), 0, -1):
                if held.endswith(stop[:n]):
                    keep = max(keep, n)
                    break
        self._held = held[len(held) - keep :] if keep else ""
        return held[: len(held) - keep], False

    def flush(self) -> str:
        """What is still held when generation ends without a stop."""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text
