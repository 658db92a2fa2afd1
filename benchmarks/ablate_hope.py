"""Ablations of Hope's departures from the paper: each row is the default ``hope`` with config overrides.

Every row trains the tiny preset on the language-modelling recipe of ``benchmarks/compare_archs.py`` (its own
``run_arch``: same batches at every step for every row and seed, same optimizer and schedule) and reports bits per
byte on the validation and test windows; then it trains one formal language (``hope tasks``' runner, default
parity) and reports the accuracy at training lengths (``bin0``) and at twice them (``bin1``). The rows
(``ROWS``) are: the default, what the adaptive memories read (``memory_input``), how ``M_mem`` is read
(``memory_read``), each stabiliser the paper does not have switched off (``normalize_v``, ``sigmoid_gates``,
``curvature``, ``proximal``, ``momentum``), all of them off (the paper as printed), and the CMS levels at full
width (``cms_hidden``; more parameters, reported).

Runs live in ``OUT/<row>/seed-S/{lm,formal}``; a finished run is skipped and an interrupted language-model run
resumes from its checkpoint, so the script can be re-run until every row is done. ``--jobs 2`` runs two rows at
a time (one process each, 1 thread each). It writes ``DOCS/ablation_hope.json`` and ``DOCS/ablation_hope.md``
(the table, also printed), from whatever runs are complete.

    python benchmarks/ablate_hope.py --tokens 300000 --formal-steps 500 --seeds 0 1 2 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_archs import is_complete, run_arch  # noqa: E402

from hope.errors import HopeError  # noqa: E402
from hope.models import build  # noqa: E402
from hope.tasks.config import TaskRunConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ROWS: dict[str, dict] = {
    "default": {},
    "memory_input=head": {"memory_input": "head"},
    "memory_input=head, mlp_hidden=299 (the model before)": {"memory_input": "head", "mlp_hidden": 299},
    "memory_input=full-separate": {"memory_input": "full-separate", "mlp_hidden": 144},
    "memory_read=running": {"memory_read": "running"},
    "memory_read=start": {"memory_read": "start"},
    "normalize_v=False": {"normalize_v": False},
    "sigmoid_gates=False": {"sigmoid_gates": False},
    "curvature=False": {"curvature": False},
    "proximal=False": {"proximal": False},
    "momentum=False": {"momentum": False},
    "paper as printed": {"normalize_v": False, "sigmoid_gates": False, "curvature": False, "proximal": False,
                         "momentum": False},
    "cms_hidden=264 (full-width levels)": {"cms_hidden": 264},
}
"""Overrides of the default ``hope`` per row. ``full-separate`` gets the SwiGLU width that keeps the tiny preset
within 1% of Transformer++'s parameters, as does ``head`` with the width of the model before ``memory_input``
(299); the full-width CMS row keeps every level at the whole MLP width."""


def row_dir(args: argparse.Namespace, row: str, seed: int) -> Path:
    slug = "".join(c if c.isalnum() or c in "=-_." else "_" for c in row)
    return Path(args.out) / slug / f"seed-{seed}"


def lm_args(args: argparse.Namespace, row: str, seed: int) -> argparse.Namespace:
    """The arguments of ``compare_archs.run_arch`` for one row and seed."""
    return argparse.Namespace(
        size="tiny", vocab_size=args.vocab_size, seq_len=args.seq_len, batch_size=args.batch_size,
        tokens=args.tokens, lr=args.lr, warmup=0.1, seed=seed, val_points=2, val_windows=8,
        eval_windows=args.eval_windows, save_every=10, model=list(ROWS[row].items()),
        out=str(row_dir(args, row, seed)))


def run_row(args: argparse.Namespace, row: str, seed: int) -> None:
    """Language model, then formal language, of one row and seed (each skipped when already complete)."""
    from hope.tasks.runner import run_task

    torch.set_num_threads(1)
    lm = lm_args(args, row, seed)
    if not is_complete(lm, "hope"):
        run_arch(lm, "hope")
    formal = row_dir(args, row, seed) / "formal"
    if args.formal_steps and not (formal / "result.json").exists():
        try:
            run_task(TaskRunConfig(task=f"formal_{args.language}", out=str(formal), arch="hope", size="tiny",
                                   seed=seed, steps=args.formal_steps, batch_size=args.formal_batch_size,
                                   warmup_steps=max(1, args.formal_steps // 10), eval_examples=args.formal_eval,
                                   model=dict(ROWS[row]), threads=1,
                                   progress=False))
        except HopeError as err:
            (formal / "result.json").write_text(json.dumps({"diverged": str(err)}))
    print(f"[{row} seed {seed}] done", flush=True)


def stability(args: argparse.Namespace, row: str) -> dict:
    """Before any training: whether the row's model (tiny, static CMS) keeps finite logits over 1536 tokens of
    random text, and the largest |weight| its memories reach, for seeds 0 and 1 (as
    tests/models/test_long_input_stability.py checks for the default). Cached in ``OUT/<row>/stability.json``."""
    path = row_dir(args, row, 0).parent / "stability.json"
    if path.exists():
        return json.loads(path.read_text())
    torch.set_num_threads(1)
    result = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build("hope", "tiny", vocab_size=257, **{**ROWS[row], "cms_periods": (None,)})
        with torch.no_grad():
            out = model(torch.randint(0, 257, (1, 1536)))
        weights = [t for layer in out.state.layers for name, t in layer.mixer.to_flat().items()
                   if name.rsplit(".", 1)[-1] in ("w", "w1", "w2")]
        result[str(seed)] = {"finite_logits": bool(torch.isfinite(out.logits).all()),
                             "max_abs_weight": max(t.abs().max().item() for t in weights)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def collect(args: argparse.Namespace) -> dict[str, dict]:
    """Per row: parameters and, per complete seed, the language-model and formal-language scores."""
    rows = {}
    for row, overrides in ROWS.items():
        seeds = {}
        for seed in args.seeds:
            lm = lm_args(args, row, seed)
            if not is_complete(lm, "hope"):
                continue
            result = json.loads((Path(lm.out) / "hope" / "result.json").read_text())
            entry = {"val_bpb": result.get("val_bits_per_byte"), "test_bpb": result.get("test_bits_per_byte"),
                     "diverged": result.get("diverged"), "train_tokens_per_s": result.get("train_tokens_per_s")}
            formal = row_dir(args, row, seed) / "formal" / "result.json"
            if formal.exists():
                done = json.loads(formal.read_text())
                entry["formal"] = ({"diverged": done["diverged"]} if "diverged" in done else
                                   {label: s["item_accuracy"] for label, s in done["evals"].items()})
            seeds[str(seed)] = entry
        rows[row] = {"overrides": overrides, "parameters": build("hope", "tiny", vocab_size=args.vocab_size,
                                                                 **overrides).num_parameters(), "seeds": seeds,
                     **({"stability": stability(args, row)} if args.stability and seeds else {})}
    return rows


def spread(values: list[float], digits: int = 4) -> str:
    """``mean`` for one value, ``mean +- sd (n)`` for several."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f} ({len(values)})"


