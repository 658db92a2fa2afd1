"""``hope tasks``: list the benchmark tasks, run them, run the quick suite, and report.

    hope tasks list
    hope tasks run TASK --arch ARCH --size SIZE [--length L ...] [--seed S ...] --out DIR
    hope tasks quick [--archs transformer,hope] --out DIR
    hope tasks suite NAME --seeds 0 1 2 --out DIR [--archs hope transformer] [--jobs N] [--entries niah/single_1]
    hope tasks report DIR... --out docs/results.md
    hope tasks report SUITE_DIR        (writes SUITE_DIR/report.md)

``TASK`` is a task name, a family (``niah``, ``formal``, ...) or ``all``; several tasks run into
``DIR/<task>``, several seeds into ``DIR/seed-S``. The flags of ``run`` come from ``TaskRunConfig``. A suite
(``hope.tasks.suites``) resumes where it stopped when run again with the same ``--out``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from hope.cli.flags import HelpFormatter, add_config_flags, given_values
from hope.errors import HopeError
from hope.tasks.config import TaskRunConfig
from hope.tasks.registry import FAMILIES, TASKS, get_task, task_table


def _task_names(name: str) -> list[str]:
    if name == "all":
        return list(TASKS)
    if name in FAMILIES:
        return [n for n, spec in TASKS.items() if spec.family == name]
    return [get_task(name).name]


def cmd_list(args: argparse.Namespace) -> None:
    print(task_table())


def configs_from_args(args: argparse.Namespace) -> tuple[list[TaskRunConfig], list[str]]:
    """One config per seed (several seeds: into OUT/seed-S each), and the names of the tasks to run."""
    names = _task_names(args.task)
    seeds = list(dict.fromkeys(args.seed))
    values = given_values(TaskRunConfig, args)
    configs = [TaskRunConfig(**{**values, "task": names[0], "seed": seed,
                                "out": args.out if len(seeds) == 1 else f"{args.out}/seed-{seed}"})
               for seed in seeds]
    return configs, names


def cmd_run(args: argparse.Namespace) -> None:
    from hope.tasks.runner import run_many, run_task  # after parsing: see hope.cli

    configs, names = configs_from_args(args)
    for config in configs:
        for result in [run_task(config)] if len(names) == 1 else run_many(config, names):
            print(_summary(result) + (f" (seed {config.seed})" if len(configs) > 1 else ""))


def _summary(result: dict[str, Any]) -> str:
    if result["family"] == "continual":
        m = result["continual"]
        return (f"{result['task']} {result['arch']}: average {m['average']:.4f}, forgetting {m['forgetting']:.4f}, "
                f"backward transfer {m['backward_transfer']:.4f} ({result['metric']})")
    if result["family"] == "stream":
        return f"{result['task']} {result['arch']}: " + ", ".join(
            f"{label} loss {s['loss']:.4f}" for label, s in result["evals"].items())
    scores = ", ".join(f"{label} {100 * s['item_accuracy']:.1f}%{_tokens_right(s)}"
                       for label, s in result["evals"].items())
    return f"{result['task']} {result['arch']}: {scores}"


def _tokens_right(scores: dict[str, Any]) -> str:
    """The share of answer tokens right, where it differs from exact match (answers of several tokens)."""
    tokens = scores.get("token_accuracy")
    if tokens is None or tokens == scores["item_accuracy"]:
        return ""
    return f" ({100 * tokens:.1f}% of answer tokens)"


@dataclass
class QuickOptions:
    """Options of ``hope tasks quick``."""

    out: str = field(metadata={"required": True})
    """Output directory (one folder per arch and task, and results.md)."""
    archs: str = "transformer,hope"
    """Comma-separated architectures."""
    task: str = "all"
    """Task, family or 'all'."""
    seed: int = 0
    """Seed of every model and generated batch."""
    data_dir: str | None = None
    """Folder with clinc150/ and banking77/ (default: $HOPE_DATA_DIR, else the copy shipped with hope; docs/data.md)."""


@dataclass
class SuiteOptions:
    """Options of ``hope tasks suite``."""

    name: str = field(metadata={"positional": True})
    """Suite: quick (tiny, for the tests), paper-cpu (issue #17's experiments cut toward 2 CPU cores) or
    paper-small (the same at the issue's budget); hope.tasks.suites."""
    out: str = field(metadata={"required": True})
    """Suite directory (one folder per entry, arch and seed; suite.json); run again to resume."""
    seeds: tuple[int, ...] = (0,)
    """Seeds; every run is repeated for each."""
    archs: tuple[str, ...] = ()
    """Only these architectures (default: hope, hope-attention, titans, gated-deltanet, transformer)."""
    jobs: int = 1
    """Runs at a time (processes; each gets cores / jobs threads)."""
    entries: tuple[str, ...] = ()
    """Only run the entries whose names start with one of these (e.g. niah/single_1 in_context); default: all."""
    progress: bool = True
    """Show a progress bar over the runs."""


@dataclass
class ReportOptions:
    """Options of ``hope tasks report``."""

    dirs: tuple[str, ...] = field(metadata={"positional": True})
    """Run directories (searched for result.json), or one suite directory."""
    out: str | None = None
    """Markdown file to write (plots go beside it); default for a suite directory: DIR/report.md."""


def cmd_quick(args: argparse.Namespace) -> None:
    options = QuickOptions(**given_values(QuickOptions, args))
    from hope.eval.report import build_report  # after parsing: see hope.cli
    from hope.tasks.runner import run_quick_suite

    archs = [a.strip() for a in options.archs.split(",") if a.strip()]
    tasks = _task_names(options.task)
    results, skipped = run_quick_suite(archs, options.out, options.seed, options.data_dir, tasks)
    for entry in skipped:
        print(f"skipped {entry['task']} ({entry['arch']}): {entry['reason']}", file=sys.stderr)
    if not results:
        raise HopeError("no quick run finished")
    build_report([options.out], f"{options.out}/results.md",
                 command="hope tasks quick --out " + shlex.quote(options.out))
    print(f"{len(results)} runs, {len(skipped)} skipped; report in {options.out}/results.md")


def cmd_suite(args: argparse.Namespace) -> None:
    options = SuiteOptions(**given_values(SuiteOptions, args))
    from hope.eval.report import build_suite_report  # after parsing: see hope.cli
    from hope.tasks.suites import run_suite

    record = run_suite(options.name, options.out, list(options.seeds), list(options.archs) or None, options.jobs,
                       options.progress, list(options.entries) or None)
    for entry in record["skipped"]:
        print(f"skipped {entry['entry']} ({entry['arch']}, seed {entry['seed']}): {entry['reason']}", file=sys.stderr)
    build_suite_report(options.out, f"{options.out}/report.md",
                       command="hope tasks report " + shlex.quote(options.out))
    print(f"suite {options.name}: {record['finished']} of {record['runs']} runs finished ({record['resumed']} already "
          f"done), {len(record['skipped'])} skipped; {record['this_call_seconds']:.1f} s this call, "
          f"{record['seconds']:.1f} s in all; report in {options.out}/report.md")


def cmd_report(args: argparse.Namespace) -> None:
    options = ReportOptions(**given_values(ReportOptions, args))
    from hope.eval.report import build_report, build_suite_report  # after parsing: see hope.cli

    suite = len(options.dirs) == 1 and (Path(options.dirs[0]) / "suite.json").is_file()
    out = options.out or (f"{options.dirs[0]}/report.md" if suite else None)
    if out is None:
        raise HopeError("give --out FILE (only a suite directory has a default report file)")
    command = "hope tasks report " + " ".join(map(shlex.quote, [*options.dirs, "--out", out]))
    if suite:
        build_suite_report(options.dirs[0], out, command=command)
    else:
        build_report(list(options.dirs), out, command=command)
    print(f"wrote {out}")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tasks`` (with ``list``, ``run``, ``quick``, ``suite``, ``report``) to the ``hope`` subcommands."""
    tasks = subparsers.add_parser("tasks", help="Benchmark tasks: list, run, quick, suite, report.",
                                  description="Long-context, reasoning, formal-language and continual-learning benchmarks.")
    sub = tasks.add_subparsers(dest="tasks_command", required=True, parser_class=type(tasks))

    listing = sub.add_parser("list", help="List every task.")
    listing.set_defaults(func=cmd_list)

    run = sub.add_parser("run", help="Train a model on a task and evaluate it.", formatter_class=HelpFormatter)
    add_config_flags(run, TaskRunConfig, exclude=("seed",))
    run.add_argument("--seed", type=int, nargs="+", default=[0], metavar="S",
                     help="Seed of the model and of every generated batch; several seeds run into OUT/seed-S each "
                          "(the report pools them).")
    run.set_defaults(func=cmd_run)

    quick = sub.add_parser("quick", help="Every task for very small models, in minutes.",
                           formatter_class=HelpFormatter)
    add_config_flags(quick, QuickOptions)
    quick.set_defaults(func=cmd_quick)

    suite = sub.add_parser("suite", help="A named suite of runs (every arch and seed), resumable.",
                           formatter_class=HelpFormatter)
    add_config_flags(suite, SuiteOptions)
    suite.set_defaults(func=cmd_suite)

    report = sub.add_parser("report", help="Tables and plots of finished runs.", formatter_class=HelpFormatter)
    add_config_flags(report, ReportOptions)
    report.set_defaults(func=cmd_report)
