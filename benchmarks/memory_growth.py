"""How large Hope's in-context memories grow over long documents (docs/results.md, "A bound on the carried memories").

Streams the longest documents of a checkpoint's training split (one per batch row) through the model, window after
window with the state carried and test-time learning on, and records after each window the largest
per-head Frobenius norm of every self-modifying Titans memory (``proj``: M_k, M_v, M_eta, M_alpha; ``mem``: M_mem)
over layers and rows, and the bits per token of the window. Each ``--max-norm`` value runs the same windows with
``memory_max_norm`` set to it (``none``: unbounded, as the paper writes it), so one checkpoint shows what the bound
changes. ``--cms-steps`` says how the CMS levels step: ``window`` (default; what ``hope train --stream`` and ``hope eval
--stream`` do: window-aligned steps from each window's own backward, ``hope.models.hope.window``) or ``in-context``
(``model(ids, state)``, as prefill and generation), whose steps back-propagate as far as ``--grad-window`` says
(``cms_grad_window``: the checkpoint's unless given; ``none``: through the whole period). Writes
``NAME.json`` and ``NAME.md`` (and ``NAME.png`` with matplotlib) under ``--docs``.

    python benchmarks/memory_growth.py --checkpoint runs/X/checkpoint [--windows 40] [--max-norm none 4]
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
from hope.data.dataset import load_encoded
from hope.data.stream import document_starts
from hope.models.hope.self_modifying_titans import SelfModifyingTitans
from hope.models.hope.window import step_after_backward

DOCS = Path(__file__).resolve().parent.parent / "docs" / "results"


def longest_documents(checkpoint: str, rows: int, tokens: int) -> tuple[torch.Tensor, list[int]]:
    """``[rows, tokens + 1]`` ids: the first ``tokens + 1`` of the ``rows`` longest training documents."""
    _, tokenizer = load_checkpoint(checkpoint)[:2]
    split = load_encoded(None, tokenizer)["train"]
    starts = document_starts(split, tokenizer.eot_id)
    ends = np.append(starts[1:], len(split.tokens))
    order = np.argsort(-(ends - starts))[:rows]
    if (ends - starts)[order].min() <= tokens:
        raise SystemExit(f"the {rows} longest documents hold {(ends - starts)[order].min()} tokens, fewer than "
                         f"--windows x --seq-len = {tokens}; ask for fewer")
    ids = np.stack([np.asarray(split.tokens[starts[d]: starts[d] + tokens + 1]) for d in order]).astype(np.int64)
    return torch.from_numpy(ids), (ends - starts)[order].tolist()


def stream(checkpoint: str, ids: torch.Tensor, seq_len: int, max_norm: float | None, cms_steps: str,
           grad_window: str | None) -> list[dict[str, float]]:
    """Per window: bits per token and the largest per-head norm of each memory group's weights."""
    model = load_checkpoint(checkpoint)[0].eval()
    if grad_window is not None:
        model.cms_grad_window = None if grad_window == "none" else int(grad_window)
    for module in model.modules():
        if isinstance(module, SelfModifyingTitans):
            module.max_norm = max_norm
    window = cms_steps == "window" and model.window_aligned(seq_len)
    state, rows = None, []
    for start in range(0, ids.shape[1] - 1, seq_len):
        targets = ids[:, start + 1:start + seq_len + 1]
        if window:
            out = model(ids[:, start:start + seq_len], state=state, targets=targets, window=True)
            model.zero_grad(set_to_none=True)
            out.loss.backward()
            state = step_after_backward(model, out.state, targets.numel()).detach()
        else:
            with torch.no_grad():
                out = model(ids[:, start:start + seq_len], state=state)
            state = out.state.detach()
        loss = F.cross_entropy(out.logits.detach().flatten(0, 1).double(), targets.flatten())
        row = {"tokens": start + seq_len, "bits_per_token": float(loss) / math.log(2)}
        for name, tensor in state.tensors().items():
            parts = name.split(".")
            if parts[0] == "layers" and parts[2] == "mixer" and parts[-1] in ("w1", "w2", "w") \
                    and "momentum" not in parts:
                group = parts[3]
                norm = float(torch.linalg.vector_norm(tensor, dim=(-2, -1)).max().nan_to_num(float("inf")))
                row[group] = max(row.get(group, 0.0), norm)
        rows.append(row)
        print(f"max_norm={max_norm} tokens={row['tokens']} bits/token={row['bits_per_token']:.3f} "
              f"proj={row.get('proj', 0):.3g} mem={row.get('mem', 0):.3g}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--windows", type=int, default=40)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--rows", type=int, default=4, help="Documents streamed side by side (the longest ones).")
    parser.add_argument("--max-norm", nargs="+", default=["none", "4"],
                        help="memory_max_norm values to compare ('none': unbounded).")
    parser.add_argument("--cms-steps", choices=("window", "in-context"), default="window",
                        help="How the CMS levels step (see the module docstring).")
    parser.add_argument("--grad-window", default=None,
                        help="cms_grad_window of the in-context steps (a number or 'none'; default: the checkpoint's).")
    parser.add_argument("--docs", default=str(DOCS))
    parser.add_argument("--name", default="memory_growth")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ids, lengths = longest_documents(args.checkpoint, args.rows, args.windows * args.seq_len)
    runs = {value: stream(args.checkpoint, ids, args.seq_len, None if value == "none" else float(value),
                          args.cms_steps, args.grad_window)
            for value in args.max_norm}
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    result = {"checkpoint": args.checkpoint, "seq_len": args.seq_len, "cms_steps": args.cms_steps,
              "grad_window": args.grad_window,
              "documents": lengths, "runs": runs}
    (docs / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    steps = args.cms_steps if args.cms_steps == "window" else \
        f"in-context, grad window {args.grad_window or 'of the checkpoint'}"
    lines = [f"Checkpoint `{args.checkpoint}`, the {args.rows} longest training documents ({lengths} tokens), "
             f"windows of {args.seq_len} tokens, state carried, CMS steps {steps}. Largest per-head Frobenius norm of "
             "the projection memories (`proj`) and M_mem (`mem`) over layers and rows; bits per token of the window "
             "(inf / nan: overflowed).", "",
             "| tokens | " + " | ".join(f"max_norm={v}: bits, proj, mem" for v in runs) + " |",
             "|---:|" + "---|" * len(runs)]
    for i in range(len(next(iter(runs.values())))):
        if i % 4 and i != args.windows - 1:
            continue
        cells = [f"{r[i]['bits_per_token']:.3f}, {r[i].get('proj', 0):.3g}, {r[i].get('mem', 0):.3g}"
                 for r in runs.values()]
        lines.append(f"| {next(iter(runs.values()))[i]['tokens']} | " + " | ".join(cells) + " |")
    (docs / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, (norms, bits) = plt.subplots(1, 2, figsize=(10, 3.5))
    for value, rows in runs.items():
        tokens = [r["tokens"] for r in rows]
        norms.semilogy(tokens, [max(r.get("proj", 0), r.get("mem", 0)) for r in rows], label=f"max_norm={value}")
        bits.plot(tokens, [r["bits_per_token"] for r in rows], label=f"max_norm={value}")
    norms.set(xlabel="tokens read", ylabel="largest memory norm (per head)")
    bits.set(xlabel="tokens read", ylabel="bits per token of the window")
    norms.legend()
    figure.tight_layout()
    figure.savefig(docs / f"{args.name}.png", dpi=120)


if __name__ == "__main__":
    main()
