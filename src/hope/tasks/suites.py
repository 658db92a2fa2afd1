"""Named suites of task runs (``hope tasks suite NAME --seeds 0 1 2 --out DIR``; issue #17, docs/tasks.md, suites).

A suite is a list of ``SuiteRun`` entries, each a task with ``TaskRunConfig`` overrides; every entry runs for every
architecture (or the entry's own) and seed into ``DIR/<entry>/<arch>/seed-<s>`` with ``hope.tasks.runner``. A run
whose ``result.json`` exists is skipped, so an interrupted suite resumes where it stopped. ``DIR/suite.json``
records the suite, its runs and the time spent; ``hope tasks report DIR`` makes the tables and plots.

Entries marked ``stream=True`` need streaming training (the state carried across windows while training,
``TaskRunConfig.stream``); where this build has no such option, or refuses it for the entry's task, their runs are
listed as skipped with that reason.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hope.errors import HopeError
from hope.files import write_text_atomic
from hope.models import ARCHS as MODEL_ARCHS
from hope.progress import progress_bar
from hope.run_lock import RunLock
from hope.tasks.config import TaskRunConfig
from hope.tasks.formal_languages import LANGUAGES
from hope.tasks.registry import get_task
from hope.tasks.runner import QUICK_MODEL, run_task

ARCHS = ("hope", "hope-attention", "titans", "gated-deltanet", "transformer")
"""The architectures of issue #17's comparison (Hope, Hope-Attention, Titans, Gated DeltaNet, Transformer++)."""

SUITE_FILE = "suite.json"


@dataclass(frozen=True)
class SuiteRun:
    """One entry: ``task`` with ``settings`` (``TaskRunConfig`` fields), run for each arch and seed."""

    name: str
    """Folder of the entry under the suite's DIR (unique in the suite)."""
    task: str
    settings: dict[str, Any] = field(default_factory=dict)
    experiment: str = ""
    """Which experiment the entry belongs to (a section of the report)."""
    archs: tuple[str, ...] | None = None
    """Only these architectures (``None``: the suite's)."""
    stream: bool = False
    """Needs streaming training (``TaskRunConfig.stream``, the state carried across training windows)."""


@dataclass(frozen=True)
class Suite:
    name: str
    summary: str
    runs: tuple[SuiteRun, ...]

    def __post_init__(self) -> None:
        names = [run.name for run in self.runs]
        if len(set(names)) != len(names):
            raise ValueError(f"suite {self.name} repeats an entry name")


_QUICK = {"steps": 3, "batch_size": 4, "eval_examples": 4, "eval_batch_size": 4, "warmup_steps": 1, "seq_len": 64,
          "model": QUICK_MODEL}


def _quick() -> Suite:
    """One small entry per experiment of the paper suites: tiny models, three steps; runs in seconds."""
    runs = [SuiteRun("formal/parity", "formal_parity", _QUICK, "formal"),
            *[SuiteRun(f"mqar/L{length}/kv{pairs}", "mqar",
                       {**_QUICK, "lengths": (length,),
                        "options": {"length": length, "num_kv_pairs": pairs, "vocab_size": 64}},
                       "mqar") for length, pairs in ((64, 4), (64, 8), (128, 8))],
            SuiteRun("cipher", "stream_cipher", {**_QUICK, "eval_examples": 2, "options": {"segment": 64}}, "cipher"),
            SuiteRun("long_document", "stream_long_document", {**_QUICK, "eval_examples": 2, "options": {"length": 256}},
                     "long_document"),
            SuiteRun("in_context/clinc150", "in_context_clinc150",
                     {**_QUICK, "eval_chunk": 64, "options": {"classes_per_stage": 1, "shots": 1, "queries_per_stage": 1,
                                                              "max_text_tokens": 16}}, "in_context"),
            SuiteRun("niah/single_1", "niah_single_1", {**_QUICK, "lengths": (256, 512), "eval_chunk": 256,
                                                        "options": {"length": 256}}, "niah")]
    return Suite("quick", "one tiny entry per experiment, for the tests", tuple(runs))


MQAR_WIDTHS = (64, 128)
MQAR_LENGTHS = (64, 128, 256)
MQAR_PAIRS = (4, 8, 16, 32, 64)
MQAR_GRID = tuple((length, pairs) for length in MQAR_LENGTHS for pairs in MQAR_PAIRS if 4 * pairs <= length)
"""Every (length, pairs) cell of Zoology's grid that fits a row (MQAR needs length >= 4 x pairs)."""
MQAR_MODEL = {"tie_embeddings": False}
"""Every model on MQAR reads keys and writes values through separate embeddings: with the input embedding tied to
the output head, Transformer++ (width 64, 2 layers) stayed at 1 / pairs accuracy for 4,000 steps of 32 rows, untied
it reaches 100% in 1,000 (docs/results.md, "Calibrating MQAR")."""


