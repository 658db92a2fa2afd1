"""Hope vs Transformer++ and the other architectures at equal parameters: training, prefill and decoding speed.

One run, 1 thread, random tokens (vocabulary 4096), at every size of ``--sizes`` (``tiny`` and ``small``), every
measurement bounded by a time budget:

* training tokens/s (forward + backward of the next-token loss, batch 1) at the ``--train-lengths`` (batched
  training at 16 x 256 is ``benchmarks/train_throughput.py``);
* prefill tokens/s (one forward call without gradients, test-time learning on) at prompt lengths 1K..64K; a length
  whose predicted time (from the previous length, linear for recurrent mixers, quadratic for attention) exceeds the
  budget is skipped and reported as such;
* per-token decode latency, process RSS (``VmRSS`` of ``/proc/self/status``, after ``malloc_trim``) and the
  size of the ``ModelState`` at positions 1K, 16K, 128K. The state is streamed forward without gradients
  in pieces of 4096 tokens (attention models: one prefill call per position, since their chunked prefill
  materialises masks) for as long as the streaming budget lasts; positions not reached are reported.

Writes ``model_throughput.json`` and ``model_throughput.md`` into ``--docs`` (default ``docs/``), with ratios against
Transformer++ (and, for decoding, Gated DeltaNet) measured in the same run and the targets of issue #15.

    python benchmarks/model_throughput.py [--sizes tiny,small] [--archs transformer,hope,...]
        [--train-budget 10] [--prefill-budget 40] [--stream-budget 45] [--window 256]

Budget: per arch and size about ``train-budget x len(train-lengths) + (the prefill calls, each predicted under
prefill-budget) + stream-budget + 3 decode windows``; the defaults (7 rows, 2 sizes) are sized for about 30 minutes
on one quiet core. A reduced run: ``--sizes tiny --prefill-lengths 1024,4096 --positions 1024,16384 --window 64``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from hope.compiling import compiling
from hope.layers.attention import Attention
from hope.models import build

DOCS = Path(__file__).resolve().parent.parent / "docs"
VOCAB = 4096
TRAIN_LENGTHS = (2048,)
PREFILL_LENGTHS = (1024, 4096, 16384, 65536)
DECODE_POSITIONS = (1024, 16384, 131072)
PIECE = 4096


def rss_mib() -> float:
    """Resident set size of this process (``VmRSS``), after handing freed heap pages back to the system."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def fresh(arch: str, size: str, overrides: dict[str, Any]) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(arch, size, vocab_size=VOCAB, **overrides)


def tokens(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))


def uses_attention(model: torch.nn.Module) -> bool:
    return any(isinstance(block.mixer, Attention) for block in model.blocks)


def training(model: torch.nn.Module, length: int, budget: float) -> dict[str, Any]:
    """Forward + backward steps on one sequence of ``length`` tokens: one warm-up step, then timed steps until
    ``budget`` seconds are spent (at least one)."""
    ids = tokens(length + 1)
    times: list[float] = []
    while len(times) < 2 or sum(times[1:]) < budget:
        start = time.perf_counter()
        model(ids[:, :-1], targets=ids[:, 1:]).loss.backward()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    timed = times[1:]
    return {"tokens_per_s": length * len(timed) / sum(timed), "timed_steps": len(timed),
            "warmup_s": times[0], "seconds": sum(times)}


def prefill(model: torch.nn.Module, lengths: tuple[int, ...], budget: float) -> list[dict[str, Any]]:
    """One no-grad forward over a prompt of each length; skip lengths predicted to exceed ``budget``."""
    rows, previous = [], None
    power = 2 if uses_attention(model) else 1
    for length in lengths:
        if previous is not None:
            predicted = previous[1] * (length / previous[0]) ** power
            if predicted > budget:
                rows.append({"length": length, "skipped": f"predicted {predicted:.0f} s > budget {budget:.0f} s"})
                continue
        ids = tokens(length, seed=2)
        with torch.no_grad():
            start = time.perf_counter()
            model(ids)
            seconds = time.perf_counter() - start
        rows.append({"length": length, "tokens_per_s": length / seconds, "seconds": seconds})
        previous = (length, seconds)
    return rows


def state_mib(state) -> float:
    return sum(t.numel() * t.element_size() for t in state.tensors().values()) / 2**20


