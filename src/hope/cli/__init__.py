"""The ``hope`` command line: train, eval, generate, demo, tasks, explore, export, convert, data (one module per
subcommand).

Options of ``hope train`` and ``hope tasks run`` are generated from their config dataclasses
(``hope.cli.flags``: one flag per field, its docstring as help, its default shown); ``--config FILE.yaml``
supplies train defaults that flags on the command line override. User errors print one line on stderr and
exit with code 2 (``--debug`` shows the traceback); ``HopeWarning`` prints one line on stderr and the run goes on.

Imports: the one place in the package that imports inside functions. Parsing needs only the torch-free config
modules (``hope.train.config``, ``hope.tasks.config``), so each subcommand's handler imports the torch-heavy
modules it runs (marked "after parsing") only once the arguments are parsed: ``hope --help`` and argument errors
answer without importing torch.
"""

from __future__ import annotations

import sys
import warnings

from hope.cli import convert, data, demo, eval, explore, export, tasks, train
from hope.cli.flags import Parser
from hope.errors import HopeError, HopeWarning


def build_parser() -> Parser:
    parser = Parser(prog="hope", description="Nested Learning and the Hope model: train, evaluate, generate.")
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    train.add_parser(sub)
    eval.add_parsers(sub)
    demo.add_parser(sub)
    tasks.add_parser(sub)
    explore.add_parser(sub)
    export.add_parser(sub)
    convert.add_parser(sub)
    data.add_parser(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning) -> None:
    """``HopeWarning`` as one line, ``hope: warning: ...``; other warnings as Python shows them."""
    if issubclass(category, HopeWarning):
        print(f"hope: warning: {message}", file=sys.stderr if file is None else file)
    else:
        _default(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
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
