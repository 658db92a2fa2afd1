"""Where does a model go wrong on strings longer than any it was trained on? (NL Sec. 9.5, Table 5;
docs/results.md, section 1.)

A formal-language run (``hope tasks run formal_* ... --answer-rows N``, N at least ``--eval-examples``) writes
every scored string's labels, one per prefix, expected and predicted, to ``answers.jsonl``. This reads them back
(checked against the run's own item accuracy) and reports per model, pooled over seeds as mean ± sample sd:

* the **accuracy by prefix length** at every setting (``bin0`` is the training bin, ``bin1`` twice as long): the
  share of the strings at least that long whose label for that prefix is right;
* where each **failed string first goes wrong**: at a prefix no longer than the longest training string (the model
  did not learn what it was shown), or past it (it learned the strings it was shown, not the language).

Writes ``NAME.json`` and ``NAME.md`` (and the accuracy by prefix length as ``NAME.png``) under ``--docs``.

    python benchmarks/length_errors.py --runs runs/formal/abab_star/hope/seed-0 ... --name length_errors_abab_star
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from hope.errors import HopeError
from hope.eval.report import common_parts, legend_below, model_label, pooled, pyplot, save_figure
from hope.files import write_text_atomic
from hope.tasks.registry import get_task

DOCS = Path(__file__).resolve().parent.parent / "docs" / "results" / "paper_cpu"


def longest_trained(result: dict) -> int:
    """Length of the longest string the run's training bin holds."""
    task = get_task(result["config"]["task"]).build(None, **result["train_settings"])
    if not hasattr(task, "valid_lengths"):
        raise HopeError(f"{result['config']['task']} is not a formal language task")
    return int(task.valid_lengths().max())


def read_answers(run: Path) -> tuple[dict, dict[str, list[tuple[np.ndarray, np.ndarray]]]]:
    """The run's result, and per setting the (expected, predicted) labels of every scored string."""
    result = json.loads((run / "result.json").read_text())
    strings: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {setting: [] for setting in result["evals"]}
    path = run / "answers.jsonl"
    if not path.exists():
        raise HopeError(f"{run} has no answers.jsonl; run it with --answer-rows at least --eval-examples")
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if len(row["answers"]) != 1:
            raise HopeError(f"{run}: a row holds {len(row['answers'])} answers; expected one labelled string per row")
        answer = row["answers"][0]
        strings[row["setting"]].append((np.array(answer["expected"]), np.array(answer["predicted"])))
    for setting, scored in strings.items():
        recorded = result["evals"][setting]
        if len(scored) != recorded["examples"]:
            raise HopeError(f"{run}: answers.jsonl holds {len(scored)} of the {recorded['examples']} strings scored at "
                            f"{setting}; run it with --answer-rows at least --eval-examples")
        accuracy = statistics.fmean(bool((e == p).all()) for e, p in scored)
        if not np.isclose(accuracy, recorded["item_accuracy"]):
            raise HopeError(f"{run}: its answers give {accuracy:.4f} at {setting}, the run recorded "
                            f"{recorded['item_accuracy']:.4f}")
    return result, strings


def first_errors(strings: list[tuple[np.ndarray, np.ndarray]]) -> list[int | None]:
    """The shortest wrong prefix of every string (None: every prefix right)."""
    found = []
    for expected, predicted in strings:
        wrong = np.flatnonzero(expected != predicted)
        found.append(int(wrong[0]) if wrong.size else None)
    return found


def by_prefix(strings: list[tuple[np.ndarray, np.ndarray]]) -> list[float | None]:
    """Accuracy at every prefix length ``0 .. longest`` over the strings that have it (None where none does)."""
    longest = max(len(expected) for expected, _ in strings)
    right, count = np.zeros(longest), np.zeros(longest)
    for expected, predicted in strings:
        right[: len(expected)] += expected == predicted
        count[: len(expected)] += 1
    return [float(r / c) if c else None for r, c in zip(right, count)]


