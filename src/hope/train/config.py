"""The options of ``hope train``, importable without torch (the CLI builds its flags from them)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hope.errors import HopeError
from hope.train.loggers import check_loggers

FSDP_MIXED_PRECISION = ("none", "bf16", "bf16-reduce")
"""``--fsdp-mixed-precision`` values (``hope.train.sharding.MIXED_PRECISION`` holds their policies)."""


@dataclass
class TrainConfig:
    """Every option of ``hope train`` (the CLI and ``--config FILE.yaml`` fill it)."""

    arch: str = "transformer"
    """Architecture: transformer, hope, hope-attention, titans, gated-deltanet, bdh."""
    size: str = "tiny"
    """Size preset: tiny, small, 760m, 1.3b."""
    out: str = "runs/train"
    """Run directory: checkpoint/, metrics.jsonl, train_config.json (and tensorboard/, wandb/ with those loggers)."""
    data: str | None = None
    """A text file, a folder of .txt files, or a folder of token shards written by hope data prepare (read from
    disk as training goes; docs/data.md); default: the embedded State of the Union corpus."""
    tokenizer: str = "bpe"
    """bpe (byte-level BPE trained on the training split), bytes, a tokenizer.json file, or a pretrained Hugging
    Face tokenizer ORG/NAME; token shards bring their own (a tokenizer given must be it)."""
    vocab_size: int = 4096
    """BPE vocabulary size (ignored for bytes)."""
    seq_len: int = 256
    """Tokens per training sequence."""
    batch_size: int = 16
    """Sequences per optimizer step, over all processes and accumulation steps."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    max_steps: int = 1000
    """Optimizer steps in all."""
    optimizer: str = "adamw"
    """adamw, muon, m3 (NL Algorithm 1 as printed), m3-ema (M3 tuned: EMA, AdamW-matched update RMS), dgd,
    delta_momentum, deep_momentum (see hope.optim, docs/optimizers.md)."""
    lr: float = 3e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Final learning rate of the cosine schedule, as a fraction of lr."""
    warmup_steps: int = 50
    """Linear warmup steps."""
    weight_decay: float = 0.1
    """Decoupled weight decay of matrices (not of norms, biases or embeddings)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0: no clipping)."""
    bf16: bool = False
    """bfloat16 autocast for the forward pass."""
    eval_every: int = 200
    """Validate every this many steps (and at the end)."""
    eval_windows: int = 64
    """Validation windows of seq_len tokens used by periodic validation."""
    save_every: int = 500
    """Write a checkpoint every this many steps (and at the end)."""
    log_every: int = 10
    """Log the training metrics every this many steps."""
    logger: tuple[str, ...] = ("jsonl",)
    """Where metrics go, one or more of: jsonl (OUT/metrics.jsonl), tensorboard (OUT/tensorboard), wandb; the last
    two need pip install 'hope[loggers]' (hope.train.loggers; docs/training.md, loggers)."""
    seed: int = 0
    """Seed of the initial weights and of the batch order."""
    max_bad_steps: int = 5
    """Abort after this many non-finite steps in a row."""
    resume: bool = False
    """Continue the run in OUT from its checkpoint."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto."""
    progress: bool = True
    """Show a progress bar (on a log file or a pipe: one line a minute, hope.progress)."""
    threads: int | None = None
    """CPU threads (default: chosen by hope.threads from the model's width; docs/threads_under_load.md)."""
    compile: bool = False
    """torch.compile Hope's per-chunk mixer functions (hope.compiling), after a first step that compiles them
    (minutes the first time, seconds with a warm Inductor cache); speed-ups measured in docs/training.md."""
    fsdp: bool = False
    """Shard parameters, gradients and optimizer state over the processes with FSDP2 (fully_shard per block, then
    the root) instead of DDP; checkpoints are sharded (torch.distributed.checkpoint) and resume on any number of
    processes. adamw, muon, m3 and m3-ema only (docs/training.md, FSDP2)."""
    fsdp_mixed_precision: str = "none"
    """With --fsdp: none (float32), bf16 (bf16 parameters in forward and backward, float32 gradient reductions)
    or bf16-reduce (bf16 reductions too); the sharded weights and the optimizer state stay float32."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward instead of storing them (torch.utils.checkpoint):
    less memory, about one more forward per step."""
    model: dict[str, Any] = field(default_factory=dict)
    """Model config overrides, KEY=VALUE (a mapping in YAML), e.g. d_model=256 or cms_levels=1."""
    stream: bool = False
    """Streaming (stateful) training: each batch row reads consecutive windows of one document with the model's
    state carried from window to window (truncated backpropagation through time) and restarted at each new
    document; validation reads whole documents the same way (docs/training.md, streaming)."""
    cms_outer_periods: tuple[int, ...] | None = None
    """One period per CMS level, in optimizer steps: level l's parameters are stepped only after every
    periods[l]-th step, with the mean gradient of those steps (NL Eq. 71; docs/cms.md, outer-loop periods;
    hope.optim.cms_outer). Default: every level steps every time."""

    def __post_init__(self) -> None:
        positive = ("seq_len", "batch_size", "grad_accum", "max_steps", "eval_every", "eval_windows",
                    "save_every", "log_every", "max_bad_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise HopeError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise HopeError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise HopeError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup_steps < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise HopeError("warmup_steps, grad_clip and weight_decay must be >= 0")
        if self.batch_size % self.grad_accum:
            raise HopeError(f"batch_size ({self.batch_size}) must be divisible by grad_accum ({self.grad_accum})")
        if self.fsdp_mixed_precision not in FSDP_MIXED_PRECISION:
            raise HopeError(f"fsdp_mixed_precision must be one of {', '.join(FSDP_MIXED_PRECISION)}, "
                            f"got {self.fsdp_mixed_precision!r}")
        if self.fsdp_mixed_precision != "none" and not self.fsdp:
            raise HopeError("--fsdp-mixed-precision applies to --fsdp runs only (use --bf16 otherwise)")
        if self.fsdp and self.cms_outer_periods is not None:
            raise HopeError("--cms-outer-periods does not work with --fsdp (its held-back gradients are not sharded); "
                            "train with DDP (no --fsdp)")
        if self.cms_outer_periods is not None:
            self.cms_outer_periods = tuple(self.cms_outer_periods)
        self.logger = check_loggers(self.logger)
