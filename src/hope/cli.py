"""The ``hope`` command line: train, eval, generate, demo, tasks.

Options of ``hope train`` are generated from ``TrainConfig`` (one flag per field, its docstring as
help); ``--config FILE.yaml`` supplies defaults that flags on the command line override. User errors
print one line on stderr and exit with code 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any

import yaml

from hope.errors import HopeError
from hope.train import TrainConfig


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line: ``hope train: error: ... (see --help)``."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal after each field)."""
    import ast
    import inspect

    docs, tree = {}, ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[node.target.id] = str(after.value.value)
    return docs


def key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip().replace("-", "_"), yaml.safe_load(value)


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    docs = _field_docs(TrainConfig)
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag, help_text = "--" + f.name.replace("_", "-"), docs.get(f.name, "")
        if f.name == "model":
            parser.add_argument(flag, action="append", type=key_value, metavar="KEY=VALUE", dest="model",
                                help=help_text + " Repeatable.")
        elif hints[f.name] == (tuple[int, ...] | None):
            parser.add_argument(flag, type=int, nargs="+", dest=f.name, metavar="N", help=help_text)
        elif hints[f.name] is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, dest=f.name, help=help_text)
        else:
            kind = hints[f.name]
            kind = str if kind == (str | None) else kind
            parser.add_argument(flag, type=kind, dest=f.name, metavar=f.name.upper(), help=help_text)
    parser.add_argument("--config", type=Path, metavar="FILE.yaml", help="YAML file of train options (keys as above, with underscores).")


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- ``--config`` YAML <- command-line flags."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = {}
    if args.config is not None:
        if not args.config.is_file():
            raise HopeError(f"config file {args.config} does not exist")
        try:
            loaded = yaml.safe_load(args.config.read_text()) or {}
        except yaml.YAMLError as err:
            raise HopeError(f"config file {args.config} is not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise HopeError(f"config file {args.config} must hold a mapping of option: value")
        unknown = sorted(set(loaded) - names)
        if unknown:
            raise HopeError(f"config file {args.config}: unknown option(s) {', '.join(unknown)}")
        values.update(loaded)
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = dict(value) if name == "model" else value
    if "model" in values and not isinstance(values["model"], dict):
        raise HopeError("the model option must be a mapping of config field: value")
    try:
        return TrainConfig(**values)
    except TypeError as err:
        raise HopeError(f"bad train option: {err}") from None


def cmd_train(args: argparse.Namespace) -> None:
    from hope.train import train

    result = train(train_config_from_args(args))
    print(json.dumps(dataclasses.asdict(result), indent=2))


def cmd_eval(args: argparse.Namespace) -> None:
    from hope.eval.commands import run_eval

    run_eval(args)


def cmd_generate(args: argparse.Namespace) -> None:
    from hope.eval.commands import run_generate

    run_generate(args)


def cmd_demo(args: argparse.Namespace) -> None:
    from hope.demo import run_demo

    run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hope", description="Nested Learning and the Hope model: train, evaluate, generate.")
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="Train a language model.", description="Train a language model.")
    _add_train_options(train)
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="Loss, perplexity and bits per byte of a checkpoint.")
    ev.add_argument("--checkpoint", required=True, type=Path, metavar="DIR", help="Checkpoint directory.")
    ev.add_argument("--data", help="Text file or folder of .txt files (default: the embedded corpus).")
    ev.add_argument("--split", default="test", choices=["train", "validation", "test"], help="Split to evaluate.")
    ev.add_argument("--seq-len", type=int, help="Window length (default: the training seq_len).")
    ev.add_argument("--max-windows", type=int, help="Evaluate at most this many windows (default: the whole split).")
    ev.add_argument("--out", type=Path, help="JSON file to write (default: DIR/../eval_SPLIT.json).")
    ev.add_argument("--device", default="auto", help="cpu, cuda or auto.")
    ev.set_defaults(func=cmd_eval)

    gen = sub.add_parser("generate", help="Sample text from a checkpoint.")
    gen.add_argument("--checkpoint", required=True, type=Path, metavar="DIR", help="Checkpoint directory.")
    gen.add_argument("--prompt", default="", help="Text to start from.")
    gen.add_argument("--prompt-file", type=Path, help="Read the prompt from this text file instead.")
    gen.add_argument("--max-new-tokens", type=int, default=100, help="Tokens to generate.")
    gen.add_argument("--temperature", type=float, default=0.8, help="Sampling temperature (0: greedy).")
    gen.add_argument("--top-k", type=int, default=None, help="Sample among the k most likely tokens.")
    gen.add_argument("--top-p", type=float, default=None, help="Nucleus sampling: smallest set with this mass.")
    gen.add_argument("--seed", type=int, default=0, help="Sampling seed.")
    gen.add_argument("--state", type=Path, metavar="FILE",
                     help="Continue from the in-context state in FILE if it exists, and save the state there after.")
    gen.add_argument("--device", default="auto", help="cpu, cuda or auto.")
    gen.set_defaults(func=cmd_generate)

    demo = sub.add_parser("demo", help="Train Hope and Transformer++ on the embedded corpus and compare them.")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="Output directory.")
    demo.add_argument("--archs", default="transformer,hope", help="Comma-separated architectures.")
    demo.add_argument("--size", default="tiny", help="Size preset.")
    demo.add_argument("--max-steps", type=int, default=120, help="Training steps per architecture.")
    demo.add_argument("--seq-len", type=int, default=256, help="Training sequence length.")
    demo.add_argument("--batch-size", type=int, default=8, help="Sequences per step.")
    demo.add_argument("--eval-windows", type=int, default=32,
                      help="Windows of seq-len tokens for each final validation / test evaluation.")
    demo.set_defaults(func=cmd_demo)

    from hope.eval.tasks_cli import add_tasks_parser

    add_tasks_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except HopeError as err:
        if args.debug:
            raise
        print(f"hope: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hope: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
