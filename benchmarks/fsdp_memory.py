"""Peak memory per process of DDP against FSDP2 (``hope train --fsdp``), with and without activation
checkpointing, on 2 CPU processes (gloo).

Each mode is one ``torchrun --nproc_per_node 2`` of this script's worker: build the model (same seed), wrap it
(DDP, or ``hope.train.sharding``), then ``--steps`` AdamW steps on random tokens, ``--batch`` sequences of
``--seq-len`` tokens per process. Each rank reports its peak resident set (``hope.runtime.peak_memory_mb``)
before the model is built and after the steps; the difference is what training the model held. Writes
``docs/fsdp_memory.json`` and ``docs/fsdp_memory.md``.

    nice -n 10 python benchmarks/fsdp_memory.py [--arch transformer] [--size small] [--model d_model=1024,...]
        [--steps 2] [--out docs/fsdp_memory]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from hope.models import build
from hope.runtime import Distributed, peak_memory_mb
from hope.train.sharding import checkpoint_blocks, shard_model

DOCS = Path(__file__).resolve().parent.parent / "docs"
MODES = ("ddp", "fsdp", "fsdp+ac")


def overrides(text: str) -> dict[str, int]:
    """``--model d_model=1024,n_layers=8`` -> ``{"d_model": 1024, "n_layers": 8}``."""
    return {key: int(value) for key, value in (item.split("=") for item in text.split(",") if item)}


def resident_mb() -> float:
    """This process's resident set now (Linux ``/proc/self/statm``), in MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    dist_ = Distributed(torch.device("cpu"), group=True)
    before = peak_memory_mb("cpu")
    torch.manual_seed(0)
    model = build(args.arch, args.size, **overrides(args.model))
    if args.mode == "fsdp+ac":
        checkpoint_blocks(model)
    if args.mode.startswith("fsdp"):
        shard_model(model)
        local = sum(p.to_local().numel() for p in model.parameters())
        trained = model
    else:
        local = sum(p.numel() for p in model.parameters())
        trained = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(dist_.rank)
    for _ in range(args.steps):
        ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq_len + 1), generator=generator)
        trained(ids[:, :-1], targets=ids[:, 1:]).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    row = {"mode": args.mode, "rank": dist_.rank, "before_model_mb": before, "peak_mb": peak_memory_mb("cpu"),
           "resident_after_mb": resident_mb(), "parameters_held": local}
    (Path(args.results) / f"rank{dist_.rank}.json").write_text(json.dumps(row))
    dist_.close()


def launch(args: argparse.Namespace, mode: str, port: int) -> list[dict]:
    results = tempfile.mkdtemp(prefix="fsdp_memory_")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           __file__, "--worker", "--results", results, "--mode", mode, "--arch", args.arch, "--size", args.size, "--steps", str(args.steps),
           "--batch", str(args.batch), "--seq-len", str(args.seq_len), "--model", args.model]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    rows = [json.loads((Path(results) / f"rank{rank}.json").read_text()) for rank in range(2)]
    shutil.rmtree(results)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="transformer")
    parser.add_argument("--size", default="small")
    parser.add_argument("--model", default="", help="model overrides, e.g. d_model=1024,n_layers=8,n_heads=8")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2, help="sequences per process and step")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(DOCS / "fsdp_memory"))
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    rows = [row for i, mode in enumerate(MODES) for row in launch(args, mode, 29600 + i)]
    total = build(args.arch, args.size, **overrides(args.model)).num_parameters()
    report = {"arch": args.arch, "size": args.size, "model": overrides(args.model), "parameters": total, "steps": args.steps, "batch": args.batch,
              "seq_len": args.seq_len, "processes": 2, "torch": torch.__version__, "machine": platform.machine(),
              "rows": rows}
    Path(args.out).with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    shape = f" {args.model}" if args.model else ""
    lines = [f"# Peak memory per process: DDP against FSDP2 ({args.arch} {args.size}{shape}, {total:,} parameters)", "",
             f"2 CPU processes (gloo), AdamW, {args.steps} steps of {args.batch} x {args.seq_len} tokens per process; "
             "resident set per process (MiB): its peak before the model was built and after the steps, and its "
             "size after the steps (`python benchmarks/fsdp_memory.py`).", "",
             "| mode | rank | parameters held | peak before model | peak | peak - before | resident after steps |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['rank']} | {r['parameters_held']:,} | {r['before_model_mb']:.0f} | "
                     f"{r['peak_mb']:.0f} | {r['peak_mb'] - r['before_model_mb']:.0f} | {r['resident_after_mb']:.0f} |")
    Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
