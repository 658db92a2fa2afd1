"""Progress bars that stay readable in a log: on a terminal (or in a notebook) a live bar; when stderr is a file or a
pipe (``nohup``, a scheduler's log) one line per update, at most one a minute, instead of carriage returns that
pile thousands of bar states into one line."""

from __future__ import annotations

import sys
from typing import IO, Any

from tqdm.auto import tqdm

LOG_INTERVAL_S = 60.0
"""Seconds between two progress lines written to a file or a pipe."""


class _Lines:
    """A stream that ends each bar state with a newline: tqdm redraws a bar by writing ``\\r`` and the new state."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(text.replace("\r", "\n").replace("\n\n", "\n"))

    def flush(self) -> None:
        self.stream.flush()


def _live(stream: IO[str]) -> bool:
    """Whether ``stream`` shows a live bar: a terminal, or a notebook's widget (which writes to no stream)."""
    isatty = getattr(stream, "isatty", None)
    return tqdm.__module__.startswith("tqdm.notebook") or bool(isatty and isatty())


def progress_bar(*, stream: IO[str] | None = None, **options: Any) -> tqdm:
    """A ``tqdm`` bar on ``stream`` (stderr by default) that writes a line a minute where the stream is not live."""
    stream = sys.stderr if stream is None else stream
    if _live(stream):
        return tqdm(**{**options, "file": stream})
    return tqdm(**{**options, "file": _Lines(stream), "mininterval": LOG_INTERVAL_S, "dynamic_ncols": False})
