"""Which of Hope's memories loses a needle after long noise, measured by swapping state (docs/results.md, section 5).

A trained S-NIAH-1 model (``hope tasks run niah_single_1 --arch hope ... --save-model``) reads rows of ``--length``
with the needle at depth 1 (right before the question), so nothing but the noise *before* the needle differs from
a row of the training length. For each row a control row is cut from it: the same intro, the last haystack tokens
that fit ``--train-length``, and the same needle, question and answer. Both are read up to the needle (``--chunk``
tokens per call, the state carried); then the long row's state takes, per layer, one group of the self-modifying
Titans memories (NL Eqs. 88-91) from the control row's state, and the long row reads on:

* ``proj``: the projection memories (``M_k, M_v, M_q, M_eta, M_alpha``), which make the keys, values, queries and
  gates from the input;
* ``mem``: the output memory ``M_mem``, which stores and returns the values;
* ``proj+mem``: both (the convolution tail and the CMS levels stay the long row's).

If taking a group from the control row gives back the control row's accuracy, what that group holds after the
long noise is what loses the needle. The CMS levels are made static (``cms_periods`` all null: a pending CMS step
would replay the swapped tokens); the script also reports the accuracy of the long rows as read, which the task's
own ``cms_periods=[null,null,null]`` probe reproduces. Writes ``NAME.json`` and ``NAME.md`` under ``--docs``.

    python benchmarks/needle_state_swap.py --checkpoint runs/X/model --train-length 512 --length 1024 2048
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from hope.checkpoint import load_checkpoint
from hope.models import LanguageModel, make_config
from hope.models.hope.self_modifying_titans import MemoryGroupState, SelfModifyingTitans
from hope.models.state import ModelState
from hope.tasks.niah import NIAHTask

DOCS = Path(__file__).resolve().parent.parent / "docs" / "results" / "paper_cpu"
SWAPS = ("none", "proj", "mem", "proj+mem")
"""The groups of every layer's mixer state taken from the control row (``+`` joins groups)."""


def read(model, ids: torch.Tensor, chunk: int, state: ModelState | None = None) -> tuple[torch.Tensor, ModelState]:
    """Logits of ``ids [1, T]`` read ``chunk`` tokens per call from ``state``, and the state after them."""
    pieces = []
    for start in range(0, ids.shape[1], chunk):
        out = model(ids[:, start:start + chunk], state=state)
        state = out.state
        pieces.append(out.logits)
    return torch.cat(pieces, 1), state


def swapped(long: ModelState, short: ModelState, groups: set[str], names: tuple[str, ...]) -> ModelState:
    """``long`` with the memory ``groups`` of every layer's mixer taken from ``short``: ``proj``, ``mem``, or one
    projection memory ``proj:NAME`` (its heads, ``names.index(NAME) * H ...``, of the stacked bank)."""
    layers = []
    for mine, theirs in zip(long.layers, short.layers):
        memories = dict(mine.mixer.memories)
        for group in groups:
            whole, _, name = group.partition(":")
            memories[whole] = theirs.mixer.memories[whole] if not name else \
                _heads_from(memories[whole], theirs.mixer.memories[whole], names.index(name), len(names))
        layers.append(mine._replace(mixer=mine.mixer._replace(memories=memories)))
    return dataclasses.replace(long, layers=layers)


def _heads_from(mine: MemoryGroupState, theirs: MemoryGroupState, index: int, count: int) -> MemoryGroupState:
    """``mine`` with the heads of memory ``index`` (of ``count`` stacked name-major on the head axis) from
    ``theirs``: weights and momentum (axis 1) and the pending tokens (axis 2)."""
    def take(a: torch.Tensor, b: torch.Tensor, axis: int) -> torch.Tensor:
        heads = a.shape[axis] // count
        out = a.clone()
        out.narrow(axis, index * heads, heads).copy_(b.narrow(axis, index * heads, heads))
        return out

    pending = [None if a is None else take(a, b, 2) for a, b in zip(mine.pending, theirs.pending)]
    return MemoryGroupState({k: take(w, theirs.weights[k], 1) for k, w in mine.weights.items()},
                            {k: take(m, theirs.momentum[k], 1) for k, m in mine.momentum.items()},
                            type(mine.pending)(*pending))


