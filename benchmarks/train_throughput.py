"""Training throughput (tokens/s) of every architecture at the ``tiny`` and ``small`` presets, in one run.

One optimizer step = forward + backward + AdamW on a batch of ``--batch`` x ``--seq-len`` random tokens (16 x 256 by
default, the shape of issue #15's target). Each configuration takes one untimed warm-up step, then timed steps until
``--budget`` seconds are spent (at least ``--min-steps``); the median step time is reported, with the ratio to
Transformer++ measured in the same run. Writes ``docs/train_throughput.json`` and ``docs/train_throughput.md``.

    python benchmarks/train_throughput.py [--archs transformer,hope,...] [--sizes tiny,small] [--budget 20]
        [--modes windows,streaming] [--threads 1]

Modes: ``windows`` trains on independent windows (every step starts from the initial state); ``streaming`` carries
each row's state from one step into the next over consecutive windows of one long stream, as ``hope train --stream``
does (``LanguageModel.window_state``: the state carried across the cut, attention restarting at every window;
``hope.train.stream.next_window_state``: window-aligned CMS steps where the window divides every period, then the
truncation); here only its cost. An arch
name ending in ``+compile`` runs that arch with ``hope.compiling`` on (its compiling steps are warm-up).

Budget: about ``len(archs) x len(sizes) x len(modes) x len(threads) x (budget + one warm-up step)`` seconds; the
defaults (6 archs, 2 sizes, windows, 1 thread, 20 s) take about 5-10 minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from hope.compiling import compiling
from hope.models import build
from hope.optim import build_optimizer
from hope.train.stream import next_window_state

DOCS = Path(__file__).resolve().parent.parent / "docs"
VOCAB = 4096
ARCHS = "transformer,hope,hope-attention,titans,gated-deltanet,bdh"
MODES = ("windows", "streaming")
COMPILED = "+compile"
BASELINE = "transformer"
TARGET = ("hope", 0.5)
"""Issue #15: Hope's training tokens/s at least half of Transformer++'s, at ``tiny`` and ``small``."""


