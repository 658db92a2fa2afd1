"""The options of ``hope tasks run``, importable without torch (the CLI builds its flags from them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hope.errors import HopeError
from hope.tasks.registry import get_task
from hope.train.loggers import check_loggers


CORPUS_TASKS = ("continual_sotu_eras", "stream_cipher", "stream_long_document")
"""The tasks that train a language model on a corpus (the ones ``--stream`` applies to)."""


@dataclass
class TaskRunConfig:
    """Options of ``hope tasks run``."""

    task: str = field(metadata={"positional": True})
    """Task name (on the command line also a family: recall, mad, niah, babilong, formal, continual, in_context,
    stream; or 'all')."""
    out: str = field(metadata={"required": True})
    """Run directory (several tasks: one subfolder each; several seeds: OUT/seed-S)."""
    arch: str = "transformer"
    """Architecture: transformer, hope, hope-attention, titans, gated-deltanet, bdh."""
    size: str = "tiny"
    """Size preset (tiny, small, ...)."""
    lengths: tuple[int, ...] = field(default=(), metadata={"flag": "length", "metavar": "L"})
    """Evaluation lengths replacing the task's defaults (formal languages: upper ends of length bins)."""
    seed: int = 0
    """Seed of the model and of every generated batch."""
    steps: int = 1000
    """Optimizer steps (continual tasks: per stage); 0 evaluates a ``--checkpoint`` without training it."""
    batch_size: int = 32
    """Rows per step."""
    lr: float = 1e-3
    """Peak learning rate (AdamW; warmup, then cosine decay, or constant for continual streams)."""
    min_lr_ratio: float = 0.1
    """Final learning rate of the cosine schedule, as a fraction of lr."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 50
    """Linear warmup steps."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0: no clipping)."""
    max_bad_steps: int = 1
    """Abort after this many non-finite steps in a row (1: at the first)."""
    eval_examples: int = 256
    """Rows per evaluation setting (continual: test examples per stage)."""
    eval_batch_size: int = 16
    """Rows per evaluation batch."""
    eval_chunk: int = 16384
    """Rows longer than this are evaluated chunk by chunk, carrying the model state."""
    answer_rows: int = 16
    """Rows per evaluation setting whose answers, expected and predicted (text for text tasks, token ids otherwise),
    are written to OUT/answers.jsonl: what a model answers where it is wrong (0: none)."""
    seq_len: int = 256
    """Window length of the corpus-era language modelling task."""
    tokenizer: str = "bytes"
    """Tokenizer of text tasks: 'bytes' or a tokenizer.json file."""
    checkpoint: str | None = None
    """Fine-tune this checkpoint directory instead of training from scratch (with ``--steps 0``: evaluate it)."""
    save_model: bool = False
    """Write the trained model to OUT/model (a checkpoint, ``hope.checkpoint``) so that it can be evaluated again,
    e.g. at other lengths or with a component frozen: ``--checkpoint OUT/model --steps 0`` (sequence tasks; stream
    tasks' models are read by probes such as ``benchmarks/cipher_level_freeze.py``). Tasks of token ids (mqar, the
    formal languages) save no tokenizer; those with a reconstruction decoder (some MAD tasks) are refused."""
    model: dict[str, Any] = field(default_factory=dict)
    """Model config overrides, KEY=VALUE, e.g. cms_levels=2. With ``--checkpoint`` only the fields that keep its
    weights apply (e.g. test_time_learning=false, cms_periods): the probes of a trained model."""
    options: dict[str, Any] = field(default_factory=dict, metadata={"flag": "option"})
    """Task generator options, KEY=VALUE, e.g. num_kv_pairs=32."""
    data_dir: str | None = None
    """Folder with clinc150/ and banking77/ (default: $HOPE_DATA_DIR, else the copy shipped with hope; docs/data.md)."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto."""
    log_every: int = 10
    """Log the training metrics every this many steps."""
    logger: tuple[str, ...] = ("jsonl",)
    """Where metrics go, one or more of: jsonl (OUT/metrics.jsonl), tensorboard (OUT/tensorboard), wandb; the last
    two need pip install 'hope[loggers]' (hope.train.loggers; docs/training.md, loggers)."""
    progress: bool = True
    """Show a progress bar (on a log file or a pipe: one line a minute, hope.progress)."""
    threads: int | None = None
    """CPU threads (default: chosen by hope.threads from the model's width; docs/threads_under_load.md)."""
    compile: bool = False
    """torch.compile Hope's per-chunk mixer functions (hope.compiling; speed-ups in docs/training.md)."""
    cms_outer_periods: tuple[int, ...] | None = None
    """One period per CMS level, in optimizer steps: level l steps only after every N-th step, with the mean
    gradient (NL Eq. 71; docs/cms.md, outer-loop periods; hope.optim.cms_outer)."""
    stream: bool = False
    """Tasks that train a language model on a corpus (continual_sotu_eras, stream_cipher, stream_long_document):
    each batch row reads consecutive windows of one document with the model's state carried (docs/training.md,
    streaming)."""

    def __post_init__(self) -> None:
        spec = get_task(self.task)
        family = spec.family
        if self.steps == 0 and self.checkpoint is None:
            raise HopeError("steps must be at least 1 (0 evaluates a --checkpoint without training)")
        if self.steps == 0 and family == "continual":
            raise HopeError(f"--steps 0 (evaluation only) applies to sequence and stream tasks, not the continual "
                            f"task {self.task}")
        if self.save_model and family == "continual":
            raise HopeError(f"--save-model applies to sequence and stream tasks, not the continual task {self.task}")
        for name in ("batch_size", "eval_examples", "eval_batch_size", "eval_chunk", "seq_len",
                     "max_bad_steps", "log_every"):
            if getattr(self, name) < 1:
                raise HopeError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.steps < 0:
            raise HopeError(f"steps must be at least 1 (0 evaluates a --checkpoint), got {self.steps}")
        if self.answer_rows < 0:
            raise HopeError(f"answer-rows must be at least 0, got {self.answer_rows}")
        if self.lr <= 0:
            raise HopeError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise HopeError(f"min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        self.lengths = tuple(int(n) for n in self.lengths)
        if self.cms_outer_periods is not None:
            self.cms_outer_periods = tuple(self.cms_outer_periods)
        self.logger = check_loggers(self.logger)
        if self.stream and self.task not in CORPUS_TASKS:
            raise HopeError(f"--stream applies to the tasks that train a language model on a corpus "
                            f"({', '.join(CORPUS_TASKS)}), not {self.task}")
        if any(n < 1 for n in self.lengths):
            raise HopeError(f"lengths must be positive, got {self.lengths}")
