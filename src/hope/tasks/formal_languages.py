"""Formal language recognition (Bhattamishra et al. 2020; the bins of Irie et al. 2023; NL Table 5).

Every string is a member of its language. A row is ``BOS x_1 ... x_n`` and every position
``t = 0..n`` carries a label about the prefix ``x_1..x_t``:

* **membership** languages (Parity, (aa)*, (abab)*), as in Bhattamishra et al.: whether the prefix
  is in the language (two labels, ``OUT`` / ``IN``);
* **next-set** languages (a^n b^n, a^n b^n c^n, Dyck-1, Dyck-2, Shuffle-2): the set of symbols that
  may follow the prefix, end-of-string included, encoded as one label per subset (bit ``i`` of the
  label is symbol ``i`` of the alphabet, the top bit is end-of-string).

All labels of a row form one group, so item accuracy is the fraction of strings recognised at every
position, the metric of both papers. Training strings come from ``bin0`` (lengths 1..50) and the
longer test strings from ``bin1`` (51..100); lengths are drawn uniformly among the lengths the
language has in the bin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hope.errors import HopeError
from hope.tasks.base import RowBuilder, Task, check_positive

PAD_ID, BOS_ID, FIRST_SYMBOL_ID = 0, 1, 2
BINS = {"bin0": (1, 50), "bin1": (51, 100)}


@dataclass(frozen=True)
class LanguageSpec:
    name: str
    title: str
    alphabet: str
    kind: str  # "membership" or "next_set"
    length_step: int  # string lengths are multiples of this (Parity: any length)
    min_string: int  # shortest non-empty member


LANGUAGES = {
    spec.name: spec
    for spec in (
        LanguageSpec("parity", "Parity", "01", "membership", 1, 1),
        LanguageSpec("aa_star", "(aa)*", "a", "membership", 2, 2),
        LanguageSpec("abab_star", "(abab)*", "ab", "membership", 4, 4),
        LanguageSpec("anbn", "a^n b^n", "ab", "next_set", 2, 2),
        LanguageSpec("anbncn", "a^n b^n c^n", "abc", "next_set", 3, 3),
        LanguageSpec("dyck1", "Dyck-1", "()", "next_set", 2, 2),
        LanguageSpec("dyck2", "Dyck-2", "()[]", "next_set", 2, 2),
        LanguageSpec("shuffle2", "Shuffle-2", "()[]", "next_set", 2, 2),
    )
}


@dataclass(frozen=True)
class FormalLanguageTask(Task):
    """Strings of ``language`` with lengths in ``[min_length, max_length]``, labelled per prefix."""

    language: str = "parity"
    min_length: int = BINS["bin0"][0]
    max_length: int = BINS["bin0"][1]
    open_probability: float = 0.5

    def __post_init__(self) -> None:
        if self.language not in LANGUAGES:
            raise HopeError(f"unknown formal language {self.language!r}; expected one of {', '.join(LANGUAGES)}")
        check_positive("min_length", self.min_length)
        if self.max_length < self.min_length:
            raise HopeError(f"max_length ({self.max_length}) must be >= min_length ({self.min_length})")
        if not self.valid_lengths().size:
            spec = self.spec
            raise HopeError(f"{spec.title} has no strings with lengths in [{self.min_length}, {self.max_length}] "
                            f"(lengths are multiples of {spec.length_step}, at least {spec.min_string})")
        if not 0.0 < self.open_probability < 1.0:
            raise HopeError(f"open_probability must be in (0, 1), got {self.open_probability}")

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.language

    @property
    def spec(self) -> LanguageSpec:
        return LANGUAGES[self.language]

    @property
    def eos_bit(self) -> int:
        return len(self.spec.alphabet)

    @property
    def label_base(self) -> int:
        return FIRST_SYMBOL_ID + len(self.spec.alphabet)

    @property
    def num_labels(self) -> int:
        return 2 if self.spec.kind == "membership" else 2 ** (len(self.spec.alphabet) + 1)

    @property
    def vocab_size(self) -> int:
        return self.label_base + self.num_labels

    @property
    def pad_id(self) -> int:
        return PAD_ID

    def symbol_id(self, symbol: str) -> int:
        return FIRST_SYMBOL_ID + self.spec.alphabet.index(symbol)

    def valid_lengths(self) -> np.ndarray:
        spec = self.spec
        lengths = np.arange(max(self.min_length, spec.min_string), self.max_length + 1)
        return lengths[lengths % spec.length_step == 0]

    def example(self, rng: np.random.Generator) -> tuple[RowBuilder, dict[str, Any]]:
        length = int(rng.choice(self.valid_lengths()))
        string = _SAMPLERS[self.language](rng, length, self.open_probability)
        labels = self.prefix_labels(string)
        row = RowBuilder()
        row.extend_labelled([BOS_ID] + [self.symbol_id(c) for c in string], labels)
        return row, {"string": string, "length": length}

    def prefix_labels(self, string: str) -> list[int]:
        """Label ids for every prefix of ``string``, a member of the language (``len(string) + 1`` of them)."""
        labeller = _LABELLERS[self.language]
        return [self.label_base + code for code in labeller(string, self.eos_bit)]

    def decode_label(self, label_id: int) -> bool | frozenset[str]:
        """A membership bit, or the set of allowed next symbols (``"$"`` is end-of-string)."""
        code = label_id - self.label_base
        if not 0 <= code < self.num_labels:
            raise ValueError(f"label_id {label_id} is not a label of {self.language}")
        if self.spec.kind == "membership":
            return bool(code)
        allowed = {c for i, c in enumerate(self.spec.alphabet) if code >> i & 1}
        return frozenset(allowed | ({"$"} if code >> self.eos_bit & 1 else set()))


def _sample_parity(rng: np.random.Generator, length: int, _: float) -> str:
    bits = rng.integers(0, 2, size=length)
    bits[-1] ^= int(bits.sum() % 2)
    return "".join(map(str, bits))


def _sample_dyck(pairs: str):
    def sample(rng: np.random.Generator, length: int, p_open: float) -> str:
        stack: list[int] = []
        out = []
        for position in range(length):
            remaining = length - position
            can_open = len(stack) + 1 <= remaining - 1
            if stack and (not can_open or rng.random() >= p_open):
                out.append(pairs[2 * stack.pop() + 1])
            else:
                kind = int(rng.integers(len(pairs) // 2))
                stack.append(kind)
                out.append(pairs[2 * kind])
        return "".join(out)

    return sample


def _sample_shuffle2(rng: np.random.Generator, length: int, p_open: float) -> str:
    pairs = "()[]"
    depth = [0, 0]
    out = []
    for position in range(length):
        remaining = length - position
        can_open = sum(depth) + 1 <= remaining - 1
        if sum(depth) and (not can_open or rng.random() >= p_open):
            open_kinds = [k for k in (0, 1) if depth[k]]
            kind = open_kinds[int(rng.integers(len(open_kinds)))]
            depth[kind] -= 1
            out.append(pairs[2 * kind + 1])
        else:
            kind = int(rng.integers(2))
            depth[kind] += 1
            out.append(pairs[2 * kind])
    return "".join(out)


_SAMPLERS = {
    "parity": _sample_parity,
    "aa_star": lambda rng, n, p: "a" * n,
    "abab_star": lambda rng, n, p: "ab" * (n // 2),
    "anbn": lambda rng, n, p: "a" * (n // 2) + "b" * (n // 2),
    "anbncn": lambda rng, n, p: "a" * (n // 3) + "b" * (n // 3) + "c" * (n // 3),
    "dyck1": _sample_dyck("()"),
    "dyck2": _sample_dyck("()[]"),
    "shuffle2": _sample_shuffle2,
}


def _membership(cycle: str | None):
    """Labels from a finite automaton: the cycle ``aa`` / ``abab`` (state = place in it, -1 = dead),
    or Parity (``cycle=None``, state = number of ones mod 2). State 0 accepts."""

    def step(state: int, symbol: str) -> int:
        if cycle is None:
            return state ^ (symbol == "1")
        return (state + 1) % len(cycle) if state >= 0 and cycle[state] == symbol else -1

    def label(string: str, _: int) -> list[int]:
        state, codes = 0, [1]
        for symbol in string:
            state = step(state, symbol)
            codes.append(int(state == 0))
        return codes

    return label


def _bits(eos_bit: int, *indices: int, eos: bool = False) -> int:
    code = sum(1 << i for i in indices)
    return code | (1 << eos_bit if eos else 0)


def _label_counter(letters: int):
    """a^n b^n (letters=2) and a^n b^n c^n (letters=3): track the current letter and the counts."""

    def label(string: str, eos_bit: int) -> list[int]:
        codes = []
        counts = [0] * letters
        current = 0
        for t in range(len(string) + 1):
            if t:
                current = "abc".index(string[t - 1])
                counts[current] += 1
            if t == 0:
                codes.append(_bits(eos_bit, 0))
            elif current == 0:
                codes.append(_bits(eos_bit, 0, 1))
            elif counts[current] < counts[0]:
                codes.append(_bits(eos_bit, current))
            elif current + 1 < letters:
                codes.append(_bits(eos_bit, current + 1))
            else:
                codes.append(_bits(eos_bit, eos=True))
        return codes

    return label


def _label_dyck(pairs: str):
    openers = [2 * k for k in range(len(pairs) // 2)]

    def label(string: str, eos_bit: int) -> list[int]:
        stack: list[int] = []
        codes = []
        for t in range(len(string) + 1):
            if t:
                index = pairs.index(string[t - 1])
                if index % 2 == 0:
                    stack.append(index)
                else:
                    stack.pop()
            closer = [stack[-1] + 1] if stack else []
            codes.append(_bits(eos_bit, *openers, *closer, eos=not stack))
        return codes

    return label


def _label_shuffle2(string: str, eos_bit: int) -> list[int]:
    depth = [0, 0]
    codes = []
    for t in range(len(string) + 1):
        if t:
            index = "()[]".index(string[t - 1])
            depth[index // 2] += 1 if index % 2 == 0 else -1
        closers = [2 * k + 1 for k in (0, 1) if depth[k]]
        codes.append(_bits(eos_bit, 0, 2, *closers, eos=not any(depth)))
    return codes


_LABELLERS = {
    "parity": _membership(None),
    "aa_star": _membership("aa"),
    "abab_star": _membership("abab"),
    "anbn": _label_counter(2),
    "anbncn": _label_counter(3),
    "dyck1": _label_dyck("()"),
    "dyck2": _label_dyck("()[]"),
    "shuffle2": _label_shuffle2,
}
