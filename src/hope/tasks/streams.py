"""Long token streams read with the model state carried across windows, scored by next-token loss.

* **Cipher languages** (``CipherStream``; after the paper's continual translation of a novel language, CTNL,
  NL Sec. 9.1): segments of held-out corpus text, each enciphered by the substitution cipher of its
  language (of all 256 byte values, or of the 26 letters only: ``alphabet``), in the order of ``pattern``
  (default ``ABA``: language A, then B, then A again). Each segment reads fresh text, so only the language can
  carry over; with ``same_text`` every segment reads the first one's passage instead (``pattern=AA``,
  ``alphabet=none``: one passage read twice, whose second reading a model predicts as far as its state kept the
  first). ``stream_metrics`` gives the loss of each segment, how much a returning language's loss rose while
  another was read (forgetting) and how many tokens it took to recover.
* **Long documents** (``LongDocumentStream``): held-out documents, in a seeded order, concatenated (each ended by the
  tokenizer's end-of-text id) to ``length`` tokens; ``loss_by_position`` bins the loss by position.

Both are read window by window with ``model(ids, state=...)`` (``hope.tasks.runner``), with the state carried
(``carry_state=True``) or reset at every window. Held-out text comes from the corpus's test split
(``hope.data.corpus``); training never sees it. docs/tasks.md, streams.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hope.data.corpus import Corpus, load_corpus
from hope.data.tokenizer import BytesTokenizer
from hope.errors import HopeError
from hope.tasks.base import check_positive

BYTE_VALUES = 256


@dataclass(frozen=True)
class StreamRow:
    """``ids``: the stream's tokens (``length + 1`` of them: inputs ``ids[:-1]``, targets ``ids[1:]``);
    ``segments``: ``(name, start, stop)`` target positions of each part, in order."""

    ids: np.ndarray
    segments: tuple[tuple[str, int, int], ...]


CIPHER_ALPHABETS = ("bytes", "letters", "none")
LOWER, UPPER = ord("a"), ord("A")


def substitution_cipher(rng: np.random.Generator, alphabet: str = "bytes") -> np.ndarray:
    """A substitution cipher as a table over the 256 byte values (``cipher[b]`` enciphers b). ``bytes``: a random
    permutation of all 256 values, so most enciphered bytes are ones the corpus never holds. ``letters``: one random
    permutation of the 26 letters, applied to lower and upper case alike; every other byte (spaces, digits,
    punctuation) is kept, so the text keeps its word lengths and every byte stays one the model was trained on.
    ``none``: the identity (the plain text, a control for what a model that decoded the cipher would score)."""
    if alphabet == "bytes":
        return rng.permutation(BYTE_VALUES).astype(np.int64)
    if alphabet not in CIPHER_ALPHABETS:
        raise HopeError(f"alphabet must be one of {', '.join(CIPHER_ALPHABETS)}, got {alphabet!r}")
    cipher, letters = np.arange(BYTE_VALUES, dtype=np.int64), rng.permutation(26)
    if alphabet == "none":
        return cipher
    for base in (LOWER, UPPER):
        cipher[base: base + 26] = base + letters
    return cipher


@functools.lru_cache(maxsize=2)
def corpus(data: str | None = None) -> Corpus:
    """``hope.data.corpus.load_corpus(data)``, loaded once per process (the embedded one takes seconds)."""
    return load_corpus(data)


def _held_out(split: str, data: str | None) -> tuple[tuple[str, str], ...]:
    return tuple((doc.name, doc.text) for doc in corpus(data).split(split))


def held_out_documents(split: str = "test", data: str | None = None) -> tuple[tuple[str, str], ...]:
    """``(name, text)`` of the documents of one split of the corpus (``None``: the embedded one)."""
    if split not in ("validation", "test"):
        raise HopeError(f"streams read held-out text: split must be validation or test, got {split!r}")
    return _held_out(split, data)


@dataclass(frozen=True)
class CipherStream:
    """Segments of ``segment`` bytes of held-out text, each in the cipher of its letter of ``pattern``."""

    segment: int = 4096
    pattern: str = "ABA"
    alphabet: str = "bytes"
    """What each cipher permutes: ``bytes`` (all 256 values), ``letters`` (the 26 letters) or ``none`` (plain text,
    a control); ``substitution_cipher``."""
    split: str = "test"
    data: str | None = None
    carry_state: bool = True
    """Read with the state carried across windows (False: reset at every window)."""
    same_text: bool = False
    """Every segment reads the same passage of text (drawn once per row), each in its own language's cipher."""
    tokenizer: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_positive("segment", self.segment, 2)
        if not isinstance(self.same_text, bool):
            raise HopeError(f"same_text must be true or false, got {self.same_text!r}")
        if self.alphabet not in CIPHER_ALPHABETS:
            raise HopeError(f"alphabet must be one of {', '.join(CIPHER_ALPHABETS)}, got {self.alphabet!r}")
        if not self.pattern or not self.pattern.isalpha() or not self.pattern.isupper():
            raise HopeError(f"pattern must be upper-case letters, one per segment (e.g. ABA), got {self.pattern!r}")
        if self.tokenizer is not None and getattr(self.tokenizer, "kind", None) != "bytes":
            raise HopeError("cipher streams encipher bytes: use --tokenizer bytes")

    @property
    def vocab_size(self) -> int:
        return BytesTokenizer.vocab_size

    @property
    def length(self) -> int:
        return self.segment * len(self.pattern)

    def text(self) -> np.ndarray:
        """The held-out text as byte ids, documents joined by blank lines."""
        joined = "\n\n".join(text for _, text in held_out_documents(self.split, self.data)).encode("utf-8")
        if len(joined) < self.segment + 1:
            raise HopeError(f"the {self.split} split holds {len(joined)} bytes, fewer than segment={self.segment}")
        return np.frombuffer(joined, dtype=np.uint8).astype(np.int64)

    def ciphers(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One cipher per distinct letter of ``pattern``, drawn in order of first appearance."""
        return {letter: substitution_cipher(rng, self.alphabet) for letter in dict.fromkeys(self.pattern)}

    def row(self, rng: np.random.Generator) -> StreamRow:
        """One stream: ciphers, then one text offset per segment (one for all with ``same_text``), all from ``rng``.
        The first input token is the end-of-text id, so the first segment's first byte is a target too."""
        text, ciphers = self.text(), self.ciphers(rng)
        parts, segments = [np.array([BytesTokenizer.eot_id])], []
        shared = int(rng.integers(text.size - self.segment + 1)) if self.same_text else None
        for k, letter in enumerate(self.pattern):
            start = shared if shared is not None else int(rng.integers(text.size - self.segment + 1))
            parts.append(ciphers[letter][text[start: start + self.segment]])
            segments.append((f"{letter}{self.pattern[:k].count(letter) + 1}", k * self.segment, (k + 1) * self.segment))
        return StreamRow(np.concatenate(parts), tuple(segments))


@dataclass(frozen=True)
class LongDocumentStream:
    """Held-out documents in a seeded order, each ended by end-of-text, cut at ``length`` tokens."""

    length: int = 32768
    split: str = "test"
    data: str | None = None
    carry_state: bool = True
    """Read with the state carried across windows (False: reset at every window)."""
    tokenizer: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_positive("length", self.length, 2)

    @property
    def _tokenizer(self) -> Any:
        return self.tokenizer or BytesTokenizer()

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.vocab_size)

    def row(self, rng: np.random.Generator) -> StreamRow:
        documents = held_out_documents(self.split, self.data)
        eot = int(self._tokenizer.eot_id)
        parts, segments, size = [np.array([eot])], [], 0
        for index in rng.permutation(len(documents)):
            name, text = documents[index]
            ids = np.asarray(self._tokenizer.encode(text) + [eot], dtype=np.int64)
            take = min(ids.size, self.length - size)
            parts.append(ids[:take])
            segments.append((name, size, size + take))
            size += take
            if size == self.length:
                return StreamRow(np.concatenate(parts), tuple(segments))
        raise HopeError(f"the {self.split} split holds {size} tokens, fewer than length={self.length}; "
                        "lower --option length")


