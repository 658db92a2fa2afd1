"""Does a model's state settle into the language's cycle, or keep moving past the training length? (NL Sec. 9.5,
Table 5; docs/results.md, section 1.)

(aa)* and (abab)* have one member of each length, and every member is a prefix of the longest: a saved run of
either (``hope tasks run formal_abab_star ... --save-model``) reads that one string, ``--length`` symbols long, and
this records the model's last hidden state (after the final norm) at every prefix ``t``. A model that learned the
language as a cycle of period ``p`` (2 or 4) settles into it: ``h_t`` comes back to ``h_{t-p}``, and past the
longest training string it meets only states it has met before. Per prefix it reports

* the **cycle change** ``|h_t - h_{t-p}| / |h_{t-p}|``: how far one period moves the state;
* past the longest training string, the **novelty** ``min_s |h_t - h_s| / |h_s|`` over the training prefixes ``s``
  of the same phase (``s = t mod p``): how far the state is from every state of its phase the model was trained on;
* the **margin**, the IN minus the OUT logit, and whether the label is right;
* where every mixer writes a delta-rule matrix (Gated DeltaNet; Hope with ``memory=linear objective=dot
  self_targets=false``), the **write eigenvalue** of each token and head at the training prefixes: a write
  ``M <- M (alpha I - eta' k k^T) + eta' v k^T`` scales ``M`` along its key by ``alpha - eta' |k|^2`` (``eta'`` the step
  the memory takes: ``eta / (1 + eta |k|^2)`` with Hope's proximal step). Below zero, the write flips the memory's
  sign along ``k``, which a linear recurrence needs to count modulo 2 (Grazzi et al., ICLR 2025, "Unlocking
  state-tracking in linear RNNs through negative eigenvalues").

Runs of one model label are pooled as mean ± sample sd over seeds. Writes ``NAME.json``, ``NAME.md`` (and the
cycle change and novelty by prefix as ``NAME.png``) under ``--docs``.

    python benchmarks/length_states.py --runs runs/formal/abab_star/hope/seed-0 ... --name length_states_abab_star
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from hope.checkpoint import load_checkpoint
from hope.errors import HopeError
from hope.eval.report import common_parts, legend_below, model_label, pooled, pyplot, save_figure
from hope.files import write_text_atomic
from hope.tasks.formal_languages import BOS_ID, FormalLanguageTask
from hope.tasks.registry import get_task

DOCS = Path(__file__).resolve().parent.parent / "docs" / "results" / "paper_cpu"
ONE_STRING = {"aa_star": "a", "abab_star": "ab"}


def read_states(model: torch.nn.Module, task: FormalLanguageTask, length: int) -> dict[str, np.ndarray]:
    """At every prefix of the language's one string of ``length`` symbols: the last hidden state ``[length + 1, d]``,
    the IN minus OUT margin, whether the prefix is a member, and whether the predicted label (the argmax over every
    id, as the task runner scores it) is right."""
    unit = ONE_STRING.get(task.language)
    if unit is None:
        raise HopeError(f"{task.language} has more than one string of a length; use aa_star or abab_star")
    string = (unit * length)[:length]
    ids = torch.tensor([[BOS_ID] + [task.symbol_id(c) for c in string]])
    with torch.no_grad():
        output = model(ids, output_hidden_states=True)
    inside, outside = task.label_base + 1, task.label_base
    margin = (output.logits[0, :, inside] - output.logits[0, :, outside]).double().numpy()
    expected = np.array(task.prefix_labels(string))
    return {"hidden": output.hidden_states[0].double().numpy(), "margin": margin, "member": expected == inside,
            "right": output.logits[0].argmax(-1).numpy() == expected, "ids": ids}


def write_eigenvalues(model: torch.nn.Module, ids: torch.Tensor) -> np.ndarray | None:
    """``[layers, T, heads]``: the eigenvalue ``alpha_t - eta'_t |k_t|^2`` of each token's write along its key (see the
    module docstring), or None unless every mixer is a delta-rule matrix memory. Hope's keys and gates are read at its
    projection memories' initial state: exact before their first step (``chunk_size`` tokens)."""
    from hope.models.gated_deltanet import GatedDeltaNet
    from hope.models.hope.self_modifying_titans import SelfModifyingTitans

    mixers = [block.mixer for block in model.blocks]
    for mixer in mixers:
        if isinstance(mixer, SelfModifyingTitans):
            bank = mixer.banks["mem"]
            if not (bank.kind == "linear" and bank.objective == "dot" and bank.dgd and not mixer.self_targets
                    and mixer.test_time_learning):
                return None
        elif not isinstance(mixer, GatedDeltaNet):
            return None
    inputs = []
    hooks = [mixer.register_forward_pre_hook(lambda module, args: inputs.append(args[0])) for mixer in mixers]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for hook in hooks:
            hook.remove()
    values = []
    with torch.no_grad():
        for mixer, x in zip(mixers, inputs):
            if isinstance(mixer, GatedDeltaNet):  # unit keys: alpha - eta
                retention, step = torch.sigmoid(mixer.gates(x)).split(mixer.n_heads, dim=-1)
                values.append(retention - step)
                continue
            b, t, _ = x.shape
            static = None if mixer.static is None else mixer.static(x).view(b, t, -1, mixer.n_heads, mixer.head_dim)
            features, _ = mixer._features(mixer._memory_inputs(x), static, mixer.banks["proj"].shared(), None)
            keys = features["k"].square().sum(-1)
            step = features["eta"]
            if mixer.banks["mem"].proximal:
                step = step / (1 + step * keys)
            values.append(features["alpha"] - step * keys)
    return torch.cat(values).double().numpy()


