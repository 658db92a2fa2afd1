"""Tokenizers: byte-level BPE (Hugging Face ``tokenizers``) trained on the training split, raw bytes, or an
existing ``tokenizer.json`` / pretrained Hugging Face tokenizer that has the end-of-text token.

Both reserve one end-of-text id that separates documents. A tokenizer is saved as one
``tokenizer.json`` file (inside every checkpoint), so a checkpoint always decodes what it encodes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import tokenizers

from hope.errors import HopeError

END_OF_TEXT = "<|endoftext|>"


def cache_dir() -> Path:
    """Where trained tokenizers and encoded corpora are cached (``$HOPE_CACHE`` or ``~/.cache/hope``)."""
    path = Path(os.environ.get("HOPE_CACHE", Path.home() / ".cache" / "hope"))
    path.mkdir(parents=True, exist_ok=True)
    return path


class BytesTokenizer:
    """UTF-8 bytes as ids 0..255; id 256 ends a document."""

    kind = "bytes"
    vocab_size = 257
    eot_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def to_json(self) -> str:
        return json.dumps({"hope_tokenizer": "bytes"})


class BPETokenizer:
    """Byte-level BPE; id 0 is the end-of-text token."""

    kind = "bpe"

    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        self.eot_id = tokenizer.token_to_id(END_OF_TEXT)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "BPETokenizer":
        if vocab_size < 257 + 1:
            raise HopeError(f"vocab_size must be at least 258 for byte-level BPE, got {vocab_size}")
        tok = tokenizers.Tokenizer(tokenizers.models.BPE())
        tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = tokenizers.decoders.ByteLevel()
        trainer = tokenizers.trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[END_OF_TEXT],
            initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(list(ids))

    def to_json(self) -> str:
        return self._tok.to_str()


Tokenizer = BytesTokenizer | BPETokenizer


def tokenizer_from_json(text: str, origin: str = "tokenizer") -> Tokenizer:
    """Rebuild a tokenizer saved with ``to_json``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise HopeError(f"{origin} is not valid JSON ({err.msg} at line {err.lineno})") from None
    if data.get("hope_tokenizer") == "bytes":
        return BytesTokenizer()
    try:
        tok = BPETokenizer(tokenizers.Tokenizer.from_str(text))
    except Exception as err:  # tokenizers raises a bare Exception on malformed files
        raise HopeError(f"{origin} is not a valid tokenizer file ({err})") from None
    if tok.eot_id is None:
        raise HopeError(f"{origin} has no {END_OF_TEXT} token")
    return tok


def save_tokenizer(tokenizer: Tokenizer, path: Path) -> None:
    Path(path).write_text(tokenizer.to_json(), encoding="utf-8")


def load_tokenizer(path: Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise HopeError(f"tokenizer file {path} is missing")
    return tokenizer_from_json(path.read_text(encoding="utf-8"), origin=str(path))


def pretrained_tokenizer(name: str) -> Tokenizer:
    """A tokenizer from the Hugging Face Hub (``tokenizers.Tokenizer.from_pretrained``), with ``<|endoftext|>``;
    ``name`` is ``ORG/NAME`` (a bare word is a typo of bpe or bytes more often than a Hub name)."""
    if "/" not in name:
        raise HopeError(f"unknown tokenizer {name!r}; expected bpe, bytes, a tokenizer.json file or a Hugging Face "
                        f"Hub name ORG/NAME (e.g. openai-community/gpt2)")
    try:
        tok = tokenizers.Tokenizer.from_pretrained(name)
    except Exception as err:  # tokenizers raises a bare Exception when offline or the name is unknown
        raise HopeError(f"tokenizer {name!r} is not a tokenizer.json file, and loading it from the "
                        f"Hugging Face Hub failed ({str(err).splitlines()[0] if str(err) else type(err).__name__})") \
            from None
    return tokenizer_from_json(tok.to_str(), origin=f"pretrained tokenizer {name}")


def build_tokenizer(kind: str, train_texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """``bytes``; ``bpe``: a BPE trained on ``train_texts`` (cached by content hash); a ``tokenizer.json`` path;
    or a pretrained tokenizer's name ``ORG/NAME`` on the Hugging Face Hub."""
    if kind == "bytes":
        return BytesTokenizer()
    if kind != "bpe":
        if Path(kind).is_file():
            return load_tokenizer(Path(kind))
        if kind.endswith(".json") or Path(kind).exists():
            raise HopeError(f"tokenizer file {kind} is missing (or not a file)")
        return pretrained_tokenizer(kind)
    train_texts = list(train_texts)
    digest = hashlib.sha256(f"bpe-v1|{vocab_size}|".encode())
    for text in train_texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    cached = cache_dir() / f"tokenizer-{digest.hexdigest()[:16]}.json"
    if cached.is_file():
        return load_tokenizer(cached)
    tok = BPETokenizer.train(train_texts, vocab_size)
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    save_tokenizer(tok, tmp)
    os.replace(tmp, cached)
    return tok
