"""Token streams of each split, and the batches the trainer draws from them.

Batches are a pure function of ``(seed, step)``, so a resumed run sees exactly the batches the
uninterrupted run would have seen, and every data-parallel rank can take its own slice.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hope.data.corpus import SPLITS, Corpus, load_corpus
from hope.data.shards import ShardedTokens, is_prepared, open_shards
from hope.data.tokenizer import Tokenizer, build_tokenizer, cache_dir
from hope.errors import HopeError


@dataclass
class TokenSplit:
    """One split as a single token stream (documents joined by end-of-text) and its size in bytes.

    ``tokens`` is an array in memory or, for prepared token shards, a ``ShardedTokens`` reading the shard files
    (``len`` and ``[a:b]`` slicing either way); ``document_starts`` is the offset of each document's first token
    (each document ends with its end-of-text token), where known; ``None``: streaming derives them from the
    end-of-text tokens (``hope.data.stream.document_starts``).
    """

    tokens: np.ndarray | ShardedTokens
    n_bytes: int
    document_starts: np.ndarray | None = None

    @property
    def bytes_per_token(self) -> float:
        return self.n_bytes / max(1, len(self.tokens))


@dataclass
class Dataset:
    tokenizer: Tokenizer
    splits: dict[str, TokenSplit]
    source: str

    def __getitem__(self, split: str) -> TokenSplit:
        return self.splits[split]


def _encode_split(tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    encoded = tokenizer.encode_batch(texts)
    out: list[int] = []
    for ids in encoded:
        out.extend(ids)
        out.append(tokenizer.eot_id)
    dtype = np.uint16 if tokenizer.vocab_size <= 65536 else np.int32
    return np.asarray(out, dtype=dtype)


def encode_corpus(corpus: Corpus, tokenizer: Tokenizer) -> Dataset:
    """Encode every split of ``corpus`` (cached on disk by content hash)."""
    splits = {}
    tok_hash = hashlib.sha256(tokenizer.to_json().encode()).hexdigest()[:16]
    for name in SPLITS:
        texts = [d.text for d in corpus.split(name)]
        digest = hashlib.sha256(tok_hash.encode())
        for text in texts:
            digest.update(hashlib.sha256(text.encode()).digest())
        cached = cache_dir() / f"tokens-{digest.hexdigest()[:20]}.npy"
        if cached.is_file():
            tokens = np.load(cached, allow_pickle=False)
        else:
            tokens = _encode_split(tokenizer, texts)
            tmp = Path(f"{cached}.tmp{os.getpid()}.npy")
            np.save(tmp, tokens, allow_pickle=False)
            os.replace(tmp, cached)
        splits[name] = TokenSplit(tokens, sum(len(t.encode("utf-8")) for t in texts))
    return Dataset(tokenizer, splits, corpus.source)


def load_prepared(path: str, tokenizer: Tokenizer | None = None) -> Dataset:
    """The token shards that ``hope data prepare`` wrote in ``path``; ``tokenizer``, when given, must be theirs."""
    shard_tokenizer, source, splits = open_shards(path)
    if tokenizer is not None and tokenizer.to_json() != shard_tokenizer.to_json():
        raise HopeError(f"the token shards in {path} were written with another tokenizer than this run's")
    return Dataset(shard_tokenizer, {name: TokenSplit(s.tokens, s.n_bytes, s.document_starts)
                                     for name, s in splits.items()}, source)


def load_encoded(data: str | None, tokenizer: Tokenizer) -> Dataset:
    """The splits of ``data`` (text or prepared token shards) encoded by ``tokenizer``."""
    if is_prepared(data):
        return load_prepared(data, tokenizer)
    return encode_corpus(load_corpus(data), tokenizer)


def load_dataset(data: str | None = None, tokenizer: str | Tokenizer = "bpe", vocab_size: int = 4096) -> Dataset:
    """Corpus -> tokenizer (trained on the training split unless given) -> encoded splits; prepared token shards
    bring their own tokenizer (a ``tokenizer`` other than the default ``bpe`` must be it)."""
    if is_prepared(data):
        if isinstance(tokenizer, str) and tokenizer != "bpe":
            tokenizer = build_tokenizer(tokenizer, [], vocab_size)
        return load_prepared(data, None if isinstance(tokenizer, str) else tokenizer)
    corpus = load_corpus(data)
    if isinstance(tokenizer, str):
        tokenizer = build_tokenizer(tokenizer, [d.text for d in corpus.train], vocab_size)
    return encode_corpus(corpus, tokenizer)


def batch_at(tokens: np.ndarray, step: int, *, batch_size: int, seq_len: int, seed: int,
             rows: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The training batch of ``step``: ``batch_size`` random windows of ``seq_len + 1`` tokens.

    Returns ``(inputs, targets)`` of shape ``[batch, seq_len]`` (int64). ``rows`` selects a slice
    of the global batch (a data-parallel rank's share) without changing the other rows.
    """
    if len(tokens) < seq_len + 2:
        raise HopeError(f"the training split has {len(tokens)} tokens, fewer than seq_len + 2 = {seq_len + 2}")
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(tokens) - seq_len - 1, size=batch_size)
    if rows is not None:
        starts = starts[rows]
    windows = np.stack([tokens[s : s + seq_len + 1].astype(np.int64) for s in starts])
    data = torch.from_numpy(windows)
    return data[:, :-1], data[:, 1:]


def eval_windows(tokens: np.ndarray, seq_len: int, max_windows: int | None = None) -> torch.Tensor:
    """Consecutive non-overlapping windows of ``seq_len + 1`` tokens (sharing one boundary token)."""
    n = (len(tokens) - 1) // seq_len
    if n == 0:
        raise HopeError(f"the evaluation split has {len(tokens)} tokens, fewer than seq_len + 1 = {seq_len + 1}")
    if max_windows is not None:
        n = min(n, max_windows)
    idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    return torch.from_numpy(tokens[idx].astype(np.int64))