def summary(strings: list[tuple[np.ndarray, np.ndarray]], longest: int) -> dict:
    """Item accuracy, and where the failed strings first go wrong relative to the ``longest`` training string."""
    errors = [e for e in first_errors(strings) if e is not None]
    return {"strings": len(strings), "item_accuracy": 1 - len(errors) / len(strings), "failed": len(errors),
            "first_error_within": sum(e <= longest for e in errors),
            "first_error_past": sum(e > longest for e in errors),
            "first_error_median": float(np.median(errors)) if errors else None,
            "by_prefix": by_prefix(strings)}


def _past_share(runs: list[dict], setting: str) -> str:
    failed = sum(r[setting]["failed"] for r in runs)
    past = sum(r[setting]["first_error_past"] for r in runs)
    return f"{past} / {failed}" if failed else "-"


def plot(by_model: dict[str, list[dict]], setting: str, longest: int, path: Path) -> bool:
    """Accuracy by prefix length at ``setting`` per model (mean over seeds); False without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, runs in by_model.items():
        curves = [r[setting]["by_prefix"] for r in runs]
        width = min(len(c) for c in curves)
        values = np.array([[np.nan if v is None else v for v in c[:width]] for c in curves])
        ax.plot(np.arange(width), np.nanmean(values, axis=0) * 100, label=label, linewidth=1.2)
    ax.axvline(longest + 0.5, color="grey", linestyle="--", linewidth=0.8, label="longest training string")
    ax.set(xlabel="prefix length", ylabel="label accuracy (%)", ylim=(-2, 102),
           title=f"Accuracy by prefix length ({setting}, mean over seeds)")
    legend_below(fig, ax)
    save_figure(fig, path, dpi=120)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="formal-language run folders (result.json, "
                        "answers.jsonl)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--docs", type=Path, default=DOCS)
    args = parser.parse_args()
    measured = []
    for run in map(Path, args.runs):
        result, strings = read_answers(run)
        longest = longest_trained(result)
        measured.append((result, longest, {setting: summary(scored, longest) for setting, scored in strings.items()}))
    longest = measured[0][1]
    if any(other != longest for _, other, _ in measured):
        raise HopeError("the runs were trained on different bins; compare runs of one training bin")
    settings = list(measured[0][2])
    common = common_parts([r for r, _, _ in measured])
    by_model: dict[str, list[dict]] = {}
    for result, _, scores in measured:
        by_model.setdefault(model_label(result, common), []).append({"seed": int(result.get("seed", 0)), **scores})
    task = measured[0][0]["config"]["task"]
    lines = [f"# Where {task} goes wrong ({len(measured)} runs)", "",
             "`python benchmarks/length_errors.py --runs " + " ".join(args.runs) + f" --name {args.name}`", "",
             f"Every run: {', '.join(sorted(common)) or '-'}. The longest training string has {longest} symbols. "
             "Strings recognised at every prefix (%, mean ± sample sd over seeds), and for the failed strings the "
             f"number whose first wrong prefix is longer than {longest} (all seeds together).", "",
             "| model | seeds | " + " | ".join(f"{s} %" for s in settings) + " | "
             + " | ".join(f"{s}: first error past {longest}" for s in settings) + " | median first error |",
             "|---" * (2 + 2 * len(settings) + 1) + "|"]
    last = settings[-1]
    for label, runs in by_model.items():
        medians = [r[last]["first_error_median"] for r in runs if r[last]["first_error_median"] is not None]
        lines.append(f"| {label} | {', '.join(str(r['seed']) for r in runs)} | "
                     + " | ".join(pooled([r[s]["item_accuracy"] for r in runs]) for s in settings) + " | "
                     + " | ".join(_past_share(runs, s) for s in settings) + " | "
                     + (f"{statistics.median(medians):.0f} ({last})" if medians else "-") + " |")
    args.docs.mkdir(parents=True, exist_ok=True)
    if plot(by_model, last, longest, args.docs / f"{args.name}.png"):
        lines += ["", f"![accuracy by prefix length]({args.name}.png)"]
    text = "\n".join(lines) + "\n"
    report = {"task": task, "longest_training_string": longest, "models": by_model}
    for suffix, content in (("json", json.dumps(report, indent=1) + "\n"), ("md", text)):
        write_text_atomic(args.docs / f"{args.name}.{suffix}", content)
    print(text)


if __name__ == "__main__":
    main()
