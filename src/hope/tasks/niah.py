"""Needle in a haystack after RULER (Hsieh et al. 2024; NL Table 1): single, multi-key, multi-query, multi-value.

A row is exactly ``length`` tokens of the LM tokenizer::

    intro | haystack with needles at their depths | question | answer

Needles follow RULER's template "One of the special magic numbers for {key} is: {value}." (the
pass-key variant: "The pass key is {value}. Remember it. {value} is the pass key."). Keys are
adjective-noun words, values 7-digit numbers, 5-digit pass keys or UUIDs. The answer is teacher
forced after the question; each value is one answer group, so item accuracy is RULER's
per-value recall and sequence accuracy is all values right. A value never occurs in the haystack
itself, so it occurs in the context exactly once per needle that holds it.

Variants (RULER / the paper's names):

* ``single_1`` (S-NIAH-1): pass key in the noise haystack;
* ``single_2`` (S-NIAH-2): a number in real text; ``single_3`` (S-NIAH-3): a UUID in real text;
* ``multikey_1`` (MK-NIAH-1): four needles with different keys, one asked;
* ``multiquery`` (MQ-NIAH): four needles, all four keys asked;
* ``multivalue`` (MV-NIAH): four values under one key, all asked.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from hope.data.tokenizer import BytesTokenizer
from hope.errors import HopeError
from hope.tasks.base import RowBuilder, Task, check_positive
from hope.tasks.haystack import HAYSTACKS, interleave, sample_haystack

VALUE_KINDS = ("passkey", "number", "uuid")
ANSWER_SEPARATOR = ","
ADJECTIVES = (
    "able", "ancient", "bitter", "brave", "bright", "calm", "clever", "crisp", "curious", "damp", "eager",
    "early", "fancy", "fierce", "gentle", "giant", "glossy", "grumpy", "hollow", "humble", "icy", "jolly",
    "keen", "lazy", "lively", "loud", "lucky", "mellow", "misty", "narrow", "noisy", "odd", "pale", "proud",
    "quick", "quiet", "rapid", "rusty", "shiny", "silent", "sleepy", "smooth", "spicy", "steady", "sturdy",
    "tender", "tidy", "vivid", "wise", "witty",
)
NOUNS = (
    "anchor", "badger", "barrel", "beacon", "bison", "blossom", "canyon", "cedar", "cheetah", "comet",
    "cricket", "dolphin", "ember", "falcon", "fern", "glacier", "harbor", "hedgehog", "heron", "island",
    "jaguar", "kettle", "lantern", "lemur", "maple", "meadow", "otter", "owl", "panther", "pebble", "pepper",
    "quartz", "raven", "reef", "saddle", "salmon", "spruce", "thistle", "tiger", "tulip", "turtle", "valley",
    "violin", "walnut", "willow", "wombat", "yak", "zebra", "walrus", "orchid",
)


@dataclass(frozen=True)
class NIAHVariant:
    haystack: str
    value_kind: str
    num_keys: int = 1
    num_values: int = 1
    num_queries: int = 1


VARIANTS = {
    "single_1": NIAHVariant("noise", "passkey"),
    "single_2": NIAHVariant("text", "number"),
    "single_3": NIAHVariant("text", "uuid"),
    "multikey_1": NIAHVariant("text", "number", num_keys=4),
    "multiquery": NIAHVariant("text", "number", num_keys=4, num_queries=4),
    "multivalue": NIAHVariant("text", "number", num_values=4),
}


@dataclass(frozen=True)
class NIAHTask(Task):
    """RULER-style NIAH rows of exactly ``length`` tokens of ``tokenizer``.

    ``depth`` places a single needle at that fraction of the haystack (snapped to the nearest unit
    boundary); ``None`` draws every needle's depth uniformly.
    """

    tokenizer: Any = dataclasses.field(default=None, compare=False, repr=False)
    length: int = 4096
    haystack: str = "text"
    value_kind: str = "number"
    num_keys: int = 1
    num_values: int = 1
    num_queries: int = 1
    depth: float | None = None

    def __post_init__(self) -> None:
        if self.tokenizer is None:
            object.__setattr__(self, "tokenizer", BytesTokenizer())
        if self.haystack not in HAYSTACKS:
            raise HopeError(f"unknown haystack {self.haystack!r}; expected one of {', '.join(HAYSTACKS)}")
        if self.value_kind not in VALUE_KINDS:
            raise HopeError(f"unknown value kind {self.value_kind!r}; expected one of {', '.join(VALUE_KINDS)}")
        for name in ("num_keys", "num_values", "num_queries"):
            check_positive(name, getattr(self, name))
        if self.num_queries > self.num_keys:
            raise HopeError(f"num_queries ({self.num_queries}) cannot exceed num_keys ({self.num_keys})")
        if self.value_kind == "passkey" and self.num_keys * self.num_values > 1:
            raise HopeError("the pass-key variant holds one needle (num_keys = num_values = 1)")
        if self.depth is not None and not 0.0 <= self.depth <= 1.0:
            raise HopeError(f"depth must be in [0, 1], got {self.depth}")
        if self.depth is not None and self.num_keys * self.num_values > 1:
            raise HopeError("depth places a single needle; leave it unset with several needles")
        check_positive("length", self.length)
        minimum = self.minimum_length()
        if self.length < minimum:
            raise HopeError(f"length {self.length} is too short for this NIAH task (at least {minimum} tokens)")

    @classmethod
    def variant(cls, name: str, **overrides: Any) -> "NIAHTask":
        if name not in VARIANTS:
            raise HopeError(f"unknown NIAH variant {name!r}; expected one of {', '.join(VARIANTS)}")
        return cls(**{**dataclasses.asdict(VARIANTS[name]), **overrides})

    @property
    def name(self) -> str:  # type: ignore[override]
        return "niah"

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.vocab_size)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.eot_id)

    def minimum_length(self) -> int:
        """Tokens that are not haystack, for the longest keys and values, plus one haystack token."""
        keys = ["hollow-hedgehog"] * self.num_keys
        values = [[self._longest_value()] * self.num_values for _ in keys]
        answers = [f" {v}" for vs in values[: self.num_queries] for v in vs]
        return self._fixed_tokens(self._needles(keys, values), self._question(keys[: self.num_queries]), answers) + 1

    def example(self, rng: np.random.Generator) -> tuple[RowBuilder, dict[str, Any]]:
        while True:
            keys = self._draw_keys(rng)
            values = [[self._draw_value(rng) for _ in range(self.num_values)] for _ in keys]
            queried = [keys[q] for q in sorted(rng.choice(len(keys), size=self.num_queries, replace=False).tolist())]
            needles = self._needles(keys, values)
            question = self._question(queried)
            answer_texts = [f" {v}" for k, vs in zip(keys, values) if k in queried for v in vs]
            budget = self.length - self._fixed_tokens(needles, question, answer_texts)
            if budget < 1:
                raise HopeError(f"length {self.length} is too short for this NIAH task (needles and question "
                                f"take {self.length - budget} tokens)")
            haystack = sample_haystack(self.haystack, self.tokenizer, budget, rng)
            if not any(item in haystack.text for item in keys + [v for vs in values for v in vs]):
                break
        depths = self._draw_depths(rng, len(needles))
        boundary_of = [haystack.nearest_boundary(d) for d in depths]
        order = sorted(range(len(needles)), key=lambda i: boundary_of[i])
        needle_ids = [self._encode(n) for n in needles]
        intro_ids = self._encode(self._intro())
        segments, starts = interleave(haystack, [needle_ids[i] for i in order], [boundary_of[i] for i in order])
        needle_starts = [0] * len(needles)
        for slot, i in enumerate(order):
            needle_starts[i] = int(intro_ids.size + starts[slot])
        answers = self._answers(keys, values, queried, needle_starts)
        row = RowBuilder()
        row.extend(intro_ids)
        for segment in segments:
            row.extend(segment)
        row.extend(self._encode(question))
        answer_starts = []
        for i, answer in enumerate(answers):
            if i:
                row.extend(self._encode(ANSWER_SEPARATOR))
            answer_starts.append(row.extend_answer(self._encode(f" {answer}")))
        info = {
            "keys": keys, "values": values, "queried_keys": queried, "answers": answers,
            "answer_starts": answer_starts, "needles": needles, "needle_starts": needle_starts,
            "needle_lengths": [n.size for n in needle_ids], "depths": [float(d) for d in depths],
            "haystack_start": int(intro_ids.size), "haystack_length": haystack.length, "length": len(row),
        }
        return row, info

    def _fixed_tokens(self, needles: list[str], question: str, answers: list[str]) -> int:
        fixed = len(self._encode(self._intro())) + sum(len(self._encode(n)) for n in needles)
        fixed += len(self._encode(question)) + sum(len(self._encode(a)) for a in answers)
        return fixed + len(self._encode(ANSWER_SEPARATOR)) * (len(answers) - 1)

    def _encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text), dtype=np.int64)

    def _noun(self) -> str:
        return "pass keys" if self.value_kind == "passkey" else ("UUIDs" if self.value_kind == "uuid" else "numbers")

    def _intro(self) -> str:
        if self.value_kind == "passkey":
            return ("There is an important pass key hidden inside a lot of irrelevant text. "
                    "Find it and memorize it. I will quiz you about the pass key.")
        return (f"Some special magic {self._noun()} are hidden within the following text. "
                f"Make sure to memorize it. I will quiz you about the {self._noun()} afterwards.")

    def _needles(self, keys: list[str], values: list[list[str]]) -> list[str]:
        """One needle sentence per (key, value), each starting with a space, key by key."""
        if self.value_kind == "passkey":
            value = values[0][0]
            return [f" The pass key is {value}. Remember it. {value} is the pass key."]
        return [f" One of the special magic {self._noun()} for {k} is: {v}." for k, vs in zip(keys, values) for v in vs]

    def _question(self, queried: list[str]) -> str:
        if self.value_kind == "passkey":
            return " What is the pass key? The pass key is"
        noun = self._noun()
        asked = queried[0] if len(queried) == 1 else ", ".join(queried[:-1]) + ", and " + queried[-1]
        return (f" What are all the special magic {noun} for {asked} mentioned in the provided text?"
                f" The special magic {noun} for {asked} mentioned in the provided text are")

    @staticmethod
    def _answers(keys: list[str], values: list[list[str]], queried: list[str], needle_starts: list[int]) -> list[str]:
        """Values of the queried keys: key by key in the order asked, each key's values in the order they occur."""
        placed = {}
        slot = 0
        for key, vs in zip(keys, values):
            placed[key] = sorted(zip(needle_starts[slot: slot + len(vs)], vs))
            slot += len(vs)
        return [v for key in queried for _, v in placed[key]]

    def _draw_keys(self, rng: np.random.Generator) -> list[str]:
        if self.value_kind == "passkey":
            return ["pass key"]
        cells = rng.choice(len(ADJECTIVES) * len(NOUNS), size=self.num_keys, replace=False)
        return [f"{ADJECTIVES[c // len(NOUNS)]}-{NOUNS[c % len(NOUNS)]}" for c in cells]

    def _draw_value(self, rng: np.random.Generator) -> str:
        if self.value_kind == "passkey":
            return str(int(rng.integers(10_000, 100_000)))
        if self.value_kind == "number":
            return str(int(rng.integers(1_000_000, 10_000_000)))
        return str(uuid.UUID(bytes=rng.bytes(16), version=4))

    def _longest_value(self) -> str:
        return {"passkey": "99999", "number": "9999999", "uuid": "ffffffff-ffff-4fff-bfff-ffffffffffff"}[self.value_kind]

    def _draw_depths(self, rng: np.random.Generator, count: int) -> list[float]:
        if self.depth is not None:
            return [self.depth]
        return rng.random(count).tolist()