def decode_at(model: torch.nn.Module, state, window: int) -> tuple[dict[str, Any], Any]:
    """Decode ``window`` tokens one at a time from ``state``; latency statistics, RSS and state size."""
    ids = tokens(window, seed=3)
    latencies = []
    with torch.no_grad():
        for i in range(window):
            start = time.perf_counter()
            state = model(ids[:, i:i + 1], state=state).state
            latencies.append(time.perf_counter() - start)
    stats = {"ms_per_token_mean": 1e3 * statistics.fmean(latencies),
             "ms_per_token_median": 1e3 * statistics.median(latencies), "ms_per_token_max": 1e3 * max(latencies),
             "window": window, "rss_mib": rss_mib(), "state_mib": state_mib(state)}
    return stats, state


def decode(model: torch.nn.Module, positions: tuple[int, ...], budget: float, window: int) -> list[dict[str, Any]]:
    """Bring the state to each position (streaming pieces of ``PIECE`` tokens, or one prefill call for attention
    models) while the streaming budget lasts, then decode a window of tokens there."""
    rows: list[dict[str, Any]] = []
    state, position, spent, last = None, 0, 0.0, None
    incremental = not uses_attention(model)
    for target in positions:
        if not incremental:
            state, position = None, 0
        todo = target - position
        if last is not None:
            seconds, length = last
            predicted = seconds * (todo / length if incremental else (target / length) ** 2)
            if spent + predicted > budget:
                rows.append({"position": target, "skipped": f"predicted {predicted:.0f} s more streaming, over the "
                             f"{budget:.0f} s budget ({spent:.0f} s spent)"})
                break
        start = time.perf_counter()
        with torch.no_grad():
            while position < target and spent + time.perf_counter() - start < budget:
                n = min(PIECE, target - position) if incremental else target
                state = model(tokens(n, seed=4 + position), state=state).state
                position += n
        elapsed = time.perf_counter() - start
        spent += elapsed
        if position < target:
            rows.append({"position": target, "skipped": f"streaming budget ({budget:.0f} s) ran out at position "
                         f"{position:,}"})
            break
        last = (elapsed, todo)
        stats, state = decode_at(model, state, window)
        position += window
        rows.append({"position": target, **stats, "stream_tokens_per_s": todo / elapsed})
    reached = {row["position"] for row in rows}
    rows += [{"position": p, "skipped": "not reached"} for p in positions if p not in reached]
    return rows


VARIANTS = {"hope-static-channel": ("hope", {"cms_periods": (None,)}, False), "hope-compiled": ("hope", {}, True)}
"""Extra rows: Hope's mixer with a static SwiGLU channel memory, to separate the mixer's cost from the CMS's; Hope
with its per-chunk functions compiled (``hope.compiling``; the compiling calls are warm-ups, outside the timings)."""


def spec(name: str) -> tuple[str, dict[str, Any], bool]:
    return VARIANTS.get(name, (name, {}, False))


def warm_up(model: torch.nn.Module) -> float:
    """Untimed calls at two lengths (training, no-grad and one-token decoding), so that a compiled model has compiled
    its graphs (one per autograd mode; compiled code is shared by every instance of a model) before anything is
    timed; returns the seconds spent."""
    start = time.perf_counter()
    for length in (64, 96):
        ids = tokens(length + 1, seed=5)
        model(ids[:, :-1], targets=ids[:, 1:]).loss.backward()
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            state = model(ids[:, :length]).state
            for i in range(2):
                state = model(ids[:, i:i + 1], state=state).state
    return time.perf_counter() - start


