"""JSON request bodies parsed with a nesting limit, so that deep nesting is a 400, never a 500.

Python's JSON decoder recurses once per level: a body of a few kilobytes of ``[[[[…`` makes
it raise ``RecursionError`` (a 500 with a traceback, before any authentication). The app's
JSON provider checks the depth of a body before decoding it and refuses more than
:data:`MAX_JSON_DEPTH` levels with INVALID_INPUT.
"""

from __future__ import annotations

import re
from typing import Any

from flask.json.provider import DefaultJSONProvider

from ..kernel.errors import InvalidInput

#: Deepest nesting of arrays and objects a request body may have.
MAX_JSON_DEPTH = 32
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in ``data`` (strings skipped; malformed input counts as written)."""
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:
        return data.count(b"[") + data.count(b"{")  # an upper bound that is already small enough
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', data)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    return deepest
        else:
            depth = max(0, depth - 1)
    return deepest


class LimitedJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, refusing bodies nested deeper than :data:`MAX_JSON_DEPTH` before decoding them."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Decode ``s``; INVALID_INPUT (400) when it is nested too deep."""
        data = s.encode("utf-8", "surrogatepass") if isinstance(s, str) else bytes(s)
        if json_depth(data) > MAX_JSON_DEPTH:
            raise InvalidInput(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", details={"limit": MAX_JSON_DEPTH})
        try:
            return super().loads(s, **kwargs)
        except RecursionError:  # belt and braces: never a 500
            raise InvalidInput(
                f"JSON nested deeper than {MAX_JSON_DEPTH} levels", details={"limit": MAX_JSON_DEPTH}
            ) from None
