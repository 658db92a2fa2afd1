"""How much does a model's carried state lower its loss, and from how far back? (docs/results.md, section 4.)

A stream task's run (``hope tasks run stream_long_document ... --save-model``, or a ``--steps 0`` reading of a
saved model) scores held-out streams read ``seq_len`` tokens per call with the state carried, and again with it
reset at every call. Reset, a token sees only the tokens before it in its own window; carried, the whole stream
before it. This reads the run's rows both ways (drawn as the task runner draws them, checked against the run's own
mean losses) and splits the paired difference, carried minus reset on the same tokens from the second window on:

* by the token's **offset in its window**: at small offsets the reset reading has almost no context, so a gain there
  is mostly short-range context that any carried state returns (the last few tokens of the previous window);
* by its **position in the stream**, over offsets of at least ``--min-offset`` tokens only, where the reset reading
  already has that much context of its own: what the state keeps from before the window, the long range. If loss
  keeps falling with context (NL Sec. 9.2), this gain grows with the position.

``--until N`` counts only the first ``N`` positions of each stream (an attention model read past the length it was
trained on: its cache then holds positions it never saw in training).

Runs of one model label (``hope tasks report``'s) are pooled as mean ± sample sd over seeds. Writes ``NAME.json``
and ``NAME.md`` (and the gain by position as ``NAME.png``) under ``--docs``.

    python benchmarks/context_gain.py --runs runs/longdoc4k/hope_w256/seed-0 runs/longdoc4k/hope_w256/seed-1 \\
        --name context_gain_long_document
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from hope.checkpoint import load_checkpoint
from hope.errors import HopeError
from hope.eval.report import common_parts, model_label, pooled_change, pyplot, save_figure
from hope.files import write_text_atomic
from hope.tasks.config import TaskRunConfig
from hope.tasks.registry import get_task
from hope.tasks.runner import checkpoint_model, stream_eval_rows, stream_losses
from hope.tasks.streams import position_bins

DOCS = Path(__file__).resolve().parent.parent / "docs" / "results" / "paper_cpu"
OFFSET_EDGES = (0, 1, 4, 16, 64)


def offset_bins(window: int) -> list[tuple[int, int]]:
    """Window offsets ``[0, 1), [1, 4), [4, 16), [16, 64), [64, window)``, cut at ``window``."""
    edges = [e for e in OFFSET_EDGES if e < window] + [window]
    return list(zip(edges[:-1], edges[1:]))


def gains(carried: np.ndarray, reset: np.ndarray, window: int, min_offset: int) -> dict:
    """Carried minus reset loss (``[rows, time]`` each) from the second window on: mean by window offset bin, and
    by stream position bin over offsets of at least ``min_offset``."""
    if carried.shape != reset.shape:
        raise HopeError(f"carried {carried.shape} and reset {reset.shape} readings differ in shape")
    if carried.shape[1] <= window:
        raise HopeError(f"rows of {carried.shape[1]} tokens hold no second window of {window}")
    diff = (carried - reset)[:, window:]
    offsets = np.arange(window, carried.shape[1]) % window
    by_offset = [[a, b, float(diff[:, (offsets >= a) & (offsets < b)].mean())] for a, b in offset_bins(window)]
    positions = np.arange(window, carried.shape[1])
    late = offsets >= min_offset
    by_position = [[a, b, float(diff[:, late & (positions >= a) & (positions < b)].mean())]
                   for a, b in position_bins(carried.shape[1]) if b > window]
    return {"mean": float(diff.mean()), "by_offset": by_offset, "by_position": by_position,
            "carried": float(carried.mean()), "reset": float(reset.mean())}


def read_run(run: Path) -> tuple[dict, np.ndarray, np.ndarray, int]:
    """The run's result, and the per-token losses of its rows read carried and reset at its window."""
    result = json.loads((run / "result.json").read_text())
    fields = {f.name for f in dataclasses.fields(TaskRunConfig)}
    config = TaskRunConfig(**{k: v for k, v in result["config"].items() if k in fields and k != "lengths"})
    if config.checkpoint:
        model, tokenizer = checkpoint_model(config, torch.device("cpu"))
    else:
        model, tokenizer, _ = load_checkpoint(run / "model")
    spec = get_task(config.task)
    _, rows = stream_eval_rows(spec, tokenizer, config, spec.evals["carried"])
    ids = np.stack([row.ids for row in rows])
    model.eval()
    readings = [np.concatenate([stream_losses(model, ids[k: k + config.eval_batch_size], config.seq_len, carry,
                                              torch.device("cpu")) for k in range(0, len(ids), config.eval_batch_size)])
                for carry in (True, False)]
    for label, losses in zip(("carried", "reset"), readings):
        if not np.isclose(losses.mean(), result["evals"][label]["loss"], rtol=1e-4):
            raise HopeError(f"{run}: the {label} reading gives {losses.mean():.5f}, the run recorded "
                            f"{result['evals'][label]['loss']:.5f}")
    return result, readings[0], readings[1], config.seq_len