def ratio(rows: dict[str, Any], arch: str, base: str = "transformer") -> float | None:
    if arch in rows and base in rows and "tokens_per_s" in rows[arch] and "tokens_per_s" in rows[base]:
        return rows[arch]["tokens_per_s"] / rows[base]["tokens_per_s"]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--archs", default="transformer,hope,hope-static-channel,hope-attention,gated-deltanet,titans,"
                        "bdh", help="Comma-separated; also the variants " + ", ".join(VARIANTS) + ".")
    parser.add_argument("--train-budget", type=float, default=10.0, help="Seconds per training measurement.")
    parser.add_argument("--prefill-budget", type=float, default=40.0, help="Seconds per prefill call (predicted).")
    parser.add_argument("--stream-budget", type=float, default=45.0, help="Seconds of streaming per arch and size.")
    parser.add_argument("--window", type=int, default=256,
                        help="Decoded tokens per position (at least the longest CMS period, to include its steps).")
    parser.add_argument("--train-lengths", default=",".join(map(str, TRAIN_LENGTHS)), help="Empty: no training rows.")
    parser.add_argument("--prefill-lengths", default=",".join(map(str, PREFILL_LENGTHS)))
    parser.add_argument("--positions", default=",".join(map(str, DECODE_POSITIONS)))
    parser.add_argument("--docs", default=str(DOCS), help="Folder of model_throughput.json and .md.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    archs, sizes = args.archs.split(","), args.sizes.split(",")
    train_lengths, prefill_lengths, positions = (tuple(int(x) for x in getattr(args, a).split(",") if x)
                                                 for a in ("train_lengths", "prefill_lengths", "positions"))
    meta = {"sizes": sizes, "vocab": VOCAB, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count(), "load_average_start": os.getloadavg(),
            "budgets_s": {"train": args.train_budget, "prefill": args.prefill_budget, "stream": args.stream_budget},
            "decode_window": args.window, "variants": {k: v[1] for k, v in VARIANTS.items() if k in archs}}
    result: dict[str, Any] = {"meta": meta, "sizes": {}}
    started = time.perf_counter()
    for size in sizes:
        result["sizes"][size] = {"parameters": {}, "warmup_s": {}, "training": {}, "prefill": {}, "decode": {}}
        for name in archs:
            arch, overrides, compiled = spec(name)
            with compiling(compiled):
                measure(name, arch, size, overrides, args, result["sizes"][size], train_lengths, prefill_lengths,
                        positions)
    meta["load_average_end"] = os.getloadavg()
    meta["wall_s"] = time.perf_counter() - started
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "model_throughput.json").write_text(json.dumps(result, indent=2))
    command = " ".join(["python benchmarks/model_throughput.py", *sys.argv[1:]])
    (docs / "model_throughput.md").write_text(report(result, command, archs, train_lengths, prefill_lengths,
                                                     positions))
    print(f"wrote {docs}/model_throughput.json and {docs}/model_throughput.md ({meta['wall_s']:.0f} s)")


def measure(name: str, arch: str, size: str, overrides: dict[str, Any], args: argparse.Namespace,
            result: dict[str, Any], train_lengths: tuple[int, ...], prefill_lengths: tuple[int, ...],
            positions: tuple[int, ...]) -> None:
    """Training, prefill and decoding rows of one arch (or variant) at one size into ``result``."""
    model = fresh(arch, size, overrides)
    result["warmup_s"][name] = warm_up(model)
    result["parameters"][name] = model.num_parameters()
    result["training"][name] = {}
    for length in train_lengths:
        row = training(model, length, args.train_budget)
        result["training"][name][length] = row
        print(f"{size:<6} train   {name:<20} T={length:<6} {row['tokens_per_s']:>9.1f} tok/s "
              f"({row['timed_steps']} steps)", flush=True)
    result["prefill"][name] = prefill(model, prefill_lengths, args.prefill_budget)
    for row in result["prefill"][name]:
        print(f"{size:<6} prefill {name:<20} L={row['length']:<6} " + (f"{row['tokens_per_s']:>9.1f} tok/s" if
              "tokens_per_s" in row else row["skipped"]), flush=True)
    del model
    model = fresh(arch, size, overrides)
    result["decode"][name] = decode(model, positions, args.stream_budget, args.window)
    for row in result["decode"][name]:
        print(f"{size:<6} decode  {name:<20} @{row['position']:<8} " + (
            f"{row['ms_per_token_mean']:.2f} ms/token (median {row['ms_per_token_median']:.2f}), "
            f"RSS {row['rss_mib']:.1f} MiB, state {row['state_mib']:.2f} MiB" if "rss_mib" in row
            else row["skipped"]), flush=True)
    del model


