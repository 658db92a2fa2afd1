"""How large is a saved Hope model's first in-context CMS step, and was its learning rate ever trained?
(docs/results.md, section 5, S-NIAH-2.)

A level of period ``C`` steps in context after every ``C`` tokens (NL Eq. 71). Trained on rows shorter than ``C``,
it never steps inside one, so its learning rate ``eta_l`` gets no gradient and stays at its initial value
(``cms_lr``), and its first step at evaluation is one the model never took in training. For each saved run
(``hope tasks run ... --save-model``) this reads the rows of the run's evaluation setting of ``--length`` tokens
(drawn as the task runner draws them) up to one token past the first period and reports, per layer and learning
level: ``eta_l`` and whether it moved from ``cms_lr``, and the size of the level's first step relative to its
weights, ``||W_after - W|| / ||W||`` for the SwiGLU's ``gate_up`` and ``down`` (mean over the rows); then every
step in the same rows (``steps_along``), each relative to the level's initial weights, which shows whether later
steps grow. Writes ``NAME.json`` and ``NAME.md`` under ``--docs``.

    python benchmarks/cms_first_step.py --runs runs/niah_probe/hope_seed0 runs/niah_probe/hope_seed2 \\
        --length 1024 --name cms_first_step_niah_single_2
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from hope.checkpoint import load_checkpoint
from hope.models.hope.cms import CMS
from hope.tasks.registry import get_task
from hope.tasks.runner import eval_settings

DOCS = Path(__file__).resolve().parent.parent / "docs" / "results" / "paper_cpu"


def first_steps(model, ids: torch.Tensor) -> list[dict]:
    """Per layer with a learning CMS, per learning level: its learning rate and the relative size of its step after
    the first period of the fastest level (``ids [B, T]`` with ``T`` past that period)."""
    blocks = [(index, block.channel) for index, block in enumerate(model.blocks) if isinstance(block.channel, CMS)]
    fastest = min(min(cms.active_periods) for _, cms in blocks if cms.active_periods)
    if ids.shape[1] <= fastest:
        raise ValueError(f"rows of {ids.shape[1]} tokens never reach the first CMS step (period {fastest})")
    with torch.no_grad():
        before = model(ids[:, :fastest])
        after = model(ids[:, fastest:fastest + 1], state=before.state).state
    found = []
    for index, cms in blocks:
        for level in cms.learning:
            weights = (cms.levels[level].gate_up.weight, cms.levels[level].down.weight)
            stepped = after.layers[index].channel.levels[level]
            relative = [((new - old).norm(dim=(-2, -1)) / old.norm()).mean().item()
                        for old, new in zip(weights, stepped)]
            found.append({"layer": index, "level": level, "period": cms.periods[level],
                          "eta": cms.log_lr[level].exp().item(), "initial_eta": cms.initial_lr,
                          "eta_trained": bool(cms.log_lr[level].float() != torch.tensor(math.log(cms.initial_lr))),
                          "stepped": cms.periods[level] == fastest,
                          "gate_up": relative[0], "down": relative[1]})
    return found


def steps_along(model, ids: torch.Tensor) -> list[dict]:
    """Every in-context CMS step in rows ``ids [B, T]``: per layer, learning level and boundary ``b`` (a multiple of
    the level's period below ``T``), the size of the step taken at ``b`` relative to the level's initial weights
    (mean over the rows). The rows are read one fastest period at a time with the state carried; the step at ``b`` is
    taken when token ``b`` is read (``hope.models.hope.in_context``), so it is in the state after the segment that
    starts at ``b``."""
    blocks = [(index, block.channel) for index, block in enumerate(model.blocks) if isinstance(block.channel, CMS)]
    fastest = min(min(cms.active_periods) for _, cms in blocks if cms.active_periods)
    found, state = [], None
    with torch.no_grad():
        for start in range(0, ids.shape[1], fastest):
            previous = state
            state = model(ids[:, start:start + fastest], state=state).state
            if start == 0:
                continue
            for index, cms in blocks:
                for level in cms.learning:
                    if start % cms.periods[level]:
                        continue
                    initial = (cms.levels[level].gate_up.weight, cms.levels[level].down.weight)
                    old, new = previous.layers[index].channel.levels[level], state.layers[index].channel.levels[level]
                    relative = [((b - a).norm(dim=(-2, -1)) / w.norm()).mean().item()
                                for w, a, b in zip(initial, old, new)]
                    found.append({"layer": index, "level": level, "period": cms.periods[level], "position": start,
                                  "gate_up": relative[0], "down": relative[1]})
    return found


def run_rows(run: Path, tokenizer, length: int, rows: int) -> torch.Tensor:
    """The first ``rows`` rows of the run's evaluation setting of ``length`` tokens, drawn as the runner draws them."""
    result = json.loads((run / "result.json").read_text())
    config, spec = result["config"], get_task(result["task"])
    settings = eval_settings(spec, tuple(config["lengths"]))
    labels = list(settings)
    matching = [label for label in labels if settings[label].get("length") == length]
    if not matching:
        raise SystemExit(f"{run} has no evaluation setting of {length} tokens ({', '.join(labels)})")
    task = spec.build(tokenizer, **{**spec.train, **config["options"], **settings[matching[0]]})
    rng = np.random.default_rng([config["seed"], 1, labels.index(matching[0])])
    return torch.as_tensor(task.batch(rng, rows).input_ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="run folders with model/ and result.json")
    parser.add_argument("--length", type=int, required=True, help="the evaluation setting's row length")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--name", required=True)
    parser.add_argument("--docs", type=Path, default=DOCS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = {}
    lines = [f"# First in-context CMS step ({args.length}-token rows, {args.rows} rows a run)", "",
             "`python benchmarks/cms_first_step.py --runs " + " ".join(args.runs) +
             f" --length {args.length} --name {args.name}`", "",
             "| run | layer | level (period) | eta (initial) | eta trained | step / weights, gate_up | down |",
             "|---|---|---|---|---|---|---|"]
    along = ["", f"Every step in the same rows: the step a level takes at a position, relative to its initial weights "
             "(mean over the rows).", "",
             "| run | layer | level (period) | position | step / weights, gate_up | down |", "|---|---|---|---|---|---|"]
    for run in map(Path, args.runs):
        model, tokenizer, _ = load_checkpoint(run / "model")
        ids = run_rows(run, tokenizer, args.length, args.rows)
        report[str(run)] = steps = first_steps(model.eval(), ids)
        for s in steps:
            if s["stepped"]:
                lines.append(f"| {run.name} | {s['layer']} | {s['level']} ({s['period']}) | {s['eta']:.4f} "
                             f"({s['initial_eta']}) | {'yes' if s['eta_trained'] else 'no'} | {s['gate_up']:.4f} | {s['down']:.4f} |")
        report[f"{run}:along"] = every = steps_along(model, ids)
        along += [f"| {run.name} | {s['layer']} | {s['level']} ({s['period']}) | {s['position']} | {s['gate_up']:.4f} | "
                  f"{s['down']:.4f} |" for s in every]
    text = "\n".join(lines + along) + "\n"
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.docs / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
