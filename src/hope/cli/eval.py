"""``hope eval`` and ``hope generate``: loss, perplexity and bits per byte of a checkpoint (or lm-eval tasks on it,
with the ``hf`` extra); sampling from it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hope.cli.flags import HelpFormatter, add_config_flags, given_values
from hope.errors import HopeError


@dataclass
class EvalOptions:
    """Options of ``hope eval``."""

    checkpoint: Path = field(metadata={"required": True, "metavar": "DIR"})
    """Checkpoint directory, or the run directory that holds it."""
    data: str | None = None
    """Text file, folder of .txt files, or folder of token shards from hope data prepare (default: the embedded
    corpus)."""
    split: str = "test"
    """Split to evaluate: train, validation or test."""
    seq_len: int | None = None
    """Window length (default: the training seq_len)."""
    max_windows: int | None = None
    """Evaluate at most this many windows (default: the whole split)."""
    stream: bool = False
    """Read every document whole, window after window, with the model's state carried and restarted at each
    document (docs/training.md, streaming); default: independent windows."""
    out: Path | None = None
    """JSON file to write (default: RUN/eval_SPLIT.json beside the checkpoint)."""
    device: str = "auto"
    """cpu, cuda or auto."""
    threads: int | None = None
    """CPU threads (default: chosen by hope.threads; docs/threads_under_load.md)."""
    lm_eval: str | None = field(default=None, metadata={"metavar": "TASK[,TASK...]"})
    """Run these lm-eval tasks (lm_eval.simple_evaluate, batch size 1) instead of the perplexity evaluation; needs the
    hf extra. JSON goes to --out or RUN/lm_eval.json."""
    lm_eval_include: Path | None = field(default=None, metadata={"metavar": "DIR"})
    """Folder of extra lm-eval task YAML files (lm-eval's include_path)."""
    lm_eval_limit: int | None = None
    """Evaluate at most this many documents per lm-eval task."""

    def __post_init__(self) -> None:
        if self.lm_eval is not None and not [task for task in self.lm_eval.split(",") if task.strip()]:
            raise HopeError("--lm-eval needs at least one task name (e.g. --lm-eval piqa,arc_easy)")
        if self.lm_eval_include is not None and not self.lm_eval_include.is_dir():
            raise HopeError(f"--lm-eval-include {self.lm_eval_include} is not a folder")
        if self.lm_eval_limit is not None and self.lm_eval_limit < 1:
            raise HopeError(f"--lm-eval-limit must be at least 1, got {self.lm_eval_limit}")
        if self.split not in ("train", "validation", "test"):
            raise HopeError(f"--split must be train, validation or test, got {self.split!r}")
        for name in ("seq_len", "max_windows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise HopeError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.out is not None and self.out.is_dir():
            raise HopeError(f"--out {self.out} is a folder; name the JSON file to write")


@dataclass
class GenerateOptions:
    """Options of ``hope generate``."""

    checkpoint: Path = field(metadata={"required": True, "metavar": "DIR"})
    """Checkpoint directory, or the run directory that holds it."""
    prompt: str = ""
    """Text to start from."""
    prompt_file: Path | None = None
    """Read the prompt from this UTF-8 text file instead."""
    max_new_tokens: int = 100
    """Tokens to generate."""
    temperature: float = 0.8
    """Sampling temperature (0: greedy)."""
    top_k: int | None = None
    """Sample among the k most likely tokens."""
    top_p: float | None = None
    """Nucleus sampling: the smallest set of tokens with this probability mass, in (0, 1]."""
    seed: int = 0
    """Sampling seed."""
    state: Path | None = field(default=None, metadata={"metavar": "FILE"})
    """Continue from the in-context state in FILE if it exists, and save the state there after."""
    device: str = "auto"
    """cpu, cuda or auto."""
    threads: int | None = None
    """CPU threads (default: chosen by hope.threads; docs/threads_under_load.md)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise HopeError(f"--max-new-tokens must be >= 0, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise HopeError(f"--temperature must be >= 0 (0: greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise HopeError(f"--top-k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise HopeError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.prompt_file is not None:
            if not self.prompt_file.is_file():
                raise HopeError(f"prompt file {self.prompt_file} does not exist")
            try:
                self.prompt = self.prompt_file.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise HopeError(f"prompt file {self.prompt_file} is not UTF-8 text ({err.reason} at byte "
                                f"{err.start})") from None
        if self.state is not None:
            folder = self.state.parent
            if self.state.is_dir():
                raise HopeError(f"--state {self.state} is a folder; name the state file in it (e.g. "
                                f"{self.state / 'state.safetensors'})")
            if not folder.is_dir():
                raise HopeError(f"--state {self.state}: the folder {folder} does not exist")
            if not os.access(folder, os.W_OK) or (self.state.exists() and not os.access(self.state, os.W_OK)):
                raise HopeError(f"--state {self.state} is not writable")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser("eval", help="Loss, perplexity and bits per byte of a checkpoint.",
                               formatter_class=HelpFormatter)
    add_config_flags(ev, EvalOptions)
    ev.set_defaults(func=run_eval)
    gen = subparsers.add_parser("generate", help="Sample text from a checkpoint.", formatter_class=HelpFormatter)
    add_config_flags(gen, GenerateOptions)
    gen.set_defaults(func=run_generate)


def _training_seq_len(checkpoint: Path) -> int:
    config_path = checkpoint.parent / "train_config.json"
    if config_path.is_file():
        return int(json.loads(config_path.read_text()).get("seq_len", 256))
    return 256


def run_eval(args: argparse.Namespace) -> dict[str, float]:
    options = EvalOptions(**given_values(EvalOptions, args))
    if options.lm_eval is not None:
        return run_lm_eval(options)
    from hope.checkpoint import checkpoint_dir, load_checkpoint  # after parsing: see hope.cli
    from hope.data.dataset import load_encoded
    from hope.eval.perplexity import evaluate_lm, evaluate_lm_streamed
    from hope.runtime import resolve_device
    from hope.threads import apply_threads, plan_threads

    device = resolve_device(options.device)
    checkpoint = checkpoint_dir(options.checkpoint)
    model, tokenizer, _ = load_checkpoint(checkpoint, device=device)
    apply_threads(plan_threads(options.threads, d_model=model.config.d_model, device=device.type))
    dataset = load_encoded(options.data, tokenizer)
    seq_len = options.seq_len or _training_seq_len(checkpoint)
    if options.stream:
        result = evaluate_lm_streamed(model, dataset[options.split], seq_len=seq_len, eot_id=tokenizer.eot_id,
                                      max_windows=options.max_windows, device=device)
    else:
        result = evaluate_lm(model, dataset[options.split], seq_len=seq_len, max_windows=options.max_windows,
                             device=device)
    report = {"checkpoint": str(checkpoint), "data": dataset.source, "split": options.split, "seq_len": seq_len,
              "stream": options.stream, **result.to_dict()}
    out = options.out or checkpoint.parent / f"eval_{options.split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"{'split':<12}{'tokens':>10}{'loss':>10}{'ppl':>12}{'bpb':>10}")
    print(f"{options.split:<12}{result.tokens:>10}{result.loss:>10.4f}{result.perplexity:>12.2f}"
          f"{result.bits_per_byte:>10.4f}")
    print(f"written to {out}")
    return report


def run_lm_eval(options: EvalOptions) -> dict:
    """``hope eval --lm-eval TASKS``: lm-eval's scores of the checkpoint (``hope.hf.lm_eval``)."""
    from hope.cli.export import require_hf

    require_hf("hope eval --lm-eval")
    from hope.checkpoint import checkpoint_dir, load_checkpoint  # after parsing: see hope.cli
    from hope.hf.lm_eval import run_lm_eval as evaluate_tasks
    from hope.runtime import resolve_device
    from hope.threads import apply_threads, plan_threads

    device = resolve_device(options.device)
    checkpoint = checkpoint_dir(options.checkpoint)
    model, tokenizer, _ = load_checkpoint(checkpoint, device=device)
    apply_threads(plan_threads(options.threads, d_model=model.config.d_model, device=device.type))
    tasks = [task.strip() for task in options.lm_eval.split(",") if task.strip()]
    result = evaluate_tasks(model, tokenizer, tasks, options.lm_eval_include, options.lm_eval_limit)
    report = {"checkpoint": str(checkpoint), "tasks": tasks, "limit": options.lm_eval_limit,
              "results": result["results"]}
    out = options.out or checkpoint.parent / "lm_eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    for task, metrics in result["results"].items():
        shown = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()
                          if isinstance(value, float) and "stderr" not in name)
        print(f"{task:<24}{shown}")
    print(f"written to {out}")
    return report


def _model_fingerprint(checkpoint: Path) -> str:
    """Identifies the weights a state was learned with (the checksum of model.safetensors)."""
    return json.loads((checkpoint / "manifest.json").read_text())["model.safetensors"]


def run_generate(args: argparse.Namespace) -> str:
    options = GenerateOptions(**given_values(GenerateOptions, args))
    import torch  # after parsing: see hope.cli

    from hope.checkpoint import checkpoint_dir, load_checkpoint
    from hope.generate import stream
    from hope.models import ModelState
    from hope.runtime import resolve_device
    from hope.threads import apply_threads, plan_threads

    device = resolve_device(options.device)
    checkpoint = checkpoint_dir(options.checkpoint)
    model, tokenizer, _ = load_checkpoint(checkpoint, device=device)
    apply_threads(plan_threads(options.threads, d_model=model.config.d_model, device=device.type))
    fingerprint = _model_fingerprint(checkpoint)
    state = None
    if options.state is not None and options.state.exists():
        if ModelState.read_metadata(options.state).get("model") != fingerprint:
            raise HopeError(f"state file {options.state} was written by another model than {checkpoint}")
        state, _ = ModelState.load(options.state, model, device=device)
    prompt = options.prompt
    ids = tokenizer.encode(prompt) if prompt else []
    if not ids:
        ids = [tokenizer.eot_id] if state is None else []
    if not ids:
        raise HopeError("nothing to read: give --prompt (a saved state needs at least one new token to continue)")
    generator = torch.Generator(device=device).manual_seed(options.seed)
    prompt_ids = torch.tensor([ids], device=device)
    sys.stdout.write(prompt)
    new_ids: list[int] = []
    last_state = state
    for next_ids, last_state in stream(model, prompt_ids, options.max_new_tokens, state=state,
                                       temperature=options.temperature, top_k=options.top_k, top_p=options.top_p,
                                       generator=generator):
        new_ids.append(int(next_ids[0]))
        text = tokenizer.decode(new_ids)
        previous = tokenizer.decode(new_ids[:-1])
        sys.stdout.write(text[len(previous):])
        sys.stdout.flush()
    sys.stdout.write("\n")
    if options.state is not None:
        with torch.no_grad():
            if new_ids:
                last_state = model(torch.tensor([new_ids[-1:]], device=device), state=last_state).state
            elif last_state is None or last_state.position == (state.position if state else 0):
                last_state = model(prompt_ids, state=state).state
        last_state.save(options.state, metadata={"model": fingerprint})
        print(f"state after {last_state.position} tokens saved to {options.state}", file=sys.stderr)
    return tokenizer.decode(new_ids)