def measure(model, task: NIAHTask, train_length: int, rows: int, chunk: int, seed: int) -> dict:
    """Pass key right (share of rows) and answer loss (nats per token) for the control rows and for the long rows
    under each swap (:data:`SWAPS`, then each projection memory alone)."""
    names = next(m for m in model.modules() if isinstance(m, SelfModifyingTitans)).banks["proj"].names
    swaps = SWAPS + tuple(f"proj:{name}" for name in names)
    batch = task.batch(np.random.default_rng(seed), rows)
    right = {name: [] for name in ("control", *swaps)}
    loss = {name: [] for name in right}
    for r, info in enumerate(batch.info):
        ids, targets = torch.from_numpy(batch.input_ids[r:r + 1]), torch.from_numpy(batch.targets[r:r + 1])
        needle, intro = info["needle_starts"][0], info["haystack_start"]
        kept = train_length - intro - (ids.shape[1] - needle)
        if kept < 0 or (ids.shape[1] - train_length) % chunk:
            raise SystemExit(f"--length {task.length} and --train-length {train_length} must differ by a multiple "
                             f"of --chunk and leave the control row some haystack")
        control = torch.cat([ids[:, :intro], ids[:, needle - kept:]], 1)
        suffix, answer = ids[:, needle:], targets[:, needle:]
        mask = answer[0] >= 0

        def score(name: str, logits: torch.Tensor) -> None:
            right[name].append(bool((logits[0, mask].argmax(-1) == answer[0, mask]).all()))
            loss[name].append(torch.nn.functional.cross_entropy(logits[0, mask].float(), answer[0, mask]).item())

        with torch.no_grad():
            _, long_state = read(model, ids[:, :needle], chunk)
            _, short_state = read(model, control[:, :intro + kept], chunk)
            if long_state.snapshots or short_state.snapshots:
                raise SystemExit("a CMS level learns in context; this probe runs with static CMS levels")
            score("control", read(model, suffix, chunk, short_state)[0])
            for name in swaps:
                groups = set() if name == "none" else set(name.split("+"))
                score(name, read(model, suffix, chunk, swapped(long_state, short_state, groups, names))[0])
    return {"rows": rows, "train_length": train_length,
            "accuracy": {name: float(np.mean(v)) for name, v in right.items()},
            "answer_loss": {name: float(np.mean(v)) for name, v in loss.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--train-length", type=int, required=True, help="Length of the control rows.")
    parser.add_argument("--length", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=512, help="Tokens per call, the state carried.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--docs", default=str(DOCS))
    parser.add_argument("--name", default="needle_state_swap")
    args = parser.parse_args()
    torch.set_num_threads(1)
    trained, tokenizer, _ = load_checkpoint(args.checkpoint)
    if not any(isinstance(m, SelfModifyingTitans) for m in trained.modules()):
        raise SystemExit(f"{args.checkpoint} is a {trained.config.arch} model; this probes Hope's self-modifying Titans")
    settings = {k: v for k, v in trained.config.to_dict().items() if k != "arch"}
    static = [None] * len(trained.config.cms_periods)
    model = LanguageModel(make_config(trained.config.arch, None, **{**settings, "cms_periods": static}))
    model.load_state_dict(trained.state_dict(), strict=True)
    model.eval()
    results = {}
    for length in args.length:
        task = NIAHTask.variant("single_1", length=length, depth=1.0, tokenizer=tokenizer)
        results[length] = measure(model, task, args.train_length, args.rows, args.chunk, args.seed)
        print(f"length {length}: " + ", ".join(f"{name} {100 * acc:.1f}%"
                                               for name, acc in results[length]["accuracy"].items()), flush=True)
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / f"{args.name}.json").write_text(json.dumps(
        {"checkpoint": args.checkpoint, "chunk": args.chunk, "seed": args.seed, "results": results}, indent=2) + "\n")
    lines = [f"Checkpoint `{args.checkpoint}` with static CMS levels, {args.rows} S-NIAH-1 rows per length, the needle "
             f"right before the question, read {args.chunk} tokens per call with the state carried. Control: the "
             f"same row cut to {args.train_length} tokens (same needle, question, answer; less noise before the "
             "needle). The other rows read the long row with the named memories of every layer taken from the "
             "control row's state at the needle. Pass key right, percent (answer loss, nats per token).", "",
             "| read | " + " | ".join(str(length) for length in results) + " |",
             "|---|" + "---:|" * len(results)]
    labels = {"control": "control row", "none": "long row as read", "proj": "projection memories from control",
              "mem": "M_mem from control", "proj+mem": "both from control"}
    for name in next(iter(results.values()))["accuracy"]:
        label = labels[name] if name in labels else f"M_{name.partition(':')[2]} alone from control"
        lines.append(f"| {label} | " + " | ".join(f"{100 * r['accuracy'][name]:.1f} ({r['answer_loss'][name]:.2f})"
                                                   for r in results.values()) + " |")
    (docs / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
