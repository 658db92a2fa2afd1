"""Markdown tables and plots of task runs: one run (``results.md`` beside its ``result.json``) or
many (``hope tasks report DIR... --out docs/results.md``): per family a table of exact-match
accuracy (models x task settings), the training loss each run ended at (did it fit its task?) and
accuracy-vs-length plots; for continual learning the
average score, forgetting and backward transfer, and a forgetting chart; for streams the loss per setting,
forgetting and recovery, and the loss along the stream. Runs of one model and task with
different seeds are pooled: a cell is the mean over seeds, with the sample standard deviation after
``±`` when there are several, and the row names its seeds.
"""

from __future__ import annotations

import json
import re
import statistics
import textwrap
from fractions import Fraction
from pathlib import Path
from typing import Any

from hope.errors import HopeError
from hope.tasks.registry import FAMILIES, TASKS


def _label_parts(result: dict[str, Any], options: bool = False) -> list[str]:
    """The size, model overrides, outer CMS periods, a stream task's window and fine-tuned checkpoint of a run, as
    label parts; with ``options``, its task options too (suite experiments whose entries differ in them)."""
    extras = [f"{k}={v}" for k, v in sorted((result.get("model_overrides") or {}).items())]
    if options:
        extras += [f"{k}={v}" for k, v in sorted((result.get("task_options") or {}).items())]
    config = result.get("config") or {}
    if result.get("family") == "stream" and config.get("seq_len"):
        extras.append(f"seq_len={config['seq_len']}")
    outer = config.get("cms_outer_periods")
    if outer:
        extras.append("cms_outer_periods=" + "/".join(map(str, outer)))
    if result.get("checkpoint"):
        extras.append(f"from {_run_name(Path(result['checkpoint']))}")
    return [result["size"], *extras]


def _run_name(checkpoint: Path) -> str:
    """The run a checkpoint came from: the folder that holds it where it has the name a run gives it (``OUT/model``
    of ``hope tasks run --save-model``, ``OUT/checkpoint`` of ``hope train``), else its own name; the folder above
    a ``seed-S`` folder (``OUT/seed-S/model`` of a run of several seeds), so that the probes of its seeds pool."""
    run = checkpoint.parent if checkpoint.name in ("model", "checkpoint") and checkpoint.parent.name else checkpoint
    return run.parent.name if re.fullmatch(r"seed-\d+", run.name) and run.parent.name else run.name


def model_label(result: dict[str, Any], common: frozenset[str] = frozenset(), options: bool = False) -> str:
    """``arch (size)``, plus model overrides and a fine-tuned checkpoint when there are any (and task options, with
    ``options``); the parts in ``common`` (shared by every run of a table, stated once beside it) left out."""
    parts = [part for part in _label_parts(result, options) if part not in common]
    return f"{result['arch']} ({', '.join(parts)})" if parts else result["arch"]


def common_parts(results: list[dict[str, Any]], options: bool = False) -> frozenset[str]:
    """The label parts that every one of ``results`` shares."""
    sets = [set(_label_parts(result, options)) for result in results]
    return frozenset(set.intersection(*sets)) if sets else frozenset()


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None without matplotlib (pip install 'hope[plot]')."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """Lay ``fig`` out tightly, write it to ``path`` (cropped to everything drawn, a legend outside the axes
    included) and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)