def step_times(name: str, size: str, threads: int, mode: str, batch: int, seq_len: int, budget: float,
               min_steps: int) -> list[float]:
    """Seconds of each timed optimizer step (after one untimed warm-up step)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with compiling(name.endswith(COMPILED)):
        model = build(name.removesuffix(COMPILED), size, vocab_size=VOCAB)
        optimizer = build_optimizer("adamw", model, lr=1e-3)
        stream = torch.randint(0, VOCAB, (batch, (min_steps + 64) * seq_len + 1),
                               generator=torch.Generator().manual_seed(1))
        aligned = mode == "streaming" and model.window_aligned(seq_len)
        state, times, step = None, [], 0
        while len(times) < max(min_steps, 1) + 1 or sum(times[1:]) < budget:
            start_at = (step * seq_len) % (stream.shape[1] - seq_len - 1) if mode == "streaming" else 0
            window = stream[:, start_at : start_at + seq_len + 1]
            started = time.perf_counter()
            if mode == "streaming":  # as hope.train.stream: carried across the cut, no row restarting
                state = model.window_state(state, torch.zeros(batch, dtype=torch.bool), aligned)
            out = model(window[:, :-1], state=state, targets=window[:, 1:], **({"window": True} if aligned else {}))
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if mode == "streaming":
                state = next_window_state(model, out.state, batch * seq_len)
            times.append(time.perf_counter() - started)
            step += 1
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=ARCHS, help="Comma-separated architectures (Transformer++ first: the ratios "
                        "are taken against it).")
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--modes", default="windows", help=f"Comma-separated, of {MODES}.")
    parser.add_argument("--threads", default="1", help="Comma-separated thread counts.")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--budget", type=float, default=20.0, help="Seconds of timed steps per configuration.")
    parser.add_argument("--min-steps", type=int, default=2, help="Timed steps per configuration at least.")
    parser.add_argument("--skip", default="", help="Comma-separated ARCH@SIZE rows to leave out (e.g. bdh@small, "
                        "whose batch of 16 x 256 needs more than 22 GB).")
    parser.add_argument("--out", type=Path, default=DOCS / "train_throughput",
                        help="Write OUT.json and OUT.md (default: docs/train_throughput).")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if any(mode not in MODES for mode in modes):
        parser.error(f"--modes must be drawn from {MODES}, got {args.modes!r}")
    skipped = {tuple(item.split("@")) for item in args.skip.split(",") if item}
    if any(len(item) != 2 for item in skipped):
        parser.error(f"--skip takes ARCH@SIZE items, got {args.skip!r}")
    meta = {"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "batch": args.batch, "seq_len": args.seq_len, "budget_s": args.budget, "min_steps": args.min_steps,
            "skipped": sorted("@".join(item) for item in skipped), "load_average_start": os.getloadavg()}
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for size in args.sizes.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            for mode in modes:
                for arch in args.archs.split(","):
                    if (arch, size) in skipped:
                        continue
                    times = step_times(arch, size, threads, mode, args.batch, args.seq_len, args.budget,
                                       args.min_steps)
                    median = statistics.median(times)
                    row = {"arch": arch, "size": size, "threads": threads, "mode": mode,
                           "parameters": build(arch.removesuffix(COMPILED), size, vocab_size=VOCAB).num_parameters(),
                           "timed_steps": len(times), "median_step_s": median,
                           "tokens_per_s": args.batch * args.seq_len / median}
                    base = next((r for r in rows if (r["arch"], r["size"], r["threads"], r["mode"]) ==
                                 (BASELINE, size, threads, mode)), None)
                    row["vs_transformer"] = row["tokens_per_s"] / base["tokens_per_s"] if base else None
                    rows.append(row)
                    ratio = f" ({row['vs_transformer']:.2f}x)" if base and arch != BASELINE else ""
                    print(f"{arch:<16}{size:<7}{threads} thr {mode:<10}{row['parameters']:>12,} params "
                          f"{row['tokens_per_s']:>9,.0f} tok/s{ratio}  ({len(times)} steps)", flush=True)
    meta["load_average_end"], meta["wall_s"] = os.getloadavg(), time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    args.out.with_suffix(".md").write_text(report(meta, rows, " ".join(["python benchmarks/train_throughput.py",
                                                                          *sys.argv[1:]])))
    print(f"wrote {args.out}.json and {args.out}.md ({meta['wall_s']:.0f} s)")


def report(meta: dict[str, Any], rows: list[dict[str, Any]], command: str) -> str:
    lines = ["# Training throughput", "",
             f"`{command}`: forward + backward + AdamW, batch {meta['batch']} x {meta['seq_len']} random tokens "
             f"(vocabulary {VOCAB}), median step over at least {meta['min_steps']} timed steps and "
             f"{meta['budget_s']:g} s per row; torch {meta['torch']}, {meta['cpus']} CPUs (load average "
             f"{meta['load_average_start'][0]:.1f} at the start, {meta['load_average_end'][0]:.1f} at the end); "
             f"{meta['wall_s'] / 60:.0f} min in all. Ratios are to Transformer++ in the same run."
             + (f" Left out: {', '.join(meta['skipped'])}." if meta.get("skipped") else ""), "",
             "| arch | size | threads | mode | params | tok/s | vs Transformer++ |",
             "|---|---|---:|---|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['vs_transformer']:.2f}x" if r["vs_transformer"] is not None else ""
        lines.append(f"| {r['arch']} | {r['size']} | {r['threads']} | {r['mode']} | {r['parameters']:,} | "
                     f"{r['tokens_per_s']:,.0f} | {ratio} |")
    arch, goal = TARGET
    lines += ["", f"Target (issue #15): {arch} >= {goal}x Transformer++ at `tiny` and `small`.", ""]
    for r in rows:
        if r["arch"] == arch and r["vs_transformer"] is not None:
            verdict = "met" if r["vs_transformer"] >= goal else "not met"
            lines.append(f"- {r['size']}, {r['threads']} thread(s), {r['mode']}: {r['vs_transformer']:.2f}x ({verdict})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
