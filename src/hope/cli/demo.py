"""``hope demo``: train each architecture on the same tokens of the embedded corpus, then compare (streamed by
default, so Hope's CMS levels step at their periods; ``--no-stream`` reads independent windows).

Prints validation/test bits per byte and training tokens/s side by side, a generated sample from
each model, and writes one plot of the loss curves (``OUT/loss_curves.png``) and ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

from hope.cli.flags import HelpFormatter, add_config_flags, given_values
from hope.errors import HopeError
from hope.train.config import TrainConfig

PROMPT = "The state of the Union is"


@dataclass
class DemoOptions:
    """Options of ``hope demo``."""

    out: Path = Path("runs/demo")
    """Output directory (one run folder per architecture, results.json, loss_curves.png)."""
    archs: str = "transformer,hope"
    """Comma-separated architectures."""
    size: str = "tiny"
    """Size preset."""
    max_steps: int = 120
    """Training steps per architecture."""
    seq_len: int = 256
    """Training sequence length."""
    batch_size: int = 8
    """Sequences per step."""
    eval_windows: int = 32
    """Windows of seq-len tokens for each final validation / test evaluation."""
    stream: bool = True
    """Streaming training and evaluation (``hope train --stream``): each row reads whole documents window after
    window with the state carried, so Hope's CMS levels step at their periods (512 tokens and more) in training and
    in evaluation; with ``--no-stream`` every 256-token window starts afresh and they never step."""
    threads: int | None = None
    """CPU threads (default: chosen by hope.threads from the model's width; docs/threads_under_load.md)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="Train Hope and Transformer++ on the embedded corpus and compare them.",
                                 formatter_class=HelpFormatter)
    add_config_flags(demo, DemoOptions)
    demo.set_defaults(func=run_demo)


def read_metrics(path: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, train loss) and (step, validation loss) pairs of a run's metrics.jsonl."""
    train_curve, val_curve = [], []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            train_curve.append((record["step"], record["loss"]))
        if "val_loss" in record:
            val_curve.append((record["step"], record["val_loss"]))
    return train_curve, val_curve


def plot_curves(runs: dict[str, Path], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arch, run_dir in runs.items():
        train_curve, val_curve = read_metrics(run_dir / "metrics.jsonl")
        line, = ax.plot(*zip(*train_curve), label=f"{arch} (train)", alpha=0.8)
        if val_curve:
            ax.plot(*zip(*val_curve), "o--", color=line.get_color(), label=f"{arch} (validation)")
    ax.set_xlabel("step")
    ax.set_ylabel("next-token loss (nats)")
    ax.set_title("hope demo: same tokens, same steps")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def run_demo(args: argparse.Namespace) -> dict[str, dict]:
    options = DemoOptions(**given_values(DemoOptions, args))
    import torch  # after parsing: see hope.cli

    from hope.checkpoint import load_checkpoint
    from hope.data.corpus import load_corpus
    from hope.data.dataset import encode_corpus
    from hope.eval.perplexity import evaluate_lm, evaluate_lm_streamed
    from hope.generate import generate
    from hope.models import ARCHS
    from hope.train.lm import train

    archs = [a.strip() for a in options.archs.split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHS]
    if unknown:
        raise HopeError(f"unknown arch(s) {', '.join(unknown)}; expected among {', '.join(sorted(ARCHS))}")
    out = Path(options.out)
    results, runs = {}, {}
    for arch in archs:
        run_dir = out / arch
        config = TrainConfig(arch=arch, size=options.size, out=str(run_dir), max_steps=options.max_steps,
                             seq_len=options.seq_len, batch_size=options.batch_size,
                             eval_every=max(1, options.max_steps // 4), eval_windows=max(1, options.eval_windows // 2),
                             save_every=options.max_steps, threads=options.threads, stream=options.stream,
                             resume=(run_dir / "checkpoint").exists())
        load_average = os.getloadavg()[0]
        train(config)
        model, tokenizer, _ = load_checkpoint(run_dir / "checkpoint")
        dataset = encode_corpus(load_corpus(None), tokenizer)
        if options.stream:
            val_result, test_result = (evaluate_lm_streamed(model, dataset[split], seq_len=options.seq_len,
                                                            eot_id=tokenizer.eot_id, max_windows=options.eval_windows)
                                       for split in ("validation", "test"))
        else:
            val_result, test_result = (evaluate_lm(model, dataset[split], seq_len=options.seq_len,
                                                   max_windows=options.eval_windows) for split in ("validation", "test"))
        speed = [r["tokens_per_s"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                 if "tokens_per_s" in r]
        prompt = torch.tensor([tokenizer.encode(PROMPT)])
        sample = tokenizer.decode(generate(model, prompt, 60, temperature=0.8, top_k=50,
                                           generator=torch.Generator().manual_seed(0))[0].tolist())
        results[arch] = {"parameters": model.num_parameters(), "tokens_per_s": speed[-1],
                         "threads": torch.get_num_threads(), "load_average_at_start": load_average,
                         "val_bpb": val_result.bits_per_byte, "test_bpb": test_result.bits_per_byte,
                         "sample": sample}
        runs[arch] = run_dir
    plot_curves(runs, out / "loss_curves.png")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\n{'arch':<16}{'params':>10}{'train tok/s':>14}{'val bpb':>10}{'test bpb':>10}")
    for arch, r in results.items():
        print(f"{arch:<16}{r['parameters']:>10,}{r['tokens_per_s']:>14,.0f}{r['val_bpb']:>10.4f}{r['test_bpb']:>10.4f}")
    print("train tok/s: training tokens per second of each run (its last logged step), with "
          + ", ".join(f"{arch} {r['threads']} thread(s) at load average {r['load_average_at_start']:.1f}"
                      for arch, r in results.items())
          + ": other busy processes on the machine slow a run down.")
    for arch, r in results.items():
        print(f"\n[{arch}] {r['sample']}")
    print(f"\nloss curves: {out / 'loss_curves.png'}   results: {out / 'results.json'}")
    return results
