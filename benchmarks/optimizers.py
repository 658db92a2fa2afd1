"""Optimizers on the tiny Transformer++ LM: loss curves, validation bits per byte, step-time overhead.

Every optimizer trains its own copy of the same initial model (same seed) on the same batches
(``hope.data.batch_at``), with the trainer's schedule (linear warmup, cosine decay to 10%) and
gradient clipping at 1.0. The runs are **interleaved**: at each step every optimizer takes its step
before the next step begins, so load from other processes on the machine falls on all of them alike
and the time ratios against AdamW come from one run. Times are medians over steps (1 thread).

    python benchmarks/optimizers.py                      # ~30 min on one CPU core
    python benchmarks/optimizers.py --steps 40 --runs adamw,m3 --no-write   # a quick look

Writes ``docs/optimizers.json``, ``docs/optimizers.png`` and the results table inside
``docs/optimizers.md`` (between the ``benchmark`` markers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hope.data.dataset import load_dataset
from hope.data.dataset import batch_at
from hope.eval import evaluate_lm
from hope.models import build
from hope.optim import build_optimizer
from hope.train.config import TrainConfig
from hope.train.loop import lr_schedule

RUNS: dict[str, tuple[str, float, dict]] = {
    "adamw": ("adamw", 3e-3, {}),
    "muon": ("muon", 0.012, {}),
    "m3": ("m3", 0.012, {}),
    "m3-sum": ("m3", 0.012, {"accumulate": "sum"}),
    "dgd": ("dgd", 0.5, {}),
    "dgd-unit": ("dgd", 2.0, {"unit_inputs": True}),
    "sgd": ("dgd", 2.0, {"decay_scale": 0.0}),
    "dgd-raw": ("dgd", 0.05, {"proximal": False}),
    "delta_momentum": ("delta_momentum", 0.2, {}),
    "deep_momentum": ("deep_momentum", 1.2, {}),
}
"""name -> (optimizer, peak lr, options): each lr is the best of a 100-step sweep (``--sweep``,
lr x 4 apart; docs/optimizers.md). Muon and M3 use build_optimizer's AdamW-matched update scales,
and the lr applies to their AdamW groups too. ``sgd`` is DGD without its decay term."""

DOC_START, DOC_END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"


@dataclass
class Run:
    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    losses: list[float] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    optimizer_times: list[float] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)


def make_runs(names: list[str], vocab: int, args: argparse.Namespace, lr_override: float | None = None) -> list[Run]:
    runs = []
    for name in names:
        optimizer_name, lr, options = RUNS[name]
        torch.manual_seed(args.seed)
        model = build("transformer", "tiny", vocab_size=vocab)
        optimizer = build_optimizer(optimizer_name, model, lr=lr_override or lr, weight_decay=0.1, **options)
        schedule = lr_schedule(args.warmup, args.steps, TrainConfig.min_lr_ratio)
        runs.append(Run(name, model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)))
    return runs


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> None:
    started = time.perf_counter()
    loss = run.model(x, targets=y).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
    before_step = time.perf_counter()
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    ended = time.perf_counter()
    run.losses.append(loss.item())
    run.step_times.append(ended - started)
    run.optimizer_times.append(ended - before_step)


def train(runs: list[Run], dataset, args: argparse.Namespace) -> None:
    tokens = dataset["train"].tokens
    for step in range(args.steps):
        x, y = batch_at(tokens, step, batch_size=args.batch_size, seq_len=args.seq_len, seed=args.seed)
        for run in runs:
            train_step(run, x, y)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            for run in runs:
                bpb = evaluate_lm(run.model, dataset["validation"], seq_len=args.seq_len,
                                  max_windows=args.eval_windows).bits_per_byte
                run.validation.append((step + 1, bpb))
            print(f"step {step + 1:4d}  " + "  ".join(f"{r.name} {r.losses[-1]:.3f}/{r.validation[-1][1]:.3f}"
                                                    for r in runs), flush=True)


def summarise(runs: list[Run], args: argparse.Namespace, warm: int) -> dict:
    base = next((r for r in runs if r.name == "adamw"), runs[0])
    base_step = statistics.median(base.step_times[warm:])
    base_opt = statistics.median(base.optimizer_times[warm:])
    muon = next((r for r in runs if r.name == "muon"), None)
    muon_step = statistics.median(muon.step_times[warm:]) if muon else None
    results = {}
    for run in runs:
        step, opt = statistics.median(run.step_times[warm:]), statistics.median(run.optimizer_times[warm:])
        optimizer_name, lr, options = RUNS[run.name]
        results[run.name] = {
            "optimizer": optimizer_name, "lr": lr, "options": options,
            "final_val_bpb": run.validation[-1][1], "final_train_loss": statistics.mean(run.losses[-10:]),
            "step_seconds": step, "optimizer_step_seconds": opt,
            "step_time_vs_adamw": step / base_step, "optimizer_time_vs_adamw": opt / base_opt,
            "step_time_vs_muon": step / muon_step if muon_step else None,
            "train_loss": run.losses, "val_bpb": run.validation,
        }
    return results


def plot(results: dict, path: Path, window: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in results.items():
        losses = torch.tensor(r["train_loss"])
        smooth = losses.unfold(0, window, 1).mean(-1) if len(losses) >= window else losses
        ax.plot(range(len(losses) - len(smooth) + 1, len(losses) + 1), smooth, label=name)
        steps, bpb = zip(*r["val_bpb"])
        ax_val.plot(steps, bpb, "o-", ms=3, label=name)
    ax.set(xlabel="step", ylabel=f"train loss (mean of {window})", title="tiny Transformer++, same tokens")
    ax_val.set(xlabel="step", ylabel="validation bits per byte", title="validation")
    ax.legend(fontsize=8)
    ax_val.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(results: dict) -> str:
    rows = ["| run | optimizer | peak lr | final val bpb | final train loss | step time vs AdamW | step time vs Muon "
            "| optimizer step vs AdamW | step (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        options = "".join(f", {k}={v}" for k, v in r["options"].items())
        vs_muon = "" if r["step_time_vs_muon"] is None else f"{r['step_time_vs_muon']:.2f}x"
        rows.append(f"| {name} | {r['optimizer']}{options} | {r['lr']:g} | {r['final_val_bpb']:.3f} | "
                    f"{r['final_train_loss']:.3f} | {r['step_time_vs_adamw']:.2f}x | {vs_muon} | "
                    f"{r['optimizer_time_vs_adamw']:.1f}x | {r['step_seconds']:.3f} |")
    return "\n".join(rows)


def write_doc(doc: Path, text: str) -> None:
    content = doc.read_text() if doc.exists() else f"{DOC_START}\n{DOC_END}\n"
    if DOC_START not in content:
        content += f"\n{DOC_START}\n{DOC_END}\n"
    head, rest = content.split(DOC_START, 1)
    tail = rest.split(DOC_END, 1)[1]
    doc.write_text(f"{head}{DOC_START}\n{text}\n{DOC_END}{tail}")


def sweep(names: list[str], dataset, args: argparse.Namespace) -> None:
    """Final validation bpb of each run at its default lr times each of ``args.factors``."""
    factors = [float(f) for f in args.factors.split(",")]
    for name in names:
        default = RUNS[name][1]
        for factor in factors:
            run = make_runs([name], dataset.tokenizer.vocab_size, args, default * factor)[0]
            train([run], dataset, args)
            print(f"sweep {name} lr {default * factor:g}: val bpb {run.validation[-1][1]:.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="adamw,muon,m3,m3-sum,dgd,dgd-unit,sgd,delta_momentum,deep_momentum",
                        help=f"comma-separated, from {', '.join(RUNS)}")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--eval-windows", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", action="store_true", help="lr sweep of each run instead of the comparison")
    parser.add_argument("--factors", default="0.25,1,4", help="lr multipliers of --sweep")
    parser.add_argument("--no-write", action="store_true", help="print only; write nothing into docs/")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.runs.split(",")
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown run(s) {unknown}; expected names from {list(RUNS)}")
    dataset = load_dataset(None, "bpe", 4096)
    if args.sweep:
        sweep(names, dataset, args)
        return
    runs = make_runs(names, dataset.tokenizer.vocab_size, args)
    started = time.time()
    train(runs, dataset, args)
    results = summarise(runs, args, warm=min(10, args.steps // 2))
    print(table(results))
    if args.no_write:
        return
    config = {k: v for k, v in vars(args).items() if k not in ("sweep", "no_write")}
    config.update(model="transformer/tiny", parameters=runs[0].model.num_parameters(), vocab=dataset.tokenizer.vocab_size,
                  corpus=dataset.source, torch=torch.__version__, threads=torch.get_num_threads(),
                  wall_minutes=(time.time() - started) / 60)
    Path("docs").mkdir(exist_ok=True)
    Path("docs/optimizers.json").write_text(json.dumps({"config": config, "results": results}, indent=1) + "\n")
    plot(results, Path("docs/optimizers.png"))
    write_doc(Path("docs/optimizers.md"), f"Command: `python benchmarks/optimizers.py --runs {args.runs} --steps {args.steps}` "
              f"({config['parameters']:,} parameters, batch {args.batch_size} x {args.seq_len} tokens, "
              f"{config['wall_minutes']:.0f} min wall).\n\n{table(results)}\n\n![loss curves](optimizers.png)")
    print("wrote docs/optimizers.json, docs/optimizers.png, docs/optimizers.md")


if __name__ == "__main__":
    main()
