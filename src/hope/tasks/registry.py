"""Every benchmark task by name (``hope tasks list``): its family, source, and default settings.

A ``TaskSpec`` builds a generator with ``spec.build(tokenizer=..., **overrides)``; ``train`` holds
the overrides of the training distribution and ``evals`` one set of overrides per evaluation
setting (longer lengths, the longer formal-language bin, ...). Continual-learning specs build a
stream (``ClassIncrementalStream`` or ``DomainStream``) instead of a ``Task``; stream specs a
``hope.tasks.streams`` stream, read with the state carried and with it reset at every window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hope.data.tokenizer import BytesTokenizer
from hope.errors import HopeError
from hope.tasks import continual, mad
from hope.tasks.babi import BABI_TASKS
from hope.tasks.babilong import BabiLongTask
from hope.tasks.formal_languages import BINS, LANGUAGES, FormalLanguageTask
from hope.tasks.in_context_classes import InContextClassTask
from hope.tasks.mqar import MQARTask
from hope.tasks.niah import VARIANTS, NIAHTask
from hope.tasks.streams import CipherStream, LongDocumentStream

FAMILIES = ("recall", "mad", "niah", "babilong", "formal", "continual", "in_context", "stream")


@dataclass(frozen=True)
class ClassIncrementalStream:
    """Class-incremental intent classification: stages of classes, encoded for an LM."""

    dataset: str
    tokenizer: Any = field(default=None, compare=False, repr=False)
    data_dir: str | None = None
    classes_per_stage: int | None = None
    by_domain: bool = False
    seed: int = 0
    max_train_per_class: int | None = None
    max_test_per_class: int | None = None
    max_text_tokens: int = 64
    num_stages: int | None = None

    def stages(self) -> list[continual.Stage]:
        data = continual.load_intents(self.dataset, self.data_dir)
        return continual.class_incremental_stages(data, self.classes_per_stage, self.seed, self.by_domain,
                                                  self.max_train_per_class, self.max_test_per_class, self.num_stages)

    def encoder(self, classes: tuple[str, ...]) -> continual.IntentEncoder:
        return continual.IntentEncoder(self.tokenizer or BytesTokenizer(), classes, self.max_text_tokens)


@dataclass(frozen=True)
class DomainStream:
    """Sequential-domain language modelling: State of the Union eras in time order."""

    era_starts: tuple[int, ...] = continual.ERA_STARTS

    def stages(self) -> list[continual.Stage]:
        return continual.corpus_eras(self.era_starts)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    family: str
    summary: str
    source: str
    factory: Callable[..., Any]
    train: dict[str, Any] = field(default_factory=dict)
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)
    text: bool = False

    def build(self, tokenizer: Any = None, **overrides: Any) -> Any:
        """The generator (or stream) with ``overrides`` applied; text tasks take the LM ``tokenizer``."""
        if self.text:
            overrides["tokenizer"] = tokenizer
        try:
            return self.factory(**overrides)
        except TypeError as err:
            raise HopeError(f"bad option for task {self.name}: {err}") from None


def _lengths(*lengths: int) -> dict[str, dict[str, Any]]:
    return {f"{n // 1024}K" if n % 1024 == 0 else str(n): {"length": n} for n in lengths}


def _specs() -> list[TaskSpec]:
    specs = [TaskSpec("mqar", "recall", "multi-query associative recall, 16 pairs", "Arora et al. 2024 (Zoology)",
                      MQARTask, {"length": 256}, _lengths(256, 512, 1024))]
    specs += [
        TaskSpec("mad_in_context_recall", "mad", "key-value recall, mapping fixed per row", "Poli et al. 2024 (MAD)",
                 mad.InContextRecallTask, {}, {"base": {}}),
        TaskSpec("mad_fuzzy_in_context_recall", "mad", "recall of multi-token keys and values", "Poli et al. 2024 (MAD)",
                 mad.FuzzyInContextRecallTask, {"split": "train"}, {"base": {"split": "test"}}),
        TaskSpec("mad_noisy_in_context_recall", "mad", "recall with 20% noise pairs", "Poli et al. 2024 (MAD)",
                 lambda **o: mad.InContextRecallTask(**{"vocab_size": 32, "noise_vocab_size": 16, "frac_noise": 0.2, **o}),
                 {}, {"base": {}}),
        TaskSpec("mad_selective_copying", "mad", "copy 16 tokens scattered among blanks", "Poli et al. 2024 (MAD)",
                 mad.SelectiveCopyingTask, {}, {"base": {}}),
        TaskSpec("mad_compression", "mad", "reconstruct a row from its last position", "Poli et al. 2024 (MAD)",
                 mad.CompressionTask, {}, {"base": {}}),
        TaskSpec("mad_memorization", "mad", "a fixed key-value map learned in the weights", "Poli et al. 2024 (MAD)",
                 mad.MemorizationTask, {}, {"base": {}}),
    ]
    titles = {"single_1": "S-NIAH-1: pass key in noise", "single_2": "S-NIAH-2: number in real text",
              "single_3": "S-NIAH-3: UUID in real text", "multikey_1": "MK-NIAH-1: one of four keys",
              "multiquery": "MQ-NIAH: four keys asked", "multivalue": "MV-NIAH: four values of one key"}
    for variant in VARIANTS:
        specs.append(TaskSpec(f"niah_{variant}", "niah", titles[variant], "Hsieh et al. 2024 (RULER)",
                              lambda variant=variant, **o: NIAHTask.variant(variant, **o),
                              {"length": 1024}, _lengths(1024, 2048, 4096), text=True))
    questions = {"qa1": "single supporting fact", "qa2": "two supporting facts", "qa3": "three supporting facts",
                 "qa4": "two argument relations", "qa5": "three argument relations"}
    for qa in BABI_TASKS:
        specs.append(TaskSpec(f"babilong_{qa}", "babilong", f"bAbI {qa} ({questions[qa]}) in real text",
                              "Kuratov et al. 2024 (BABILong)", lambda qa=qa, **o: BabiLongTask(task=qa, **o),
                              {"length": 1024}, {"0K": {"length": None}, **_lengths(1024, 2048, 4096)}, text=True))
    for language, spec in LANGUAGES.items():
        specs.append(TaskSpec(f"formal_{language}", "formal", f"{spec.title} ({spec.kind.replace('_', '-')} labels)",
                              "Bhattamishra et al. 2020; bins of Irie et al. 2023",
                              lambda language=language, **o: FormalLanguageTask(language=language, **o),
                              {"min_length": BINS["bin0"][0], "max_length": BINS["bin0"][1]},
                              {name: {"min_length": lo, "max_length": hi} for name, (lo, hi) in BINS.items()}))
    for dataset in continual.INTENT_DATASETS:
        specs.append(TaskSpec(f"continual_{dataset}", "continual",
                              f"class-incremental {dataset}, {continual.DEFAULT_CLASSES_PER_STAGE[dataset]} classes per stage",
                              "NL Sec. 9.1", lambda dataset=dataset, **o: ClassIncrementalStream(dataset, **o), text=True))
    specs.append(TaskSpec("continual_sotu_eras", "continual", "language modelling of SOTU eras in time order",
                          "NL Sec. 9.1", DomainStream))
    for dataset in continual.INTENT_DATASETS:
        for suffix, train, split, queries in (("", "train", "test", "new texts"),
                                              ("_shown", "shown", "shown", "repeats of the shown texts")):
            stages = {f"stage{k + 1}": {"split": split, "query_stage": k} for k in range(5)}
            specs.append(TaskSpec(f"in_context_{dataset}{suffix}", "in_context",
                                  f"class-incremental {dataset} in context: 5 stages of 3 classes, then queries "
                                  f"({queries})", "NL Sec. 9.1, in context",
                                  lambda dataset=dataset, **o: InContextClassTask(dataset, **o),
                                  {"split": train}, {"all": {"split": split}, **stages}, text=True))
    carried = {"carried": {"carry_state": True}, "reset": {"carry_state": False}}
    specs.append(TaskSpec("stream_cipher", "stream", "two cipher languages read in context, A B A (loss, forgetting)",
                          "after NL Sec. 9.1 (CTNL)", CipherStream, {}, carried, text=True))
    specs.append(TaskSpec("stream_long_document", "stream", "next-token loss by position on held-out documents",
                          "NL Sec. 9.2", LongDocumentStream, {}, carried, text=True))
    return specs


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in _specs()}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise HopeError(f"unknown task {name!r}; run `hope tasks list` to see them")
    return TASKS[name]


def task_table() -> str:
    """A plain-text table of every task: name, family, what it is, source."""
    width = max(len(name) for name in TASKS)
    lines = []
    for family in FAMILIES:
        for spec in TASKS.values():
            if spec.family == family:
                lines.append(f"{spec.name:<{width}}  {family:<9}  {spec.summary}  [{spec.source}]")
    return "\n".join(lines)
