"""How many key-value pairs one pass of in-context learning stores in a Hope memory: matrix against deep MLP.

Every memory of Hope's self-modifying Titans (NL Eqs. 88-93) learns in context by one DGD step per token. Here
``N`` pairs ``(k_i, v_i)`` of unit vectors in the head dimension ``D`` (keys orthonormal while ``N <= D``, random
past it; values random) are folded, in order, into one memory at its initial state, exactly as Hope folds them
(``MemoryBank.fold``: chunks of ``C`` tokens, targets ``v_hat = M(v)`` read at each chunk's start weights, the
proximal step with curvature; no retention, a constant step ``eta``, no momentum). Then every key is read
back. Reported, as the mean over ``--trials`` draws (every draw a batch row and head):

- ``recall``: the share of keys whose read ``M_T(k_i)`` is nearer its own target than any other pair's;
- ``direction``: the share of keys whose change ``M_T(k_i) - M_0(k_i)`` points most nearly (cosine) towards its own
  target ``v_hat_i - M_0(k_i)``: what was written under each key, whatever its size, is that key's value;
- ``missing``: ``||M_T(k_i) - v_hat_i|| / ||M_0(k_i) - v_hat_i||``, the share of each association not yet written.

Hope's step is a sigmoid gate, ``eta < 1`` (``HopeConfig.sigmoid_gates``); ``eta = 1000`` shows the proximal
step's limit. The initial states are the modules' initialisation (``MemoryBank.init_weights``), where meta-learning
starts; a trained model's are learned. docs/results.md, "Why Hope stores less", reads the numbers.

    python benchmarks/memory_capacity.py          # writes docs/results/memory_capacity.{json,md}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hope.models.hope.config import HopeConfig
from hope.models.hope.memory_bank import MemoryBank

SHAPES = {"matrix": {"memory": "linear"}, "deep, hidden D": {"memory": "deep", "memory_expansion": 1},
          "deep, hidden 4D": {"memory": "deep", "memory_expansion": 4},
          "deep, hidden D, W2 std 0.75": {"memory": "deep", "memory_input_std": 0.75}}
FORMS = {f"{shape}, {rule}": {**overrides, "dgd": rule == "DGD"} for shape, overrides in SHAPES.items()
         for rule in ("DGD", "GD")}
"""The memories compared, as ``HopeConfig`` overrides: ``memory``, ``memory_expansion`` and ``memory_input_std``
(the spread of a deep memory's initial input layer; default ``1/sqrt(D)``), each with DGD (NL Eq. 88,
Hope's rule) and with plain GD with retention (``dgd=False``, NL Table 6's "w/o DGD")."""


def unit_pairs(generator: torch.Generator, trials: int, pairs: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values ``[trials, pairs, dim]`` of unit norm: keys orthonormal while ``pairs <= dim``."""
    keys = torch.randn(trials, pairs, dim, generator=generator, dtype=torch.float64)
    if pairs <= dim:
        keys = torch.linalg.qr(keys.transpose(1, 2)).Q.transpose(1, 2)
    values = torch.randn(trials, pairs, dim, generator=generator, dtype=torch.float64)
    return (torch.nn.functional.normalize(keys, dim=-1), torch.nn.functional.normalize(values, dim=-1))


