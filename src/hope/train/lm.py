"""The language-model trainer (``hope train``), on one process or under ``torchrun`` (DDP, or FSDP2 with ``--fsdp``:
``hope.train.sharding``), driving ``hope.train.loop``.

- AdamW (or any optimizer of ``hope.optim``), linear warmup then cosine decay (``hope.train.loop.lr_schedule``),
  gradient clipping, gradient accumulation, optional bf16 autocast.
- Batches are a pure function of ``(seed, step)`` (``hope.data.batch_at``), so ``resume`` continues
  with exactly the loss curve of the uninterrupted run.
- ``stream``: each row reads whole documents window after window with the model's state carried
  (``hope.train.stream``); the states are saved in the checkpoint, so ``resume`` continues them exactly.
- A non-finite loss or gradient skips the step with a warning; ``max_bad_steps`` in a row abort.
- Checkpoints (``OUT/checkpoint``) are written atomically (sharded under ``--fsdp``); Ctrl-C writes one before
  stopping (not under ``--fsdp``, whose save needs every process at the same point: the last one is kept).
- Metrics go to the loggers of ``--logger`` (``hope.train.loggers``; default ``OUT/metrics.jsonl``, one JSON object
  per logged step or evaluation).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hope.checkpoint import (is_sharded, load_checkpoint, load_sharded_checkpoint, read_header, save_checkpoint,
                             save_sharded_checkpoint)
from hope.compiling import compiling
from hope.data.dataset import Dataset, batch_at, load_dataset, load_encoded
from hope.errors import HopeError
from hope.data.stream import DocumentStream, document_starts
from hope.eval import evaluate_lm, evaluate_lm_streamed
from hope.models import LanguageModel, build, make_config
from hope.optim import build_optimizer
from hope.optim.cms_outer import CMSOuterPeriods
from hope.progress import progress_bar
from hope.run_lock import RunLock
from hope.runtime import Distributed, peak_memory_mb, resolve_device
from hope.threads import apply_threads, plan_threads
from hope.train.config import TrainConfig
from hope.train.loggers import Loggers, require_packages
from hope.train.loop import StepResult, Trainer, lr_schedule
from hope.train.stream import StreamedBatches, streamed_model_overrides, warn_unstepped_cms
from hope.train.sharding import checkpoint_blocks, shard_model


@dataclass
class TrainResult:
    step: int
    train_loss: float
    validation: dict[str, float]
    tokens_per_second: float
    parameters: int
    out: str


RESUME_MUST_MATCH = ("arch", "size", "data", "tokenizer", "vocab_size", "seq_len", "batch_size", "seed", "model",
                     "optimizer", "cms_outer_periods", "stream")
"""Options that a resumed run must share with its checkpoint (the others, e.g. ``max_steps``, may change)."""


def _check_resume(config: TrainConfig, saved: dict[str, Any]) -> None:
    """Refuse to resume with options that differ from the checkpoint's, before anything is written."""
    for key in RESUME_MUST_MATCH:
        value, before = getattr(config, key), saved.get(key, False if key == "stream" else None)
        if isinstance(before, list):
            before = tuple(before)
        if before != value:
            raise HopeError(f"{config.out} holds a run with {key}={before!r}, not {value!r}: give the same "
                            f"--{key.replace('_', '-')} to continue it, or choose another --out")


def _prepare(config: TrainConfig, dist_: Distributed) -> tuple[LanguageModel, Dataset, dict[str, Any] | None]:
    """Model, data and (when resuming) the trainer state; refuses to overwrite an existing run."""
    checkpoint = Path(config.out) / "checkpoint"
    if config.resume:
        if not checkpoint.exists():
            raise HopeError(f"nothing to resume: {config.out} has no checkpoint (drop --resume to start a run there)")
        if is_sharded(checkpoint) != config.fsdp:
            written = "with" if is_sharded(checkpoint) else "without"
            raise HopeError(f"{config.out} holds a checkpoint written {written} --fsdp: resume it {written} --fsdp")
        if config.fsdp:  # the weights come with the optimizer state, once the model is sharded
            model_config, tokenizer, state = read_header(checkpoint, with_trainer_state=True)
            model = LanguageModel(model_config)
        else:
            model, tokenizer, state = load_checkpoint(checkpoint, with_trainer_state=True)
        if not isinstance(state, dict) or not isinstance(state.get("train_config"), dict):
            raise HopeError(f"checkpoint {checkpoint}: the trainer state is corrupt (no train_config)")
        _check_resume(config, state["train_config"])
        if dist_.main:
            dataset = load_encoded(config.data, tokenizer)
        dist_.barrier()
        if not dist_.main:
            dataset = load_encoded(config.data, tokenizer)
        return model, dataset, state
    if checkpoint.exists():
        raise HopeError(f"{config.out} already holds a run; pass --resume to continue it or choose another --out")
    if dist_.main:
        dataset = load_dataset(config.data, config.tokenizer, config.vocab_size)
    dist_.barrier()
    if not dist_.main:
        dataset = load_dataset(config.data, config.tokenizer, config.vocab_size)
    torch.manual_seed(config.seed)
    model = build(config.arch, config.size, vocab_size=dataset.tokenizer.vocab_size,
                  **streamed_model_overrides(config))
    return model, dataset, None


