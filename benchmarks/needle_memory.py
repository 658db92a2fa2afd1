"""What Hope's output memory keeps of a needle, measured on a trained S-NIAH model (docs/results.md, section 5).

Reads S-NIAH-1 rows (``hope.tasks.niah``, the pass key at ``--depth`` of the haystack) through a checkpoint made
by ``hope tasks run niah_single_1 --arch hope ... --save-model``, ``--chunk`` tokens per call with the state
carried, as the task's evaluation does, and records in every self-modifying Titans layer (NL Eqs. 88-91) what
scales down the weights of the output memory ``M_mem`` between the chunk that holds the needle and the question:

* ``retention``: the product of the retention gates ``alpha_t`` over those tokens (DGD multiplies the memory by
  ``alpha_t`` at every token, NL Eq. 88), per head;
* ``bound``: the product of the bound's shrink factors (``memory_max_norm``: each fold's projection onto the
  Frobenius ball; 1 where the memory stays inside it), per head, for the most-shrunk weight matrix.

So ``retention x bound`` is the share of the needle's write that survives the decay alone (the delta rule's
erasure and the momentum come on top). Also how hard the needle is written, the mean inner step ``eta_t`` over
its tokens per head, and the pass-key accuracy of the same rows. Writes ``NAME.json`` and
``NAME.md`` under ``--docs``.

    python benchmarks/needle_memory.py --checkpoint runs/X/model --length 256 512 1024 2048 --depth 0.0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from hope.checkpoint import load_checkpoint
from hope.models.hope.self_modifying_titans import SelfModifyingTitans
from hope.tasks.niah import NIAHTask

DOCS = Path(__file__).resolve().parent.parent / "docs" / "results" / "paper_cpu"


class Recorder:
    """Wraps one mixer's ``_features`` and ``_fold`` to log ``alpha_t`` per token and the bound's shrink per
    ``M_mem`` fold, in reading order."""

    def __init__(self, mixer: SelfModifyingTitans) -> None:
        self.mixer, self.alphas, self.etas, self.shrinks = mixer, [], [], []
        features, fold, bounded = mixer._features, mixer._fold, mixer._bounded
        self.group = None

        def record_features(*args, **kwargs):
            out = features(*args, **kwargs)
            self.alphas.append(out[0]["alpha"].detach())
            self.etas.append(out[0]["eta"].detach())
            return out

        def record_fold(group, weights, velocity, chunk, queries=None):
            if group == "mem" and chunk["k"].shape[1] != mixer.chunk_sizes["mem"]:
                raise SystemExit("M_mem folded a partial chunk; read the rows in multiples of memory_chunk_size")
            self.group = group
            return fold(group, weights, velocity, chunk, queries)

        def record_bounded(weights):
            if self.group == "mem" and mixer.max_norm is not None:
                factors = []
                for weight in weights.values():
                    radius = mixer.max_norm * min(weight.shape[-2:]) ** 0.5
                    norm = torch.linalg.vector_norm(weight, dim=(-2, -1))
                    factors.append(radius / norm.clamp(min=radius))
                self.shrinks.append(torch.stack(factors).amin(0).detach())
            return bounded(weights)

        mixer._features, mixer._fold, mixer._bounded = record_features, record_fold, record_bounded


def measure(model, task: NIAHTask, rows: int, chunk: int, seed: int) -> dict:
    """Accuracy and, per layer and head, the median over rows of the retention and bound products."""
    rng = np.random.default_rng(seed)
    batch = task.batch(rng, rows)
    recorders = [Recorder(m) for m in model.modules() if isinstance(m, SelfModifyingTitans)]
    ids = torch.from_numpy(batch.input_ids)
    state, predictions = None, []
    with torch.no_grad():
        for start in range(0, ids.shape[1], chunk):
            out = model(ids[:, start:start + chunk], state=state)
            state = out.state
            predictions.append(out.logits.argmax(-1))
    predictions = torch.cat(predictions, 1).numpy()
    answer = batch.answer_mask
    right = [(predictions[r][answer[r]] == batch.targets[r][answer[r]]).all() for r in range(rows)]
    needle_start = [info["needle_starts"][0] for info in batch.info]
    needle_end = [start + info["needle_lengths"][0] for start, info in zip(needle_start, batch.info)]
    question = [int(np.flatnonzero(answer[r])[0]) + 1 - len(task._encode(task._question([]))) for r in range(rows)]
    size = model.config.memory_chunk_size
    layers = []
    for recorder in recorders:
        alpha = torch.cat(recorder.alphas, 1).double()  # [rows, T, H]
        eta = torch.cat(recorder.etas, 1).double()
        shrink = torch.stack(recorder.shrinks, 1).double() if recorder.shrinks else None  # [rows, folds, H]
        retention, bound, step = [], [], []
        for r in range(rows):
            step.append(eta[r, needle_start[r]:needle_end[r]].mean(0))
            retention.append(alpha[r, needle_end[r]:question[r]].prod(0))
            first, last = needle_end[r] // size + 1, question[r] // size  # folds strictly after the needle's chunk
            bound.append(shrink[r, first:last].prod(0) if shrink is not None else torch.ones(alpha.shape[-1]))
        layers.append({"needle_step": torch.stack(step).median(0).values.tolist(),
                       "retention": torch.stack(retention).median(0).values.tolist(),
                       "bound": torch.stack(bound).median(0).values.tolist(),
                       "bound_active": float((shrink < 1).double().mean()) if shrink is not None else 0.0})
    return {"accuracy": float(np.mean(right)), "rows": rows,
            "tokens_needle_to_question": float(np.median(np.subtract(question, needle_end))), "layers": layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--length", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--depth", type=float, default=0.0, help="Where the needle sits in the haystack (0 to 1).")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=256, help="Tokens per call, the state carried.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--docs", default=str(DOCS))
    parser.add_argument("--name", default="needle_memory")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, tokenizer, _ = load_checkpoint(args.checkpoint)
    if not any(isinstance(m, SelfModifyingTitans) for m in model.modules()):
        raise SystemExit(f"{args.checkpoint} is a {model.config.arch} model; this measures Hope's self-modifying Titans")
    model.eval()
    results = {}
    for length in args.length:
        task = NIAHTask.variant("single_1", length=length, depth=args.depth, tokenizer=tokenizer)
        results[length] = measure(model, task, args.rows, args.chunk, args.seed)
        print(f"length {length}: accuracy {results[length]['accuracy']:.3f}, " + "; ".join(
            f"layer {i} retention {max(l['retention']):.3g} bound {max(l['bound']):.3g}"
            for i, l in enumerate(results[length]["layers"])), flush=True)
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / f"{args.name}.json").write_text(json.dumps(
        {"checkpoint": args.checkpoint, "depth": args.depth, "rows": args.rows, "chunk": args.chunk,
         "seed": args.seed, "memory_max_norm": model.config.memory_max_norm, "results": results}, indent=2) + "\n")
    heads = model.config.n_heads
    lines = [f"Checkpoint `{args.checkpoint}`, {args.rows} S-NIAH-1 rows per length, the needle at depth {args.depth}, "
             f"read {args.chunk} tokens per call with the state carried. Medians over rows of what scales M_mem down "
             "between the needle and the question, per head, and the mean inner step eta_t over the needle's tokens "
             "(retention: product of alpha_t; bound: product of the "
             f"bound's shrink factors at memory_max_norm={model.config.memory_max_norm}).", "",
             "| length | tokens needle to question | pass key right | layer | step eta_t on the needle per head "
             "| retention per head | bound per head | folds with the bound active |", "|---:|---:|---:|---:|---|---|---|---:|"]
    for length, result in results.items():
        for i, layer in enumerate(result["layers"]):
            lines.append(f"| {length} | {result['tokens_needle_to_question']:.0f} | {100 * result['accuracy']:.1f}% "
                         f"| {i} | {', '.join(f'{v:.2g}' for v in layer['needle_step'][:heads])} "
                         f"| {', '.join(f'{v:.2g}' for v in layer['retention'][:heads])} "
                         f"| {', '.join(f'{v:.2g}' for v in layer['bound'][:heads])} "
                         f"| {100 * layer['bound_active']:.0f}% |")
    (docs / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
