"""The bundled GGUF file's metadata, read without its weights: its tokenizer and context length.

Converting the bundled model to safetensors takes 15-30 s on a fresh machine. Counting tokens (``inspect``,
the Home page's length check) needs only the vocabulary and merges, which sit in the file's first
megabytes: read here with ``struct`` and built with the ``tokenizers`` library, without torch or
transformers. The libraries that read GGUF files are much slower for this (``bench/bench_gguf_tokenizer.py``,
fresh processes, imports included): 0.40 s here, 11.6 s for transformers' ``AutoTokenizer`` from the GGUF
file, 4.5 s for the ``gguf`` package's reader alone. The result encodes exactly as the converted
``tokenizer.json`` does (``tests/test_gguf.py``).
"""
from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

# GGUF metadata value types with a fixed width (struct format); 8 is a string and 9 an array.
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_CONTROL_TOKEN = 3  # llama.cpp's token type for special tokens such as <|im_start|>
# Pre-tokenizers that are GPT-2's byte-level split (SmolLM2 calls its own "smollm").
_GPT2_SPLIT = {"smollm", "gpt-2", "gpt2", "default"}


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Every metadata key of a GGUF file (v2 or v3) and its value; the tensors are not touched."""
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as blob:
        if blob[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file.")
        version, _, key_count = struct.unpack_from("<IQQ", blob, 4)
        if version not in (2, 3):
            raise ValueError(f"{path} is GGUF version {version}; versions 2 and 3 are read.")
        reader = _Reader(blob, 24)
        return {reader.string(): reader.value(reader.uint32()) for _ in range(key_count)}


class _Reader:
    """Walks the metadata section: every value is read in file order."""

    def __init__(self, blob: mmap.mmap, pos: int) -> None:
        self.blob, self.pos = blob, pos

    def unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.blob, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def uint32(self) -> int:
        return self.unpack("I")[0]

    def string(self) -> str:
        (length,) = self.unpack("Q")
        text = self.blob[self.pos:self.pos + length].decode("utf-8")
        self.pos += length
        return text

    def value(self, kind: int) -> Any:
        if kind in _SCALAR:
            return self.unpack(_SCALAR[kind])[0]
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise ValueError(f"GGUF metadata value of unknown type {kind}.")
        element, count = self.unpack("IQ")
        if element in _SCALAR:
            return list(self.unpack(f"{count}{_SCALAR[element]}"))
        return [self.value(element) for _ in range(count)]


def context_length(metadata: dict[str, Any]) -> int:
    """The context length the file states for its architecture (``llama.context_length``), else 2048."""
    return int(metadata.get(f"{metadata.get('general.architecture', '')}.context_length", 2048))


def byte_level_tokenizer(metadata: dict[str, Any]) -> Any:
    """A ``tokenizers.Tokenizer`` for a file with a GPT-2 style byte-level BPE vocabulary (SmolLM2's).

    Raises ``ValueError`` for any other kind, so the caller can fall back to converting the file.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    kind, split = metadata.get("tokenizer.ggml.model"), metadata.get("tokenizer.ggml.pre", "default")
    if kind != "gpt2" or split not in _GPT2_SPLIT or "tokenizer.ggml.merges" not in metadata:
        raise ValueError(f"a GGUF tokenizer of kind {kind!r} with split {split!r} is not built here.")
    tokens = metadata["tokenizer.ggml.tokens"]
    merges = [tuple(merge.split(" ", 1)) for merge in metadata["tokenizer.ggml.merges"]]
    tokenizer = Tokenizer(models.BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    kinds = metadata.get("tokenizer.ggml.token_type") or []
    tokenizer.add_special_tokens([AddedToken(token, normalized=False, special=True)
                                  for token, token_kind in zip(tokens, kinds) if token_kind == _CONTROL_TOKEN])
    return tokenizer
