"""Peak memory and step time of streaming training (``hope train --stream``; docs/training.md, streaming).

Each configuration runs in a fresh process (so its peak resident set size is its own): ``Trainer.fit`` on
``StreamedBatches`` over synthetic documents of exactly ``W`` windows each (no padding), ``steps`` optimizer steps
(more than 64, so the 64-window documents are read whole). The state is cut between windows, so the peak should
not grow with the number of windows per document: the target is 64 windows within 5 % of 1 window. A third
configuration, "independent", trains 20 steps on the same windows without any state (``model(x, targets=y)``): the
ratio of its step time to the 64-window run's shows what carrying the state costs, including the replay of the
CMS step left pending at each window end (docs/cms.md). As separate processes are timed at different moments, the
same cost is also timed in one process ("interleaved"): forward + backward of a window from the carried state,
then of the same window with no state, alternately, 10 windows, median of the last 8. Writes ``docs/stream_memory.json`` and ``docs/stream_memory.md``.

    python benchmarks/stream_memory.py [--archs hope,gated-deltanet] [--steps 70] [--out docs/NAME]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hope.data.stream import DocumentStream
from hope.models import build
from hope.optim import build_optimizer
from hope.train.loop import Trainer, lr_schedule
from hope.train.stream import StreamedBatches

DOCS = Path(__file__).resolve().parent.parent / "docs"
VOCAB, EOT, BATCH, WINDOW = 256, 0, 4, 32
MODEL = {"d_model": 64, "n_layers": 2, "n_heads": 4}
HOPE = {"chunk_size": 8, "memory_chunk_size": 8, "cms_periods": (None, 16, 32)}
CONFIGS = {"1 window": 1, "64 windows": 64, "independent": 1}
INDEPENDENT_STEPS = 20
"""Steps of the stateless configuration (it measures only the step time)."""


def child(arch: str, config: str, steps: int) -> dict[str, float]:
    """Train ``steps`` steps in this process; its peak RSS (MiB) and mean step time after the first 2 steps."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build(arch, None, vocab_size=VOCAB, **MODEL, **(HOPE if arch.startswith("hope") else {}))
    windows = CONFIGS[config]
    rng = np.random.default_rng(0)
    docs = [np.append(rng.integers(1, VOCAB, size=windows * WINDOW - 1), EOT) for _ in range(2 * BATCH)]
    tokens = np.concatenate(docs).astype(np.uint16)
    stream = DocumentStream(tokens, np.arange(len(docs)) * windows * WINDOW, seq_len=WINDOW, eot_id=EOT)
    optimizer = build_optimizer("adamw", model, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(0, None, 1.0))
    trainer = Trainer(model, optimizer, scheduler, grad_clip=1.0, max_bad_steps=3)
    streamed = StreamedBatches(model, stream, batch_size=BATCH, grad_accum=1, seed=0, device=torch.device("cpu"),
                               autocast=torch.autocast("cpu", enabled=False))
    times: list[float] = []
    if config == "independent":
        batches = streamed.batches

        def loss(trained, micro_batch):
            return trained(micro_batch[1].inputs, targets=micro_batch[1].targets).loss
        callbacks = [lambda result: times.append(result.seconds)]
    else:
        batches, loss = streamed.batches, streamed.loss
        callbacks = [streamed.advance, lambda result: times.append(result.seconds)]
    trainer.fit(batches, loss, min(steps, INDEPENDENT_STEPS) if config == "independent" else steps,
                callbacks=callbacks)
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "seconds_per_step": float(np.mean(times[2:]))}