def legend_below(fig, ax, width: int = 120, fontsize: int = 7) -> None:
    """One legend for ``fig`` under its axes, from ``ax``'s lines, each label wrapped at ``width`` characters: model
    labels that name every override would otherwise crowd the axes out."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, [textwrap.fill(label, width) for label in labels], loc="upper center",
               bbox_to_anchor=(0.5, 0.0), fontsize=fontsize, frameon=False)


def run_markdown(result: dict[str, Any], plots: list[str]) -> str:
    """The ``results.md`` of one run."""
    spec = TASKS[result["task"]]
    lines = [f"# {result['task']}: {model_label(result)}", "",
             f"{spec.summary} [{spec.source}]. {result['params']:,} parameters, seed {result['seed']}, "
             f"{result['seconds']} s.", ""]
    if result["family"] == "continual":
        lines += _matrix_table(result)
    elif result["family"] == "stream":
        lines += _stream_tables(result)
    else:
        lines += ["| setting | item accuracy | sequence accuracy | token accuracy | answer loss | examples | row length |",
                  "|---|---|---|---|---|---|---|"]
        for label, scores in result["evals"].items():
            loss = f"{scores['answer_loss']:.3f}" if "answer_loss" in scores else "-"
            lines.append(f"| {label} | {_percent(scores['item_accuracy'])} | {_percent(scores['sequence_accuracy'])} | "
                         f"{_percent(scores['token_accuracy'])} | {loss} | {scores['examples']} | {scores['max_length']} |")
        lines += ["", "Accuracies are exact-match percentages: item = each answer (a value, a query, a whole "
                  "string), sequence = every answer of a row, token = each answer position. Answer loss: mean "
                  "negative log-likelihood (nats) of the answer tokens, which shows partial retention that exact "
                  "match hides."]
        if result.get("cms_periods_not_trained"):
            lines += ["", f"CMS levels that never stepped in training (periods not shorter than the training rows): "
                      f"{', '.join(map(str, result['cms_periods_not_trained']))}; this run gave their inner learning "
                      "rates no gradient."]
        if result["config"].get("answer_rows"):
            lines += ["", f"What the model answered, expected beside predicted, in the first "
                      f"{result['config']['answer_rows']} rows of each setting: [answers.jsonl](answers.jsonl)."]
    lines += [""] + [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def _matrix_table(result: dict[str, Any]) -> list[str]:
    stages, metric = result["stages"], result["metric"]
    lines = [f"Score matrix ({metric}): row = after training on that stage, column = stage evaluated.", "",
             "| after \\ on | " + " | ".join(stages) + " |", "|---" * (len(stages) + 1) + "|"]
    for name, row in zip(stages, result["matrix"]):
        cells = [_percent(v) if metric == "accuracy" else f"{v:.3f}" for v in row]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    metrics = result["continual"]
    fmt = _percent if metric == "accuracy" else (lambda v: f"{v:.3f}")
    lines += ["", f"Average {metric}: {fmt(metrics['average'])}; forgetting: {fmt(metrics['forgetting'])}; "
              f"backward transfer: {fmt(metrics['backward_transfer'])}."]
    if "seen_accuracy" in result:
        lines.append("Accuracy on all classes seen so far: " + ", ".join(_percent(v) for v in result["seen_accuracy"]) + ".")
    return lines


def _stream_tables(result: dict[str, Any]) -> list[str]:
    """Mean loss per evaluation setting, loss by position, and the segment metrics of cipher streams."""
    evals = result["evals"]
    lines = ["| setting | mean loss (nats/token) | rows | tokens per row |", "|---|---|---|---|"]
    lines += [f"| {label} | {s['loss']:.4f} | {s['rows']} | {s['length']} |" for label, s in evals.items()]
    first = next(iter(evals.values()))
    lines += ["", "Loss by position:", "", "| setting | " + " | ".join(f"{a}-{b}" for a, b, _ in first["by_position"])
              + " |", "|---" * (len(first["by_position"]) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(f"{v:.3f}" for _, _, v in s["by_position"]) + " |"
              for label, s in evals.items()]
    names = list(first.get("segments", {}))
    if names:
        lines += ["", "Loss per segment:", "", "| setting | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {label} | " + " | ".join(f"{s['segments'][name]['mean']:.3f}" for name in names) + " |"
                  for label, s in evals.items()]
    for label, scores in evals.items():
        for name, ret in scores.get("returns", {}).items():
            recovery = "never" if ret["recovery_tokens"] is None else f"after {ret['recovery_tokens']} tokens"
            lines.append(f"\n{label}: {name}'s loss began {ret['forgetting']:+.3f} above the end of "
                         f"{ret['after']} (forgetting); it recovered {recovery}.")
    return lines


def plot_run(result: dict[str, Any], out: Path) -> list[str]:
    """Plots of one run into ``out``; returns their file names (none without matplotlib)."""
    plt = pyplot()
    if plt is None:
        return []
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if result["family"] == "continual":
        image = ax.imshow(result["matrix"], cmap="viridis")
        ax.set_xticks(range(len(result["stages"])), result["stages"], rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(result["stages"])), result["stages"], fontsize=7)
        ax.set_xlabel("evaluated on")
        ax.set_ylabel("after training on")
        fig.colorbar(image, label=result["metric"])
        name = "matrix.png"
    elif result["family"] == "stream":
        for label, scores in result["evals"].items():
            ax.plot(*zip(*scores["curve"]), label=label, linewidth=0.8)
        for _, start, _ in next(iter(result["evals"].values())).get("boundaries", [])[1:]:
            ax.axvline(start, color="grey", linewidth=0.5)
        ax.set_xlabel("position in the stream (tokens)")
        ax.set_ylabel("next-token loss")
        ax.legend(fontsize=7)
        ax.set_title(f"{result['task']}: {model_label(result)}", fontsize=9)
        name = "stream.png"
    else:
        labels = list(result["evals"])
        ax.plot(labels, [100 * result["evals"][k]["item_accuracy"] for k in labels], marker="o", label=result["arch"])
        ax.set_ylim(-2, 102)
        ax.set_xlabel("evaluation setting")
        ax.set_ylabel("item accuracy (%)")
        ax.set_title(f"{result['task']}: {model_label(result)}", fontsize=9)
        name = "accuracy.png"
    save_figure(fig, out / name)
    return [name]


def collect_results(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Every ``result.json`` under ``paths`` (files or folders, searched recursively)."""
    results = []
    for path in map(Path, paths):
        if not path.exists():
            raise HopeError(f"{path} does not exist")
        files = [path] if path.is_file() else sorted(path.rglob("result.json"))
        for file in files:
            try:
                result = json.loads(file.read_text())
            except json.JSONDecodeError as err:
                raise HopeError(f"{file} is not valid JSON ({err.msg})") from None
            if not {"task", "family", "arch"} <= set(result):
                raise HopeError(f"{file} is not a task result (no task/family/arch)")
            results.append(result)
    if not results:
        raise HopeError(f"no result.json found under {', '.join(map(str, paths))}")
    return results


