"""``hope export``: a checkpoint as a Hugging Face folder (config, safetensors weights, tokenizer; README,
"Hugging Face"). Needs the ``hf`` extra; parsing imports neither torch nor transformers."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from hope.cli.flags import HelpFormatter
from hope.errors import HopeError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser("export", help="Write a checkpoint as a Hugging Face folder.",
                                   formatter_class=HelpFormatter)
    export.add_argument("--checkpoint", type=Path, required=True, metavar="DIR",
                        help="Checkpoint directory, or the run directory that holds it.")
    export.add_argument("--out", type=Path, required=True, metavar="HF_DIR",
                        help="New folder to write (AutoModelForCausalLM.from_pretrained reads it after `import hope.hf`).")
    export.set_defaults(func=run_export)


def require_hf(command: str) -> None:
    """One-line error when the ``hf`` extra is missing."""
    missing = [name for name in ("transformers", "lm_eval", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise HopeError(f"{command} needs the hf extra ({', '.join(missing)} missing): pip install -e '.[hf]'")


def run_export(args: argparse.Namespace) -> None:
    require_hf("hope export")
    from hope.hf.export import export_checkpoint  # after parsing: see hope.cli

    out = export_checkpoint(args.checkpoint, args.out)
    print(f"exported {args.checkpoint} to {out}")