def interleaved(arch: str) -> dict[str, float]:
    """Median seconds of forward + backward of a window from the carried state and with no state, alternately."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build(arch, None, vocab_size=VOCAB, **MODEL, **(HOPE if arch.startswith("hope") else {}))
    ids = torch.randint(1, VOCAB, (BATCH, 12 * WINDOW + 1))
    rows = torch.zeros(BATCH, dtype=torch.bool)
    state = model(ids[:, :WINDOW]).state.detach()
    times: dict[str, list[float]] = {"streamed": [], "independent": []}
    for k in range(1, 11):
        x, y = ids[:, k * WINDOW:(k + 1) * WINDOW], ids[:, k * WINDOW + 1:(k + 1) * WINDOW + 1]
        started = time.perf_counter()
        out = model(x, state=model.window_state(state, rows), targets=y)
        out.loss.backward()
        times["streamed"].append(time.perf_counter() - started)
        state = out.state.detach()
        started = time.perf_counter()
        model(x, targets=y).loss.backward()
        times["independent"].append(time.perf_counter() - started)
    return {name: statistics.median(values[2:]) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="hope,gated-deltanet")
    parser.add_argument("--steps", type=int, default=70)
    parser.add_argument("--out", default=str(DOCS / "stream_memory"))
    parser.add_argument("--child", nargs=2, metavar=("ARCH", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        arch, config = args.child
        print(json.dumps(interleaved(arch) if config == "interleaved" else child(arch, config, args.steps)))
        return
    rows = []
    for arch in args.archs.split(","):
        results = {}
        for config in CONFIGS:
            started = time.perf_counter()
            out = subprocess.run([sys.executable, __file__, "--child", arch, config, "--steps", str(args.steps)],
                                 check=True, capture_output=True, text=True).stdout
            results[config] = json.loads(out.strip().splitlines()[-1])
            print(f"{arch:<16}{config:<14}{results[config]['peak_rss_mib']:>10.1f} MiB"
                  f"{results[config]['seconds_per_step']:>9.3f} s/step  ({time.perf_counter() - started:.0f} s)",
                  flush=True)
        out = subprocess.run([sys.executable, __file__, "--child", arch, "interleaved"], check=True,
                             capture_output=True, text=True).stdout
        results["interleaved"] = json.loads(out.strip().splitlines()[-1])
        print(f"{arch:<16}interleaved   {results['interleaved']['streamed']:.3f} s streamed, "
              f"{results['interleaved']['independent']:.3f} s independent", flush=True)
        rows.append({"arch": arch, **results,
                     "interleaved_streamed_over_independent": results["interleaved"]["streamed"]
                     / results["interleaved"]["independent"],
                     "rss_64_over_1": results["64 windows"]["peak_rss_mib"] / results["1 window"]["peak_rss_mib"],
                     "step_time_streamed_over_independent": results["64 windows"]["seconds_per_step"]
                     / results["independent"]["seconds_per_step"]})
    report = {"command": " ".join(["python", "benchmarks/stream_memory.py", *sys.argv[1:]]),
              "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread",
              "batch": BATCH, "window": WINDOW, "steps": args.steps, "model": MODEL, "hope": HOPE, "rows": rows}
    Path(f"{args.out}.json").write_text(json.dumps(report, indent=2))
    lines = ["# Streaming training: peak memory and step time", "",
             f"`{report['command']}` ({report['machine']}; batch {BATCH}, window {WINDOW}, {args.steps} steps, "
             f"model {MODEL}, Hope CMS/chunks {HOPE}). Each configuration in a fresh process; documents of exactly "
             "1 or 64 windows; *independent*: the same windows with no state.", "",
             "| arch | peak RSS, 1 window / doc (MiB) | 64 windows / doc (MiB) | ratio | s/step streamed "
             "(64 windows / doc) | s/step independent | ratio | interleaved ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['arch']} | {row['1 window']['peak_rss_mib']:.1f} | {row['64 windows']['peak_rss_mib']:.1f}"
                     f" | {row['rss_64_over_1']:.3f} | {row['64 windows']['seconds_per_step']:.3f} | "
                     f"{row['independent']['seconds_per_step']:.3f} | {row['step_time_streamed_over_independent']:.2f} | "
                     f"{row['interleaved_streamed_over_independent']:.2f} |")
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print(f"written to {args.out}.json and {args.out}.md")


if __name__ == "__main__":
    main()