@dataclass(frozen=True)
class Budget:
    """The sizes of one version of issue #17's six experiments (``paper-small``, ``paper-cpu``)."""

    steps: int
    """Training steps of every entry but the formal languages'."""
    formal_steps: int
    """Training steps of the formal languages (the issue asks for 2,000 or more)."""
    model: dict[str, Any]
    """Model overrides of every entry but MQAR's (``{}``: the ``tiny`` preset)."""
    formal_rows: int
    mqar_widths: tuple[int, ...]
    mqar_cells: tuple[tuple[int, int], ...]
    """MQAR's (length, key-value pairs) settings, each run at every width."""
    mqar_steps: int
    mqar_tokens: int
    """Tokens per MQAR training step: rows = mqar_tokens // length, so a longer row costs a step no more."""
    mqar_options: dict[str, Any]
    """MQAR task options besides length and pairs (vocabulary, filler)."""
    stream_rows: int
    stream_seq_len: int
    cipher_segment: int
    letter_cipher_periods: tuple[int, ...]
    """CMS periods of Hope and Hope-Attention in the letter-cipher entries: short enough that every level steps
    several times in each segment (``letter_cipher_segment``) and a multiple of ``letter_cipher_seq_len``."""
    letter_cipher_seq_len: int
    letter_cipher_segment: int
    long_document_length: int
    niah_steps: int
    niah_length: int
    niah_text_length: int
    """Training rows of S-NIAH-2 and -3 (their needle sentences and question take 383 byte tokens of the row)."""
    niah_factors: tuple[int, ...]
    """NIAH scored at these multiples of the training length."""
    niah_rows: int
    niah_examples: int
    in_context_rows: int
    in_context_examples: int


PAPER_SMALL = Budget(steps=2000, formal_steps=2000, model={}, formal_rows=32, mqar_widths=MQAR_WIDTHS,
                     mqar_cells=MQAR_GRID, mqar_steps=2000, mqar_tokens=64 * 64,
                     mqar_options={"vocab_size": 256}, stream_rows=16, stream_seq_len=512, cipher_segment=4096,
                     letter_cipher_periods=(512, 2048, 8192), letter_cipher_seq_len=512, letter_cipher_segment=32768,
                     long_document_length=32768, niah_steps=2000, niah_length=512, niah_text_length=512,
                     niah_factors=(1, 2, 4, 8, 16),
                     niah_rows=16,
                     niah_examples=64, in_context_rows=8, in_context_examples=128)
"""The issue's step counts at the ``tiny`` size (about 6,850 process-hours here: docs/tasks.md)."""

CPU_MODEL = {"d_model": 64, "n_layers": 2, "n_heads": 4}
PAPER_CPU = Budget(steps=400, formal_steps=2000, model=CPU_MODEL, formal_rows=8, mqar_widths=(32, 64),
                   mqar_cells=((64, 4), (64, 16), (128, 4), (128, 8), (256, 4), (256, 16)), mqar_steps=1000, mqar_tokens=32 * 64,
                   mqar_options={"vocab_size": 64, "random_non_queries": False}, stream_rows=8, stream_seq_len=256, cipher_segment=1024,
                   letter_cipher_periods=(64, 256, 1024), letter_cipher_seq_len=64, letter_cipher_segment=4096,
                   long_document_length=4096, niah_steps=1000, niah_length=256, niah_text_length=512,
                   niah_factors=(1, 2, 4, 8),
                   niah_rows=16, niah_examples=32, in_context_rows=4, in_context_examples=64)
"""The same experiments cut toward what 2 CPU cores run (10-20 process-hours: docs/tasks.md, suites): 2-layer
width-64 models, 400 steps (formal languages: 2,000 of 8 rows; at 400 steps of 16 rows parity was still
learning), shorter streams, MQAR at widths 32 and 64 on 4 pairs at lengths 64, 128 and 256, on 16 pairs at length 64 and on
one pair per 16 tokens at lengths 128 and 256 (Zoology's diagonal: 8 and 16 pairs), 1,000 steps of 2,048 tokens (32 rows of 64, 16 of 128, 8 of 256:
the same queries per step along the diagonal), 64 token ids and no random filler (where Transformer++ reaches 100%
on 4 pairs at width 64; 64 ids hold at most 31 pairs, so not the issue's 64), fewer evaluation rows; needles trained
on rows of 256 for 1,000 steps of 16 (at 512 x 8 for 400 steps every model scored 0%, and Transformer++ at 256 x 16
needs about 1,000 steps: docs/results.md) and scored to 8x (not 16x)."""


