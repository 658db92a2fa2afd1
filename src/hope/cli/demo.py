"""``hope demo``: train each architecture on the same tokens of the embedded corpus, then compare.

Prints validation/test bits per byte and training tokens/s side by side, a generated sample from
each model, and writes one plot of the loss curves (``OUT/loss_curves.png``) and ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from hope.cli.flags import HelpFormatter
from hope.errors import HopeError
from hope.train.config import TrainConfig

PROMPT = "The state of the Union is"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="Train Hope and Transformer++ on the embedded corpus and compare them.",
                                 formatter_class=HelpFormatter)
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="Output directory.")
    demo.add_argument("--archs", default="transformer,hope", help="Comma-separated architectures.")
    demo.add_argument("--size", default="tiny", help="Size preset.")
    demo.add_argument("--max-steps", type=int, default=120, help="Training steps per architecture.")
    demo.add_argument("--seq-len", type=int, default=256, help="Training sequence length.")
    demo.add_argument("--batch-size", type=int, default=8, help="Sequences per step.")
    demo.add_argument("--eval-windows", type=int, default=32,
                      help="Windows of seq-len tokens for each final validation / test evaluation.")
    demo.add_argument("--threads", type=int, help="CPU threads (default: chosen by hope.threads from the model's "
                                                  "width; docs/threads_under_load.md).")
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
    import torch  # after parsing: see hope.cli

    from hope.checkpoint import load_checkpoint
    from hope.data.corpus import load_corpus
    from hope.data.dataset import encode_corpus
    from hope.eval.perplexity import evaluate_lm
    from hope.generate import generate
    from hope.models import ARCHS
    from hope.train.lm import train

    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHS]
    if unknown:
        raise HopeError(f"unknown arch(s) {', '.join(unknown)}; expected among {', '.join(sorted(ARCHS))}")
    out = Path(args.out)
    results, runs = {}, {}
    for arch in archs:
        run_dir = out / arch
        config = TrainConfig(arch=arch, size=args.size, out=str(run_dir), max_steps=args.max_steps,
                             seq_len=args.seq_len, batch_size=args.batch_size,
                             eval_every=max(1, args.max_steps // 4), eval_windows=max(1, args.eval_windows // 2),
                             save_every=args.max_steps, threads=args.threads,
                             resume=(run_dir / "checkpoint").exists())
        load_average = os.getloadavg()[0]
        train(config)
        model, tokenizer, _ = load_checkpoint(run_dir / "checkpoint")
        dataset = encode_corpus(load_corpus(None), tokenizer)
        val_result = evaluate_lm(model, dataset["validation"], seq_len=args.seq_len, max_windows=args.eval_windows)
        test_result = evaluate_lm(model, dataset["test"], seq_len=args.seq_len, max_windows=args.eval_windows)
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
