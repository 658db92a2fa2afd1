"""Training throughput (tokens/s) under each thread setting, idle and beside one busy process.

Each setting (thread count plus environment, e.g. ``OMP_WAIT_POLICY=PASSIVE``, which OpenMP reads when torch
loads) runs in a fresh subprocess: build the ``tiny`` preset, AdamW, forward + backward + step on random ids
(``--batch`` x ``--seq-len``, as ``hope demo`` trains), ``--warmup`` untimed steps, then ``--steps`` timed ones.
"Loaded" runs the same with one process spinning ``while True: pass`` beside it. A run that has not finished
within ``--max-seconds`` is stopped and reported as an upper bound (tokens of the steps it did finish, or one
step, over the time it ran). Prints a table and writes ``docs/threads_under_load.json`` and ``.md``.

    python benchmarks/threads_under_load.py [--archs hope,transformer] [--steps 2] [--max-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from hope.models import SIZES
from hope.threads import plan_threads

DOCS = Path(__file__).resolve().parent.parent / "docs"
SETTINGS = {
    "1": (1, {}),
    "2": (2, {}),
    "2-passive": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
}
"""Label -> (threads, extra environment)."""
SPIN = "while True: pass"


def worker(arch: str, threads: int, batch: int, seq_len: int, warmup: int, steps: int) -> None:
    """Train and print one JSON line per finished step: ``{"step", "seconds", "tokens"}``."""
    import torch

    from hope.models import build

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(arch, "tiny", vocab_size=4096)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 4096, (batch, seq_len + 1))
    for step in range(warmup + steps):
        start = time.perf_counter()
        model(ids[:, :-1], targets=ids[:, 1:]).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        print(json.dumps({"step": step, "seconds": time.perf_counter() - start, "tokens": batch * seq_len,
                          "timed": step >= warmup}), flush=True)


def measure(arch: str, label: str, loaded: bool, args: argparse.Namespace) -> dict:
    """Run one setting in a subprocess (with a spinning neighbour if ``loaded``); tokens/s of its timed steps."""
    threads, extra = SETTINGS[label]
    env = {**os.environ, **extra, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, __file__, "--worker", arch, "--threads", str(threads), "--batch", str(args.batch),
               "--seq-len", str(args.seq_len), "--warmup", str(args.warmup), "--steps", str(args.steps)]
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if loaded else None
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate(timeout=args.max_seconds)
        finished = True
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        finished = False
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    ran = time.perf_counter() - started
    steps = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    timed = [s for s in steps if s["timed"]]
    row = {"arch": arch, "setting": label, "threads": threads, "env": extra, "loaded": loaded,
           "timed_steps": len(timed), "finished": finished}
    if finished and timed:
        row["tok_s"] = sum(s["tokens"] for s in timed) / sum(s["seconds"] for s in timed)
        row["upper_bound"] = False
    else:  # stopped: at most the tokens it trained (or one step's) over the time it ran
        tokens = sum(s["tokens"] for s in steps) or args.batch * args.seq_len
        row["tok_s"], row["upper_bound"] = tokens / ran, True
    return row


def _speed(row: dict) -> str:
    return f"{'<' if row['upper_bound'] else ''}{row['tok_s']:.0f}"


def table(rows: list[dict]) -> str:
    lines = ["| arch | setting | idle tok/s | loaded tok/s | loaded / idle |", "|---|---|---:|---:|---:|"]
    for arch in dict.fromkeys(r["arch"] for r in rows):
        for label in dict.fromkeys(r["setting"] for r in rows if r["arch"] == arch):
            idle, busy = (next(r for r in rows if r["arch"] == arch and r["setting"] == label and r["loaded"] == x)
                          for x in (False, True))
            ratio = "?" if idle["upper_bound"] else \
                f"{'<' if busy['upper_bound'] else ''}{busy['tok_s'] / idle['tok_s']:.2f}"
            lines.append(f"| {arch} | {label} | {_speed(idle)} | {_speed(busy)} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="hope,transformer", help="Comma-separated architectures (tiny preset).")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"Comma-separated, from {list(SETTINGS)}.")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=45.0, help="Stop a run after this long (upper bound).")
    parser.add_argument("--out", default=str(DOCS / "threads_under_load"), help="Writes OUT.json and OUT.md.")
    parser.add_argument("--worker", metavar="ARCH", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.threads, args.batch, args.seq_len, args.warmup, args.steps)
        return
    load_before = os.getloadavg()
    rows = []
    for arch in args.archs.split(","):
        for label in args.settings.split(","):
            for loaded in (False, True):
                rows.append(measure(arch, label, loaded, args))
                r = rows[-1]
                print(f"{arch:12s} {label:10s} {'loaded' if loaded else 'idle':6s} {_speed(r)} tok/s "
                      f"({r['timed_steps']} timed steps)", flush=True)
    text = table(rows)
    print(text)
    pick = plan_threads(None, d_model=SIZES["tiny"]["d_model"], environ={})
    meta = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
            "batch": args.batch, "seq_len": args.seq_len, "warmup": args.warmup, "steps": args.steps,
            "max_seconds": args.max_seconds, "load_average_before": load_before, "cli_threads": pick.threads,
            "cli_reason": pick.reason}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(
        f"# Training throughput under load\n\n`python benchmarks/threads_under_load.py` on {meta['cpus']} CPUs "
        f"({meta['platform']}), tiny presets, batch {args.batch} x {args.seq_len}, {args.warmup} warm-up + "
        f"{args.steps} timed steps per setting, each in its own process; \"loaded\": one process spinning "
        f"`{SPIN}` beside it. `<`: stopped after {args.max_seconds:.0f} s, an upper bound. Load average before the "
        f"first run: {' / '.join(f'{x:.2f}' for x in load_before)} (1 / 5 / 15 min).\n\n{text}\n\n"
        f"What `hope train`, `hope tasks run`, `hope eval` and `hope generate` pick for these models when neither "
        f"`--threads` nor `OMP_NUM_THREADS` is given (`hope.threads.plan_threads`): **{pick.threads}** "
        f"({pick.reason}).\n")


if __name__ == "__main__":
    main()