def position_bins(length: int, first: int = 64) -> list[tuple[int, int]]:
    """Position bins ``[0, first), [first, 2 first), [2 first, 4 first), ...`` up to ``length``."""
    check_positive("first", first)
    bins, start, stop = [], 0, first
    while start < length:
        bins.append((start, min(stop, length)))
        start, stop = stop, 2 * stop
    return bins


def loss_by_position(losses: np.ndarray, first: int = 64) -> list[list[float]]:
    """``[start, stop, mean loss]`` per bin of ``position_bins`` of a per-token loss ``[rows, time]``."""
    losses = np.asarray(losses, dtype=np.float64)
    return [[start, stop, float(losses[:, start:stop].mean())] for start, stop in position_bins(losses.shape[1], first)]


def running_count_losses(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """Next-token loss of a model with no training at all, for reference: each token of ``ids`` ``[rows, time]``
    predicted from the add-one counts of the tokens before it in its row. Returns ``[rows, time - 1]``."""
    ids = np.asarray(ids, dtype=np.int64)
    seen = np.cumsum(np.eye(vocab_size, dtype=np.float64)[ids[:, :-1]], axis=1) + 1.0
    hits = np.take_along_axis(seen, ids[:, 1:, None], axis=2)[..., 0]
    return np.log(seen.sum(axis=2)) - np.log(hits)


def stream_metrics(curve: np.ndarray, segments: tuple[tuple[str, int, int], ...], window: int) -> dict[str, Any]:
    """Metrics of a per-token loss ``curve`` (mean over rows) along a stream of named segments.

    Per segment: ``mean``, ``first`` (mean of its first ``window`` tokens) and ``last`` (of its last ``window``).
    For every segment whose language appeared before with another one in between (``A2`` of ``ABA``):
    ``forgetting`` = its ``first`` minus the ``last`` of that language's previous segment (how much the loss
    rose while the other language was read), and ``recovery_tokens`` = the first ``t >= window`` at which the mean
    loss of tokens ``t - window .. t - 1`` of the segment is back at or below that previous ``last``
    (``None``: never within the segment).
    """
    check_positive("window", window)
    curve = np.asarray(curve, dtype=np.float64)
    per_segment, returns, seen = {}, {}, {}
    for name, start, stop in segments:
        part = curve[start:stop]
        if part.size < window:
            raise HopeError(f"segment {name} has {part.size} tokens, fewer than the window {window}")
        per_segment[name] = {"mean": float(part.mean()), "first": float(part[:window].mean()),
                             "last": float(part[-window:].mean())}
        language = name.rstrip("0123456789")
        previous = seen.get(language)
        if previous is not None and list(seen)[-1] != language:
            level = per_segment[previous]["last"]
            running = np.convolve(part, np.ones(window) / window, mode="valid")
            back = np.flatnonzero(running <= level)
            returns[name] = {"after": previous, "forgetting": per_segment[name]["first"] - level,
                             "recovery_tokens": int(back[0]) + window if back.size else None}
        seen.pop(language, None)
        seen[language] = name
    return {"segments": per_segment, "returns": returns}
