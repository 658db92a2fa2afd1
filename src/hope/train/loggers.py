"""Where the metrics of ``hope train`` and ``hope tasks run`` go: ``--logger jsonl tensorboard wandb`` (docs/training.md,
loggers).

Every logger has one interface, ``log(step, metrics)`` (``metrics``: a flat ``{name: number}``) and ``close()``, and
receives the same records under the same names: ``loss``, ``lr``, ``grad_norm``, ``tokens_per_s`` (since the start
of this process) and ``peak_memory_mb`` (``peak_memory_mb``) after training steps; ``val_*`` (``hope train``) or
``eval_*`` (``hope tasks run``) after evaluations.

- ``jsonl`` (the default): ``OUT/metrics.jsonl``, one JSON object ``{"step": ..., **metrics}`` per record.
- ``tensorboard``: event files in ``OUT/tensorboard`` (``torch.utils.tensorboard.SummaryWriter``; package
  ``tensorboard``), one scalar per metric.
- ``wandb``: a Weights & Biases run (package ``wandb``; project ``$WANDB_PROJECT`` or ``hope``, named after OUT;
  files in ``$WANDB_DIR`` or OUT; ``WANDB_MODE=offline`` keeps it on disk), its config the run's options.

On resume (``hope train --resume``) the jsonl lines and TensorBoard events from after the checkpoint's step are
dropped, so the curves continue as if the run had never stopped; W&B starts a new run from the checkpoint's step.
``tensorboard`` and ``wandb`` are the optional extra ``loggers`` (``pip install 'hope[loggers]'``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from hope.errors import HopeError

LOGGERS = {"jsonl": None, "tensorboard": "tensorboard", "wandb": "wandb"}
"""Logger name -> the package it needs (``None``: none beyond hope's own)."""


def check_loggers(names: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    """``names`` as a tuple without repeats (one name may come as a string, e.g. from YAML); a ``HopeError`` for an
    unknown name or an empty list. Does not import the loggers' packages (see ``require_packages``)."""
    names = (names,) if isinstance(names, str) else tuple(dict.fromkeys(names))
    unknown = [name for name in names if name not in LOGGERS]
    if unknown or not names:
        problem = f"unknown logger {unknown[0]!r}" if unknown else "no logger given"
        raise HopeError(f"{problem}; expected some of {', '.join(LOGGERS)}")
    return names


def require_packages(names: tuple[str, ...]) -> None:
    """A one-line ``HopeError`` naming the extra to install when a logger's package is missing."""
    for name in names:
        package = LOGGERS[name]
        if package is not None and importlib.util.find_spec(package) is None:
            raise HopeError(f"--logger {name} needs the {package} package: pip install 'hope[loggers]'")


def peak_memory_mb(device: Any) -> float:
    """Peak memory of this process in MiB: CUDA's maximum allocated on a CUDA ``device``, else the peak resident
    set size (``getrusage``)."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


class Logger(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class JsonlLogger:
    """``OUT/metrics.jsonl``: on resume, appended to after dropping the lines from after the checkpoint (``kept``
    holds the lines that stay); on a fresh run, emptied first (the lines of an earlier attempt that never wrote a
    checkpoint are not this run's)."""

    def __init__(self, out: Path, resume_step: int | None) -> None:
        path = out / "metrics.jsonl"
        self.kept: list[dict[str, Any]] = []
        if resume_step is not None and path.exists():
            self.kept = [record for record in map(json.loads, filter(None, path.read_text().splitlines()))
                         if record["step"] <= resume_step]
        elif path.exists():
            tqdm.write(f"{path}: replacing the metrics of an earlier attempt that wrote no checkpoint")
        path.write_text("".join(json.dumps(record) + "\n" for record in self.kept))
        self._file = open(path, "a", buffering=1)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")

    def close(self) -> None:
        self._file.close()


class TensorBoardLogger:
    """``OUT/tensorboard``: one scalar per metric; on resume, the events after the checkpoint's step are purged."""

    def __init__(self, out: Path, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(out / "tensorboard"),
                                     purge_step=None if resume_step is None else resume_step + 1)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbLogger:
    """A W&B run named after OUT, with the run's options as its config (console capture off: metrics only)."""

    def __init__(self, out: Path, resume_step: int | None, config: dict[str, Any]) -> None:
        import wandb

        self._run = wandb.init(project=os.environ.get("WANDB_PROJECT", "hope"), name=out.name,
                               dir=os.environ.get("WANDB_DIR") or str(out),
                               config={**config, "resumed_from_step": resume_step},
                               settings=wandb.Settings(console="off"))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self._run.log(metrics, step=step)

    def close(self) -> None:
        self._run.finish()


class Loggers:
    """Every logger of a run, behind the one interface; ``kept`` holds the jsonl records that a resume kept."""

    def __init__(self, names: tuple[str, ...], out: Path, config: dict[str, Any], resume_step: int | None = None):
        """Open ``names`` (checked by ``check_loggers``; their packages by ``require_packages``) in ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        self.loggers: list[Logger] = []
        self.kept: list[dict[str, Any]] = []
        try:
            for name in names:
                if name == "jsonl":
                    jsonl = JsonlLogger(out, resume_step)
                    self.kept = jsonl.kept
                    self.loggers.append(jsonl)
                elif name == "tensorboard":
                    self.loggers.append(TensorBoardLogger(out, resume_step))
                else:
                    self.loggers.append(WandbLogger(out, resume_step, config))
        except BaseException:
            self.close()
            raise

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log(step, metrics)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
        self.loggers = []