@torch.no_grad()
def store_and_recall(bank: MemoryBank, keys: torch.Tensor, values: torch.Tensor, eta: float,
                     chunk: int) -> dict[str, float]:
    """Fold ``keys -> M(values)`` into ``bank`` chunk by chunk, read every key back, score it (module docstring).
    ``keys, values: [trials, N, D]``; the bank has one memory per trial on its head axis."""
    trials, pairs, _ = keys.shape
    as_heads = lambda x: x.unsqueeze(0)  # noqa: E731  [1, N, trials, D]: one sequence, a memory per trial
    keys, values = as_heads(keys.transpose(0, 1)), as_heads(values.transpose(0, 1))
    initial = {name: weight.unsqueeze(0).double() for name, weight in bank.shared().items()}
    weights, targets = initial, []
    for start in range(0, pairs, chunk):
        piece = slice(start, start + chunk)
        target = bank.read(weights, values[:, piece])
        length = target.shape[1]
        gate = torch.full((1, length, trials), eta, dtype=torch.float64)
        _, weights = bank.fold(weights, keys[:, piece], target, torch.ones_like(gate), gate)
        targets.append(target)
    targets = torch.cat(targets, dim=1)[0].transpose(0, 1)  # [trials, N, D]
    reads = bank.read(weights, keys)[0].transpose(0, 1)
    before = bank.read(initial, keys)[0].transpose(0, 1)
    own = torch.arange(pairs)
    recall = (torch.cdist(reads, targets).argmin(-1) == own).double().mean().item()
    change, wanted = reads - before, targets[:, None, :, :] - before[:, :, None, :]  # wanted[t, i, j] = v_j - M_0(k_i)
    aim = torch.nn.functional.cosine_similarity(change[:, :, None, :], wanted, dim=-1)
    direction = (aim.argmax(-1) == own).double().mean().item()
    missing = ((reads - targets).norm(dim=-1) / (before - targets).norm(dim=-1)).mean().item()
    return {"recall": recall, "direction": direction, "missing": missing}


def markdown(summary: dict) -> str:
    """The tables of the summary: recall and missing share per form, by pairs (rows) and step (columns)."""
    etas, lines = summary["etas"], [f"# {__doc__.splitlines()[0]}", "",
                                    f"Head dimension {summary['dim']}, chunk {summary['chunk']}, "
                                    f"{summary['trials']} draws per cell, seed {summary['seed']}. Command: "
                                    f"`{summary['command']}`.", ""]
    for metric, title in (("recall", "Recall (%): the read is nearest its own target"),
                          ("direction", "Direction (%): the change under each key points to its own target"),
                          ("missing", "Missing share of the association (%)")):
        lines += [f"## {title}", "", "| memory | pairs | " + " | ".join(f"eta {eta:g}" for eta in etas) + " |",
                  "|---|---:|" + "---:|" * len(etas)]
        for form, rows in summary["results"].items():
            for pairs, cells in rows.items():
                lines.append(f"| {form} | {pairs} | " + " | ".join(f"{100 * cells[str(eta)][metric]:.1f}"
                                                                  for eta in etas) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=16, help="head dimension D (the width-64, 4-head models: 16)")
    parser.add_argument("--pairs", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--etas", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.9, 1000.0])
    parser.add_argument("--chunk", type=int, default=16, help="tokens per fold (HopeConfig.memory_chunk_size)")
    parser.add_argument("--trials", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/results/memory_capacity")
    args = parser.parse_args()
    if args.dim < 1 or args.chunk < 1 or args.trials < 1 or min(args.pairs) < 1 or min(args.etas) <= 0:
        parser.error("--dim, --chunk, --trials and --pairs must be positive, --etas above 0")
    torch.set_num_threads(1)
    results: dict[str, dict[str, dict]] = {}
    for form, overrides in FORMS.items():
        torch.manual_seed(args.seed)
        config = HopeConfig(d_model=args.dim * args.trials, n_heads=args.trials, n_layers=1, vocab_size=2,
                            **overrides)
        bank = MemoryBank(config, ("mem",), read="previous").double()
        generator = torch.Generator().manual_seed(args.seed)
        results[form] = {}
        for pairs in args.pairs:
            keys, values = unit_pairs(generator, args.trials, pairs, args.dim)
            results[form][str(pairs)] = {str(eta): store_and_recall(bank, keys, values, eta, args.chunk)
                                         for eta in args.etas}
            best = max(results[form][str(pairs)].values(), key=lambda cell: cell["recall"])
            print(f"{form:16s} {pairs:3d} pairs: best recall {100 * best['recall']:5.1f}%, "
                  f"missing {100 * best['missing']:5.1f}%", flush=True)
    summary = {"dim": args.dim, "chunk": args.chunk, "trials": args.trials, "seed": args.seed, "etas": args.etas,
               "pairs": args.pairs, "command": "python benchmarks/memory_capacity.py", "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(summary) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