def cycle_measures(hidden: np.ndarray, period: int, longest: int) -> dict:
    """Cycle change at every prefix from ``period`` on, and novelty at every prefix past ``longest``."""
    norms = np.linalg.norm(hidden, axis=-1)
    change = [float(np.linalg.norm(hidden[t] - hidden[t - period]) / norms[t - period])
              for t in range(period, len(hidden))]
    novelty = []
    for t in range(longest + 1, len(hidden)):
        seen = np.arange(t % period, longest + 1, period)
        novelty.append(float((np.linalg.norm(hidden[seen] - hidden[t], axis=-1) / norms[seen]).min()))
    return {"cycle_change": change, "novelty": novelty}


def plot(by_model: dict[str, list[dict]], period: int, longest: int, path: Path) -> bool:
    """Cycle change and novelty by prefix, per model (mean over seeds); False without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, runs in by_model.items():
        change = np.mean([r["cycle_change"] for r in runs], axis=0)
        novelty = np.mean([r["novelty"] for r in runs], axis=0)
        line, = left.plot(np.arange(period, period + len(change)), change, label=label, linewidth=1.2)
        right.plot(np.arange(longest + 1, longest + 1 + len(novelty)), novelty, color=line.get_color(), label=label,
                   linewidth=1.2)
    left.axvline(longest + 0.5, color="grey", linestyle="--", linewidth=0.8)
    left.set(yscale="log", xlabel="prefix length t", ylabel=f"|h_t - h_(t-{period})| / |h_(t-{period})|",
             title="How far one period moves the state")
    right.set(xlabel="prefix length t", ylabel="distance to the nearest trained state of its phase",
              title=f"Past the longest training string ({longest})")
    legend_below(fig, right)
    save_figure(fig, path, dpi=120)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="saved (aa)* or (abab)* runs (result.json, model/)")
    parser.add_argument("--length", type=int, default=100, help="symbols in the string read (bin1 ends at 100)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--docs", type=Path, default=DOCS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    measured = []
    for run in map(Path, args.runs):
        result = json.loads((run / "result.json").read_text())
        task = get_task(result["config"]["task"]).build(None, **result["train_settings"])
        if not isinstance(task, FormalLanguageTask):
            raise HopeError(f"{run} is a run of {result['config']['task']}, not of a formal language")
        longest = int(task.valid_lengths().max())
        if args.length <= longest:
            raise HopeError(f"--length {args.length} reads no prefix past the longest training string ({longest})")
        model, _, _ = load_checkpoint(run / "model", text=False)
        model.eval()
        read = read_states(model, task, args.length)
        period = task.spec.length_step
        eigenvalues = write_eigenvalues(model, read["ids"][:, : longest + 1])
        measured.append((result, {**{key: read[key].tolist() for key in ("margin", "member", "right")},
                                  **cycle_measures(read["hidden"], period, longest),
                                  "write_eigenvalues": None if eigenvalues is None else eigenvalues.tolist()}))
    tasks = {r["config"]["task"] for r, _ in measured}
    if len(tasks) > 1:
        raise HopeError(f"the runs are of different languages ({', '.join(sorted(tasks))}); compare one language")
    common = common_parts([r for r, _ in measured])
    by_model: dict[str, list[dict]] = {}
    for result, scores in measured:
        by_model.setdefault(model_label(result, common), []).append({"seed": int(result.get("seed", 0)), **scores})
    lines = [f"# Does the state settle into {task.spec.title}'s cycle? ({len(measured)} runs)", "",
             "`python benchmarks/length_states.py --runs " + " ".join(args.runs) + f" --name {args.name}`", "",
             f"Every run: {', '.join(sorted(common)) or '-'}. One string of {args.length} symbols; the longest training "
             f"string has {longest}. Cycle change: |h_t - h_(t-{period})| / |h_(t-{period})| of the last hidden state, "
             "mean over prefixes; novelty: its distance to the nearest state of the same phase at a training prefix "
             f"(relative), mean over the prefixes past {longest} where the string is a member (IN) and where it is not "
             "(OUT). Write eigenvalues: over every layer, head and token of the training prefixes, where every mixer is a "
             "delta-rule matrix (\"-\" otherwise). Mean ± sample sd over seeds.", "",
             f"| model | seeds | cycle change at {longest - 3 * period + 1}-{longest} | at {longest + 1}-{args.length} | "
             f"novelty, IN | novelty, OUT | IN right past {longest} (%) | OUT right past {longest} (%) | "
             f"write eigenvalues < 0 at 1-{longest} (%) | lowest write eigenvalue |",
             "|---" * 10 + "|"]
    for label, runs in by_model.items():
        cells = [[statistics.fmean(r["cycle_change"][longest - 4 * period + 1: longest - period + 1]) for r in runs],
                 [statistics.fmean(r["cycle_change"][longest - period + 1:]) for r in runs]]
        cells += [[statistics.fmean(v for v, inside in zip(r["novelty"], r["member"][longest + 1:]) if inside == want)
                   for r in runs] for want in (True, False)]
        text = [pooled(values, lambda v: f"{v:.3f}") for values in cells]
        text += [pooled([statistics.fmean(ok for ok, inside in zip(r["right"][longest + 1:],
                                                                          r["member"][longest + 1:]) if inside == want)
                          for r in runs]) for want in (True, False)]
        eigenvalues = [None if r["write_eigenvalues"] is None else np.array(r["write_eigenvalues"]) for r in runs]
        if any(e is None for e in eigenvalues):
            text += ["-", "-"]
        else:
            text += [pooled([float((e < 0).mean()) for e in eigenvalues]),
                     pooled([float(e.min()) for e in eigenvalues], lambda v: f"{v:.2f}")]
        lines.append(f"| {label} | {', '.join(str(r['seed']) for r in runs)} | " + " | ".join(text) + " |")
    args.docs.mkdir(parents=True, exist_ok=True)
    if plot(by_model, period, longest, args.docs / f"{args.name}.png"):
        lines += ["", f"![cycle change and novelty]({args.name}.png)"]
    text = "\n".join(lines) + "\n"
    report = {"task": task.language, "length": args.length, "longest_training_string": longest, "period": period,
              "models": by_model}
    for suffix, content in (("json", json.dumps(report, indent=1) + "\n"), ("md", text)):
        write_text_atomic(args.docs / f"{args.name}.{suffix}", content)
    print(text)


if __name__ == "__main__":
    main()
