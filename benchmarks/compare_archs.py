"""Train every architecture at equal parameters on the same tokens, then compare bits per byte.

Each architecture is trained by ``hope.train.lm.train`` with one shared ``TrainConfig`` (same seed, so the
same batches at every step: the trainer's batches are a function of ``(seed, step)``; same optimizer and
schedule) for ``--tokens`` training tokens, then evaluated on the same validation and test windows
(``hope.eval.evaluate_lm``, the first ``--eval-windows`` windows of ``seq_len`` tokens of each split).
``--stream`` trains every model on whole documents with its state carried from window to window
(``hope train --stream``; for Hope with periods the window divides, window-aligned CMS steps) and adds the
bits per byte of a streamed evaluation (``hope.eval.evaluate_lm_streamed``: each split's documents read whole,
``--eval-windows`` windows in all) to the windowed ones.

Runs live in ``OUT/<arch>/`` (checkpoint, metrics.jsonl, result.json). A run whose ``result.json``
matches the requested settings is skipped; an interrupted run resumes from its checkpoint; so the
script can be re-run until every architecture is done. ``--jobs 2`` trains two architectures at a time
(one process each, 1 thread each). At the end it writes ``DOCS/compare_archs.json``,
``DOCS/compare_archs.md`` (the table, also printed) and ``DOCS/loss_curves.png``.

    python benchmarks/compare_archs.py --tokens 400000 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import torch

from hope.checkpoint import load_checkpoint
from hope.cli.flags import key_value
from hope.data.corpus import load_corpus
from hope.data.dataset import encode_corpus
from hope.errors import HopeError
from hope.eval import evaluate_lm, evaluate_lm_streamed
from hope.models import ARCHS, build
from hope.train.config import TrainConfig
from hope.train.lm import train

ROOT = Path(__file__).resolve().parent.parent
ORDER = ("hope", "hope-attention", "titans", "bdh", "gated-deltanet", "transformer")
"""Default order: slowest first, so that with ``--jobs 2`` the long ``hope`` run overlaps all the others."""


def train_config(args: argparse.Namespace, arch: str) -> TrainConfig:
    """The shared training recipe; only ``arch`` and ``out`` differ between architectures."""
    tokens_per_step = args.batch_size * args.seq_len
    steps = max(1, args.tokens // tokens_per_step)
    return TrainConfig(
        arch=arch, size=args.size, out=str(Path(args.out) / arch), vocab_size=args.vocab_size, seq_len=args.seq_len,
        batch_size=args.batch_size, max_steps=steps, lr=args.lr, warmup_steps=max(1, round(steps * args.warmup)),
        eval_every=max(1, steps // args.val_points), eval_windows=args.val_windows, save_every=args.save_every,
        log_every=max(1, min(10, steps // 50)), seed=args.seed, progress=False, device="cpu",
        resume=(Path(args.out) / arch / "checkpoint").exists(), model=dict(args.model or []), stream=args.stream,
    )


def settings(args: argparse.Namespace, arch: str) -> dict:
    """What a finished run must match to be reused."""
    config = train_config(args, arch)
    return {"arch": arch, "size": args.size, "vocab_size": args.vocab_size, "seq_len": args.seq_len, "batch_size": args.batch_size,
            "max_steps": config.max_steps, "lr": args.lr, "warmup_steps": config.warmup_steps, "seed": args.seed,
            "eval_windows": args.eval_windows, **({"model": dict(args.model)} if args.model else {}),
            **({"stream": True} if args.stream else {})}


def is_complete(args: argparse.Namespace, arch: str) -> bool:
    path = Path(args.out) / arch / "result.json"
    return path.is_file() and json.loads(path.read_text()).get("settings") == settings(args, arch)


def train_speed(metrics: Path) -> float:
    """Training tokens/s of the run: the trainer's own figure (training steps only) at its last log line.
    After a resume it covers the resumed part only."""
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    speeds = [r["tokens_per_s"] for r in map(json.loads, lines) if "tokens_per_s" in r]
    return speeds[-1] if speeds else float("nan")


def run_arch(args: argparse.Namespace, arch: str) -> dict:
    """Train (or resume) one architecture, evaluate it and write ``OUT/arch/result.json``."""
    torch.set_num_threads(1)
    run_dir = Path(args.out) / arch
    config = train_config(args, arch)
    previous = run_dir / "train_config.json"
    if config.resume and previous.is_file():
        saved = json.loads(previous.read_text())
        changed = [k for k in ("max_steps", "lr", "warmup_steps", "batch_size", "seq_len", "seed") if saved[k] != getattr(config, k)]
        if changed:
            raise SystemExit(f"{run_dir} holds a run with other settings ({', '.join(changed)}); choose another --out")
    load_before = os.getloadavg()[0]
    started = time.time()
    try:
        train(config)
    except HopeError as err:
        result = {"settings": settings(args, arch), "diverged": str(err),
                  "parameters": build(arch, args.size, vocab_size=args.vocab_size,
                                      **dict(args.model or [])).num_parameters(),
                  "train_tokens_per_s": train_speed(run_dir / "metrics.jsonl")}
        (run_dir / "result.json").write_text(json.dumps(result, indent=2))
        print(f"[{arch}] failed: {err}", flush=True)
        return result
    train_wall = time.time() - started
    model, tokenizer, _ = load_checkpoint(run_dir / "checkpoint")
    dataset = encode_corpus(load_corpus(None), tokenizer)
    started = time.time()
    scores = {split: evaluate_lm(model, dataset[split], seq_len=args.seq_len, max_windows=args.eval_windows)
              for split in ("validation", "test")}
    if args.stream:
        scores.update({f"{split}_streamed": evaluate_lm_streamed(
            model, dataset[split], seq_len=args.seq_len, eot_id=tokenizer.eot_id, max_windows=args.eval_windows)
            for split in ("validation", "test")})
    result = {
        "settings": settings(args, arch),
        "parameters": model.num_parameters(),
        "train_tokens": config.max_steps * config.batch_size * config.seq_len,
        "train_tokens_per_s": train_speed(run_dir / "metrics.jsonl"),
        "train_wall_s": train_wall,
        "eval_wall_s": time.time() - started,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        **{f"{split.replace('validation', 'val')}_{key}": value
           for split, score in scores.items() for key, value in score.to_dict().items()},
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    print(f"[{arch}] done: val bpb {result['val_bits_per_byte']:.4f}, test bpb {result['test_bits_per_byte']:.4f}, "
          f"{result['train_tokens_per_s']:,.0f} tok/s", flush=True)
    return result


def read_curve(metrics: Path) -> tuple[list[int], list[float], list[int], list[float]]:
    steps, losses, val_steps, val_losses = [], [], [], []
    for record in map(json.loads, metrics.read_text().splitlines()):
        if "loss" in record:
            steps.append(record["step"])
            losses.append(record["loss"])
        if "val_loss" in record:
            val_steps.append(record["step"])
            val_losses.append(record["val_loss"])
    return steps, losses, val_steps, val_losses


def plot(out: Path, archs: list[str], tokens_per_step: int, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for arch in archs:
        steps, losses, val_steps, val_losses = read_curve(out / arch / "metrics.jsonl")
        line, = ax.plot([s * tokens_per_step for s in steps], losses, label=f"{arch} (train)", alpha=0.85)
        ax.plot([s * tokens_per_step for s in val_steps], val_losses, "o--", color=line.get_color(), markersize=4,
                label=f"{arch} (validation)")
    ax.set_xlabel("training tokens (same batches for every arch)")
    ax.set_ylabel("next-token loss (nats)")
    ax.set_title("tiny preset, equal parameters: training and validation loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def table(rows: dict[str, dict]) -> str:
    streamed = any("val_streamed_bits_per_byte" in r for r in rows.values())
    lines = ["| arch | params | train tokens | train tok/s | val bpb | test bpb | val loss | test loss |"
             + (" streamed val bpb | streamed test bpb |" if streamed else ""),
             "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if streamed else "")]
    base = rows.get("transformer") if "diverged" not in rows.get("transformer", {}) else None
    for arch, r in rows.items():
        if "diverged" in r:
            lines.append(f"| {arch} | {r['parameters']:,} | - | {r['train_tokens_per_s']:,.0f} | "
                         f"diverged: {r['diverged']} | - | - | - |")
            continue
        ratio = f" ({r['val_bits_per_byte'] / base['val_bits_per_byte']:.3f}x)" if base else ""
        lines.append(f"| {arch} | {r['parameters']:,} | {r['train_tokens']:,} | {r['train_tokens_per_s']:,.0f} | "
                     f"{r['val_bits_per_byte']:.4f}{ratio} | {r['test_bits_per_byte']:.4f} | "
                     f"{r['val_loss']:.4f} | {r['test_loss']:.4f} |"
                     + (f" {r['val_streamed_bits_per_byte']:.4f} | {r['test_streamed_bits_per_byte']:.4f} |"
                        if streamed else ""))
    return "\n".join(lines)


def report(args: argparse.Namespace, archs: list[str]) -> None:
    out, docs = Path(args.out), Path(args.docs)
    rows = {a: json.loads((out / a / "result.json").read_text()) for a in archs if is_complete(args, a)}
    if not rows:
        print("no complete run to report")
        return
    docs.mkdir(parents=True, exist_ok=True)
    plot(out, list(rows), args.batch_size * args.seq_len, docs / "loss_curves.png")
    text = table(rows)
    (docs / "compare_archs.json").write_text(json.dumps({
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "torch": torch.__version__,
        "python": platform.python_version(), "cpu_count": os.cpu_count(), "threads_per_process": 1,
        "jobs": args.jobs, "results": rows}, indent=2))
    (docs / "compare_archs.md").write_text(
        f"Equal parameters (`{args.size}`), same {train_config(args, 'transformer').max_steps * args.batch_size * args.seq_len:,} training tokens; "
        f"bits per byte over the first {args.eval_windows} windows of {args.seq_len} tokens of each split; "
        f"ratio: val bpb / Transformer++'s.\n\n{text}\n")
    print(text)
    missing = [a for a in archs if a not in rows]
    if missing:
        print(f"not complete yet: {', '.join(missing)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, required=True, help="Training tokens per architecture.")
    parser.add_argument("--archs", default=",".join(ORDER), help="Comma-separated architectures.")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary (the trainer's default).")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=float, default=0.1, help="Warmup steps as a fraction of the steps.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-points", type=int, default=4, help="Periodic validations during training.")
    parser.add_argument("--val-windows", type=int, default=16, help="Windows of each periodic validation.")
    parser.add_argument("--eval-windows", type=int, default=96, help="Windows of the final validation and test.")
    parser.add_argument("--save-every", type=int, default=25, help="Checkpoint every this many steps.")
    parser.add_argument("--stream", action="store_true",
                        help="Streamed training (state carried across windows) and a streamed evaluation too.")
    parser.add_argument("--jobs", type=int, default=1, help="Architectures trained at once (1 thread each).")
    parser.add_argument("--model", action="append", type=key_value, metavar="KEY=VALUE",
                        help="Model config override for every architecture (e.g. memory_read=running). Repeatable.")
    parser.add_argument("--out", default=str(ROOT / "runs" / "compare"))
    parser.add_argument("--docs", default=str(ROOT / "docs" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHS]
    if unknown:
        parser.error(f"unknown arch(s) {', '.join(unknown)}; expected among {', '.join(ARCHS)}")
    params = {a: build(a, args.size, vocab_size=args.vocab_size, **dict(args.model or [])).num_parameters()
              for a in archs}
    smallest, largest = min(params.values()), max(params.values())
    print("parameters: " + ", ".join(f"{a} {n:,}" for a, n in params.items())
          + f" (largest / smallest = {largest / smallest:.4f})")
    if largest > 1.01 * smallest:
        print("warning: parameter counts differ by more than 1%")
    todo = [a for a in archs if not is_complete(args, a)]
    for arch in archs:
        print(f"{arch}: {'to run' if arch in todo else 'complete, skipped'}")
    if args.jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(run_arch, args, a): a for a in todo}
            for future in as_completed(futures):
                future.result()
    else:
        for arch in todo:
            run_arch(args, arch)
    report(args, archs)


if __name__ == "__main__":
    main()
