"""``hope train``: flags from ``TrainConfig``, defaults from ``--config FILE.yaml`` under the flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import yaml

from hope.cli.flags import HelpFormatter, add_config_flags, given_values
from hope.errors import HopeError
from hope.train.config import TrainConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="Train a language model.", description="Train a language model.",
                                   formatter_class=HelpFormatter)
    add_config_flags(parser, TrainConfig)
    parser.add_argument("--config", type=Path, metavar="FILE.yaml",
                        help="YAML file of train options (keys as above, with underscores).")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
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
    values.update(given_values(TrainConfig, args))
    if "model" in values and not isinstance(values["model"], dict):
        raise HopeError("the model option must be a mapping of config field: value")
    try:
        return TrainConfig(**values)
    except TypeError as err:
        raise HopeError(f"bad train option: {err}") from None


def run(args: argparse.Namespace) -> None:
    from hope.train.lm import train  # after parsing: see hope.cli

    result = train(config_from_args(args))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(dataclasses.asdict(result), indent=2))