def _letter_cipher(budget: Budget) -> list[SuiteRun]:
    """Cipher languages A, B, A that a model trained on English can learn in context: each permutes the 26 letters
    only, and Hope's and Hope-Attention's CMS levels step every 64-1,024 tokens (``paper-cpu``), so that each level
    steps several times per segment. Pretraining reads the same tokens per step as the other stream entries, in
    windows of ``letter_cipher_seq_len`` (a divisor of every period: window-aligned steps; so not the nested
    variant, which has none). Hope also with 1 and 2 levels, with its in-context updates frozen, and on the plain
    text (``alphabet=none``: what a model that decoded the ciphers would score)."""
    window = budget.letter_cipher_seq_len
    base = {"steps": budget.steps, "batch_size": budget.stream_rows * budget.stream_seq_len // window,
            "seq_len": window, "eval_examples": 16, "eval_batch_size": 16,
            "options": {"segment": budget.letter_cipher_segment, "alphabet": "letters"}}
    model = {**budget.model} if budget.model else {}
    cms = {**model, "cms_periods": budget.letter_cipher_periods}
    hope_variants = {"cms1": {"cms_levels": 1}, "cms2": {"cms_levels": 2}, "frozen": {"test_time_learning": False}}
    runs = [SuiteRun("cipher_letters/base", "stream_cipher", {**base, **({"model": model} if model else {})},
                     "cipher_letters", archs=("titans", "gated-deltanet", "transformer"), stream=True),
            SuiteRun("cipher_letters/cms", "stream_cipher", {**base, "model": cms}, "cipher_letters",
                     archs=("hope", "hope-attention"), stream=True)]
    runs += [SuiteRun(f"cipher_letters/hope_{name}", "stream_cipher", {**base, "model": {**cms, **override}},
                      "cipher_letters", archs=("hope",), stream=True) for name, override in hope_variants.items()]
    runs.append(SuiteRun("cipher_letters/hope_plain", "stream_cipher",
                         {**base, "model": cms, "options": {**base["options"], "alphabet": "none"}},
                         "cipher_letters", archs=("hope",), stream=True))
    return runs


def _paper(name: str, budget: Budget, summary: str) -> Suite:
    """Issue #17's six experiments at ``budget`` (docs/tasks.md, suites)."""
    steps, model = budget.steps, budget.model
    with_model = {"model": model} if model else {}
    runs = [SuiteRun(f"formal/{language}", f"formal_{language}",
                     {"steps": budget.formal_steps, "batch_size": budget.formal_rows, "eval_examples": 512,
                      **with_model}, "formal")
            for language in LANGUAGES]
    runs += [SuiteRun(f"mqar/d{width}/L{length}/kv{pairs}", "mqar",
                      {"steps": budget.mqar_steps, "batch_size": budget.mqar_tokens // length, "eval_examples": 512,
                       "lengths": (length,), "model": {"d_model": width, "n_layers": 2, **MQAR_MODEL},
                       "options": {"length": length, "num_kv_pairs": pairs, **budget.mqar_options}}, "mqar")
             for width in budget.mqar_widths for length, pairs in budget.mqar_cells]
    stream = {"steps": steps, "batch_size": budget.stream_rows, "seq_len": budget.stream_seq_len, **with_model}
    cipher = {**stream, "eval_examples": 8, "eval_batch_size": 8, "options": {"segment": budget.cipher_segment}}
    runs.append(SuiteRun("cipher/base", "stream_cipher", cipher, "cipher", stream=True))
    runs += [SuiteRun(f"cipher/hope_cms{levels}", "stream_cipher", {**cipher, "model": {**model, "cms_levels": levels}},
                      "cipher", archs=("hope",), stream=True) for levels in (1, 2)]
    runs += _letter_cipher(budget)
    long_document = {**stream, "eval_examples": 4, "eval_batch_size": 4,
                     "options": {"length": budget.long_document_length}}
    runs.append(SuiteRun("long_document/base", "stream_long_document", long_document, "long_document", stream=True))
    runs.append(SuiteRun("long_document/hope_frozen", "stream_long_document",
                         {**long_document, "model": {**model, "test_time_learning": False}}, "long_document",
                         archs=("hope",), stream=True))
    niah_lengths = {"single_1": budget.niah_length, "single_2": budget.niah_text_length,
                    "single_3": budget.niah_text_length}
    runs += [SuiteRun(f"niah/{variant}", f"niah_{variant}",
                      {"steps": budget.niah_steps, "batch_size": budget.niah_rows, "eval_examples": budget.niah_examples,
                       "eval_chunk": length,
                       "lengths": tuple(length * k for k in budget.niah_factors), "options": {"length": length},
                       **with_model}, "niah")
             for variant, length in niah_lengths.items()]
    for dataset in ("clinc150", "banking77"):
        in_context = {"steps": steps, "batch_size": budget.in_context_rows, "eval_examples": budget.in_context_examples,
                      "eval_chunk": 512, **with_model,
                      "options": {"shots": 1, "queries_per_stage": 2, "max_text_tokens": 32}}
        runs.append(SuiteRun(f"in_context/{dataset}/base", f"in_context_{dataset}", in_context, "in_context"))
        runs += [SuiteRun(f"in_context/{dataset}/hope_cms{levels}", f"in_context_{dataset}",
                          {**in_context, "model": {**model, "cms_levels": levels}}, "in_context", archs=("hope",))
                 for levels in (1, 2)]
    return Suite(name, summary, tuple(runs))


