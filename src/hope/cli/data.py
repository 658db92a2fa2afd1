"""``hope data prepare``: tokenize a source once into token shards that ``hope train --data DIR`` reads from disk.

    hope data prepare --source SRC --tokenizer TOK --out DIR

The flags come from ``PrepareConfig`` (``hope.data.shards``; docs/data.md, token shards).
"""

from __future__ import annotations

import argparse
import json

from hope.cli.flags import HelpFormatter, add_config_flags, given_values
from hope.data.shards import PrepareConfig, prepare


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="Prepare training data.", description="Prepare training data.")
    commands = parser.add_subparsers(dest="data_command", required=True, parser_class=type(parser))
    prepare = commands.add_parser(
        "prepare", help="Tokenize a corpus once into token shards (hope train --data DIR).",
        description="Tokenize a text file, folder, JSONL / Parquet file or Hugging Face dataset once into token "
                    "shards split into train / validation / test (docs/data.md).", formatter_class=HelpFormatter)
    add_config_flags(prepare, PrepareConfig)
    prepare.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> None:
    index = prepare(PrepareConfig(**given_values(PrepareConfig, args)))
    summary = {name: {key: split[key] for key in ("documents", "tokens", "bytes")}
               for name, split in index["splits"].items()}
    print(json.dumps({"out": args.out, "dtype": index["dtype"], "vocab_size": index["vocab_size"],
                      "splits": summary}, indent=2))