def _by_seed(results: list[dict[str, Any]], common: frozenset[str] = frozenset(), options: bool = False
             ) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The runs of each (task, model), one per seed in seed order; of two runs with one seed the later path wins.
    With ``options``, runs that differ in task options are apart models (labelled by them)."""
    table: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for result in results:
        key, seed = (result["task"], model_label(result, common, options)), int(result.get("seed", 0))
        earlier = table.setdefault(key, {}).get(seed)
        if earlier is not None and earlier.get("task_options") != result.get("task_options"):
            raise HopeError(f"two {key[0]} runs of {key[1]} with seed {seed} have different task options "
                            f"({earlier.get('task_options')} and {result.get('task_options')}); report them apart "
                            "(a suite folder alone gets one table per setting)")
        table[key][seed] = result
    return {key: [seeds[s] for s in sorted(seeds)] for key, seeds in table.items()}


def pooled(values: list[float], fmt=_percent, sd_fmt=None) -> str:
    """``mean`` of one value, ``mean ± sd`` (sample standard deviation, in ``sd_fmt``, else ``fmt``) of several."""
    if not values:
        return ""
    text = fmt(statistics.fmean(values))
    return f"{text} ± {(sd_fmt or fmt)(statistics.stdev(values))}" if len(values) > 1 else text


def pooled_change(values: list[float]) -> str:
    """``pooled`` of a difference in loss: its mean signed."""
    return pooled(values, lambda v: f"{v:+.3f}", sd_fmt=lambda v: f"{v:.3f}")


def _seeds(runs: dict, tasks: list[str], model: str) -> str:
    seeds = sorted({int(r.get("seed", 0)) for task in tasks for r in runs.get((task, model), [])})
    return ", ".join(map(str, seeds))


def build_report(paths: list[str | Path], out: str | Path, command: str = "") -> str:
    """Write the markdown report (and its plots beside it) of every run under ``paths``."""
    results = collect_results(paths)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = _by_seed(results)
    models = sorted({m for _, m in runs})
    count = sum(len(seeds) for seeds in runs.values())
    lines = ["# Task results", "",
             f"{count} runs{f', written by `{command}`' if command else ''}. Every number below was measured "
             "by these runs; item accuracy is exact match per answer, in percent; with several seeds, mean ± "
             "sample standard deviation over them.", ""]
    for family in FAMILIES:
        tasks = [name for name, spec in TASKS.items() if spec.family == family and any(t == name for t, _ in runs)]
        if not tasks:
            continue
        lines += [f"## {family}", ""]
        lines += _family_tables(family, tasks, models, runs)
        lines += ["", _budgets([r for (t, _), seeds in runs.items() if t in tasks for r in seeds])]
        plot = _plot_family(family, tasks, models, runs, out)
        if plot:
            lines += ["", f"![{family}]({plot})"]
        lines.append("")
    skipped = [entry for path in map(Path, paths) if path.is_dir() for file in sorted(path.rglob("skipped.json"))
               for entry in json.loads(file.read_text())]
    if skipped:
        lines += ["## Runs that did not finish", ""] + [f"- {e['task']} ({e['arch']}): {e['reason']}" for e in skipped] + [""]
    text = "\n".join(lines)
    out.write_text(text)
    return text


def _family_tables(family: str, tasks: list[str], models: list[str], runs: dict) -> list[str]:
    """The tables of one family's runs: loss, forgetting and recovery for streams, the continual metrics, or
    accuracy per scored setting with the answer tokens right and the training loss beside it."""
    if family == "stream":
        return _stream_table(tasks, models, runs)
    if family == "continual":
        return _continual_table(tasks, models, runs)
    return _family_table(tasks, models, runs) + _token_table(tasks, models, runs) + _loss_table(tasks, models, runs)


def _family_table(tasks: list[str], models: list[str], runs: dict, metric: str = "item_accuracy") -> list[str]:
    """Models x (task, scored length): ``metric`` in percent, pooled over seeds."""
    columns = []
    for task in tasks:
        labels = []
        for model in models:
            for result in runs.get((task, model), []):
                labels += [label for label in result["evals"] if label not in labels]
        columns += [(task, label) for label in labels]
    lines = ["| model | " + " | ".join(f"{_short(t)} {label}" for t, label in columns) + " | seeds |",
             "|---" * (len(columns) + 2) + "|"]
    for model in models:
        cells = [pooled([r["evals"][label][metric] for r in runs.get((task, model), [])
                          if metric in r["evals"].get(label, {})]) for task, label in columns]
        if any(cells):
            lines.append(f"| {model} | " + " | ".join(cells) + f" | {_seeds(runs, tasks, model)} |")
    return lines


def _token_table(tasks: list[str], models: list[str], runs: dict) -> list[str]:
    """The share of answer tokens right, for tasks whose answers span several tokens (where it differs from exact
    match anywhere): it shows a partial recall, such as most digits of a number, that exact match scores as zero."""
    partial = [task for task in tasks if any(
        "token_accuracy" in scores and scores["token_accuracy"] != scores["item_accuracy"]
        for model in models for r in runs.get((task, model), []) for scores in r["evals"].values())]
    if not partial:
        return []
    return (["", "Answer tokens right (percent; exact match above asks for every token of an answer):", ""]
            + _family_table(partial, models, runs, metric="token_accuracy"))


LAST_STEPS = 100
"""The training loss a run ended at is the mean of its logged losses over this many last steps."""


def _last_loss(result: dict[str, Any]) -> float | None:
    """Mean logged training loss over the run's last ``LAST_STEPS`` steps; None for a run without a loss curve."""
    curve = result.get("loss_curve") or []
    if not curve:
        return None
    end = curve[-1][0]
    return statistics.fmean(loss for step, loss in curve if step > end - LAST_STEPS)


