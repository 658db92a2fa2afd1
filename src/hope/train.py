"""The trainer: one loop for every architecture, on one process or under ``torchrun`` (DDP).

- AdamW (or any optimizer of ``hope.optim``), linear warmup then cosine decay (``LambdaLR``),
  gradient clipping, gradient accumulation, optional bf16 autocast.
- Batches are a pure function of ``(seed, step)`` (``hope.data.batch_at``), so ``resume`` continues
  with exactly the loss curve of the uninterrupted run.
- A non-finite loss or gradient skips the step with a warning; ``max_bad_steps`` in a row abort.
- Checkpoints (``OUT/checkpoint``) are written atomically; Ctrl-C writes one before stopping.
- Metrics go to ``OUT/metrics.jsonl`` (one JSON object per logged step or evaluation).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from hope.checkpoint import load_checkpoint, save_checkpoint
from hope.compiling import compiling
from hope.data import Dataset, encode_corpus, load_corpus, load_dataset
from hope.data.dataset import batch_at
from hope.errors import HopeError
from hope.eval import evaluate_lm
from hope.models import LanguageModel, build
from hope.optim.cms_outer import CMSOuterPeriods


@dataclass
class TrainConfig:
    """Every option of ``hope train`` (the CLI and ``--config FILE.yaml`` fill it)."""

    arch: str = "transformer"
    """Architecture: transformer, hope, hope-attention, titans, gated-deltanet."""
    size: str = "tiny"
    """Size preset: tiny, small, 760m, 1.3b."""
    out: str = "runs/train"
    """Run directory: checkpoint/, metrics.jsonl, train_config.json."""
    data: str | None = None
    """A text file or a folder of .txt files; default: the embedded State of the Union corpus."""
    tokenizer: str = "bpe"
    """bpe (byte-level BPE trained on the training split) or bytes."""
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
    """adamw, muon, m3, dgd (see hope.optim)."""
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
    """Write a metrics line every this many steps."""
    seed: int = 0
    """Seed of the initial weights and of the batch order."""
    max_bad_steps: int = 5
    """Abort after this many non-finite steps in a row."""
    resume: bool = False
    """Continue the run in OUT from its checkpoint."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto."""
    progress: bool = True
    """Show a progress bar."""
    compile: bool = False
    """torch.compile Hope's per-chunk mixer functions (hope.compiling), after a first step that compiles them
    (minutes the first time, seconds with a warm Inductor cache). Measured on CPU, 1 thread: 1.4-2.2x faster at
    batch 1 (512-8,192 tokens), 1.19x at batch 16 x 256 (1.59x with 2 threads); see docs/training.md."""
    model: dict[str, Any] = field(default_factory=dict)
    """Model config overrides, e.g. {'d_model': 256, 'cms_levels': 1}."""
    cms_outer_periods: tuple[int, ...] | None = None
    """One period per CMS level, in optimizer steps: level l's parameters are stepped only after every
    periods[l]-th step, with the mean gradient of those steps (NL Eq. 71 read as paper_spec A6 (ii);
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
        if self.cms_outer_periods is not None:
            self.cms_outer_periods = tuple(self.cms_outer_periods)


@dataclass
class TrainResult:
    step: int
    train_loss: float
    validation: dict[str, float]
    tokens_per_second: float
    parameters: int
    out: str


def lr_lambda(config: TrainConfig):
    """Multiplier of the peak lr at ``step``: linear warmup, then cosine down to ``min_lr_ratio``."""
    warmup, total, floor = config.warmup_steps, config.max_steps, config.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HopeError(f"device {name!r} asked for, but CUDA is not available")
    return torch.device(name)


class Distributed:
    """Rank, world size and the process group when launched by ``torchrun``; a no-op otherwise."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = device
        if self.world > 1 and not dist.is_initialized():
            if device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.world
        return value

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _prepare(config: TrainConfig, dist_: Distributed) -> tuple[LanguageModel, Dataset, dict[str, Any] | None]:
    """Model, data and (when resuming) the trainer state; refuses to overwrite an existing run."""
    checkpoint = Path(config.out) / "checkpoint"
    if config.resume:
        model, tokenizer, state = load_checkpoint(checkpoint, with_trainer_state=True)
        saved = state["train_config"]
        for key in ("arch", "size", "data", "tokenizer", "vocab_size", "seq_len", "batch_size", "seed", "model"):
            if saved.get(key) != getattr(config, key):
                raise HopeError(f"--resume: {key}={getattr(config, key)!r} differs from the checkpoint's {saved.get(key)!r}")
        if dist_.main:
            dataset = encode_corpus(load_corpus(config.data), tokenizer)
        dist_.barrier()
        if not dist_.main:
            dataset = encode_corpus(load_corpus(config.data), tokenizer)
        return model, dataset, state
    if checkpoint.exists():
        raise HopeError(f"{config.out} already holds a run; pass --resume to continue it or choose another --out")
    if dist_.main:
        dataset = load_dataset(config.data, config.tokenizer, config.vocab_size)
    dist_.barrier()
    if not dist_.main:
        dataset = load_dataset(config.data, config.tokenizer, config.vocab_size)
    torch.manual_seed(config.seed)
    model = build(config.arch, config.size, vocab_size=dataset.tokenizer.vocab_size, **config.model)
    return model, dataset, None


def _metrics_file(path: Path, resume_step: int | None):
    """Open metrics.jsonl for appending; on resume, drop lines from after the checkpoint first."""
    if resume_step is not None and path.exists():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step]
        path.write_text("".join(line + "\n" for line in kept))
    return open(path, "a", buffering=1)