def train(config: TrainConfig) -> TrainResult:
    """Train (or resume) a model as ``config`` says; returns the final metrics."""
    require_packages(config.logger)
    dist_ = Distributed(resolve_device(config.device), group=config.fsdp)
    if config.batch_size % (config.grad_accum * dist_.world):
        raise HopeError(f"batch_size ({config.batch_size}) must be divisible by grad_accum x processes "
                        f"({config.grad_accum} x {dist_.world})")
    if config.stream and (dist_.world > 1 or config.fsdp):
        raise HopeError("--stream runs on one process without --fsdp for now (each rank's streamed state would "
                        "need its own checkpoint file)")
    plan = plan_threads(config.threads, d_model=make_config(config.arch, config.size, **config.model).d_model,
                        device=dist_.device.type)
    apply_threads(plan)
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise HopeError(f"--out {out} is not a folder (a file of that name exists)")
    try:
        with RunLock(out) if dist_.main else contextlib.nullcontext():
            return _train(config, dist_, out)
    finally:
        dist_.close()


def _train(config: TrainConfig, dist_: Distributed, out: Path) -> TrainResult:
    """``train`` once the run folder is this process's: every option is checked against the checkpoint
    (when resuming) before anything in the folder is written."""
    model, dataset, state = _prepare(config, dist_)
    model.to(dist_.device)
    if config.activation_checkpointing:
        checkpoint_blocks(model)
    if config.fsdp:
        shard_model(model, config.fsdp_mixed_precision)
    optimizer = build_optimizer(config.optimizer, model, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_schedule(config.warmup_steps, config.max_steps, config.min_lr_ratio))
    levels = CMSOuterPeriods(model, config.cms_outer_periods) if config.cms_outer_periods else None
    step, bad_steps = 0, 0
    if state is not None:
        try:
            if config.fsdp:
                load_sharded_checkpoint(out / "checkpoint", model, optimizer)
            else:
                optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if levels is not None:
                levels.load_state_dict(state["cms_outer"])
            step, bad_steps = int(state["step"]), int(state["bad_steps"])
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            raise HopeError(f"checkpoint {out / 'checkpoint'}: the trainer state does not match this run "
                            f"({type(err).__name__}: {err})") from None
    autocast = torch.autocast(dist_.device.type, dtype=torch.bfloat16, enabled=config.bf16)
    streamed = None
    if not config.stream and dist_.main:
        warn_unstepped_cms([period for period in model.cms_periods if period >= config.seq_len], config.seq_len,
                           "train with --stream (the state carried across windows) or with periods below --seq-len")
    if config.stream:
        split = dataset["train"]
        stream = DocumentStream(split.tokens, document_starts(split, dataset.tokenizer.eot_id),
                                seq_len=config.seq_len, eot_id=dataset.tokenizer.eot_id)
        streamed = StreamedBatches(model, stream, batch_size=config.batch_size, grad_accum=config.grad_accum,
                                   seed=config.seed, device=dist_.device, autocast=autocast)
        if state is not None:
            streamed.load_state_dict(state.get("stream"))
    if dist_.main:
        (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    ddp = dist_.world > 1 and not config.fsdp
    trained = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
    trainer = Trainer(trained, optimizer, scheduler, grad_clip=config.grad_clip,
                      max_bad_steps=config.max_bad_steps, outer_periods=levels, params=model.parameters(),
                      distributed=dist_, step=step, bad_steps=bad_steps,
                      diverged_hint=f"the last checkpoint in {out / 'checkpoint'} is untouched")
    with compiling(config.compile):
        return _run(config, dist_, model, dataset, trainer, autocast, streamed, resumed=state is not None)


def _save(config: TrainConfig, model: LanguageModel, dataset: Dataset, trainer: Trainer,
          streamed: StreamedBatches | None) -> None:
    """The checkpoint (every process calls it under ``--fsdp``, rank 0 alone otherwise)."""
    state = {"step": trainer.step, "bad_steps": trainer.bad_steps, "scheduler": trainer.scheduler.state_dict(),
             "train_config": dataclasses.asdict(config),
             "cms_outer": trainer.outer_periods.state_dict() if trainer.outer_periods is not None else None,
             "stream": streamed.state_dict() if streamed is not None else None}
    if config.fsdp:
        save_sharded_checkpoint(Path(config.out) / "checkpoint", model, trainer.optimizer, dataset.tokenizer, state)
    else:
        save_checkpoint(Path(config.out) / "checkpoint", model, dataset.tokenizer,
                        {**state, "optimizer": trainer.optimizer.state_dict()})


def _run(config: TrainConfig, dist_: Distributed, model: LanguageModel, dataset: Dataset, trainer: Trainer,
         autocast: Any, streamed: StreamedBatches | None, resumed: bool) -> TrainResult:
    """``trainer.fit`` on this rank's rows of the global batches (``streamed``: the streamed windows of each row),
    with metrics, validation and checkpoints."""
    device, out = dist_.device, Path(config.out)
    train_tokens = dataset["train"].tokens
    micro = config.batch_size // config.grad_accum
    per_rank = micro // dist_.world

    def batches(step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        rows = [slice(m * micro + dist_.rank * per_rank, m * micro + (dist_.rank + 1) * per_rank)
                for m in range(config.grad_accum)]
        return [tuple(t.to(device) for t in batch_at(train_tokens, step, batch_size=config.batch_size,
                                                     seq_len=config.seq_len, seed=config.seed, rows=r))
                for r in rows]

    def loss_fn(trained: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        with autocast:
            return trained(batch[0], targets=batch[1]).loss

    loggers = Loggers(config.logger, out, dataclasses.asdict(config), trainer.step if resumed else None) \
        if dist_.main else None
    losses = [record["loss"] for record in loggers.kept if "loss" in record] if loggers else []
    last_loss = losses[-1] if losses else float("nan")
    bar = progress_bar(total=config.max_steps, initial=trainer.step, disable=not (config.progress and dist_.main),
               desc=f"train {config.arch}/{config.size}", unit="step", dynamic_ncols=True)
    last = {"loss": last_loss, "validation": {}, "seconds": 0.0, "tokens": 0, "resets": 0}

    def log(result: StepResult) -> None:
        last["loss"] = result.loss.item()
        last["tokens"] += config.batch_size * config.seq_len
        last["seconds"] += result.seconds
        tokens_per_s = last["tokens"] / last["seconds"]
        bar.set_postfix(loss=f"{last['loss']:.3f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
        if streamed is not None:
            last["resets"] += streamed.resets
            bar.set_postfix(loss=f"{last['loss']:.3f}", tok_s=f"{tokens_per_s:,.0f}", docs=streamed.documents,
                            refresh=False)
        if loggers and (result.step % config.log_every == 0 or result.step == config.max_steps):
            stream_facts = {} if streamed is None else {
                "stream_documents": streamed.documents, "stream_resets": last["resets"],
                "stream_padding": streamed.stream.padding}
            loggers.log(result.step, {"loss": last["loss"], "lr": trainer.scheduler.get_last_lr()[0],
                                      "grad_norm": result.grad_norm.item(), "tokens_per_s": tokens_per_s,
                                      "peak_memory_mb": peak_memory_mb(device), **stream_facts})

    def validate(result: StepResult) -> None:
        if result.step % config.eval_every == 0 or result.step == config.max_steps:
            if config.fsdp or dist_.main:  # a sharded model's forward needs every process
                if streamed is not None:
                    last["validation"] = evaluate_lm_streamed(
                        model, dataset["validation"], seq_len=config.seq_len, eot_id=dataset.tokenizer.eot_id,
                        max_windows=config.eval_windows, device=device).to_dict()
                else:
                    last["validation"] = evaluate_lm(model, dataset["validation"], seq_len=config.seq_len,
                                                     max_windows=config.eval_windows, device=device).to_dict()
            if dist_.main:
                loggers.log(result.step, {f"val_{k}": v for k, v in last["validation"].items()})
                bar.set_postfix(loss=f"{last['loss']:.3f}", val_bpb=f"{last['validation']['bits_per_byte']:.3f}",
                                refresh=False)
            dist_.barrier()

    def save(result: StepResult) -> None:
        if result.step % config.save_every == 0 or result.step == config.max_steps:
            if config.fsdp or dist_.main:
                _save(config, model, dataset, trainer, streamed)
            dist_.barrier()

    if streamed is None:
        step_batches, step_loss, callbacks = batches, loss_fn, (log, validate, save)
    else:
        step_batches, step_loss, callbacks = streamed.batches, streamed.loss, (streamed.advance, log, validate, save)
    try:
        trainer.fit(step_batches, step_loss, config.max_steps, callbacks=callbacks, bar=bar)
    except KeyboardInterrupt:
        if dist_.main and not config.fsdp:
            _save(config, model, dataset, trainer, streamed)
            tqdm.write(f"interrupted: checkpoint of step {trainer.step} written to {out / 'checkpoint'}")
        raise
    finally:
        bar.close()
        if loggers:
            loggers.close()
    seconds = last["seconds"]
    return TrainResult(trainer.step, last["loss"], last["validation"],
                       last["tokens"] / seconds if seconds > 0 else 0.0, model.num_parameters(), str(out))
