"""``hope convert --from-hf LLAMA_DIR --out DIR``: a Llama as Hope-Attention whose CMS levels start from the
Llama's MLPs (NL Sec. 7.3; the mapping: ``hope.hf.llama``). Needs the ``hf`` extra; parsing imports neither torch
nor transformers."""

from __future__ import annotations

import argparse
from pathlib import Path

from hope.cli.export import require_hf
from hope.cli.flags import HelpFormatter
from hope.errors import HopeError


def period(text: str) -> int | None:
    """A CMS period: a positive integer, or ``none`` for a static level."""
    if text.lower() == "none":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a CMS period is a positive integer or 'none', got {text!r}")
    return int(text)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser("convert", help="Turn a Llama (Hugging Face folder) into Hope-Attention.",
                                    formatter_class=HelpFormatter)
    convert.add_argument("--from-hf", type=Path, required=True, metavar="LLAMA_DIR",
                         help="Folder of a LlamaForCausalLM (config.json, safetensors weights, tokenizer if any).")
    convert.add_argument("--out", type=Path, required=True, metavar="DIR",
                         help="New folder to write: a Hugging Face folder that AutoModelForCausalLM reads after "
                              "`import hope.hf` (or with trust_remote_code=True).")
    convert.add_argument("--cms-periods", type=period, nargs="+", metavar="PERIOD",
                         help="Update period in tokens of each CMS level, 'none' for a static level; each Llama MLP "
                              "is split over the levels by hidden units (default: hope's CMSConfig periods).")
    convert.add_argument("--cms-lr", type=float, help="Inner learning rate of every level (default: hope's cms_lr).")
    convert.add_argument("--no-test-time-learning", dest="test_time_learning", action="store_false",
                         help="Freeze the levels: the model then computes the Llama's logits exactly.")
    convert.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> None:
    if args.cms_lr is not None and not args.cms_lr > 0:
        raise HopeError(f"--cms-lr must be > 0, got {args.cms_lr}")
    require_hf("hope convert")
    from hope.hf.llama import convert_llama  # after parsing: see hope.cli

    out = convert_llama(args.from_hf, args.out, args.cms_periods, args.test_time_learning, args.cms_lr)
    print(f"converted {args.from_hf} to Hope-Attention in {out}")
