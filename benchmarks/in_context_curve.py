"""In-context learning curve: mean next-token loss by position over long held-out documents.

For each trained model of ``benchmarks/compare_archs.py`` (``RUNS/<arch>/checkpoint``), every validation
and test document of the embedded corpus with at least ``--length`` tokens is read from its start (after
one end-of-text token, as documents start in the training stream) for ``--length`` tokens, in pieces of
``--piece`` tokens carried over by the ``state=`` continuation under ``torch.no_grad()`` (memory stays
bounded; the result equals one full forward). Losses are averaged per document position and then over
log-spaced position buckets. ``hope`` and ``hope-attention`` are also read with ``test_time_learning=False``
(the same weights; every in-context update frozen), so their curves show what test-time learning adds.

Each model's curves are kept in ``RUNS/<arch>/in_context_curve.json`` and reused while the checkpoint
and the settings are unchanged, so models can be read as they finish. Writes ``DOCS/in_context_curve.json``, ``DOCS/in_context_curve.md`` and ``DOCS/in_context_curve.png``.

    python benchmarks/in_context_curve.py --length 2048
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hope.checkpoint import load_checkpoint
from hope.data.corpus import load_corpus
from hope.models import LanguageModel, config_from_dict

ROOT = Path(__file__).resolve().parent.parent
ARCHS = ("hope", "hope-attention", "titans", "gated-deltanet", "transformer")
LEARNING = ("hope", "hope-attention")
"""Architectures with a ``test_time_learning`` switch, read both ways."""


def documents(tokenizer, length: int, max_docs: int | None) -> tuple[list[str], torch.Tensor]:
    """Names and ``[N, length + 1]`` token ids (end-of-text, then the document) of the held-out documents
    with at least ``length`` tokens, validation first, then test, each in corpus order."""
    corpus = load_corpus(None)
    names, rows = [], []
    for split in ("validation", "test"):
        for doc in corpus.split(split):
            ids = tokenizer.encode(doc.text)
            if len(ids) >= length:
                names.append(doc.name)
                rows.append([tokenizer.eot_id, *ids[:length]])
    if max_docs is not None:
        names, rows = names[:max_docs], rows[:max_docs]
    if not rows:
        raise SystemExit(f"no held-out document has {length} tokens; use a smaller --length")
    return names, torch.tensor(rows, dtype=torch.int64)


@torch.no_grad()
def position_losses(model: LanguageModel, ids: torch.Tensor, piece: int, batch: int) -> np.ndarray:
    """Next-token loss ``[N, T]`` of every document at every position, reading ``piece`` tokens per call.

    The first call reads ``piece + 1`` tokens: calls then end one token after a multiple of ``piece``, where
    a CMS level whose period divides ``piece`` has just stepped, so a call rarely replays tokens."""
    model.eval()
    inputs, targets = ids[:, :-1], ids[:, 1:]
    out = np.zeros(tuple(targets.shape))
    for b in range(0, len(ids), batch):
        rows = slice(b, b + batch)
        state, start = None, 0
        while start < inputs.shape[1]:
            end = min(inputs.shape[1], start + piece + (start == 0))
            result = model(inputs[rows, start:end], state=state)
            state = result.state
            losses = F.cross_entropy(result.logits.float().transpose(1, 2), targets[rows, start:end], reduction="none")
            out[rows, start:end] = losses.numpy()
            start = end
    return out


def buckets(length: int, per_octave: int) -> list[tuple[int, int]]:
    """Log-spaced position buckets ``[lo, hi)`` covering ``0 .. length - 1`` (position p predicts token p + 1)."""
    edges = sorted({0, *(round(2 ** (i / per_octave)) for i in range(int(per_octave * math.log2(length)) + 1)), length})
    return [(lo, hi) for lo, hi in zip(edges, edges[1:]) if lo < hi]


def with_test_time_learning(model: LanguageModel, enabled: bool) -> LanguageModel:
    """The same weights with ``test_time_learning`` set to ``enabled``."""
    config = config_from_dict({**model.config.to_dict(), "test_time_learning": enabled})
    other = LanguageModel(config)
    other.load_state_dict(model.state_dict(), strict=True)
    return other


def plot(curves: dict[str, dict], png: Path, length: int, train_len: int | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = {}
    for name, curve in curves.items():
        arch = name.split(" ")[0]
        x = [math.sqrt((lo + 1) * hi) for lo, hi in curve["buckets"]]
        style = "--" if "off" in name else "-"
        line, = ax.plot(x, curve["mean_loss"], style, marker=".", color=colors.get(arch), label=name)
        colors.setdefault(arch, line.get_color())
    if train_len:
        ax.axvline(train_len, color="gray", lw=0.8, ls=":", label=f"training length ({train_len})")
    ax.set_xscale("log")
    ax.set_xlabel("tokens of context read (position + 1, log scale)")
    ax.set_ylabel("mean next-token loss (nats)")
    ax.set_title(f"in-context learning curve: held-out documents, first {length} tokens")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(ROOT / "runs" / "compare"), help="Run directories of compare_archs.py.")
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--length", type=int, default=2048, help="Tokens read per document.")
    parser.add_argument("--piece", type=int, default=256, help="Tokens per call (state carried over).")
    parser.add_argument("--batch", type=int, default=8, help="Documents read at once.")
    parser.add_argument("--max-docs", type=int, help="Use at most this many documents.")
    parser.add_argument("--per-octave", type=int, default=2, help="Position buckets per doubling.")
    parser.add_argument("--docs", default=str(ROOT / "docs" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs, docs = Path(args.runs), Path(args.docs)
    spans = buckets(args.length, args.per_octave)
    curves, names, train_len = {}, None, None
    for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
        checkpoint, result = runs / arch / "checkpoint", runs / arch / "result.json"
        if not result.is_file() or "diverged" in json.loads(result.read_text()):
            print(f"{arch}: no finished run in {runs / arch}, skipped")
            continue
        model, tokenizer, _ = load_checkpoint(checkpoint)
        config_path = runs / arch / "train_config.json"
        if config_path.is_file():
            train_len = json.loads(config_path.read_text())["seq_len"]
        names, ids = documents(tokenizer, args.length, args.max_docs)
        variants = [(f"{arch} (TTL on)", True), (f"{arch} (TTL off)", False)] if arch in LEARNING else [(arch, None)]
        cache_path = runs / arch / "in_context_curve.json"
        key = {"length": args.length, "piece": args.piece, "documents": names, "buckets": [list(b) for b in spans],
               "checkpoint_mtime": (checkpoint / "model.safetensors").stat().st_mtime}
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
        if cache.get("key") != key:
            cache = {"key": key, "curves": {}}
        for label, enabled in variants:
            if label in cache["curves"]:
                curves[label] = cache["curves"][label]
                print(f"{label:<26} overall {curves[label]['overall']:.4f}  (cached in {cache_path})")
                continue
            started = time.time()
            reader = model if enabled is None else with_test_time_learning(model, enabled)
            losses = position_losses(reader, ids, args.piece, args.batch)
            means = [float(losses[:, lo:hi].mean()) for lo, hi in spans]
            curves[label] = {"buckets": spans, "mean_loss": means, "overall": float(losses.mean()),
                             "seconds": time.time() - started}
            cache["curves"][label] = curves[label]
            cache_path.write_text(json.dumps(cache, indent=2))
            print(f"{label:<26} overall {losses.mean():.4f}  " + "  ".join(
                f"[{lo},{hi}) {m:.3f}" for (lo, hi), m in zip(spans, means) if hi in (16, 128, 256, 512) or hi == args.length)
                + f"  ({time.time() - started:.0f}s)", flush=True)
    if not curves:
        raise SystemExit(f"no trained model under {runs}")
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "in_context_curve.json").write_text(json.dumps({
        "length": args.length, "piece": args.piece, "documents": names, "buckets": spans,
        "curves": curves}, indent=2))
    plot(curves, docs / "in_context_curve.png", args.length, train_len)
    header = ["model"] + [f"[{lo}, {hi})" for lo, hi in spans if hi >= 4]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for label, curve in curves.items():
        cells = [f"{m:.3f}" for (lo, hi), m in zip(spans, curve["mean_loss"]) if hi >= 4]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    (docs / "in_context_curve.md").write_text(
        f"Mean next-token loss (nats) by position bucket, {len(names)} held-out documents x {args.length} tokens, "
        f"read {args.piece} tokens per call.\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