def plot(pooled: dict[str, list], min_offset: int, path: Path) -> bool:
    """The gain by stream position (offsets of ``min_offset`` or more) per model, mean and sd over seeds, at each
    bin's middle; False without matplotlib (pip install 'hope[plot]')."""
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, runs in pooled.items():
        bins = runs[0][2]["by_position"]
        values = np.array([[v for _, _, v in g["by_position"]] for _, _, g in runs])
        spread = values.std(axis=0, ddof=1) if len(values) > 1 else None
        ax.errorbar([(a + b) / 2 for a, b, _ in bins], values.mean(axis=0), yerr=spread, marker="o", capsize=3,
                    label=label)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set(xscale="log", xlabel="position in the stream (tokens, bin middle)",
           ylabel="carried - reset loss (nats per token)",
           title=f"What the state keeps from before the window (window offsets >= {min_offset})")
    ax.legend(fontsize=7)
    save_figure(fig, path, dpi=120)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="stream-task run folders (result.json; model/ "
                        "unless the run read a --checkpoint)")
    parser.add_argument("--min-offset", type=int, default=64, help="window offsets counted in the gain by position")
    parser.add_argument("--until", type=int, default=None, help="count only the first N positions of each stream")
    parser.add_argument("--name", required=True)
    parser.add_argument("--docs", type=Path, default=DOCS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    measured = []
    for run in map(Path, args.runs):
        result, carried, reset, window = read_run(run)
        carried, reset = carried[:, : args.until], reset[:, : args.until]
        measured.append((result, window, gains(carried, reset, window, args.min_offset)))
        print(f"{run}: carried - reset {measured[-1][2]['mean']:+.4f}", flush=True)
    common = common_parts([r for r, _, _ in measured])
    pooled: dict[str, list] = {}
    for result, window, gain in measured:
        pooled.setdefault(model_label(result, common), []).append((int(result.get("seed", 0)), window, gain))
    first = measured[0][2]
    offset_head = " | ".join(f"{a}-{b - 1}" if b - a > 1 else f"{a}" for a, b, _ in first["by_offset"])
    position_head = " | ".join(f"{a}-{b}" for a, b, _ in first["by_position"])
    lines = [f"# Where the carried state helps ({len(measured)} runs)", "",
             "`python benchmarks/context_gain.py --runs " + " ".join(args.runs)
             + (f" --until {args.until}" if args.until else "") + f" --name {args.name}`", "",
             f"Every run: {', '.join(sorted(common)) or '-'}. Loss with the state carried minus with it reset at every "
             "window, in nats per token, on the same tokens from the second window on (below zero: the carried state "
             "helps); mean ± sample sd over seeds.", "",
             f"By the token's offset in its window (its context when reset):", "",
             f"| model | seeds | all | {offset_head} |", "|---" * (len(first['by_offset']) + 3) + "|"]
    for label, runs in pooled.items():
        cells = [pooled_change([g["by_offset"][i][2] for _, _, g in runs]) for i in range(len(first["by_offset"]))]
        lines.append(f"| {label} | {', '.join(str(s) for s, _, _ in runs)} | {pooled_change([g['mean'] for _, _, g in runs])} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"By position in the stream, tokens at window offsets of {args.min_offset} or more only (the reset "
              "reading has that much context of its own; the gain is context from before the window):", "",
              f"| model | {position_head} |", "|---" * (len(first['by_position']) + 1) + "|"]
    for label, runs in pooled.items():
        cells = [pooled_change([g["by_position"][i][2] for _, _, g in runs]) for i in range(len(first["by_position"]))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    args.docs.mkdir(parents=True, exist_ok=True)
    if plot(pooled, args.min_offset, args.docs / f"{args.name}.png"):
        lines += ["", f"![gain by position]({args.name}.png)"]
    text = "\n".join(lines) + "\n"
    report = {label: [{"seed": s, "window": w, **g} for s, w, g in runs] for label, runs in pooled.items()}
    for suffix, content in (("json", json.dumps(report, indent=1) + "\n"), ("md", text)):
        write_text_atomic(args.docs / f"{args.name}.{suffix}", content)
    print(text)


if __name__ == "__main__":
    main()
