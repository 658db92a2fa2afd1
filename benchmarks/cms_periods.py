"""Which CMS periods: a small streamed training run per period set, then held-out loss along long documents.

For each set of ``cms_periods`` (docs/cms.md, "Periods"), a ``hope-attention`` model is trained from the same
initialisation on the same stream: each of ``--batch`` rows reads a training document of the embedded corpus
from its start (after one end-of-text token) for ``--length`` tokens, in windows of ``--window`` tokens, the
``ModelState`` carried (detached) from window to window, every CMS step window-aligned and taken from the
training backward (``model(..., window=True)`` + ``step_after_backward``); after ``--length`` tokens every row
starts a new document. Then every held-out document (validation + test) is read for ``--length`` tokens with the
in-context forward (NL Eq. 71, under ``torch.no_grad()``), with test-time learning on and off (same weights), and
its loss is averaged per position bucket. Writes ``docs/cms_periods_seed{seed}.json`` and ``.md``.

    nice -n 10 python benchmarks/cms_periods.py --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hope.data.corpus import load_corpus
from hope.data.tokenizer import BytesTokenizer
from hope.models import LanguageModel, config_from_dict, make_config
from hope.models.hope.window import step_after_backward

ROOT = Path(__file__).resolve().parent.parent
PERIOD_SETS = {
    "static": (None, None, None),
    "128/256/512": (128, 256, 512),
    "512/1K/2K": (512, 1024, 2048),
    "512/2K/8K (default)": (512, 2048, 8192),
}
MODEL = dict(d_model=64, n_layers=2, n_heads=4, cms_lr=0.1)


def documents(split: str, length: int) -> list[list[int]]:
    """End-of-text then the first ``length`` tokens of every document of ``split`` that has that many."""
    tokenizer = BytesTokenizer()
    docs = []
    for split_name in split.split("+"):
        for doc in load_corpus(None).split(split_name):
            ids = tokenizer.encode(doc.text)
            if len(ids) >= length:
                docs.append([tokenizer.eot_id, *ids[:length]])
    return docs


def train(model: LanguageModel, docs: list[list[int]], args: argparse.Namespace) -> list[float]:
    """Streamed training: ``--batches`` batches of ``--batch`` documents, each read in windows. Returns the loss of
    every window."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    order = random.Random(args.seed)
    losses = []
    model.train()
    for _ in range(args.batches):
        ids = torch.tensor(order.sample(docs, args.batch))
        state = None
        for start in range(0, args.length, args.window):
            out = model(ids[:, start:start + args.window], state=state,
                        targets=ids[:, start + 1:start + args.window + 1], window=True)
            optimizer.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            state = step_after_backward(model, out.state, args.batch * args.window).detach()
            optimizer.step()
            losses.append(out.loss.item())
    return losses


@torch.no_grad()
def held_out_losses(model: LanguageModel, ids: torch.Tensor, piece: int) -> torch.Tensor:
    """Next-token loss ``[N, length]`` of the in-context forward, read ``piece`` tokens per call."""
    model.eval()
    out = torch.zeros(ids.shape[0], ids.shape[1] - 1)
    for row in range(0, ids.shape[0], 4):
        rows, state, start = slice(row, row + 4), None, 0
        while start < ids.shape[1] - 1:
            end = min(ids.shape[1] - 1, start + piece + (start == 0))
            result = model(ids[rows, start:end], state=state)
            state = result.state
            out[rows, start:end] = F.cross_entropy(result.logits.transpose(1, 2), ids[rows, start + 1:end + 1],
                                                   reduction="none")
            start = end
    return out


def with_test_time_learning(model: LanguageModel, enabled: bool) -> LanguageModel:
    other = LanguageModel(config_from_dict({**model.config.to_dict(), "test_time_learning": enabled}))
    other.load_state_dict(model.state_dict())
    return other


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-docs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="initialisation and document order")
    parser.add_argument("--sets", nargs="*", default=list(PERIOD_SETS))
    parser.add_argument("--out", type=Path, default=None, help="default: docs/cms_periods_seed{seed}")
    args = parser.parse_args()
    args.out = args.out or ROOT / "docs" / f"cms_periods_seed{args.seed}"
    torch.set_num_threads(1)
    train_docs = documents("train", args.length)
    held_out = torch.tensor(documents("validation+test", args.length)[:args.eval_docs])
    edges = [0, 128, 512, 2048, args.length]
    results = {}
    for name in args.sets:
        torch.manual_seed(args.seed)
        model = LanguageModel(make_config("hope-attention", None, vocab_size=BytesTokenizer.vocab_size,
                                          cms_periods=PERIOD_SETS[name], **MODEL))
        began = time.perf_counter()
        losses = train(model, train_docs, args)
        trained_s = time.perf_counter() - began
        row = {"periods": PERIOD_SETS[name], "train_s": round(trained_s, 1),
               "train_loss_last_batch": sum(losses[-args.length // args.window:]) / (args.length // args.window),
               "learned_lr": [[round(v, 4) for v in block.channel.log_lr.exp().tolist()] for block in model.blocks]}
        for learning in (True, False):
            per_position = held_out_losses(with_test_time_learning(model, learning), held_out, 512).mean(dim=0)
            key = "on" if learning else "off"
            row[f"held_out_{key}"] = per_position.mean().item()
            row[f"buckets_{key}"] = [per_position[lo:hi].mean().item() for lo, hi in zip(edges, edges[1:])]
        results[name] = row
        print(name, json.dumps(row), flush=True)
    payload = {"args": {k: str(v) if k == "out" else v for k, v in vars(args).items()}, "model": MODEL, "buckets": edges,
               "results": results}
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        "# CMS periods: streamed training, then held-out loss along long documents",
        "",
        f"`benchmarks/cms_periods.py` (hope-attention d_model {MODEL['d_model']}, {MODEL['n_layers']} layers, bytes; "
        f"{args.batches} batches x {args.batch} training documents x {args.length} tokens in windows of "
        f"{args.window}, window-aligned CMS steps; {len(held_out)} held-out documents read for {args.length} "
        f"tokens with the in-context forward; loss in nats per byte; seed {args.seed}). Test-time learning off: the same weights, "
        "every CMS step frozen.",
        "",
        "| periods | held-out, TTL on | TTL off | on - off | "
        + " | ".join(f"on, {lo}-{hi}" for lo, hi in zip(edges, edges[1:])) + " | learned lr (layer 0) | train s |",
        "|---|---|---|---|" + "---|" * (len(edges) - 1) + "---|---|",
    ]
    for name, row in results.items():
        lines.append(f"| {name} | {row['held_out_on']:.4f} | {row['held_out_off']:.4f} | "
                     f"{row['held_out_on'] - row['held_out_off']:+.4f} | "
                     + " | ".join(f"{v:.4f}" for v in row["buckets_on"])
                     + f" | {row['learned_lr'][0]} | {row['train_s']} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