def _loss_table(tasks: list[str], models: list[str], runs: dict) -> list[str]:
    """Models x tasks: the training loss the runs ended at, pooled over seeds. Beside an accuracy of zero it tells
    a task not fitted (a loss at the answer's chance level) from a memory that fails past the training length."""
    cells = {(task, model): [loss for r in runs.get((task, model), []) if (loss := _last_loss(r)) is not None]
             for task in tasks for model in models}
    if not any(cells.values()):
        return []
    lines = ["", f"Training loss, mean over each run's last {LAST_STEPS} steps:", "",
             "| model | " + " | ".join(_short(t) for t in tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for model in models:
        row = [pooled(cells[task, model], fmt=lambda v: f"{v:.3f}") for task in tasks]
        if any(row):
            lines.append(f"| {model} | " + " | ".join(row) + " |")
    return lines


def _stream_table(tasks: list[str], models: list[str], runs: dict) -> list[str]:
    """Per model and stream task: mean loss per setting, and for each returning segment its forgetting and the
    tokens it took to recover (runs that never recovered are counted apart)."""
    lines = ["| model | task | setting | mean loss | forgetting | recovery tokens | seeds |", "|---|---|---|---|---|---|---|"]
    loss = lambda v: f"{v:.3f}"
    for task in tasks:
        for model in models:
            seeds = runs.get((task, model), [])
            for label in (seeds[0]["evals"] if seeds else []):
                scores = [r["evals"][label] for r in seeds if label in r["evals"]]
                returns = sorted({name for s in scores for name in s.get("returns", {})})
                forgetting = "; ".join(f"{name} {pooled([s['returns'][name]['forgetting'] for s in scores], loss)}"
                                       for name in returns)
                recovery = "; ".join(f"{name} {_recovery([s['returns'][name]['recovery_tokens'] for s in scores])}"
                                     for name in returns)
                lines.append(f"| {model} | {_short(task)} | {label} | {pooled([s['loss'] for s in scores], loss)} | "
                             f"{forgetting} | {recovery} | {_seeds(runs, [task], model)} |")
    lines += ["", "Loss in nats per token. Forgetting: how far a returning language's loss (first window) starts "
              "above where it ended before the other language; recovery: tokens until its windowed loss is back there."]
    for task in tasks:
        lines += [""] + _position_table(task, models, runs)
        lines += _segment_table(task, models, runs)
    return lines


def _segment_table(task: str, models: list[str], runs: dict) -> list[str]:
    """Mean loss of each segment of a stream of segments (cipher streams), per model and setting, and the last
    segment's minus the first's, paired within each run; none for streams without segments."""
    results = [r for m in models for r in runs.get((task, m), [])]
    names = list(dict.fromkeys(name for r in results for s in r["evals"].values() for name in s.get("segments", {})))
    if not names:
        return []
    fmt = lambda x: f"{x:.3f}"
    lines = ["", f"Loss per segment, {_short(task)} (last - first: {names[-1]} minus {names[0]}, within each run):",
             "", "| model | setting | " + " | ".join(names) + " | last - first |", "|---" * (len(names) + 3) + "|"]
    for model in models:
        seeds = runs.get((task, model), [])
        for label in (seeds[0]["evals"] if seeds else []):
            scores = [r["evals"][label].get("segments", {}) for r in seeds if label in r["evals"]]
            cells = [pooled([s[name]["mean"] for s in scores if name in s], fmt) for name in names]
            change = [s[names[-1]]["mean"] - s[names[0]]["mean"] for s in scores if names[0] in s and names[-1] in s]
            lines.append(f"| {model} | {label} | " + " | ".join(cells) + f" | {pooled_change(change)} |")
    return lines


def _position_table(task: str, models: list[str], runs: dict) -> list[str]:
    """Loss by position (bins of ``hope.tasks.streams.position_bins``) of a stream task, per model and setting."""
    seeds = next(runs[(task, m)] for m in models if (task, m) in runs)
    bins = [(a, b) for a, b, _ in next(iter(seeds[0]["evals"].values()))["by_position"]]
    lines = [f"Loss by position, {_short(task)}:", "",
             "| model | setting | " + " | ".join(f"{a}-{b}" for a, b in bins) + " |", "|---" * (len(bins) + 2) + "|"]
    for model in models:
        results = runs.get((task, model), [])
        for label in (results[0]["evals"] if results else []):
            values = [[v for _, _, v in r["evals"][label]["by_position"]] for r in results if label in r["evals"]]
            cells = [pooled([v[i] for v in values if i < len(v)], lambda x: f"{x:.3f}") for i in range(len(bins))]
            lines.append(f"| {model} | {label} | " + " | ".join(cells) + " |")
        paired = [[c - r for (_, _, c), (_, _, r) in zip(run["evals"]["carried"]["by_position"],
                                                          run["evals"]["reset"]["by_position"])]
                  for run in results if {"carried", "reset"} <= set(run["evals"])]
        if paired:
            cells = [pooled_change([v[i] for v in paired if i < len(v)]) for i in range(len(bins))]
            lines.append(f"| {model} | carried - reset | " + " | ".join(cells) + " |")
    lines += ["", "carried - reset: the same tokens' loss with the state carried minus with it reset at every window, "
              "paired within each run (below zero: the context before the window helps)."]
    return lines


def _stream_points(scores: dict[str, Any]) -> list[list[float]]:
    """The loss along a stream of segments (cipher languages), else the loss by position (bin middles)."""
    if "boundaries" in scores:
        return scores["curve"]
    return [[(a + b) / 2, v] for a, b, v in scores["by_position"]]


def _recovery(tokens: list[int | None]) -> str:
    done = [t for t in tokens if t is not None]
    never = len(tokens) - len(done)
    if not done:
        return "never"
    return pooled(done, lambda v: f"{v:.0f}") + (f" ({never} of {len(tokens)} never)" if never else "")


def _budgets(results: list[dict[str, Any]]) -> str:
    """One sentence on how the runs of a family were trained: each distinct (steps, rows, lr, task options) and
    how many runs used it, then the CMS periods that runs never stepped in training (``CMSReach``)."""
    counts: dict[str, int] = {}
    unreached: dict[str, int] = {}
    for result in results:
        if result.get("cms_periods_not_trained"):
            periods = ", ".join(map(str, result["cms_periods_not_trained"]))
            unreached[periods] = unreached.get(periods, 0) + 1
        config = result.get("config", {})
        options = ", ".join(f"{k}={v}" for k, v in sorted((config.get("options") or {}).items()))
        unit = " per stage" if result["family"] == "continual" else ""
        steps = config.get("steps")
        key = ("none, a saved model evaluated (--steps 0)" if steps == 0 else
               f"{steps} step{'' if steps == 1 else 's'}{unit} x {config.get('batch_size')} rows, lr {config.get('lr')}")
        key += f", {options}" if options else ""
        counts[key] = counts.get(key, 0) + 1
    text = "Training: " + "; ".join(f"{key} ({_runs(n)})" for key, n in counts.items()) + "."
    if unreached:
        text += (" CMS periods that never stepped in training (not shorter than the rows): "
                 + "; ".join(f"{periods} ({_runs(n)})" for periods, n in unreached.items()) + ".")
    return text


def _runs(count: int) -> str:
    return f"{count} run{'s' if count > 1 else ''}"


def _short(task: str) -> str:
    """A task name without its family prefix (``formal_dyck2`` -> ``dyck2``)."""
    prefix, _, rest = task.partition("_")
    return rest if prefix in FAMILIES and rest else task


def _continual_table(tasks: list[str], models: list[str], runs: dict) -> list[str]:
    header = " | ".join(f"{t.removeprefix('continual_')} {m}" for t in tasks for m in ("avg", "forget", "BWT"))
    lines = [f"| model | {header} | seeds |", "|---" * (3 * len(tasks) + 2) + "|"]
    for model in models:
        cells = []
        for task in tasks:
            seeds = runs.get((task, model), [])
            if not seeds:
                cells += ["", "", ""]
                continue
            fmt = _percent if seeds[0]["metric"] == "accuracy" else (lambda v: f"{v:.3f}")
            cells += [pooled([r["continual"][key] for r in seeds], fmt)
                      for key in ("average", "forgetting", "backward_transfer")]
        if any(cells):
            lines.append(f"| {model} | " + " | ".join(cells) + f" | {_seeds(runs, tasks, model)} |")
    lines += ["", "avg: final accuracy (corpus eras: loss) averaged over stages; forget: average forgetting "
              "(lower is better); BWT: backward transfer (higher is better)."]
    return lines


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _color(plt: Any, k: int, count: int) -> Any:
    """The ``k``-th of ``count`` distinct colours (tab10, or tab20 past ten lines)."""
    return plt.get_cmap("tab10" if count <= 10 else "tab20")(k % 20)


def _plot_family(family: str, tasks: list[str], models: list[str], runs: dict, out: Path) -> str | None:
    plt = pyplot()
    if plt is None:
        return None
    name = f"{out.stem}_{family}.png"
    if family == "stream":
        fig, axes = plt.subplots(1, len(tasks), figsize=(max(4.5 * len(tasks), 7.0), 3.6), squeeze=False)
        for ax, task in zip(axes.flat, tasks):
            for k, model in enumerate(models):
                seeds = runs.get((task, model), [])
                for label, style in zip(seeds[0]["evals"] if seeds else [], ("-", "--", ":")):
                    curves = [_stream_points(r["evals"][label]) for r in seeds if label in r["evals"]]
                    x = [p for p, _ in curves[0]]
                    ax.plot(x, [_mean([c[i][1] for c in curves if i < len(c)]) for i in range(len(x))], style,
                            color=_color(plt, k, len(models)), linewidth=0.8,
                            marker="" if "boundaries" in seeds[0]["evals"][label] else ".", label=f"{model}, {label}")
            first = next(iter(seeds[0]["evals"].values())) if seeds else {}
            for index, (segment, start, end) in enumerate(first.get("boundaries", [])):
                if index:
                    ax.axvline(start, color="grey", linewidth=0.5)
                ax.text((start + end) / 2, 1.0, segment, transform=ax.get_xaxis_transform(), ha="center",
                        va="bottom", fontsize=7)
            if seeds and "boundaries" not in first:
                ax.set_xscale("log", base=2)
            ax.set_title(task, fontsize=9, pad=14 if first.get("boundaries") else 6)
            ax.set_xlabel("position (tokens)", fontsize=8)
            ax.set_ylabel("next-token loss", fontsize=8)
            ax.tick_params(labelsize=7)
        ax = axes.flat[0]
    elif family == "continual":
        fig, ax = plt.subplots(figsize=(1.2 + 1.3 * len(tasks), 3.5))
        width = 0.8 / max(1, len(models))
        for k, model in enumerate(models):
            values = [[r["continual"]["forgetting"] for r in runs.get((t, model), [])] for t in tasks]
            ax.bar([i + k * width for i in range(len(tasks))], [_mean(v) for v in values], width,
                   yerr=[_spread(v) for v in values], label=model)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))], [t.removeprefix("continual_") for t in tasks])
        ax.set_ylabel("average forgetting")
    else:
        columns = min(4, len(tasks))
        rows = -(-len(tasks) // columns)
        fig, axes = plt.subplots(rows, columns, figsize=(max(3.2 * columns, 7.0), 2.6 * rows + 0.6), squeeze=False)
        for ax, task in zip(axes.flat, tasks):
            for index, model in enumerate(models):
                seeds = runs.get((task, model))
                if seeds:
                    labels = [k for k in seeds[0]["evals"] if all(k in r["evals"] for r in seeds)]
                    values = [[100 * r["evals"][k]["item_accuracy"] for r in seeds] for k in labels]
                    ax.errorbar(labels, [_mean(v) for v in values], yerr=[_spread(v) for v in values], marker="o",
                                capsize=2, color=_color(plt, index, len(models)), label=model)
            ax.set_title(task, fontsize=9)
            ax.set_ylim(-2, 102)
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[len(tasks):]:
            ax.axis("off")
        ax = axes.flat[0]
    _legend_below(fig, *ax.get_legend_handles_labels())
    fig.savefig(out.parent / name, dpi=110)
    plt.close(fig)
    return name


def build_suite_report(folder: str | Path, out: str | Path, command: str = "") -> str:
    """The report of a suite folder (``hope tasks suite``; its ``suite.json``): per experiment its table and plot,
    each run pooled over seeds; MQAR as accuracy against key-value pairs per width and length."""
    folder, out = Path(folder), Path(out)
    record = json.loads((folder / "suite.json").read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    minutes = record["seconds"] / 60
    process_hours = sum(r.get("seconds", 0.0) for entry in record["entries"] if (folder / entry).is_dir()
                        for r in _results_under(folder / entry)) / 3600
    lines = [f"# Suite {record['suite']}", "",
             f"{record['summary']}. {record['finished']} of {record['runs']} runs finished, seeds "
             f"{', '.join(map(str, record['seeds']))}; {minutes:.1f} minutes of running by the suite's calls since "
             f"its record began, {process_hours:.2f} process-hours by the finished runs' own clocks"
             f"{f'; report written by `{command}`' if command else ''}. Every number was measured by these runs; "
             "with several seeds, mean ± sample standard deviation.", ""]
    experiments: dict[str, list[str]] = {}
    for entry, about in record["entries"].items():
        experiments.setdefault(about["experiment"] or about["task"], []).append(entry)
    for experiment, entries in experiments.items():
        found = [path for entry in entries if (folder / entry).is_dir() for path in [folder / entry]]
        results = [r for path in found for r in _results_under(path)]
        if not results:
            continue
        lines += [f"## {experiment}", ""]
        mqar = experiment == "mqar"  # its table has a column per task option (length, pairs)
        common = common_parts(results, options=not mqar)
        tasks = list(dict.fromkeys(r["task"] for r in results))
        family = TASKS[tasks[0]].family
        if common:
            lines += [f"Every model: {', '.join(sorted(common))}.", ""]
        if mqar:
            lines += _mqar_table(results, common)
            plot = _plot_mqar(results, out, f"{out.stem}_{experiment}.png", common)
        else:
            runs = _by_seed(results, common, options=True)
            models = sorted({m for _, m in runs})
            lines += _family_tables(family, tasks, models, runs)
            plot = _plot_family(family, tasks, models, runs, out.with_name(f"{out.stem}_{experiment}.md"))
        lines += ["", _budgets(results)]
        if plot:
            lines += ["", f"![{experiment}]({plot})"]
        lines.append("")
    if record["skipped"]:
        lines += ["## Runs that did not finish", ""] + [
            f"- {e['entry']} ({e['arch']}, seed {e['seed']}): {e['reason']}" for e in record["skipped"]] + [""]
    text = "\n".join(lines)
    out.write_text(text)
    return text


def _results_under(path: Path) -> list[dict[str, Any]]:
    return [json.loads(file.read_text()) for file in sorted(path.rglob("result.json"))]


def _mqar_cells(results: list[dict[str, Any]], common: frozenset[str]) -> dict[tuple[str, int, int], list[float]]:
    """Item accuracy at the training length of every (model, length, pairs), one value per seed."""
    cells: dict[tuple[str, int, int], list[float]] = {}
    for result in sorted(results, key=lambda r: int(r.get("seed", 0))):
        options = result["task_options"]
        key = (model_label(result, common), int(options["length"]), int(options["num_kv_pairs"]))
        cells.setdefault(key, []).append(next(iter(result["evals"].values()))["item_accuracy"])
    return cells


def _mqar_table(results: list[dict[str, Any]], common: frozenset[str]) -> list[str]:
    cells = _mqar_cells(results, common)
    columns = sorted({(length, pairs) for _, length, pairs in cells})
    models = sorted({model for model, _, _ in cells})
    lines = ["| model | " + " | ".join(f"L{length} kv{pairs}" for length, pairs in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {model} | " + " | ".join(pooled(cells.get((model, *c), [])) for c in columns) + " |"
              for model in models]
    return lines + ["", "MQAR item accuracy (percent of queries) at the training length L with kv key-value pairs."]


def _legend_below(fig, handles: list, labels: list[str]) -> None:
    """The legend under the panels, in as many columns as fit the figure's width (at most 3), the figure made
    taller by its rows."""
    width, height = fig.get_size_inches()
    longest = max((len(label) for label in labels), default=1)
    columns = max(1, min(3, len(labels), int(width / (0.065 * longest + 0.5))))
    extra = 0.2 * -(-len(labels) // columns) + 0.15
    fig.set_size_inches(width, height + extra)
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=7)
    fig.tight_layout(rect=(0, extra / (height + extra), 1, 1))


def mqar_panels(cells: dict[tuple[str, int, int], list[float]]) -> list[tuple[str, int | Fraction]]:
    """The panels of the MQAR plot, each over the settings that two or more cells share: accuracy against pairs at
    each length (``("pairs", length)``), against length at each number of pairs (``("length", pairs)``), and against
    length at each density of pairs per token (``("density", pairs / length)``: Zoology's diagonals)."""
    settings = {(length, pairs) for _, length, pairs in cells}
    keys = {"pairs": lambda n, p: n, "length": lambda n, p: p, "density": lambda n, p: Fraction(p, n)}
    panels = []
    for kind, key in keys.items():
        counts: dict[int | Fraction, int] = {}
        for length, pairs in settings:
            counts[key(length, pairs)] = counts.get(key(length, pairs), 0) + 1
        panels += [(kind, value) for value in sorted(counts) if counts[value] > 1]
    return panels


def _in_panel(kind: str, value: int | Fraction, length: int, pairs: int) -> int | None:
    """The x of cell (length, pairs) in panel (kind, value), or None when the cell is not in it."""
    if kind == "pairs":
        return pairs if length == value else None
    return length if (pairs if kind == "length" else Fraction(pairs, length)) == value else None


def _plot_mqar(results: list[dict[str, Any]], out: Path, name: str, common: frozenset[str]) -> str | None:
    """Accuracy against key-value pairs at each length, against length at each number of pairs and along each
    density of pairs (Zoology's diagonals); one line per model, at most four panels a row."""
    plt = pyplot()
    cells = _mqar_cells(results, common)
    panels = mqar_panels(cells)
    if plt is None or not panels:
        return None
    models = sorted({model for model, _, _ in cells})
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(max(3.4 * columns, 6.0), 3.0 * rows), squeeze=False)
    titles = {"pairs": "length {}", "length": "{} pairs", "density": "one pair per {} tokens"}
    for ax, (kind, value) in zip(axes.flat, panels):
        for k, model in enumerate(models):
            points = sorted((x, values) for (m, length, pairs), values in cells.items()
                            if m == model and (x := _in_panel(kind, value, length, pairs)) is not None)
            if points:
                ax.errorbar([x for x, _ in points], [100 * _mean(v) for _, v in points],
                            yerr=[100 * _spread(v) for _, v in points], marker="o", capsize=2,
                            color=_color(plt, k, len(models)), label=model)
        ax.set_xscale("log", base=2)
        ticks = sorted({x for line in ax.get_lines() for x in line.get_xdata()})
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.minorticks_off()
        ax.set_ylim(-2, 102)
        ax.set_title(titles[kind].format(f"{float(1 / value):g}" if kind == "density" else value), fontsize=9)
        ax.set_xlabel("key-value pairs" if kind == "pairs" else "sequence length", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("accuracy (%)", fontsize=8)
    _legend_below(fig, *axes.flat[0].get_legend_handles_labels())
    fig.savefig(out.parent / name, dpi=110)
    plt.close(fig)
    return name
