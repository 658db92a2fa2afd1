"""A reference for the stream tasks: the loss of a predictor with no training, a running count of each row's bytes.

For each stream entry of a suite folder (``hope tasks suite ... --out DIR``: ``cipher/base``,
``cipher_letters/base``, ``long_document/base``) that the folder holds, the evaluation rows of every seed are drawn as the task runner draws them
(``hope.tasks.runner.stream_eval_rows``, with the entry's own options) and each token is predicted from the
add-one counts of the tokens before it in its row (``hope.tasks.streams.running_count_losses``). A model that
learns a new cipher language in context should beat this; one whose loss stays above it has learned at most
the stream's byte frequencies. Writes ``OUT.md`` and ``OUT.json`` (docs/results.md, issue #17's section).

    python benchmarks/stream_count_reference.py --suite runs/paper_cpu --out docs/results/paper_cpu/count_reference
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hope.data.tokenizer import BytesTokenizer
from hope.tasks.config import TaskRunConfig
from hope.tasks.registry import get_task
from hope.tasks.runner import stream_eval_rows
from hope.tasks.streams import loss_by_position, running_count_losses, stream_metrics

ENTRIES = ("cipher/base", "cipher_letters/base", "long_document/base")


def reference(result: dict) -> dict:
    """The count predictor's loss by position (and segment metrics) on the rows of one finished stream run."""
    fields = TaskRunConfig.__dataclass_fields__
    config = TaskRunConfig(**{k: v for k, v in result["config"].items() if k in fields})
    spec = get_task(config.task)
    stream, rows = stream_eval_rows(spec, BytesTokenizer(), config, spec.evals["carried"])
    losses = running_count_losses(np.stack([row.ids for row in rows]), stream.vocab_size)
    scores = {"loss": float(losses.mean()), "by_position": loss_by_position(losses)}
    if all(row.segments == rows[0].segments for row in rows):
        scores.update(stream_metrics(losses.mean(axis=0), rows[0].segments, config.seq_len))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True, help=f"suite folder with runs of {', '.join(ENTRIES)}")
    parser.add_argument("--out", required=True, help="path of the .md / .json to write, without the suffix")
    args = parser.parse_args()
    found, lines = {}, ["# Running byte count: the stream tasks' no-training reference", "",
                        f"    python benchmarks/stream_count_reference.py --suite {args.suite} --out {args.out}", "",
                        "Each token predicted from the add-one counts of the bytes before it in its row, on the "
                        "evaluation rows of each seed's stream runs (loss in nats per token).", ""]
    for entry in ENTRIES:
        results = sorted(Path(args.suite, entry).glob("*/seed-*/result.json"))
        by_seed = {}
        for path in results:
            result = json.loads(path.read_text())
            by_seed.setdefault(int(result["seed"]), result)
        if not by_seed:
            continue
        found[entry] = {seed: reference(result) for seed, result in sorted(by_seed.items())}
        bins = [(a, b) for a, b, _ in next(iter(found[entry].values()))["by_position"]]
        lines += [f"## {entry}", "", "| seed | mean | " + " | ".join(f"{a}-{b}" for a, b in bins) + " |",
                  "|---" * (len(bins) + 2) + "|"]
        for seed, scores in found[entry].items():
            lines.append(f"| {seed} | {scores['loss']:.3f} | "
                         + " | ".join(f"{v:.3f}" for _, _, v in scores["by_position"]) + " |")
        segments = next(iter(found[entry].values())).get("segments")
        if segments:
            lines += ["", "Per segment (mean loss): " + "; ".join(
                f"seed {seed}: " + ", ".join(f"{name} {s['mean']:.3f}" for name, s in scores["segments"].items())
                for seed, scores in found[entry].items())]
        lines.append("")
    if not found:
        raise SystemExit(f"no finished run of {' or '.join(ENTRIES)} under {args.suite}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(found, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
