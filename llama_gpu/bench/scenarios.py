"""Traffic scenarios: how many input and output tokens each request asks for.

The notation is genai-bench's:

- ``D(in,out)``: deterministic, every request ``in`` input and ``out`` output tokens;
- ``N(mu,sigma)/(mu,sigma)``: normal distributions of input and of output tokens;
- ``U(min,max)/(min,max)``: uniform integers in ``[min, max]`` for input and output;
- ``E(in)``: embeddings, ``in`` input tokens (no output);
- ``dataset``: the dataset's prompts as written, ``max_tokens`` from the sampling parameters.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from .errors import ConfigurationError

_NUM = r"\s*(\d+(?:\.\d+)?)\s*"
_PAIR = rf"\({_NUM},{_NUM}\)"
_PATTERNS = {
    "D": re.compile(rf"^D\({_NUM},{_NUM}\)$"),
    "N": re.compile(rf"^N{_PAIR}/{_PAIR}$"),
    "U": re.compile(rf"^U{_PAIR}/{_PAIR}$"),
    "E": re.compile(rf"^E\({_NUM}\)$"),
}
DATASET = "dataset"


@dataclass(frozen=True)
class Scenario:
    """A parsed traffic scenario; :meth:`sample` draws one request's (input, output) token counts."""

    text: str
    kind: str
    params: tuple[float, ...]

    def sample(self, rng: random.Random) -> tuple[int | None, int | None]:
        """The (input tokens, output tokens) of one request; ``None`` means "as the dataset says"."""
        p = self.params
        if self.kind == "D":
            return int(p[0]), int(p[1])
        if self.kind == "E":
            return int(p[0]), None
        if self.kind == "N":
            return max(1, round(rng.gauss(p[0], p[1]))), max(1, round(rng.gauss(p[2], p[3])))
        if self.kind == "U":
            return rng.randint(int(p[0]), int(p[1])), rng.randint(int(p[2]), int(p[3]))
        return None, None


def parse_scenario(text: str, field: str = "traffic_scenario") -> Scenario:
    """Parse one scenario string; raise :class:`ConfigurationError` naming ``field`` when it is malformed."""
    if not isinstance(text, str):
        raise ConfigurationError(field, f"a scenario must be a string, got {text!r}")
    compact = text.strip()
    if compact.lower() == DATASET:
        return Scenario(DATASET, DATASET, ())
    match = _PATTERNS.get(compact[:1].upper())
    found = match.match(compact[0].upper() + compact[1:]) if match else None
    if not found:
        raise ConfigurationError(
            field, f"{text!r} is not a scenario: use D(in,out), N(mu,sigma)/(mu,sigma), U(min,max)/(min,max) or E(in)"
        )
    kind, params = compact[0].upper(), tuple(float(g) for g in found.groups())
    if kind in ("D", "E") and any(v != int(v) or v < 1 for v in params):
        raise ConfigurationError(field, f"{text!r}: token counts must be whole numbers of at least 1")
    if kind == "N" and (params[0] < 1 or params[2] < 1):
        raise ConfigurationError(field, f"{text!r}: the means must be at least 1")
    if kind == "U":
        if any(v != int(v) or v < 1 for v in params):
            raise ConfigurationError(field, f"{text!r}: bounds must be whole numbers of at least 1")
        if params[0] > params[1] or params[2] > params[3]:
            raise ConfigurationError(field, f"{text!r}: each min must not exceed its max")
    return Scenario(compact, kind, params)