def train(config: TrainConfig) -> TrainResult:
    """Train (or resume) a model as ``config`` says; returns the final metrics."""
    from hope.optim import build_optimizer

    dist_ = Distributed(resolve_device(config.device))
    device = dist_.device
    if config.batch_size % (config.grad_accum * dist_.world):
        raise HopeError(f"batch_size ({config.batch_size}) must be divisible by grad_accum x processes "
                        f"({config.grad_accum} x {dist_.world})")
    out = Path(config.out)
    try:
        model, dataset, state = _prepare(config, dist_)
        model.to(device)
        optimizer = build_optimizer(config.optimizer, model, lr=config.lr, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
        levels = CMSOuterPeriods(model, config.cms_outer_periods) if config.cms_outer_periods else None
        step, bad_steps = 0, 0
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step, bad_steps = state["step"], state["bad_steps"]
            if (levels is None) != (state.get("cms_outer") is None):
                raise HopeError(f"--resume: cms_outer_periods={config.cms_outer_periods!r} differs from the "
                                f"checkpoint's {state['train_config'].get('cms_outer_periods')!r}")
            if levels is not None:
                levels.load_state_dict(state["cms_outer"])
        if dist_.main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
        trained = torch.nn.parallel.DistributedDataParallel(model) if dist_.world > 1 else model
        with compiling(config.compile):
            return _loop(config, dist_, model, trained, dataset, optimizer, scheduler, levels, step, bad_steps,
                         state is not None)
    finally:
        dist_.close()


def _save(config: TrainConfig, model, dataset, optimizer, scheduler, levels, step: int, bad_steps: int) -> None:
    save_checkpoint(Path(config.out) / "checkpoint", model, dataset.tokenizer, {
        "step": step, "bad_steps": bad_steps, "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "train_config": dataclasses.asdict(config),
        "cms_outer": levels.state_dict() if levels is not None else None,
    })


def _loop(config, dist_, model, trained, dataset, optimizer, scheduler, levels, step, bad_steps,
          resumed) -> TrainResult:
    device, out = dist_.device, Path(config.out)
    train_tokens = dataset["train"].tokens
    micro = config.batch_size // config.grad_accum
    per_rank = micro // dist_.world
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16)
    metrics = _metrics_file(out / "metrics.jsonl", step if resumed else None) if dist_.main else None
    bar = tqdm(total=config.max_steps, initial=step, disable=not (config.progress and dist_.main),
               desc=f"train {config.arch}/{config.size}", unit="step", dynamic_ncols=True)
    validation: dict[str, float] = {}
    loss_value, train_seconds, tokens_done = float("nan"), 0.0, 0
    try:
        while step < config.max_steps:
            step_started = time.perf_counter()
            trained.train()
            total = torch.zeros((), device=device)
            for m in range(config.grad_accum):
                first = m * micro + dist_.rank * per_rank
                x, y = batch_at(train_tokens, step, batch_size=config.batch_size, seq_len=config.seq_len,
                                seed=config.seed, rows=slice(first, first + per_rank))
                x, y = x.to(device), y.to(device)
                sync = m == config.grad_accum - 1 or dist_.world == 1
                context = trained.no_sync() if not sync else torch.enable_grad()
                with context, autocast:
                    loss = trained(x, targets=y).loss / config.grad_accum
                loss.backward()
                total += loss.detach()
            total = dist_.mean(total)
            clip = config.grad_clip if config.grad_clip > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            if torch.isfinite(total) and torch.isfinite(grad_norm):
                if levels is not None:
                    levels.hold_back()
                optimizer.step()
                bad_steps = 0
            else:
                bad_steps += 1
                warnings.warn(f"step {step}: non-finite loss or gradient (loss {total.item()}, grad norm "
                              f"{grad_norm.item()}); step skipped ({bad_steps} in a row)", stacklevel=1)
                if bad_steps >= config.max_bad_steps:
                    raise HopeError(f"training diverged: {bad_steps} non-finite steps in a row at step {step}; "
                                    f"the last checkpoint in {out / 'checkpoint'} is untouched")
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            loss_value = total.item()
            tokens_done += config.batch_size * config.seq_len
            train_seconds += time.perf_counter() - step_started
            tokens_per_s = tokens_done / train_seconds
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tokens_per_s:,.0f}")
            if metrics and (step % config.log_every == 0 or step == config.max_steps):
                metrics.write(json.dumps({"step": step, "loss": loss_value, "lr": scheduler.get_last_lr()[0],
                                          "grad_norm": grad_norm.item(), "tokens_per_s": tokens_per_s}) + "\n")
            if step % config.eval_every == 0 or step == config.max_steps:
                if dist_.main:
                    validation = evaluate_lm(model, dataset["validation"], seq_len=config.seq_len,
                                             max_windows=config.eval_windows, device=device).to_dict()
                    metrics.write(json.dumps({"step": step, **{f"val_{k}": v for k, v in validation.items()}}) + "\n")
                    bar.set_postfix(loss=f"{loss_value:.3f}", val_bpb=f"{validation['bits_per_byte']:.3f}")
                dist_.barrier()
            if step % config.save_every == 0 or step == config.max_steps:
                if dist_.main:
                    _save(config, model, dataset, optimizer, scheduler, levels, step, bad_steps)
                dist_.barrier()
    except KeyboardInterrupt:
        if dist_.main:
            _save(config, model, dataset, optimizer, scheduler, levels, step, bad_steps)
            tqdm.write(f"interrupted: checkpoint of step {step} written to {out / 'checkpoint'}")
        raise
    finally:
        bar.close()
        if metrics:
            metrics.close()
    return TrainResult(step, loss_value, validation, tokens_done / train_seconds if train_seconds > 0 else 0.0,
                       model.num_parameters(), str(out))
