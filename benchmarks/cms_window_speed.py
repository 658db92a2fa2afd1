"""Training speed of streamed windows: CMS steps window-aligned (from the training backward) against in-context.

``hope-attention`` (d_model 64, 2 layers, bytes), ``--batch`` rows read in windows of ``--window`` tokens with the
``ModelState`` carried (detached) from window to window, forward + backward + AdamW per window, three ways
interleaved in one run (median window time): CMS steps window-aligned (``window=True`` + ``step_after_backward``),
the same steps in context (``window=False``: each window ends on a boundary, so the next one replays the period
from its snapshot and takes the step with its own backward), and test-time learning off (no CMS step: the
baseline). Writes ``docs/cms_window_speed.json`` and ``.md``.

    nice -n 10 python benchmarks/cms_window_speed.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from hope.models import build
from hope.models.hope.window import step_after_backward

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--periods", type=int, nargs=3, default=(128, 256, 512))
    args = parser.parse_args()
    torch.set_num_threads(1)
    shape = dict(vocab_size=257, d_model=64, n_layers=2, n_heads=4, cms_periods=tuple(args.periods))
    runs = {}
    for name, window, learning in (("test_time_learning off", False, False), ("in-context steps", False, True),
                                   ("window-aligned steps", True, True)):
        torch.manual_seed(0)
        model = build("hope-attention", None, **shape, test_time_learning=learning)
        runs[name] = (model, window, torch.optim.AdamW(model.parameters(), lr=1e-3), [None], [])
    ids = torch.randint(0, 257, (args.batch, args.windows * args.window + 1))
    for j in range(args.windows):
        inputs = ids[:, j * args.window:(j + 1) * args.window]
        targets = ids[:, j * args.window + 1:(j + 1) * args.window + 1]
        for model, window, optimizer, state, times in runs.values():
            start = time.perf_counter()
            out = model(inputs, state=state[0], targets=targets, window=window)
            optimizer.zero_grad()
            out.loss.backward()
            new_state = step_after_backward(model, out.state, inputs.numel()) if window else out.state
            optimizer.step()
            state[0] = new_state.detach()
            times.append(time.perf_counter() - start)
    base = statistics.median(runs["test_time_learning off"][4][1:])
    rows = {name: {"tokens_per_s": args.batch * args.window / statistics.median(times[1:]),
                   "vs_off": base / statistics.median(times[1:])} for name, (*_, times) in runs.items()}
    out = ROOT / "docs" / "cms_window_speed"
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "results": rows}, indent=2) + "\n")
    lines = ["# Streamed training speed: window-aligned CMS steps against in-context steps", "",
             f"`benchmarks/cms_window_speed.py`: hope-attention d_model 64, 2 layers, periods {tuple(args.periods)}, "
             f"{args.batch} rows x windows of {args.window} tokens, {args.windows} windows, 1 thread, median "
             "window time (the three interleaved in one run).", "",
             "| CMS steps | tokens/s | vs test_time_learning off |", "|---|---|---|"]
    lines += [f"| {name} | {row['tokens_per_s']:.0f} | {row['vs_off']:.2f}x |" for name, row in rows.items()]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
