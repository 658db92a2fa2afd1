"""Training throughput (tokens/s) of the ``tiny`` and ``small`` presets with 1 and 2 threads.

One optimizer step = forward + backward + AdamW on a batch of random token windows; the first steps
are warm-up and not timed. Prints each configuration and its speed-up from 1 to 2 threads, and
writes ``docs/train_throughput.json`` and ``docs/train_throughput.md``.

    python benchmarks/train_throughput.py [--archs transformer,hope,hope+compile] [--steps 10] [--out docs/NAME]

An arch name ending in ``+compile`` runs that arch with ``hope.compiling`` on (its compiling steps are warm-up).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from hope.compiling import compiling
from hope.models import build
from hope.optim import build_optimizer

DOCS = Path(__file__).resolve().parent.parent / "docs"
SHAPES = {"tiny": {"batch": 16, "seq_len": 256}, "small": {"batch": 8, "seq_len": 512}}


COMPILED = "+compile"


def tokens_per_second(name: str, size: str, threads: int, steps: int, warmup: int = 2) -> float:
    with compiling(name.endswith(COMPILED)):
        return _tokens_per_second(name.removesuffix(COMPILED), size, threads, steps, warmup)


def _tokens_per_second(arch: str, size: str, threads: int, steps: int, warmup: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    shape = SHAPES[size]
    model = build(arch, size, vocab_size=4096)
    optimizer = build_optimizer("adamw", model, lr=1e-3)
    ids = torch.randint(0, 4096, (shape["batch"], shape["seq_len"] + 1))
    elapsed = 0.0
    for step in range(warmup + steps):
        start = time.perf_counter()
        loss = model(ids[:, :-1], targets=ids[:, 1:]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            elapsed += time.perf_counter() - start
    return steps * shape["batch"] * shape["seq_len"] / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="transformer", help="Comma-separated architectures.")
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--steps", type=int, default=10, help="Timed steps per configuration.")
    parser.add_argument("--out", type=Path, default=DOCS / "train_throughput",
                        help="Write OUT.json and OUT.md (default: docs/train_throughput).")
    args = parser.parse_args()
    rows = []
    for arch in args.archs.split(","):
        for size in args.sizes.split(","):
            one = tokens_per_second(arch, size, 1, args.steps)
            two = tokens_per_second(arch, size, 2, args.steps)
            params = build(arch.removesuffix(COMPILED), size, vocab_size=4096).num_parameters()
            row = {"arch": arch, "size": size, "parameters": params, **SHAPES[size],
                   "tokens_per_s_1_thread": one, "tokens_per_s_2_threads": two, "speedup_2_vs_1": two / one}
            rows.append(row)
            print(f"{arch:<14}{size:<7}{params:>12,} params  1 thread {one:>9,.0f} tok/s  "
                  f"2 threads {two:>9,.0f} tok/s  ({two / one:.2f}x)")
    meta = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
            "cores": torch.get_num_threads(), "steps": args.steps}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    command = " ".join(["python benchmarks/train_throughput.py", *sys.argv[1:]])
    lines = ["# Training throughput", "", f"`{command}` (forward + backward + AdamW, "
             "random tokens, vocabulary 4096).", "",
             "| arch | size | params | batch x seq | tok/s (1 thread) | tok/s (2 threads) | 2 vs 1 |",
             "|---|---|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['size']} | {r['parameters']:,} | {r['batch']} x {r['seq_len']} | "
                     f"{r['tokens_per_s_1_thread']:,.0f} | {r['tokens_per_s_2_threads']:,.0f} | {r['speedup_2_vs_1']:.2f}x |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
