"""Class-incremental intent classification in context (issue #17; the in-context form of NL Sec. 9.1's
class-incremental learning).

One row is one long stream. Its classes (``num_stages x classes_per_stage`` intents of CLINC150 or Banking77,
drawn per row) arrive stage by stage as labelled examples ``text SEP label``, ``shots`` per class; after the last
stage come the queries ``text SEP``, ``queries_per_stage`` per stage (or of stage ``query_stage`` only), each with
the class's label as the target at ``SEP``. Labels are tokens drawn per row, so the mapping from intent to label can
only be read from the row itself: the model learns the classes in context, and a query of an early stage scores how
much of it the model still holds after the later stages (with the state carried across windows when the runner
reads long rows in chunks, ``--eval-chunk``). Queries read text never shown in the row, other training examples
(``split="train"``) or the dataset's test split (``split="test"``), or repeat one of the texts the row showed for
their class (``split="shown"``): recall of a label read in context without generalising to new wording, the control
that separates the memory from the language understanding (docs/results.md, intents in context).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hope.data.tokenizer import BytesTokenizer
from hope.errors import HopeError
from hope.tasks.base import RowBuilder, Task, check_positive
from hope.tasks.continual import INTENT_DATASETS, IntentExample, load_intents


QUERY_SPLITS = ("train", "test", "shown")


@functools.lru_cache(maxsize=4)
def _by_class(dataset: str, data_dir: str | None) -> tuple[tuple[str, ...], dict, dict]:
    data = load_intents(dataset, data_dir)
    grouped: dict[str, dict[str, list[IntentExample]]] = {"train": {}, "test": {}}
    for split, examples in (("train", data.train), ("test", data.test)):
        for example in examples:
            grouped[split].setdefault(example.label, []).append(example)
    return data.classes, grouped["train"], grouped["test"]


@dataclass(frozen=True)
class InContextClassTask(Task):
    dataset: str = "clinc150"
    tokenizer: Any = field(default=None, compare=False, repr=False)
    data_dir: str | None = None
    """Folder with clinc150/ and banking77/ (default: $HOPE_DATA_DIR, else the shipped copy; docs/data.md)."""
    num_stages: int = 5
    classes_per_stage: int = 3
    shots: int = 2
    queries_per_stage: int = 4
    query_stage: int | None = None
    """Ask only this stage's queries (0-based; ``None``: every stage's)."""
    split: str = "train"
    """Where the queries' texts come from: ``train`` (unshown training texts), ``test``, or ``shown`` (the row's own)."""
    max_text_tokens: int = 48

    name = "in_context_classes"

    def __post_init__(self) -> None:
        if self.dataset not in INTENT_DATASETS:
            raise HopeError(f"unknown intent dataset {self.dataset!r}; expected one of {', '.join(INTENT_DATASETS)}")
        for name in ("num_stages", "classes_per_stage", "shots", "queries_per_stage", "max_text_tokens"):
            check_positive(name, getattr(self, name))
        if self.split not in QUERY_SPLITS:
            raise HopeError(f"split must be one of {', '.join(QUERY_SPLITS)}, got {self.split!r}")
        if self.query_stage is not None and not 0 <= self.query_stage < self.num_stages:
            raise HopeError(f"query_stage must be in [0, {self.num_stages}), got {self.query_stage}")
        classes, train, test = _by_class(self.dataset, self.data_dir)
        if self.num_classes > len(classes):
            raise HopeError(f"{self.dataset} has {len(classes)} classes, the row asks for {self.num_classes}")
        spare = 1 if self.split == "train" else 0
        short = [c for c in classes if len(train.get(c, ())) < self.shots + spare or
                 (self.split == "test" and not test.get(c))]
        if short:
            raise HopeError(f"{self.dataset} class {short[0]!r} has too few examples for {self.shots} shots "
                            f"and {self.split} queries")

    @property
    def num_classes(self) -> int:
        return self.num_stages * self.classes_per_stage

    @property
    def _tokenizer(self) -> Any:
        return self.tokenizer or BytesTokenizer()

    @property
    def sep_id(self) -> int:
        return int(self._tokenizer.vocab_size)

    @property
    def vocab_size(self) -> int:
        return self.sep_id + 1 + self.num_classes

    @property
    def pad_id(self) -> int:
        return int(self._tokenizer.eot_id)

    def _text(self, example: IntentExample) -> np.ndarray:
        return np.asarray(self._tokenizer.encode(example.text), dtype=np.int64)[: self.max_text_tokens]

    def example(self, rng: np.random.Generator) -> tuple[RowBuilder, dict[str, Any]]:
        classes, train, test = _by_class(self.dataset, self.data_dir)
        chosen = [classes[i] for i in rng.choice(len(classes), size=self.num_classes, replace=False)]
        labels = dict(zip(chosen, (self.sep_id + 1 + rng.permutation(self.num_classes)).tolist()))
        row = RowBuilder()
        pools = {}
        for stage in range(self.num_stages):
            shown = []
            for label in chosen[stage * self.classes_per_stage: (stage + 1) * self.classes_per_stage]:
                order = rng.permutation(len(train[label]))
                shown += [(train[label][i], label) for i in order[: self.shots]]
                unshown = self.shots if self.split == "train" else 0
                pools[label] = test[label] if self.split == "test" else [train[label][i] for i in order[unshown:][: self.shots if self.split == "shown" else None]]
            for k in rng.permutation(len(shown)):
                example, label = shown[k]
                row.extend(self._text(example))
                row.extend([self.sep_id, labels[label]])
        stages = range(self.num_stages) if self.query_stage is None else [self.query_stage]
        queries = [(stage, chosen[stage * self.classes_per_stage + int(rng.integers(self.classes_per_stage))])
                   for stage in stages for _ in range(self.queries_per_stage)]
        asked = []
        for k in rng.permutation(len(queries)):
            stage, label = queries[k]
            example = pools[label][int(rng.integers(len(pools[label])))]
            row.extend(self._text(example))
            row.extend_labelled([self.sep_id], [labels[label]])
            asked.append({"stage": stage, "class": label, "text": example.text})
        return row, {"classes": chosen, "labels": labels, "queries": asked}
