"""How much of each token's association Hope's output memory writes, measured in models trained on MQAR.

Reads MQAR rows (each run's own task options, ``hope.tasks.mqar``) through the checkpoints of runs made by
``hope tasks run mqar --arch hope ... --save-model``, a whole row per call, and wraps the fold of the output memory
``M_mem`` in every self-modifying Titans layer (NL Eqs. 88-91). For every token ``t`` of a chunk it folds that token
alone into the chunk-start weights ``W`` (``MemoryBank.fold`` with the token's ``k_t``, target
``v_hat_t = M_W(v_t)``, ``alpha_t`` and ``eta_t``) and records

* ``missing_t = ||M'(k_t) - v_hat_t|| / ||M_W(k_t) - v_hat_t||``: the share of the token's own association that its
  step leaves unwritten (``benchmarks/memory_capacity.py`` measures the same at initialisation, with set steps);
* ``eta_t``: the step the model chose (``HopeConfig.sigmoid_gates``: below 1).

Per layer, the mean and the 10th / 50th / 90th percentiles over the tokens of the key-value pairs (the first
``2 num_kv_pairs`` of a row, where the pairs must be written) and the mean over the rest. The chunk-level momentum
(``HopeConfig.momentum``) that adds earlier chunks' steps is not counted. Writes ``NAME.json``, ``NAME.md`` and
``NAME.png`` (accuracy against the share written, one point per run) under ``--docs``.

    python benchmarks/memory_write_probe.py --runs runs/mqar_deep/seed-0 runs/mqar_linear/seed-0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from hope.checkpoint import load_checkpoint
from hope.models.hope.self_modifying_titans import SelfModifyingTitans
from hope.tasks.registry import get_task

DOCS = Path(__file__).resolve().parent.parent / "docs" / "results" / "paper_cpu"


class WriteRecorder:
    """Wraps one mixer's ``_fold`` to record, for every token folded into ``M_mem``, its step and the share of its
    own association that one step from the chunk-start weights leaves unwritten."""

    def __init__(self, mixer: SelfModifyingTitans) -> None:
        self.missing: list[torch.Tensor] = []
        self.etas: list[torch.Tensor] = []
        fold, bank = mixer._fold, mixer.banks["mem"]

        def record_fold(group, weights, velocity, chunk, queries=None):
            if group == "mem":
                self.etas.append(chunk["eta"].detach())
                self.missing.append(own_write_missing(bank, weights, chunk))
            return fold(group, weights, velocity, chunk, queries)

        mixer._fold = record_fold


@torch.no_grad()
def own_write_missing(bank, weights: dict[str, torch.Tensor], chunk: dict[str, torch.Tensor]) -> torch.Tensor:
    """``missing_t`` (module docstring) of every token of ``chunk`` (``k, v: [B, C, H, D]``, gates ``[B, C, H]``),
    each folded alone into ``weights``; ``[B, C, H]``."""
    b, c = chunk["k"].shape[:2]
    per_token = {key: weight.repeat_interleave(c, 0) for key, weight in weights.items()}
    keys, values = (chunk[name].reshape(b * c, 1, *chunk[name].shape[2:]) for name in ("k", "v"))
    alpha, eta = (chunk[name].reshape(b * c, 1, -1) for name in ("alpha", "eta"))
    targets = bank.read(per_token, values)
    _, after = bank.fold(per_token, keys, targets, alpha, eta)
    before_error = (bank.read(per_token, keys) - targets).norm(dim=-1)
    after_error = (bank.read(after, keys) - targets).norm(dim=-1)
    return (after_error / before_error).reshape(b, c, -1)


def probe(run: Path, rows: int, seed: int) -> dict:
    """The probe of one run directory (``model/`` and ``result.json``)."""
    result = json.loads((run / "result.json").read_text())
    model, _, _ = load_checkpoint(run / "model", text=False)
    mixers = [m for m in model.modules() if isinstance(m, SelfModifyingTitans)]
    if not mixers:
        raise SystemExit(f"{run} holds a {model.config.arch} model; this measures Hope's self-modifying Titans")
    spec = get_task(result["task"])
    task = spec.build(None, **{**spec.train, **result["task_options"]})
    recorders = [WriteRecorder(mixer) for mixer in mixers]
    model.eval()
    batch = task.batch(np.random.default_rng(seed), rows)
    with torch.no_grad():
        model(torch.from_numpy(batch.input_ids))
    layers, pairs = [], 2 * task.num_kv_pairs
    quantiles = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    for recorder in recorders:
        missing, eta = (torch.cat(values, 1).double() for values in (recorder.missing, recorder.etas))  # [B, T, H]
        layer = {}
        for name, values in (("missing", missing), ("eta", eta)):
            layer.update({f"{name}_pairs": values[:, :pairs].mean().item(),
                          f"{name}_pairs_q10_q50_q90": values[:, :pairs].flatten().quantile(quantiles).tolist(),
                          f"{name}_rest": values[:, pairs:].mean().item()})
        layers.append(layer)
    accuracy = next(iter(result["evals"].values()))["item_accuracy"]
    return {"run": str(run), "memory": model.config.memory, "memory_expansion": model.config.memory_expansion,
            "dgd": model.config.dgd, "model_overrides": result["model_overrides"], "steps": result["config"]["steps"],
            "accuracy": accuracy,
            "layers": layers}


def label(result: dict, usual_steps: int) -> str:
    """The run's model overrides beyond the suite entry's width, depth and untied head, and its steps where they
    are not ``usual_steps``."""
    parts = [f"{k}={v}" for k, v in result["model_overrides"].items() if k not in ("d_model", "n_layers", "tie_embeddings")]
    parts += [f"{result['steps']} steps"] if result["steps"] != usual_steps else []
    return ", ".join(parts) or "as in the suite"


def usual_steps(results: list[dict]) -> int:
    """The most common number of training steps among the runs."""
    steps = [result["steps"] for result in results]
    return max(set(steps), key=steps.count)


def plot(results: list[dict], path: Path) -> None:
    """Accuracy against the share a pair token's step writes (mean over layers), one point per run, a colour per
    set of overrides (needs matplotlib: pip install 'hope[plot]')."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list[tuple[float, float]]] = {}
    for result in results:
        written = 1 - float(np.mean([layer["missing_pairs"] for layer in result["layers"]]))
        groups.setdefault(label(result, usual_steps(results)), []).append((100 * written, 100 * result["accuracy"]))
    for name, points in groups.items():
        ax.scatter(*zip(*points), label=name, s=36)
    ax.set(xlabel="share of its own pair a key-value token's step writes (%), mean over layers",
           ylabel="MQAR accuracy (%)", ylim=(0, 100), title="Hope's output memory: what one step writes")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="run directories made with --save-model")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--docs", default=str(DOCS))
    parser.add_argument("--name", default="memory_write_probe")
    args = parser.parse_args()
    missing = [run for run in args.runs if not (Path(run) / "model").is_dir() or not (Path(run) / "result.json").is_file()]
    if missing:
        raise SystemExit(f"not a finished run with a saved model (model/ and result.json): {', '.join(missing)}")
    torch.set_num_threads(1)
    results = []
    for run in args.runs:
        results.append(probe(Path(run), args.rows, args.seed))
        print(f"{run}: " + "; ".join(f"layer {i} missing {layer['missing_pairs']:.3f} eta {layer['eta_pairs']:.3f}"
                                     for i, layer in enumerate(results[-1]["layers"])), flush=True)
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / f"{args.name}.json").write_text(json.dumps({"rows": args.rows, "seed": args.seed, "runs": results},
                                                       indent=2) + "\n")
    lines = [f"# {__doc__.splitlines()[0]}", "",
             f"{args.rows} rows of each run's task, seed {args.seed}. Command: `python benchmarks/memory_write_probe.py "
             f"--runs {' '.join(args.runs)}`.", "",
             "| run | overrides and steps | accuracy | layer | missing over the pairs: mean (10% / 50% / 90%) | the rest "
             "| eta_t over the pairs: mean (10% / 50% / 90%) | the rest |", "|---|---|---:|---:|---|---:|---|---:|"]
    for result in results:
        overrides = label(result, usual_steps(results))
        for i, layer in enumerate(result["layers"]):
            spread = lambda values: " / ".join(f"{v:.2f}" for v in values)  # noqa: E731
            lines.append(f"| `{result['run']}` | {overrides} | {100 * result['accuracy']:.1f}% | {i} "
                         f"| {layer['missing_pairs']:.3f} ({spread(layer['missing_pairs_q10_q50_q90'])}) "
                         f"| {layer['missing_rest']:.3f} | {layer['eta_pairs']:.3f} "
                         f"({spread(layer['eta_pairs_q10_q50_q90'])}) | {layer['eta_rest']:.3f} |")
    plot(results, docs / f"{args.name}.png")
    lines += ["", f"![accuracy against the share written]({args.name}.png)"]
    (docs / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {docs / args.name}.json, .md and .png")


if __name__ == "__main__":
    main()
