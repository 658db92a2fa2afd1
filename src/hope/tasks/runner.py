"""Train (or fine-tune) a model on one benchmark task and evaluate it: ``hope tasks run``.

Sequence tasks (recall, MAD, NIAH, BABILong, formal languages) train with cross-entropy at the
answer positions of generated batches (``hope.tasks``) and are scored by exact match at every
evaluation setting (longer lengths, the longer formal-language bin). MAD compression decodes the
whole row from the last position's hidden state with a small MLP decoder, as MAD's auto-encoder.
Continual tasks train stage after stage and fill the score matrix ``R[i, j]`` (accuracy, or LM loss
for corpus eras). Stream tasks (``hope.tasks.streams``) pretrain on windows of the corpus's training split, then
read long held-out streams window by window with the state carried (or reset) and record the loss of every
token. A run writes ``result.json``, ``results.md`` and plots into its directory, and its training and
evaluation metrics to the loggers of ``--logger`` (``hope.train.loggers``; default ``OUT/metrics.jsonl``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hope.checkpoint import load_checkpoint, read_header, save_checkpoint
from hope.compiling import compiling
from hope.data.dataset import encode_corpus
from hope.data.stream import DocumentStream
from hope.data.tokenizer import BytesTokenizer, load_tokenizer
from hope.errors import HopeError
from hope.files import write_text_atomic
from hope.eval.report import plot_run, run_markdown
from hope.models import LanguageModel, build, make_config
from hope.optim.cms_outer import CMSOuterPeriods
from hope.progress import progress_bar
from hope.run_lock import RunLock
from hope.runtime import peak_memory_mb, resolve_device
from hope.threads import apply_threads, plan_threads
from hope.tasks.base import IGNORE_INDEX, TaskBatch, score_predictions
from hope.tasks.config import TaskRunConfig
from hope.tasks.continual import continual_metrics, seen_class_accuracy
from hope.tasks.heads import Predictor, ReconstructionDecoder
from hope.tasks.registry import TASKS, TaskSpec, get_task
from hope.tasks.streams import corpus, loss_by_position, stream_metrics
from hope.train.loggers import Loggers, require_packages
from hope.train.loop import StepResult, Trainer, lr_schedule
from hope.train.stream import StreamedBatches, streamed_model_overrides, warn_unstepped_cms

QUICK_MODEL = {"d_model": 32, "n_layers": 2, "n_heads": 2}


def _tokenizer(config: TaskRunConfig):
    return BytesTokenizer() if config.tokenizer == "bytes" else load_tokenizer(Path(config.tokenizer))


def _fresh_model(config: TaskRunConfig, vocab_size: int, device: torch.device) -> LanguageModel:
    try:
        return build(arch=config.arch, size=config.size, vocab_size=vocab_size,
                     **streamed_model_overrides(config)).to(device)
    except TypeError as err:
        raise HopeError(f"bad model option: {err}") from None


def checkpoint_model(config: TaskRunConfig, device: torch.device):
    """The model and tokenizer of ``config.checkpoint``, to fine-tune or evaluate, with ``config.model`` applied
    to its config where the weights stay the same (a probe such as ``test_time_learning=False``)."""
    model, tokenizer, _ = load_checkpoint(config.checkpoint, device, text=get_task(config.task).text)
    if not config.model:
        return model, tokenizer
    settings = {k: v for k, v in model.config.to_dict().items() if k != "arch"}
    probe = LanguageModel(make_config(model.config.arch, None, **{**settings, **config.model})).to(device)
    try:
        probe.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError:
        raise HopeError(f"--model {' '.join(f'{k}={v}' for k, v in config.model.items())} changes the weights of "
                        f"checkpoint {config.checkpoint}; only settings that keep them apply to a checkpoint") from None
    return probe, tokenizer


def _fits(model: LanguageModel, vocab_size: int, config: TaskRunConfig) -> LanguageModel:
    if vocab_size > model.config.vocab_size:
        raise HopeError(f"task needs {vocab_size} ids but checkpoint {config.checkpoint} has {model.config.vocab_size}")
    return model


def _to_device(batch: TaskBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(batch.input_ids).to(device), torch.from_numpy(batch.targets).to(device)


def _answer_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)


def _trainer(config: TaskRunConfig, model: nn.Module, params: list[nn.Parameter], total: int | None) -> Trainer:
    """AdamW on ``params`` with the schedule over ``total`` steps (``None``: constant after warmup, for continual
    streams) and, with ``cms_outer_periods``, the CMS levels' outer periods."""
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_schedule(config.warmup_steps, total, config.min_lr_ratio))
    levels = CMSOuterPeriods(model, config.cms_outer_periods) if config.cms_outer_periods else None
    return Trainer(model, optimizer, scheduler, grad_clip=config.grad_clip, max_bad_steps=config.max_bad_steps,
                   outer_periods=levels, params=params, diverged_hint="lower --lr")


