"""Which CMS level forgets language A while language B is read, measured by keeping one level out of B
(docs/results.md, section 3).

A Hope model trained for the letter-cipher streams (``hope tasks run stream_cipher --arch hope --option
alphabet=letters ... --save-model``) reads the evaluation rows of its run (drawn as the task runner draws them) as
the runner does (``--window`` tokens per call, the state carried). Then it reads them again with the learning rate
of some CMS levels set to zero (in every layer) for the calls that would take a step on B's tokens, so those levels
reach A's return with the weights A left them (NL Eq. 71 with ``eta_l = 0``); the others learn B as before:

* ``none``: every level learns B (the run's own reading, which the script checks it reproduces);
* ``L{l}``: level ``l`` alone kept out of B; ``all``: every level kept out of B.

If the slower levels hold A through B, as the paper argues for the continuum (NL Sec. 7.1), keeping them out of B
saves little of A's loss at its return and keeping the fast level out saves most. Reported per reading: the loss of
A's first window on its return, forgetting (that minus A's last window before B), and the mean loss over B and over
A's return. ``--equal-token-rate`` reads with every level moving as far per token as the fastest (its learning rate
times its period over the fastest's). Writes ``NAME.json`` and ``NAME.md`` under ``--docs``.

    python benchmarks/cipher_level_freeze.py --run runs/cipher_saved/hope/seed-0 --name cipher_level_freeze_seed0
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hope.checkpoint import load_checkpoint
from hope.models.hope.cms import CMS
from hope.tasks.config import TaskRunConfig
from hope.tasks.registry import get_task
from hope.tasks.runner import stream_eval_rows
from hope.tasks.streams import stream_metrics

DOCS = Path(__file__).resolve().parent.parent / "docs" / "results" / "paper_cpu"


def frozen_calls(segments: tuple[tuple[str, int, int], ...], during: str, window: int) -> range:
    """Start positions of the calls whose CMS steps learn from segment ``during``'s targets: a step at boundary
    ``b`` reads targets up to token ``b`` and is taken by the call that starts at ``b``, so these are the calls
    after the segment's first one up to the one that starts where it ends."""
    start, stop = next((a, b) for name, a, b in segments if name == during)
    return range(start + window, stop + 1, window)


@torch.no_grad()
def read(model, ids: np.ndarray, window: int, frozen: tuple[int, ...] = (), calls: range = range(0),
         lr_scale: tuple[float, ...] | None = None) -> tuple:
    """Next-token loss of every position of rows ``ids [B, T + 1]``, read ``window`` tokens per call with the state
    carried, the learning rate of CMS levels ``frozen`` at zero in every layer for the calls starting in ``calls``
    (and every level's learning rate times ``lr_scale[l]`` throughout); and the state after the last call."""
    memories = [m for m in model.modules() if isinstance(m, CMS)]
    saved = [m.log_lr.detach().clone() for m in memories]
    offset = torch.tensor(lr_scale or [1.0] * len(saved[0]), dtype=saved[0].dtype).log()
    inputs, targets = torch.from_numpy(ids[:, :-1]), torch.from_numpy(ids[:, 1:])
    losses, state = [], None
    try:
        for start in range(0, inputs.shape[1], window):
            for memory, log_lr in zip(memories, saved):
                memory.log_lr.copy_(log_lr + offset)
                if start in calls:
                    memory.log_lr[list(frozen)] = -math.inf
            output = model(inputs[:, start: start + window], state=state)
            losses.append(F.cross_entropy(output.logits.float().transpose(1, 2), targets[:, start: start + window],
                                          reduction="none"))
            state = output.state.detach()
    finally:
        for memory, log_lr in zip(memories, saved):
            memory.log_lr.copy_(log_lr)
    return torch.cat(losses, dim=1).numpy(), state


def measure(model, rows: list, window: int, during: str = "B1", returning: str = "A2",
            lr_scale: tuple[float, ...] | None = None) -> dict:
    """Every reading (:func:`read`) of ``rows``: A's loss on its return, forgetting, and segment means."""
    ids = np.stack([row.ids for row in rows])
    segments = rows[0].segments
    calls = frozen_calls(segments, during, window)
    levels = len(next(m for m in model.modules() if isinstance(m, CMS)).periods)
    readings = {"none": (), **{f"L{level}": (level,) for level in range(levels)}, "all": tuple(range(levels))}
    results = {}
    for name, frozen in readings.items():
        losses, _ = read(model, ids, window, frozen, calls, lr_scale)
        metrics = stream_metrics(losses.mean(axis=0), segments, window)
        results[name] = {"frozen_levels": list(frozen),
                         "returning_first": metrics["segments"][returning]["first"],
                         "forgetting": metrics["returns"][returning]["forgetting"],
                         "during_mean": metrics["segments"][during]["mean"],
                         "returning_mean": metrics["segments"][returning]["mean"], "loss": float(losses.mean())}
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[name].items() if k != "frozen_levels"),
              flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a stream_cipher run directory made with --save-model")
    parser.add_argument("--docs", default=str(DOCS))
    parser.add_argument("--name", default="cipher_level_freeze")
    parser.add_argument("--equal-token-rate", action="store_true",
                        help="scale each level's learning rate by its period over the fastest's, so that every level "
                             "moves as far per token (Eq. 71 with the sum over its period instead of the mean)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    result = json.loads((run / "result.json").read_text())
    fields = TaskRunConfig.__dataclass_fields__
    config = TaskRunConfig(**{k: v for k, v in result["config"].items() if k in fields})
    model, tokenizer, _ = load_checkpoint(run / "model")
    model.eval()
    spec = get_task(config.task)
    _, rows = stream_eval_rows(spec, tokenizer, config, spec.evals["carried"])
    periods = next(m for m in model.modules() if isinstance(m, CMS)).periods
    lr_scale = tuple(p / min(periods) for p in periods) if args.equal_token_rate else None
    results = measure(model, rows, config.seq_len, lr_scale=lr_scale)
    expected = result["evals"]["carried"]["loss"]
    if lr_scale is None and not math.isclose(results["none"]["loss"], expected, rel_tol=1e-4):
        raise SystemExit(f"reading without freezing gave {results['none']['loss']:.5f}, the run's carried loss is "
                         f"{expected:.5f}: not the run's model or rows")
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / f"{args.name}.json").write_text(json.dumps(
        {"run": str(run), "periods": list(periods), "rows": len(rows), "window": config.seq_len,
         "lr_scale": lr_scale, "results": results}, indent=2) + "\n")
    scaled = f" Every level's learning rate times {', '.join(f'{x:g}' for x in lr_scale)}." if lr_scale else ""
    lines = [f"Run `{run}` (CMS periods {', '.join(map(str, periods))}), its {len(rows)} evaluation rows read "
             f"{config.seq_len} tokens per call with the state carried; the named CMS levels (every layer) take no "
             f"step on B's tokens.{scaled} Loss in nats per token.", "",
             "| levels kept out of B | A's first window on return | forgetting of A | B mean | A's return, mean |",
             "|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        label = {"none": "none (as read)", "all": "all"}[name] if name in ("none", "all") else \
            f"level {name[1:]} (period {periods[int(name[1:])]})"
        lines.append(f"| {label} | {r['returning_first']:.3f} | {r['forgetting']:.3f} | {r['during_mean']:.3f} | "
                     f"{r['returning_mean']:.3f} |")
    (docs / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