def report(result: dict[str, Any], command: str, archs: list[str], train_lengths: tuple[int, ...],
           prefill_lengths: tuple[int, ...], positions: tuple[int, ...]) -> str:
    meta = result["meta"]
    lines = ["# Model throughput: Hope vs Transformer++ and the other architectures", "",
             f"`{command}`: vocabulary {meta['vocab']}, {meta['threads']} thread, torch {meta['torch']}, "
             f"{meta['cpus']} CPUs (load average {meta['load_average_start'][0]:.1f} at the start, "
             f"{meta['load_average_end'][0]:.1f} at the end). Budgets: {meta['budgets_s']} s; "
             f"{meta['wall_s'] / 60:.0f} min in all. Ratios are to Transformer++ measured in the same run "
             "(decoding: to Gated DeltaNet).", ""]
    for size, sized in result["sizes"].items():
        lines += [f"## `{size}`", "",
                  "Parameters: " + ", ".join(f"{a} {n:,}" for a, n in sized["parameters"].items()) + ".", "",
                  "Untimed warm-up (training and decoding calls at 64 and 96 tokens; for `-compiled` rows this is "
                  "where torch.compile runs): " + ", ".join(f"{a} {t:.0f} s" for a, t in sized["warmup_s"].items())
                  + "."]
        if train_lengths:
            lines += ["", "### Training (forward + backward, batch 1), tokens/s", "",
                      "| arch | " + " | ".join(f"T={t}" for t in train_lengths) + " |",
                      "|---|" + "---:|" * len(train_lengths)]
            for a in archs:
                cells = []
                for t in train_lengths:
                    row, base = sized["training"][a][t], sized["training"].get("transformer", {}).get(t)
                    rel = f" ({row['tokens_per_s'] / base['tokens_per_s']:.2f}x)" if base and a != "transformer" else ""
                    cells.append(f"{row['tokens_per_s']:,.1f}{rel}")
                lines.append(f"| {a} | " + " | ".join(cells) + " |")
        lines += ["", "### Prefill (one no-grad forward over the prompt), tokens/s", "",
                  "| arch | " + " | ".join(f"L={n}" for n in prefill_lengths) + " |",
                  "|---|" + "---:|" * len(prefill_lengths)]
        base_rows = {row["length"]: row for row in sized["prefill"].get("transformer", [])}
        for a in archs:
            cells = []
            for row in sized["prefill"][a]:
                if "tokens_per_s" not in row:
                    cells.append(f"skipped ({row['skipped']})")
                    continue
                base = base_rows.get(row["length"], {})
                rel = (f" ({row['tokens_per_s'] / base['tokens_per_s']:.2f}x)"
                       if "tokens_per_s" in base and a != "transformer" else "")
                cells.append(f"{row['tokens_per_s']:,.1f}{rel}")
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        lines += ["", f"### Decoding: mean (median) ms per token over {meta['decode_window']} tokens, RSS, state size",
                  "", "| arch | " + " | ".join(f"@{p:,}" for p in positions) + " |", "|---|" + "---|" * len(positions)]
        for a in archs:
            cells = []
            for row in sized["decode"][a]:
                if "rss_mib" in row:
                    cells.append(f"{row['ms_per_token_mean']:.1f} ({row['ms_per_token_median']:.1f}) ms, "
                                 f"RSS {row['rss_mib']:.0f} MiB, state {row['state_mib']:.2f} MiB")
                else:
                    cells.append(f"not measured: {row['skipped']}")
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        lines += ["", "### Against the targets of issue #15", ""] + targets(sized)
        lines.append("")
    return "\n".join(lines) + "\n"


def targets(sized: dict[str, Any]) -> list[str]:
    """The issue's targets at one size, each with the measured value (or why there is none)."""
    out = []
    for length, goal in ((4096, 0.5), (16384, 1.0)):
        rows = {a: next((row for row in sized["prefill"].get(a, []) if row["length"] == length), {})
                for a in ("hope", "transformer")}
        r = ratio(rows, "hope")
        out.append(f"- Prefill at {length // 1024}K: Hope / Transformer++ = " + (
            f"{r:.2f}x (target >= {goal}x: {'met' if r >= goal else 'not met'})" if r is not None
            else "not measured (see the prefill table)"))
    decoded = {a: {row["position"]: row for row in sized["decode"].get(a, []) if "rss_mib" in row}
               for a in ("hope", "gated-deltanet")}
    for position in sorted(set(decoded["hope"]) | set(decoded["gated-deltanet"])):
        hope, gdn = decoded["hope"].get(position), decoded["gated-deltanet"].get(position)
        if hope and gdn:
            r = hope["ms_per_token_mean"] / gdn["ms_per_token_mean"]
            out.append(f"- Decoding at {position:,}: Hope / Gated DeltaNet ms per token = {r:.2f}x (target <= 1.5x: "
                       f"{'met' if r <= 1.5 else 'not met'})")
        else:
            out.append(f"- Decoding at {position:,}: not measured for both Hope and Gated DeltaNet")
    reached = sorted(decoded["hope"])
    if len(reached) > 1:
        first, last = decoded["hope"][reached[0]], decoded["hope"][reached[-1]]
        out.append(f"- Hope's RSS from position {reached[0]:,} to {reached[-1]:,}: {first['rss_mib']:.0f} -> "
                   f"{last['rss_mib']:.0f} MiB ({100 * (last['rss_mib'] / first['rss_mib'] - 1):+.1f}%; target: flat)")
    return out


if __name__ == "__main__":
    main()