EXPERIMENTS = ("formal languages, MQAR capacity, cipher languages, long documents, needles past the window, "
               "class-incremental intents in context")


SUITES = {suite.name: suite for suite in (
    _quick(),
    _paper("paper-small", PAPER_SMALL, f"issue #17 at the tiny size and the issue's steps: {EXPERIMENTS}"),
    _paper("paper-cpu", PAPER_CPU, f"issue #17 cut toward 2 CPU cores: {EXPERIMENTS}"),
)}


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise HopeError(f"unknown suite {name!r}; expected one of {', '.join(SUITES)}")
    return SUITES[name]


@dataclass(frozen=True)
class PlannedRun:
    entry: SuiteRun
    arch: str
    seed: int
    config: TaskRunConfig
    reason: str = ""
    """Why this build cannot make the run (empty: it can)."""

    @property
    def out(self) -> Path:
        return Path(self.config.out)


def plan(suite: Suite, out: str | Path, seeds: list[int], archs: list[str] | None = None,
         jobs: int = 1) -> list[PlannedRun]:
    """Every (entry, arch, seed) of ``suite`` with its ``TaskRunConfig`` (one thread per run with ``jobs > 1``)."""
    runs = []
    for entry in suite.runs:
        get_task(entry.task)
        for arch in (entry.archs if entry.archs is not None else archs or ARCHS):
            if archs and arch not in archs:
                continue
            for seed in seeds:
                folder = Path(out) / entry.name / arch / f"seed-{seed}"
                settings = dict(entry.settings)
                if jobs > 1:
                    settings.setdefault("threads", max(1, (os.cpu_count() or 1) // jobs))
                config = TaskRunConfig(task=entry.task, arch=arch, seed=seed, out=str(folder), progress=False,
                                       **settings)
                reason = ""
                if entry.stream:
                    try:
                        config = TaskRunConfig(**{**dataclasses.asdict(config), "stream": True})
                    except (TypeError, HopeError) as err:  # no such option, or not for this task
                        reason = f"needs streaming training (TaskRunConfig.stream), not available: {err}"
                runs.append(PlannedRun(entry, arch, seed, config, reason))
    return runs


RUN_ONLY_FIELDS = ("out", "progress", "threads", "device", "log_every", "logger", "compile")
"""``TaskRunConfig`` fields that do not change what a run measures (a finished run made with others is kept)."""


def _check_done_run_matches(run: PlannedRun) -> None:
    """Refuse to count a finished run made with other settings than the suite now asks (a suite whose budget was
    changed since): name the first differing field and leave the folder as it is."""
    path = run.out / "result.json"
    if run.reason or not path.is_file():
        return
    try:
        done = json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise HopeError(f"{path} is not a finished task result ({err}); remove its folder to rerun it") from err
    wanted = json.loads(json.dumps(dataclasses.asdict(run.config)))
    for key, value in wanted.items():
        if key not in RUN_ONLY_FIELDS and key in done and done[key] != value:
            raise HopeError(f"{path} was made with {key}={done[key]!r} but entry {run.entry.name} now asks "
                            f"{key}={value!r}; remove {run.out} (or the entry's folder) or choose another --out")


def _run_one(config: TaskRunConfig) -> tuple[dict[str, Any] | None, str]:
    """Run one suite run from scratch (an interrupted one's metrics are dropped); a ``HopeError`` becomes its
    reason for being skipped."""
    try:
        with RunLock(config.out):
            (Path(config.out) / "metrics.jsonl").unlink(missing_ok=True)
        return run_task(config), ""
    except HopeError as err:
        return None, str(err)


def _exit_with_parent(parent: int) -> None:
    """Pool worker initializer: end this worker once the suite process ``parent`` is gone (killed, a worker would
    otherwise go on with the runs already queued to it, beside whatever runs next)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """``jobs`` worker processes (spawned: no forked threads) that end with the process that made them."""
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_exit_with_parent,
                               initargs=(os.getpid(),))


def run_suite(name: str, out: str | Path, seeds: list[int], archs: list[str] | None = None, jobs: int = 1,
              progress: bool = True, entries: list[str] | None = None) -> dict[str, Any]:
    """Run every run of suite ``name`` not yet done (``result.json`` present), or only those of the entries whose
    names start with one of ``entries``; write ``suite.json`` (also when interrupted; its counts cover the whole
    suite) and return it with ``resumed`` (runs already done) and ``this_call_seconds``."""
    if jobs < 1:
        raise HopeError(f"jobs must be at least 1, got {jobs}")
    if not seeds:
        raise HopeError("give at least one seed")
    unknown = sorted(set(archs or ()) - set(MODEL_ARCHS))
    if unknown:
        raise HopeError(f"unknown arch {unknown[0]!r}; expected one of {', '.join(MODEL_ARCHS)}")
    suite, out = get_suite(name), Path(out)
    if out.exists() and not out.is_dir():
        raise HopeError(f"--out {out} is not a folder")
    record_path = out / SUITE_FILE
    previous = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if previous and previous.get("suite") != name:
        raise HopeError(f"{out} holds suite {previous.get('suite')!r}, not {name!r}; choose another --out")
    unmatched = [prefix for prefix in entries or () if not any(e.name.startswith(prefix) for e in suite.runs)]
    if unmatched:
        raise HopeError(f"no entry of suite {name} starts with {unmatched[0]!r}; its entries: "
                        f"{', '.join(e.name for e in suite.runs)}")
    planned = plan(suite, out, sorted(set(seeds)), archs, jobs)
    skipped = [{"task": p.entry.task, "entry": p.entry.name, "arch": p.arch, "seed": p.seed, "reason": p.reason}
               for p in planned if p.reason]
    for run in planned:
        _check_done_run_matches(run)
    todo = [p for p in planned if not p.reason and not (p.out / "result.json").is_file()]
    resumed = len(planned) - len(skipped) - len(todo)
    if entries:
        todo = [p for p in todo if any(p.entry.name.startswith(prefix) for prefix in entries)]
    started = time.time()
    out.mkdir(parents=True, exist_ok=True)

    def write_record() -> dict[str, Any]:
        """``suite.json`` and ``skipped.json`` as things stand (rewritten after every run, so that a suite killed
        without warning keeps its record)."""
        record = {"suite": name, "summary": suite.summary, "seeds": sorted(set(seeds)), "archs": archs or list(ARCHS),
                  "runs": len(planned),
                  "finished": sum(1 for p in planned if not p.reason and (p.out / "result.json").is_file()),
                  "skipped": skipped, "seconds": round(previous.get("seconds", 0.0) + time.time() - started, 2),
                  "entries": {e.name: {"task": e.task, "experiment": e.experiment, "stream": e.stream}
                              for e in suite.runs}}
        write_text_atomic(record_path, json.dumps(record, indent=2) + "\n")
        write_text_atomic(out / "skipped.json", json.dumps(skipped, indent=2) + "\n")
        return record

    write_record()
    pool = worker_pool(jobs) if jobs > 1 else None
    try:
        with progress_bar(total=resumed + len(todo), initial=resumed, desc=f"suite {name}", disable=not progress) as bar:
            outcomes = pool.map(_run_one, [p.config for p in todo]) if pool else (_run_one(p.config) for p in todo)
            for run, (_, error) in zip(todo, outcomes):
                if error:
                    skipped.append({"task": run.entry.task, "entry": run.entry.name, "arch": run.arch,
                                    "seed": run.seed, "reason": error})
                write_record()
                bar.update(1)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
        record = write_record()
    seconds = time.time() - started
    return {**record, "resumed": resumed, "this_call_seconds": round(seconds, 2)}
