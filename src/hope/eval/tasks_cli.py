"""``hope tasks``: list the benchmark tasks, run them, run the quick suite, and report.

    hope tasks list
    hope tasks run TASK --arch ARCH --size SIZE [--length L ...] [--seed S ...] --out DIR
    hope tasks quick [--archs transformer,hope] --out DIR
    hope tasks report DIR... --out docs/results.md

``TASK`` is a task name, a family (``niah``, ``formal``, ...) or ``all``; several tasks run into
``DIR/<task>``, several seeds into ``DIR/seed-S``. ``hope.cli`` adds this subcommand with ``add_tasks_parser(subparsers)``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from hope.cli import key_value
from hope.errors import HopeError


def _task_names(name: str) -> list[str]:
    from hope.tasks.registry import FAMILIES, TASKS, get_task

    if name == "all":
        return list(TASKS)
    if name in FAMILIES:
        return [n for n, spec in TASKS.items() if spec.family == name]
    return [get_task(name).name]


def cmd_list(args: argparse.Namespace) -> None:
    from hope.tasks.registry import task_table

    print(task_table())


def cmd_run(args: argparse.Namespace) -> None:
    from hope.eval.tasks_runner import TaskRunConfig, run_many, run_task

    names = _task_names(args.task)
    seeds = list(dict.fromkeys(args.seed))
    for seed in seeds:
        config = TaskRunConfig(
            task=names[0], arch=args.arch, size=args.size, out=args.out if len(seeds) == 1 else f"{args.out}/seed-{seed}",
            lengths=tuple(args.length or ()), seed=seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
            warmup_steps=args.warmup_steps, eval_examples=args.eval_examples, eval_batch_size=args.eval_batch_size,
            seq_len=args.seq_len, tokenizer=args.tokenizer, checkpoint=args.checkpoint, model=dict(args.model or []),
            options=dict(args.option or []), data_dir=args.data_dir, device=args.device, compile=args.compile,
            cms_outer_periods=args.cms_outer_periods,
        )
        for result in [run_task(config)] if len(names) == 1 else run_many(config, names):
            print(_summary(result) + (f" (seed {seed})" if len(seeds) > 1 else ""))


def _summary(result: dict[str, Any]) -> str:
    if result["family"] == "continual":
        m = result["continual"]
        return (f"{result['task']} {result['arch']}: average {m['average']:.4f}, forgetting {m['forgetting']:.4f}, "
                f"backward transfer {m['backward_transfer']:.4f} ({result['metric']})")
    scores = ", ".join(f"{label} {100 * s['item_accuracy']:.1f}%" for label, s in result["evals"].items())
    return f"{result['task']} {result['arch']}: {scores}"


def cmd_quick(args: argparse.Namespace) -> None:
    from hope.eval.report import build_report
    from hope.eval.tasks_runner import run_quick_suite

    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    tasks = _task_names(args.task)
    results, skipped = run_quick_suite(archs, args.out, args.seed, args.data_dir, tasks)
    for entry in skipped:
        print(f"skipped {entry['task']} ({entry['arch']}): {entry['reason']}", file=sys.stderr)
    if not results:
        raise HopeError("no quick run finished")
    build_report([args.out], f"{args.out}/results.md", command="hope tasks quick --out " + shlex.quote(args.out))
    print(f"{len(results)} runs, {len(skipped)} skipped; report in {args.out}/results.md")


def cmd_report(args: argparse.Namespace) -> None:
    from hope.eval.report import build_report

    build_report(args.dirs, args.out, command="hope tasks report " + " ".join(map(shlex.quote, [*args.dirs, "--out", args.out])))
    print(f"wrote {args.out}")


def add_tasks_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``tasks`` (with ``list``, ``run``, ``quick``, ``report``) to the ``hope`` subcommands."""
    tasks = subparsers.add_parser("tasks", help="Benchmark tasks: list, run, quick suite, report.",
                                  description="Long-context, reasoning, formal-language and continual-learning benchmarks.")
    sub = tasks.add_subparsers(dest="tasks_command", required=True, parser_class=type(tasks))

    listing = sub.add_parser("list", help="List every task.")
    listing.set_defaults(func=cmd_list)

    run = sub.add_parser("run", help="Train a model on a task and evaluate it.")
    run.add_argument("task", help="Task name, family (recall, mad, niah, babilong, formal, continual) or 'all'.")
    run.add_argument("--arch", default="transformer", help="transformer, hope, hope-attention, titans, gated-deltanet.")
    run.add_argument("--size", default="tiny", help="Size preset (tiny, small, ...).")
    run.add_argument("--length", type=int, nargs="+", metavar="L",
                     help="Evaluation lengths (formal languages: upper ends of length bins).")
    run.add_argument("--seed", type=int, nargs="+", default=[0], metavar="S",
                     help="Seed of the model and of every generated batch; several seeds run into OUT/seed-S each "
                          "(the report pools them).")
    run.add_argument("--out", required=True, help="Run directory (several tasks: one subfolder each).")
    run.add_argument("--steps", type=int, default=1000, help="Optimizer steps (continual: per stage).")
    run.add_argument("--batch-size", type=int, default=32, help="Rows per step.")
    run.add_argument("--lr", type=float, default=1e-3, help="Peak learning rate (AdamW, warmup then cosine).")
    run.add_argument("--warmup-steps", type=int, default=50, help="Linear warmup steps.")
    run.add_argument("--eval-examples", type=int, default=256, help="Rows per evaluation setting.")
    run.add_argument("--eval-batch-size", type=int, default=16, help="Rows per evaluation batch.")
    run.add_argument("--seq-len", type=int, default=256, help="Window length of the corpus-era task.")
    run.add_argument("--tokenizer", default="bytes", help="Text tasks: 'bytes' or a tokenizer.json file.")
    run.add_argument("--checkpoint", help="Fine-tune this checkpoint directory instead of training from scratch.")
    run.add_argument("--model", action="append", type=key_value, metavar="KEY=VALUE",
                     help="Model config override, e.g. cms_levels=2. Repeatable.")
    run.add_argument("--option", action="append", type=key_value, metavar="KEY=VALUE",
                     help="Task option, e.g. num_kv_pairs=32. Repeatable.")
    run.add_argument("--data-dir", help="Folder with clinc150/ and banking77/ (default: ../shared/data).")
    run.add_argument("--device", default="auto", help="cpu, cuda or auto.")
    run.add_argument("--compile", action="store_true",
                     help="torch.compile Hope's per-chunk mixer functions (speed-ups: docs/training.md).")
    run.add_argument("--cms-outer-periods", type=int, nargs="+", metavar="N",
                     help="One period per CMS level in optimizer steps: level l steps only after every N-th step, "
                          "with the mean gradient (paper_spec A6 (ii)).")
    run.set_defaults(func=cmd_run)

    quick = sub.add_parser("quick", help="Every task for very small models, in minutes.")
    quick.add_argument("--archs", default="transformer,hope", help="Comma-separated architectures.")
    quick.add_argument("--task", default="all", help="Task, family or 'all'.")
    quick.add_argument("--seed", type=int, default=0, help="Seed.")
    quick.add_argument("--data-dir", help="Folder with clinc150/ and banking77/ (default: ../shared/data).")
    quick.add_argument("--out", required=True, help="Output directory.")
    quick.set_defaults(func=cmd_quick)

    report = sub.add_parser("report", help="Tables and plots of finished runs.")
    report.add_argument("dirs", nargs="+", help="Run directories (searched for result.json).")
    report.add_argument("--out", required=True, help="Markdown file to write (plots go beside it).")
    report.set_defaults(func=cmd_report)
    return tasks