def table(args: argparse.Namespace, rows: dict[str, dict]) -> str:
    lines = ["| row | params | val bpb | test bpb | "
             f"{args.language} bin0 | {args.language} bin1 | random text at init | seeds |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for row, r in rows.items():
        if not r["seeds"]:
            continue
        done = [s for s in r["seeds"].values() if not s["diverged"]]
        diverged = [seed for seed, s in r["seeds"].items() if s["diverged"]]
        formal = [s["formal"] for s in r["seeds"].values() if "formal" in s]
        scores = {label: [100 * f[label] for f in formal if label in f] for label in ("bin0", "bin1")}
        failed = sum("diverged" in f for f in formal)
        cells = [spread([s[key] for s in done]) for key in ("val_bpb", "test_bpb")]
        cells += [spread(scores[label], digits=1)
                  + (f" ({failed} diverged)" if failed else "") for label in ("bin0", "bin1")]
        cells.append(", ".join(f"{v['max_abs_weight']:.3g}" + ("" if v["finite_logits"] else " (NaN logits)")
                               for v in r.get("stability", {}).values()) or "-")
        note = ", ".join(r["seeds"]) + (f"; diverged: {', '.join(diverged)}" if diverged else "")
        lines.append(f"| {row} | {r['parameters']:,} | " + " | ".join(cells) + f" | {note} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, required=True, help="Language-model training tokens per run.")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--eval-windows", type=int, default=96, help="Windows of the final validation and test.")
    parser.add_argument("--language", default="parity", help="Formal language (hope tasks' formal_<language>).")
    parser.add_argument("--formal-steps", type=int, default=500, help="Formal-language steps (0: skip).")
    parser.add_argument("--formal-batch-size", type=int, default=32)
    parser.add_argument("--formal-eval", type=int, default=256, help="Formal-language strings per length bin.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), help="Rows to run (names of ROWS).")
    parser.add_argument("--jobs", type=int, default=1, help="Rows run at once (1 thread each).")
    parser.add_argument("--report-only", action="store_true", help="Only write the table of the finished runs.")
    parser.add_argument("--stability", action="store_true",
                        help="Add the random-text check at initialisation (max |memory weight|, per seed) per row.")
    parser.add_argument("--out", default=str(ROOT / "runs" / "ablate_hope"))
    parser.add_argument("--docs", default=str(ROOT / "docs" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    unknown = [row for row in args.rows if row not in ROWS]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; expected among {', '.join(ROWS)}")
    if not args.report_only:
        todo = [(row, seed) for seed in args.seeds for row in args.rows]
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            for future in as_completed([pool.submit(run_row, args, row, seed) for row, seed in todo]):
                future.result()
    rows = collect(args)
    text = table(args, rows)
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "ablation_hope.json").write_text(json.dumps({
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "torch": torch.__version__,
        "python": platform.python_version(), "cpu_count": os.cpu_count(), "threads_per_process": 1,
        "jobs": args.jobs, "tokens": args.tokens, "seq_len": args.seq_len, "batch_size": args.batch_size,
        "formal_language": args.language, "formal_steps": args.formal_steps, "rows": rows}, indent=2))
    (docs / "ablation_hope.md").write_text(
        f"Hope tiny, {args.tokens:,} training tokens ({args.batch_size} x {args.seq_len} per step, the "
        f"compare_archs recipe at a reduced budget), bits per byte over {args.eval_windows} windows of each split; "
        f"formal language `{args.language}`, {args.formal_steps} steps of {args.formal_batch_size} strings, "
        f"accuracy (%) over {args.formal_eval} strings at training lengths (bin0) and twice them (bin1). Several "
        f"seeds: mean +- standard deviation (count). Random text at init: the largest |weight| of the memories "
        f"after 1536 random tokens, untrained (seeds 0 and 1).\n\n{text}\n")
    print(text)


if __name__ == "__main__":
    main()
