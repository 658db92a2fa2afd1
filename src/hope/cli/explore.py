"""``hope explore``: the interactive reading of the paper and a checkpoint inspector, served locally (docs/explore.md).

Needs the ``explore`` extra (``pip install -e '.[explore]'``: Gradio). Parsing imports neither torch nor Gradio.
"""

from __future__ import annotations

import argparse
import importlib.util

from hope.cli.flags import HelpFormatter
from hope.errors import HopeError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    explore = subparsers.add_parser("explore", help="Serve the paper's figures, computed live, and a checkpoint inspector.",
                                    formatter_class=HelpFormatter)
    explore.add_argument("--checkpoint", default=None, help="Checkpoint directory to open in the inspector.")
    explore.add_argument("--port", type=int, default=7860, help="Port on 127.0.0.1.")
    explore.add_argument("--share-nothing", action="store_true",
                         help="Also tell every library to stay offline (HF_HUB_OFFLINE, DO_NOT_TRACK). The page never "
                              "makes a share link, sends analytics or loads from a CDN in any case.")
    explore.set_defaults(func=run_explore)


def run_explore(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise HopeError(f"--port must be in 1..65535, got {args.port}")
    if importlib.util.find_spec("gradio") is None:
        raise HopeError("hope explore needs Gradio: pip install -e '.[explore]'")
    from hope.explore.app import serve  # after parsing: see hope.cli

    print(f"hope explore: http://127.0.0.1:{args.port}  (Ctrl-C stops)")
    serve(args.checkpoint, args.port, args.share_nothing)
