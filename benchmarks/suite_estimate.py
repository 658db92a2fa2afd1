"""How long a suite (``hope.tasks.suites``) will take, from per-step speeds measured here at its own shapes.

For every distinct training shape of the suite's runs (architecture, model overrides, row length rounded up to a
power of two) it times ``--steps`` training steps of ``--rows`` rows (AdamW, cross-entropy at every position, after
one untimed warm-up step) and scales them to the run's rows per step; for every evaluation shape it times one forward
pass without gradients. A run's estimate is ``steps x seconds per step`` plus its evaluation tokens at the measured
forward speed. Writes ``DOCS/suite_estimate_<suite>.json`` and ``.md``.

    python benchmarks/suite_estimate.py paper-small --seeds 3 --docs docs/results

Speeds depend on the machine and on what else runs on it; the markdown records the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hope.data.tokenizer import BytesTokenizer
from hope.models import build
from hope.tasks.registry import get_task
from hope.tasks.runner import eval_settings
from hope.tasks.suites import get_suite, plan


def shapes(config) -> tuple[int, int, list[tuple[int, int]]]:
    """Vocabulary, training row length and the (rows, row length) of every evaluation of one run."""
    spec = get_task(config.task)
    tokenizer = BytesTokenizer() if spec.text else None
    train = spec.build(tokenizer, **{**spec.train, **config.options})
    settings = eval_settings(spec, config.lengths)
    if spec.family == "stream":
        evals = [(config.eval_examples, spec.build(tokenizer, **{**spec.train, **config.options, **o}).row(
            np.random.default_rng(0)).ids.size - 1) for o in settings.values()]
        return train.vocab_size, config.seq_len, evals
    length = lambda task: task.batch(np.random.default_rng(0), 4).input_ids.shape[1]
    evals = [(config.eval_examples, length(spec.build(tokenizer, **{**spec.train, **config.options, **o})))
             for o in settings.values()]
    return train.vocab_size, length(train), evals


def step_seconds(arch: str, model: dict, vocab: int, rows: int, length: int, steps: int) -> float:
    torch.manual_seed(0)
    lm = build(arch=arch, size="tiny", vocab_size=vocab, **model)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=1e-3)
    ids = torch.randint(vocab, (rows, length + 1))
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        loss = F.cross_entropy(lm(ids[:, :-1]).logits.flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    return float(np.mean(times[1:]))


@torch.no_grad()
def forward_seconds_per_token(arch: str, model: dict, vocab: int, rows: int, length: int) -> float:
    torch.manual_seed(0)
    lm = build(arch=arch, size="tiny", vocab_size=vocab, **model).eval()
    ids = torch.randint(vocab, (rows, length))
    lm(ids[:, : min(length, 64)])
    started = time.perf_counter()
    lm(ids)
    return (time.perf_counter() - started) / ids.numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per run (default 3)")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per shape (default 2)")
    parser.add_argument("--rows", type=int, default=4, help="rows per timed step (default 4)")
    parser.add_argument("--archs", nargs="+", default=None)
    parser.add_argument("--eval-length", type=int, default=2048,
                        help="longest evaluation row timed (longer rows are read in windows; default 2048)")
    parser.add_argument("--docs", default="docs/results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = plan(get_suite(args.suite), "/nonexistent", list(range(args.seeds)), args.archs)
    train_cache: dict[str, float] = {}
    eval_cache: dict[str, float] = {}
    rows = []
    for run in [r for r in runs if r.seed == 0]:
        config = run.config
        vocab, length, evals = shapes(config)
        rounded = 1 << max(5, (length - 1).bit_length())
        key = json.dumps([run.arch, config.model, rounded])  # the vocabulary (5 to 257 ids) barely matters at tiny
        if key not in train_cache:
            train_cache[key] = step_seconds(run.arch, config.model, vocab, args.rows, rounded, args.steps) / args.rows
            print(f"train {key}: {train_cache[key] * args.rows:.3f} s/step of {args.rows} rows", flush=True)
        eval_seconds = 0.0
        for count, eval_length in evals:
            timed = min(eval_length, args.eval_length)
            ekey = json.dumps([run.arch, config.model, timed])
            if ekey not in eval_cache:
                eval_cache[ekey] = forward_seconds_per_token(run.arch, config.model, vocab, args.rows, timed)
            eval_seconds += count * eval_length * eval_cache[ekey]
        train_seconds = config.steps * config.batch_size * train_cache[key]
        rows.append({"entry": run.entry.name, "experiment": run.entry.experiment, "arch": run.arch,
                     "steps": config.steps, "batch": [config.batch_size, length],
                     "step_s": round(config.batch_size * train_cache[key], 4),
                     "train_s": round(train_seconds, 1), "eval_s": round(eval_seconds, 1), "stream": run.entry.stream})
    per_seed = sum(r["train_s"] + r["eval_s"] for r in rows)
    experiments: dict[str, float] = {}
    for r in rows:
        experiments[r["experiment"]] = experiments.get(r["experiment"], 0.0) + args.seeds * (r["train_s"] + r["eval_s"])
    load = os.getloadavg()[0]
    report = {"suite": args.suite, "seeds": args.seeds, "runs": len(runs), "hours_one_process": args.seeds * per_seed / 3600,
              "hours_by_experiment": {k: v / 3600 for k, v in experiments.items()}, "load_average": load,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread",
              "runs_seed0": rows}
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / f"suite_estimate_{args.suite}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Time estimate of suite `{args.suite}`", "",
             f"    python benchmarks/suite_estimate.py {args.suite} --seeds {args.seeds}", "",
             f"{len(runs)} runs ({args.seeds} seeds). Speeds timed on {report['machine']}, load average {load:.1f} "
             "while timing (other jobs on the cores make every number here slower than on a quiet machine).", "",
             "| experiment | hours (one process, 1 thread) |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in report["hours_by_experiment"].items()]
    lines += [f"| **all** | **{report['hours_one_process']:.1f}** |", "",
              "Per run, seed 0 (training seconds = steps x measured seconds per step; evaluation at the measured "
              "forward speed):", "", "| entry | arch | steps | rows x length | s/step | train s | eval s |",
              "|---|---|---:|---|---:|---:|---:|"]
    lines += [f"| {r['entry']} | {r['arch']} | {r['steps']} | {r['batch'][0]} x {r['batch'][1]} | {r['step_s']} | "
              f"{r['train_s']} | {r['eval_s']} |" for r in rows]
    (docs / f"suite_estimate_{args.suite}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:12 + len(experiments)]))


if __name__ == "__main__":
    main()
