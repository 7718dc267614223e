"""Read a GGUF file's header without loading it: metadata, vocabulary size, parameter count.

The ``gguf`` package's reader decodes every vocabulary string (seconds for a 150k-token
vocabulary); listing models needs only scalars and counts, so this reads the header
directly and skips arrays. A file that is not a well-formed GGUF header raises
:class:`GGUFError` with the reason.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
MAX_COUNT = 1 << 32

#: ``general.file_type`` values (llama.cpp's LLAMA_FTYPE) to quantization names.
FILE_TYPES = {
    0: "f32",
    1: "f16",
    2: "q4_0",
    3: "q4_1",
    7: "q8_0",
    8: "q5_0",
    9: "q5_1",
    10: "q2_k",
    11: "q3_k_s",
    12: "q3_k_m",
    13: "q3_k_l",
    14: "q4_k_s",
    15: "q4_k_m",
    16: "q5_k_s",
    17: "q5_k_m",
    18: "q6_k",
    19: "iq2_xxs",
    20: "iq2_xs",
    24: "iq1_s",
    25: "iq4_nl",
    26: "iq3_s",
    28: "iq4_xs",
    32: "bf16",
}


class GGUFError(ValueError):
    """The file is not a readable GGUF."""


class _Reader:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf, self.pos = buf, 0

    def unpack(self, fmt: str) -> Any:
        try:
            value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        except struct.error:
            raise GGUFError("the file ends inside its header (truncated)") from None
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.unpack("<Q")
        if length > len(self.buf) - self.pos:
            raise GGUFError("a string runs past the end of the file (truncated or corrupt)")
        raw = self.buf[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            elem, count = self.unpack("<I"), self.unpack("<Q")
            if count > MAX_COUNT:
                raise GGUFError(f"an array claims {count} elements (corrupt)")
            if elem in _SCALARS:
                self.pos += struct.calcsize(_SCALARS[elem]) * count
            elif elem == _STRING:
                for _ in range(count):
                    length = self.unpack("<Q")  # read first: it moves pos
                    self.pos += length
            else:
                raise GGUFError(f"unsupported array element type {elem}")
            if self.pos > len(self.buf):
                raise GGUFError("an array runs past the end of the file (truncated)")
            return _ArrayLen(count)
        raise GGUFError(f"unknown value type {kind}")


class _ArrayLen(int):
    """An array's length, standing in for its skipped contents."""


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """Scalars and array lengths of the header, plus ``parameters`` (sum of tensor sizes)."""
    path = Path(path)
    with path.open("rb") as f:
        size = path.stat().st_size
        if size < 24:
            raise GGUFError(f"{path.name} is too small to be a GGUF file ({size} bytes)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[:4] != b"GGUF":
                raise GGUFError(f"{path.name} is not a GGUF file (bad magic {bytes(buf[:4])!r})")
            r = _Reader(buf)
            r.pos = 4
            version, n_tensors, n_kv = r.unpack("<I"), r.unpack("<Q"), r.unpack("<Q")
            if version not in (2, 3) or n_tensors > MAX_COUNT or n_kv > MAX_COUNT:
                raise GGUFError(f"unsupported or corrupt GGUF header (version {version})")
            meta: dict[str, Any] = {"gguf.version": version}
            for _ in range(n_kv):
                key = r.string()
                meta[key] = r.value(r.unpack("<I"))
            parameters = 0
            for _ in range(n_tensors):
                r.string()
                n_dims = r.unpack("<I")
                if n_dims > 8:
                    raise GGUFError("a tensor claims more than 8 dimensions (corrupt)")
                count = 1
                for _ in range(n_dims):
                    count *= r.unpack("<Q")
                r.unpack("<I")
                r.unpack("<Q")
                parameters += count
            meta["parameters"] = parameters
    return meta


def summarize(meta: dict[str, Any]) -> dict[str, Any]:
    """The catalog fields: architecture, context length, vocabulary, quantization, template."""
    arch = meta.get("general.architecture")
    file_type = meta.get("general.file_type")
    return {
        "name": meta.get("general.name"),
        "architecture": arch,
        "context_length": meta.get(f"{arch}.context_length"),
        "vocab_size": int(meta["tokenizer.ggml.tokens"]) if "tokenizer.ggml.tokens" in meta else None,
        "quantization": FILE_TYPES.get(file_type) if isinstance(file_type, int) else None,
        "parameters": meta.get("parameters"),
        "has_chat_template": "tokenizer.chat_template" in meta,
    }