class StepLog:
    """The training metrics of a task run (``hope.train.loggers``), every ``log_every`` steps and at the end of
    training (of each stage, for continual streams): ``count`` the tokens of each batch as it is drawn, call the
    object after each step."""

    def __init__(self, config: TaskRunConfig, loggers: Loggers, trainer: Trainer, device: torch.device) -> None:
        self.config, self.loggers, self.trainer, self.device = config, loggers, trainer, device
        self.tokens, self.seconds = 0, 0.0

    def count(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        self.tokens += batch[0].numel()
        return batch

    def __call__(self, result: StepResult) -> None:
        self.seconds += result.seconds
        if result.step % self.config.log_every == 0 or result.step % self.config.steps == 0:
            self.loggers.log(result.step, {
                "loss": result.loss.item(), "lr": self.trainer.scheduler.get_last_lr()[0],
                "grad_norm": result.grad_norm.item(), "tokens_per_s": self.tokens / self.seconds,
                "peak_memory_mb": peak_memory_mb(self.device)})


def eval_settings(spec: TaskSpec, lengths: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """The task's evaluation settings, or one per requested length (formal: bins ending there)."""
    if not lengths:
        return dict(spec.evals)
    if spec.family == "formal":
        bounds = sorted(lengths)
        return {f"{lo}-{hi}": {"min_length": lo, "max_length": hi}
                for lo, hi in zip([1] + [b + 1 for b in bounds[:-1]], bounds)}
    if spec.family == "mad":
        raise HopeError("MAD tasks have fixed lengths; set one with --option length=N")
    return {f"{n // 1024}K" if n % 1024 == 0 else str(n): {"length": n} for n in lengths}


def run_task(config: TaskRunConfig) -> dict[str, Any]:
    """Run one task; write ``result.json``, ``results.md`` and plots into ``config.out`` (a folder this process
    holds, ``hope.run_lock``; one that already holds a result is refused); return the result."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise HopeError(f"--out {out} is not a folder (a file of that name exists)")
    require_packages(config.logger)
    width = (read_header(config.checkpoint, text=get_task(config.task).text)[0] if config.checkpoint else
             make_config(config.arch, config.size, **config.model)).d_model
    apply_threads(plan_threads(config.threads, d_model=width, device=resolve_device(config.device).type))
    with RunLock(out):
        if (out / "result.json").exists():
            raise HopeError(f"{out} already holds a result (result.json); choose another --out")
        return _run_and_write(config)


def _run_and_write(config: TaskRunConfig) -> dict[str, Any]:
    torch.manual_seed(config.seed)
    spec = get_task(config.task)
    started = time.time()
    loggers = Loggers(config.logger, Path(config.out), dataclasses.asdict(config))
    try:
        with compiling(config.compile):
            run = {"continual": _run_continual, "stream": _run_stream}.get(spec.family, _run_sequence)
            result = run(config, spec, loggers)
    finally:
        loggers.close()
    result.setdefault("arch", config.arch)
    result.update({"task": spec.name, "family": spec.family, "size": config.size,
                   "model_overrides": config.model, "task_options": config.options, "seed": config.seed,
                   "checkpoint": config.checkpoint, "seconds": round(time.time() - started, 2),
                   "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "progress"}})
    _write_run(config, result)
    return result


class CMSReach:
    """Which CMS levels of a model its training rows reach. A level of period ``C`` steps at position ``C`` of a
    row (NL Eq. 71; ``hope.models.hope.in_context``), so on rows of at most ``C`` tokens it never steps in training:
    its inner learning rate gets no gradient, and on longer evaluation rows it takes steps that training never
    sized (docs/tasks.md, "CMS periods and row lengths"). ``see`` each training batch's inputs."""

    def __init__(self, periods: tuple[int, ...]) -> None:
        self.periods, self.longest = periods, 0

    def see(self, input_ids: torch.Tensor) -> None:
        first = self.longest == 0
        self.longest = max(self.longest, input_ids.shape[1])
        if first:
            warn_unstepped_cms(self.unreached, self.longest,
                               f"pass --model cms_periods=[...] with periods below {self.longest} to train them")

    @property
    def unreached(self) -> list[int]:
        """The periods no training row has passed (every period before the first batch)."""
        return [period for period in self.periods if period >= self.longest]


def _run_sequence(config: TaskRunConfig, spec: TaskSpec, loggers: Loggers) -> dict[str, Any]:
    device = resolve_device(config.device)
    model, tokenizer = checkpoint_model(config, device) if config.checkpoint else (None, None)
    if tokenizer is None and spec.text:
        tokenizer = _tokenizer(config)
    train_task = spec.build(tokenizer, **{**spec.train, **config.options})
    settings = _stages_of(train_task, eval_settings(spec, config.lengths))
    model = _fits(model, train_task.vocab_size, config) if model is not None else \
        _fresh_model(config, train_task.vocab_size, device)
    eval_tasks = {label: spec.build(tokenizer, **{**spec.train, **config.options, **overrides})
                  for label, overrides in settings.items()}
    decoder = None
    if train_task.objective == "reconstruct" and config.save_model:
        raise HopeError(f"--save-model cannot keep {spec.name}'s reconstruction decoder (it is not part of the model's "
                        "checkpoint); run it without --save-model")
    if train_task.objective == "reconstruct":
        longest = max([train_task.length] + [t.length for t in eval_tasks.values()])
        decoder = ReconstructionDecoder(model.config.d_model, train_task.vocab_size, longest).to(device)
    predictor = Predictor(model, decoder)
    params = [p for p in model.parameters() if p.requires_grad] + (list(decoder.parameters()) if decoder else [])
    trainer = _trainer(config, model, params, config.steps)
    step_log = StepLog(config, loggers, trainer, device)
    reach = CMSReach(model.cms_periods)
    rng = np.random.default_rng([config.seed, 0])
    curve = []
    every = max(1, config.steps // 50)

    def record(result: StepResult) -> None:
        index = result.step - 1
        if index % every == 0 or index == config.steps - 1:
            curve.append([index, round(result.loss.item(), 5)])
            bar.set_postfix(loss=f"{result.loss.item():.4f}", refresh=False)

    def draw(step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        batch = step_log.count(_to_device(train_task.batch(rng, config.batch_size), device))
        reach.see(batch[0])
        return [batch]

    if config.steps:
        with progress_bar(total=config.steps, desc=f"{spec.name} {model.config.arch}",
                          disable=not config.progress) as bar:
            trainer.fit(draw, lambda _, batch: _answer_loss(predictor.logits(batch[0]), batch[1]),
                        config.steps, callbacks=[record, step_log], bar=bar)
    if config.save_model:
        save_checkpoint(Path(config.out) / "model", model, tokenizer)
    model.eval()
    evals, answers = {}, []
    for index, (label, task) in enumerate(eval_tasks.items()):
        evals[label], rows = _evaluate(predictor, task, config, np.random.default_rng([config.seed, 1, index]), device,
                                       tokenizer)
        evals[label]["settings"] = settings[label]
        answers += [{"setting": label, **row} for row in rows]
        loggers.log(trainer.step, {f"eval_{label}_{name}": evals[label][name]
                                   for name in ("item_accuracy", "sequence_accuracy", "token_accuracy")})
    if answers:
        write_text_atomic(Path(config.out) / "answers.jsonl", "".join(json.dumps(row) + "\n" for row in answers))
    return {"params": sum(p.numel() for p in model.parameters()), "train_settings": {**spec.train, **config.options},
            "loss_curve": curve, "evals": evals, "arch": model.config.arch,
            **({"cms_periods_not_trained": reach.unreached} if config.steps else {})}


def _stages_of(task, settings: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The settings that ask one stage's queries (``query_stage``), kept for the stages a row of ``task`` has
    (``--option num_stages=2`` drops stage3 ... stage5)."""
    stages = getattr(task, "num_stages", None)
    return {label: overrides for label, overrides in settings.items()
            if stages is None or overrides.get("query_stage", 0) < stages}


def _evaluate(predictor: Predictor, task, config: TaskRunConfig, rng: np.random.Generator, device: torch.device,
              tokenizer=None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Scores over ``config.eval_examples`` rows, and the answers of the first ``config.answer_rows`` of them."""
    names = ("items", "items_right", "sequences", "sequences_right", "positions", "positions_right")
    totals = dict.fromkeys(names, 0)
    longest, answer_nll, answers = 0, 0.0, []
    remaining = config.eval_examples
    while remaining > 0:
        batch = task.batch(rng, min(config.eval_batch_size, remaining))
        remaining -= len(batch)
        input_ids, targets = _to_device(batch, device)
        predictions, nll = predictor.predict(input_ids, config.eval_chunk, targets)
        predictions = predictions.cpu().numpy()
        scores = score_predictions(predictions, batch)
        answers += _answers(predictions, batch, tokenizer, first_row=totals["sequences"],
                            rows=config.answer_rows - len(answers))
        for name in names:
            totals[name] += scores[name]
        answer_nll += nll.sum().item()
        longest = max(longest, batch.input_ids.shape[1])
    return {"item_accuracy": totals["items_right"] / totals["items"],
            "sequence_accuracy": totals["sequences_right"] / totals["sequences"],
            "token_accuracy": totals["positions_right"] / totals["positions"],
            "answer_loss": answer_nll / totals["positions"],
            "examples": totals["sequences"], "items": totals["items"], "max_length": int(longest)}, answers


def _answers(predictions: np.ndarray, batch: TaskBatch, tokenizer, first_row: int, rows: int) -> list[dict[str, Any]]:
    """The answers of the first ``rows`` rows of ``batch``, one entry per answer (group of answer positions):
    expected and predicted as text (with a tokenizer, where every id is one of its tokens) or token ids (a task's
    own tokens, such as the label tokens of the intents in context), and whether every position is right."""
    def shown(ids: np.ndarray) -> str | list[int]:
        text = tokenizer is not None and bool((ids < tokenizer.vocab_size).all())
        return tokenizer.decode(ids.tolist()) if text else ids.tolist()

    found = []
    for b in range(min(rows, len(batch))):
        mask = batch.answer_mask[b]
        groups, expected, predicted = batch.groups[b][mask], batch.targets[b][mask], predictions[b][mask]
        found.append({"row": first_row + b, "answers": [
            {"expected": shown(expected[groups == g]), "predicted": shown(predicted[groups == g]),
             "right": bool((expected[groups == g] == predicted[groups == g]).all())}
            for g in dict.fromkeys(groups.tolist())]})
    return found


def _run_continual(config: TaskRunConfig, spec: TaskSpec, loggers: Loggers) -> dict[str, Any]:
    if spec.name == "continual_sotu_eras":
        return _run_eras(config, spec, loggers)
    if config.checkpoint:
        raise HopeError("class-incremental runs train from scratch (the class tokens extend the vocabulary); "
                        "drop --checkpoint")
    device = resolve_device(config.device)
    options = {"seed": config.seed, "data_dir": config.data_dir, **config.options}
    stream = spec.build(_tokenizer(config), **options)
    stages = stream.stages()
    classes = tuple(c for stage in stages for c in stage.classes)
    encoder = stream.encoder(classes)
    model = _fresh_model(config, encoder.vocab_size, device)
    trainer = _trainer(config, model, [p for p in model.parameters() if p.requires_grad], None)
    step_log = StepLog(config, loggers, trainer, device)
    rng = np.random.default_rng([config.seed, 0])
    pick = np.random.default_rng([config.seed, 1])
    tests = [tuple(s.test[k] for k in sorted(pick.permutation(len(s.test))[: config.eval_examples])) for s in stages]
    matrix = np.zeros((len(stages), len(stages)))
    curve = []
    seen: list[str] = []
    bar = progress_bar(total=config.steps * len(stages), desc=f"{spec.name} {config.arch}", disable=not config.progress)
    for i, stage in enumerate(stages):
        seen.extend(stage.classes)

        def batches(step: int, stage=stage) -> list[tuple[torch.Tensor, torch.Tensor]]:
            picks = rng.integers(len(stage.train), size=config.batch_size)
            return [step_log.count(_to_device(encoder.encode([stage.train[k] for k in picks]), device))]

        last = trainer.fit(batches, lambda lm, batch: _answer_loss(lm(batch[0]).logits, batch[1]),
                           (i + 1) * config.steps, callbacks=[step_log], bar=bar)
        curve.append([i, round(last.loss.item(), 5)])
        model.eval()
        allowed = torch.from_numpy(encoder.label_ids(tuple(seen))).to(device)
        for j, test in enumerate(tests):
            matrix[i, j] = _intent_accuracy(model, encoder, test, allowed, config, device)
        _log_stage(loggers, trainer.step, "accuracy", matrix[i])
    bar.close()
    sizes = [len(test) for test in tests]
    return {"params": sum(p.numel() for p in model.parameters()), "stages": [s.name for s in stages],
            "matrix": matrix.round(5).tolist(), "metric": "accuracy", "loss_curve": curve,
            "continual": continual_metrics(matrix), "seen_accuracy": seen_class_accuracy(matrix, sizes)}


@torch.no_grad()
def _intent_accuracy(model, encoder, examples, allowed: torch.Tensor, config: TaskRunConfig, device) -> float:
    right = 0
    for start in range(0, len(examples), config.eval_batch_size):
        batch = encoder.encode(examples[start: start + config.eval_batch_size])
        input_ids, targets = _to_device(batch, device)
        logits = model(input_ids).logits
        rows, cols = torch.nonzero(targets != IGNORE_INDEX, as_tuple=True)
        choice = allowed[logits[rows, cols][:, allowed].argmax(-1)]
        right += int((choice == targets[rows, cols]).sum())
    return right / len(examples)


def _log_stage(loggers: Loggers, step: int, metric: str, scores: np.ndarray) -> None:
    """One row of the score matrix, after a stage: ``eval_{metric}_stage{j}`` for every stage ``j``."""
    loggers.log(step, {f"eval_{metric}_stage{j}": float(score) for j, score in enumerate(scores)})


def _run_eras(config: TaskRunConfig, spec: TaskSpec, loggers: Loggers) -> dict[str, Any]:
    device = resolve_device(config.device)
    stages = spec.build(**config.options).stages()
    if config.checkpoint:
        model, tokenizer = checkpoint_model(config, device)
    else:
        tokenizer = _tokenizer(config)
        model = _fresh_model(config, int(tokenizer.vocab_size), device)
    encode = lambda texts: np.concatenate([np.asarray(tokenizer.encode(t), dtype=np.int64) for t in texts])
    train = [encode(s.train) for s in stages]
    test = [encode(s.test) for s in stages]
    trainer = _trainer(config, model, [p for p in model.parameters() if p.requires_grad], None)
    step_log = StepLog(config, loggers, trainer, device)
    rng = np.random.default_rng([config.seed, 0])
    matrix = np.zeros((len(stages), len(stages)))
    curve = []
    bar = progress_bar(total=config.steps * len(stages), desc=f"{spec.name} {config.arch}", disable=not config.progress)
    for i, tokens in enumerate(train):

        def sampled(step: int, tokens=tokens) -> list[tuple[torch.Tensor, torch.Tensor]]:
            starts = rng.integers(tokens.size - config.seq_len - 1, size=config.batch_size)
            windows = torch.from_numpy(np.stack([tokens[s: s + config.seq_len + 1] for s in starts])).to(device)
            return [step_log.count((windows[:, :-1], windows[:, 1:]))]

        if config.stream:
            batches, loss, advance = _era_stream(config, model, tokenizer, stages[i].train, i, step_log, device)
            callbacks = [advance, step_log]
        else:
            batches, loss, callbacks = sampled, _window_batch_loss, [step_log]
        last = trainer.fit(batches, loss, (i + 1) * config.steps, callbacks=callbacks, bar=bar)
        curve.append([i, round(last.loss.item(), 5)])
        model.eval()
        for j, tokens_j in enumerate(test):
            matrix[i, j] = _window_loss(model, tokens_j, config, device)
        _log_stage(loggers, trainer.step, "loss", matrix[i])
    bar.close()
    return {"params": sum(p.numel() for p in model.parameters()), "stages": [s.name for s in stages],
            "matrix": matrix.round(5).tolist(), "metric": "loss", "loss_curve": curve,
            "continual": continual_metrics(matrix, higher_is_better=False)}


def _window_batch_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return _answer_loss(model(batch[0]).logits, batch[1])


def _era_stream(config: TaskRunConfig, model: LanguageModel, tokenizer, texts, era: int, step_log: StepLog,
                device: torch.device):
    """``(batches, loss, advance)`` of a streamed era (docs/training.md, streaming): its documents, each ended
    by end-of-text, read window after window with the state carried; every era starts fresh rows (a task with one
    training stage is era 0)."""
    documents = [np.append(np.asarray(tokenizer.encode(t), dtype=np.int64), tokenizer.eot_id) for t in texts]
    starts = np.cumsum([0] + [len(d) for d in documents[:-1]])
    stream = DocumentStream(np.concatenate(documents), starts, seq_len=config.seq_len, eot_id=tokenizer.eot_id)
    streamed = StreamedBatches(model, stream, batch_size=config.batch_size, grad_accum=1, seed=config.seed,
                               device=device, autocast=contextlib.nullcontext())

    def batches(step: int) -> list:
        micro_batches = streamed.batches(step - era * config.steps)
        step_log.count((micro_batches[0][1].inputs,))
        return micro_batches

    return batches, streamed.loss, streamed.advance


def _window_batches(tokens: np.ndarray, config: TaskRunConfig, rng: np.random.Generator, step_log: StepLog,
                    device: torch.device):
    """Batches of ``batch_size`` random windows of ``seq_len`` tokens of ``tokens`` (inputs, next-token targets)."""
    if tokens.size < config.seq_len + 2:
        raise HopeError(f"the training text has {tokens.size} tokens, fewer than seq_len {config.seq_len} + 2")

    def batches(step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        starts = rng.integers(tokens.size - config.seq_len - 1, size=config.batch_size)
        windows = np.stack([tokens[s: s + config.seq_len + 1] for s in starts]).astype(np.int64)
        windows = torch.from_numpy(windows).to(device)
        return [step_log.count((windows[:, :-1], windows[:, 1:]))]

    return batches


def _run_stream(config: TaskRunConfig, spec: TaskSpec, loggers: Loggers) -> dict[str, Any]:
    """Pretrain on the corpus's training split (random windows, or whole documents streamed with ``--stream``;
    or fine-tune ``--checkpoint`` on it; ``--steps 0``: only evaluate it), then read ``eval_examples``
    held-out streams per evaluation setting window by window (``seq_len`` tokens), with the state carried or
    reset, and record the loss of every token (``hope.tasks.streams``)."""
    device = resolve_device(config.device)
    model, tokenizer = checkpoint_model(config, device) if config.checkpoint else (None, _tokenizer(config))
    settings = eval_settings(spec, config.lengths)
    train_stream = spec.build(tokenizer, **{**spec.train, **config.options})
    model = _fits(model, train_stream.vocab_size, config) if model is not None else \
        _fresh_model(config, train_stream.vocab_size, device)
    trainer = _trainer(config, model, [p for p in model.parameters() if p.requires_grad], config.steps)
    step_log = StepLog(config, loggers, trainer, device)
    curve = []
    every = max(1, config.steps // 50)

    def record(result: StepResult) -> None:
        if (result.step - 1) % every == 0 or result.step == config.steps:
            curve.append([result.step - 1, round(result.loss.item(), 5)])

    if config.steps:
        with progress_bar(total=config.steps, desc=f"{spec.name} {config.arch}", disable=not config.progress) as bar:
            if config.stream:
                texts = [doc.text for doc in corpus(train_stream.data).split("train")]
                batches, loss, advance = _era_stream(config, model, tokenizer, texts, 0, step_log, device)
                callbacks = [advance, record, step_log]
            else:
                tokens = encode_corpus(corpus(train_stream.data), tokenizer)["train"].tokens
                batches = _window_batches(tokens, config, np.random.default_rng([config.seed, 0]), step_log, device)
                loss, callbacks = _window_batch_loss, [record, step_log]
            trainer.fit(batches, loss, config.steps, callbacks=callbacks, bar=bar)
    if config.save_model:
        save_checkpoint(Path(config.out) / "model", model, tokenizer)
    model.eval()
    evals = {}
    for label, overrides in settings.items():
        stream, rows = stream_eval_rows(spec, tokenizer, config, overrides)
        losses = np.concatenate([stream_losses(model, np.stack([r.ids for r in rows[k: k + config.eval_batch_size]]),
                                                config.seq_len, stream.carry_state, device)
                                 for k in range(0, len(rows), config.eval_batch_size)])
        evals[label] = _stream_scores(losses, rows, config.seq_len)
        evals[label]["settings"] = overrides
        loggers.log(trainer.step, {f"eval_{label}_loss": evals[label]["loss"]})
    return {"params": sum(p.numel() for p in model.parameters()), "train_settings": {**spec.train, **config.options},
            "loss_curve": curve, "evals": evals, "arch": model.config.arch}


def stream_eval_rows(spec: TaskSpec, tokenizer: Any, config: TaskRunConfig, overrides: dict[str, Any]) -> tuple:
    """The stream of one evaluation setting and its ``eval_examples`` held-out rows. Rows depend on the seed and on
    the settings that shape the stream, not on ``carry_state``: the carried and reset readings score the same text."""
    stream = spec.build(tokenizer, **{**spec.train, **config.options, **overrides})
    shape = json.dumps({k: v for k, v in overrides.items() if k != "carry_state"}, sort_keys=True)
    rng = np.random.default_rng([config.seed, 1, zlib.crc32(shape.encode())])
    return stream, [stream.row(rng) for _ in range(config.eval_examples)]


@torch.no_grad()
def stream_losses(model: LanguageModel, ids: np.ndarray, window: int, carry_state: bool,
                   device: torch.device) -> np.ndarray:
    """Next-token loss of every position of rows ``ids`` ``[batch, length + 1]``, read ``window`` tokens at a
    time with the model state carried from window to window (``carry_state``) or fresh at each."""
    inputs, targets = torch.from_numpy(ids[:, :-1]).to(device), torch.from_numpy(ids[:, 1:]).to(device)
    losses, state = [], None
    for start in range(0, inputs.shape[1], window):
        output = model(inputs[:, start: start + window], state=state)
        losses.append(F.cross_entropy(output.logits.float().transpose(1, 2), targets[:, start: start + window],
                                      reduction="none"))
        state = output.state.detach() if carry_state else None
    return torch.cat(losses, dim=1).cpu().numpy()


def _stream_scores(losses: np.ndarray, rows: list, window: int) -> dict[str, Any]:
    """Mean loss, loss by position, the loss curve along the stream (mean over rows, in at most 256 bins) and,
    when the rows share their segments (cipher streams), the segment metrics."""
    mean = losses.mean(axis=0)
    size = max(1, mean.size // 256)
    scores = {"loss": float(losses.mean()), "rows": len(rows), "length": int(mean.size),
              "by_position": [[a, b, round(v, 5)] for a, b, v in loss_by_position(losses)],
              "curve": [[start, round(float(mean[start: start + size].mean()), 5)]
                        for start in range(0, mean.size, size)]}
    if all(r.segments == rows[0].segments for r in rows):
        scores["boundaries"] = [list(s) for s in rows[0].segments]
        scores.update(stream_metrics(mean, rows[0].segments, min(window, min(b - a for _, a, b in rows[0].segments))))
    return scores


@torch.no_grad()
def _window_loss(model, tokens: np.ndarray, config: TaskRunConfig, device) -> float:
    count = min(config.eval_examples, (tokens.size - 1) // config.seq_len)
    if count < 1:
        raise HopeError(f"an era's held-out text is shorter than seq_len {config.seq_len}")
    windows = torch.from_numpy(tokens[: count * config.seq_len + 1])
    inputs = windows[:-1].view(count, config.seq_len)
    targets = windows[1:].view(count, config.seq_len)
    total = 0.0
    for start in range(0, count, config.eval_batch_size):
        x, y = inputs[start: start + config.eval_batch_size].to(device), targets[start: start + config.eval_batch_size].to(device)
        total += F.cross_entropy(model(x).logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
    return total / (count * config.seq_len)


def _write_run(config: TaskRunConfig, result: dict[str, Any]) -> None:
    out = Path(config.out)
    write_text_atomic(out / "result.json", json.dumps(result, indent=2, default=str) + "\n")
    plots = plot_run(result, out)
    (out / "results.md").write_text(run_markdown(result, plots))


def run_many(config: TaskRunConfig, names: list[str]) -> list[dict[str, Any]]:
    """Run several tasks, each into ``config.out/<task>``."""
    return [run_task(dataclasses.replace(config, task=name, out=str(Path(config.out) / name))) for name in names]


def quick_config(task: str, arch: str, out: str, seed: int = 0, data_dir: str | None = None,
                 progress: bool = False) -> TaskRunConfig:
    """Settings that run ``task`` for a very small model in seconds (the ``quick`` suite)."""
    spec = TASKS[task]
    options: dict[str, Any] = {}
    lengths: tuple[int, ...] = ()
    steps, examples = 3, 4
    if spec.family in ("niah", "babilong"):
        lengths = (1024, 2048)
    if spec.family == "recall":
        lengths = (128, 256)
        options = {"length": 128, "num_kv_pairs": 4, "vocab_size": 64}
    if spec.family == "continual":
        steps, examples = 1, 2
        options = {"max_train_per_class": 2, "max_test_per_class": 2} if spec.text else {}
    if spec.family == "in_context":
        options = {"classes_per_stage": 1, "shots": 1, "queries_per_stage": 1, "max_text_tokens": 16,
                   **({"data_dir": data_dir} if data_dir else {})}
    if spec.family == "stream":
        examples = 2
        options = {"segment": 64} if spec.name == "stream_cipher" else {"length": 256}
    return TaskRunConfig(task=task, arch=arch, size="tiny", out=out, lengths=lengths, seed=seed, steps=steps,
                         batch_size=4, eval_examples=examples, eval_batch_size=4, seq_len=64, warmup_steps=1,
                         model=dict(QUICK_MODEL), options=options, data_dir=data_dir, progress=progress)


def run_quick_suite(archs: list[str], out: str, seed: int = 0, data_dir: str | None = None,
                    tasks: list[str] | None = None, progress: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Every task (or ``tasks``) for every arch with ``quick_config``. A run that stops with a
    ``HopeError`` (missing data, a non-finite loss) is listed in ``out/skipped.json`` with its reason,
    and the suite goes on. Returns the results and the skipped runs."""
    results, skipped = [], []
    names = tasks or list(TASKS)
    bar = progress_bar(total=len(names) * len(archs), desc="quick suite", disable=not progress)
    for arch in archs:
        for name in names:
            config = quick_config(name, arch, str(Path(out) / arch / name), seed, data_dir)
            try:
                results.append(run_task(config))
            except HopeError as err:
                skipped.append({"task": name, "arch": arch, "reason": str(err)})
            bar.update(1)
    bar.close()
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "skipped.json").write_text(json.dumps(skipped, indent=2) + "\n")
    return results, skipped
