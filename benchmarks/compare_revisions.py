"""Speed of this checkout against an older revision, measured interleaved in one process (same machine load).

Both ``hope`` packages are loaded side by side: the revision's ``src/`` is exported with ``git archive`` into a
temporary folder and imported first; its modules are then set aside and the working tree's ``hope`` is imported.
Each model is built from the same seed, and the timed calls alternate between the two (``--repeats`` rounds), so
the two sides see the same load; the medians and their ratio are printed and written as JSON.

    python benchmarks/compare_revisions.py --base REV [--arch hope] [--size tiny] [--overrides '{"cms_periods": [null]}']

Measurements: ``train`` (forward + backward + AdamW on a batch of ``--batch`` x ``--seq-len`` random tokens) and
``prefill`` (one no-grad forward over ``--prefill-len`` tokens, batch 1).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 4096


def load_hope(src: Path) -> ModuleType:
    """Import ``hope`` from ``src`` as a fresh package (any ``hope`` modules imported before are set aside)."""
    for name in [n for n in sys.modules if n == "hope" or n.startswith("hope.")]:
        del sys.modules[name]
    sys.path.insert(0, str(src))
    try:
        importlib.import_module("hope.models")
        importlib.import_module("hope.optim")
        return sys.modules["hope"]
    finally:
        sys.path.remove(str(src))


def train_step(hope: ModuleType, arch: str, size: str, overrides: dict[str, Any], batch: int,
               seq_len: int) -> Callable[[], None]:
    import torch

    torch.manual_seed(0)
    model = hope.models.build(arch, size, vocab_size=VOCAB, **overrides)
    optimizer = hope.optim.build_optimizer("adamw", model, lr=1e-3)
    ids = torch.randint(0, VOCAB, (batch, seq_len + 1), generator=torch.Generator().manual_seed(1))

    def step() -> None:
        model(ids[:, :-1], targets=ids[:, 1:]).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def prefill_call(hope: ModuleType, arch: str, size: str, overrides: dict[str, Any], length: int) -> Callable[[], None]:
    import torch

    torch.manual_seed(0)
    model = hope.models.build(arch, size, vocab_size=VOCAB, **overrides)
    ids = torch.randint(0, VOCAB, (1, length), generator=torch.Generator().manual_seed(2))

    def call() -> None:
        with torch.no_grad():
            model(ids)
    return call


def interleaved(calls: dict[str, Callable[[], None]], repeats: int) -> dict[str, list[float]]:
    """One untimed call of each, then ``repeats`` rounds timing each once, in alternating order."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(repeats):
        for name in (list(calls) if round_ % 2 == 0 else list(calls)[::-1]):
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="Git revision to compare against.")
    parser.add_argument("--arch", default="hope")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--overrides", default="{}", help="Config overrides as JSON (lists become tuples).")
    parser.add_argument("--measure", default="train,prefill")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--prefill-len", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="Write the medians as JSON here.")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    overrides = {key: tuple(value) if isinstance(value, list) else value
                 for key, value in json.loads(args.overrides).items()}
    revision = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout.strip()
    result: dict[str, Any] = {"base": revision, "arch": args.arch, "size": args.size, "overrides": args.overrides,
                              "repeats": args.repeats, "threads": 1}
    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(["git", "archive", revision, "src"], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        packages = {"base": load_hope(Path(folder) / "src"), "new": load_hope(ROOT / "src")}
        for measure in args.measure.split(","):
            if measure == "train":
                calls = {side: train_step(hope, args.arch, args.size, overrides, args.batch, args.seq_len)
                         for side, hope in packages.items()}
                tokens = args.batch * args.seq_len
            else:
                calls = {side: prefill_call(hope, args.arch, args.size, overrides, args.prefill_len)
                         for side, hope in packages.items()}
                tokens = args.prefill_len
            times = interleaved(calls, args.repeats)
            medians = {side: statistics.median(t) for side, t in times.items()}
            result[measure] = {"tokens": tokens, "seconds": times, "median_s": medians,
                               "speedup": medians["base"] / medians["new"]}
            print(f"{measure:<8} {args.arch} {args.size} {args.overrides}: base {revision} "
                  f"{tokens / medians['base']:,.0f} tok/s, new {tokens / medians['new']:,.0f} tok/s "
                  f"(median of {args.repeats}; {medians['base'] / medians['new']:.2f}x)", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
