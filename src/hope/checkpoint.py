"""Checkpoints: a directory written atomically (temp dir, then rename), verified when read.

Layout of ``DIR``::

    model.safetensors     weights
    config.json           model config (``ModelConfig.to_dict``)
    tokenizer.json        the tokenizer the model was trained with (absent for a model of token ids, such as
                          MQAR's: ``save_checkpoint(..., tokenizer=None)``)
    trainer.safetensors   optimizer / scheduler tensors (absent in weights-only checkpoints)
    trainer.json          the rest of the trainer state (step, schedules, metrics)
    manifest.json         sha256 of every other file, written last

A sharded checkpoint (``hope train --fsdp``: ``save_sharded_checkpoint``) has ``sharded/`` (model and optimizer
state, each process's shards, written by ``torch.distributed.checkpoint``) in place of ``model.safetensors`` and
the optimizer part of the trainer state; it loads on any number of processes (``load_sharded_checkpoint``) or
whole on one (``load_checkpoint``).

No file is read with pickle but ``sharded/.metadata``, torch.distributed.checkpoint's index of the shards;
non-tensor state is JSON, tensors are safetensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hope.data.tokenizer import Tokenizer, tokenizer_from_json
from hope.errors import HopeError
from hope.models import LanguageModel, ModelConfig, config_from_dict

MANIFEST = "manifest.json"
SHARDED = "sharded"
"""The folder of a sharded checkpoint's model and optimizer state (torch.distributed.checkpoint)."""


def flatten(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested structure of dicts/lists/scalars/tensors into a JSON skeleton and named tensors."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[path] = value.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(value, dict):
            return {"__dict__": [[walk(k, f"{path}.k{i}"), walk(v, f"{path}.{i}")] for i, (k, v) in enumerate(value.items())]}
        if isinstance(value, (list, tuple)):
            return {"__list__": [walk(v, f"{path}.{i}") for i, v in enumerate(value)], "tuple": isinstance(value, tuple)}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"cannot checkpoint a value of type {type(value).__name__} at {path}")

    return walk(obj, prefix or "root"), tensors


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of ``flatten``."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {unflatten(k, tensors): unflatten(v, tensors) for k, v in skeleton["__dict__"]}
        if "__list__" in skeleton:
            items = [unflatten(v, tensors) for v in skeleton["__list__"]]
            return tuple(items) if skeleton.get("tuple") else items
    return skeleton


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(directory: str | Path, model: LanguageModel, tokenizer: Tokenizer | None,
                    trainer_state: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint to ``directory`` atomically; an existing checkpoint there is replaced only
    once the new one is complete on disk. ``tokenizer=None``: a model of token ids, with no tokenizer.json."""
    directory = Path(directory)
    tmp = _fresh_tmp(directory, f"tmp{os.getpid()}")
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        weights.pop("head.weight", None)
    save_file(weights, str(tmp / "model.safetensors"))
    _write_header(tmp, model, tokenizer, trainer_state)
    return _commit(tmp, directory)


def save_sharded_checkpoint(directory: str | Path, model: LanguageModel, optimizer: torch.optim.Optimizer,
                            tokenizer: Tokenizer, trainer_state: dict[str, Any]) -> Path:
    """Write a sharded checkpoint of an FSDP2 ``model`` and its ``optimizer`` (a collective: every process calls
    it; on several nodes ``directory`` must be on a filesystem they share). Each process writes its shards with
    ``torch.distributed.checkpoint``, rank 0 the rest and the manifest, then renames the folder into place."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")  # one name for every process; the run lock keeps runs apart
    if dist.get_rank() == 0:
        _fresh_tmp(directory, "tmp")
    dist.barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp / SHARDED)
    if dist.get_rank() == 0:
        _write_header(tmp, model, tokenizer, trainer_state)
        _commit(tmp, directory)
    dist.barrier()
    return directory


def load_sharded_checkpoint(directory: str | Path, model: LanguageModel, optimizer: torch.optim.Optimizer) -> None:
    """Load a sharded checkpoint's model and optimizer state into an FSDP2 ``model`` and its ``optimizer`` (a
    collective), whatever the number of processes that wrote it; the caller reads the rest with ``read_header``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    directory = checkpoint_dir(directory)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    try:
        dcp.load(state, checkpoint_id=directory / SHARDED)
    except (RuntimeError, ValueError, KeyError) as err:
        raise HopeError(f"checkpoint {directory}: the sharded state does not match this run "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def is_sharded(directory: str | Path) -> bool:
    """Whether the checkpoint ``directory`` (or the one in a run directory) was written by
    ``save_sharded_checkpoint``."""
    return (checkpoint_dir(directory) / SHARDED).is_dir()


def _fresh_tmp(directory: Path, suffix: str) -> Path:
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.{suffix}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def _write_header(tmp: Path, model: LanguageModel, tokenizer: Tokenizer | None,
                  trainer_state: dict[str, Any] | None) -> None:
    """config.json, tokenizer.json (if any) and the trainer state (JSON skeleton and safetensors)."""
    (tmp / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2))
    if tokenizer is not None:
        (tmp / "tokenizer.json").write_text(tokenizer.to_json(), encoding="utf-8")
    if trainer_state is not None:
        skeleton, tensors = flatten(trainer_state)
        save_file(tensors, str(tmp / "trainer.safetensors"))
        (tmp / "trainer.json").write_text(json.dumps(skeleton))


def _commit(tmp: Path, directory: Path) -> Path:
    """Write the manifest of every file under ``tmp``, sync them, and rename ``tmp`` to ``directory``."""
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = {p.relative_to(tmp).as_posix(): _sha256(p) for p in files}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    for p in [*files, tmp / MANIFEST]:
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    for folder in {p.parent for p in files} | {tmp}:
        _fsync_dir(folder)
    old = directory.with_name(f".{directory.name}.old{os.getpid()}")
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    _fsync_dir(directory.parent)
    if old.exists():
        shutil.rmtree(old)
    return directory


def checkpoint_dir(directory: str | Path) -> Path:
    """The checkpoint that ``directory`` names: itself, or the ``checkpoint/`` folder of a run directory
    (``hope train --out RUN`` writes ``RUN/checkpoint``; users pass either)."""
    directory = Path(directory)
    if not (directory / MANIFEST).exists() and (directory / "checkpoint" / MANIFEST).is_file():
        return directory / "checkpoint"
    return directory


def verify_checkpoint(directory: str | Path) -> dict[str, str]:
    """Check that ``directory`` (or the run directory holding it) is a complete checkpoint whose files match
    their manifest."""
    directory = checkpoint_dir(directory)
    if not directory.is_dir():
        raise HopeError(f"checkpoint {directory} does not exist (expected a directory written by `hope train`)")
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise HopeError(f"checkpoint {directory} is incomplete: {MANIFEST} is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        raise HopeError(f"checkpoint {directory} is corrupt: {MANIFEST} is not valid JSON") from None
    weights = f"{SHARDED}/.metadata" if (directory / SHARDED).is_dir() else "model.safetensors"
    for name in (weights, "config.json"):
        if name not in manifest:
            raise HopeError(f"checkpoint {directory} is incomplete: {name} is not in its manifest")
    for name, digest in manifest.items():
        path = directory / name
        if not path.is_file():
            raise HopeError(f"checkpoint {directory} is incomplete: {name} is missing")
        if _sha256(path) != digest:
            raise HopeError(f"checkpoint {directory} is corrupt or truncated: {name} does not match its checksum")
    return manifest


def read_header(directory: str | Path, with_trainer_state: bool = False,
                text: bool = True) -> tuple[ModelConfig, Tokenizer | None, dict[str, Any] | None]:
    """Verify a checkpoint (or the one in a run directory) and read all but its weights:
    ``(model config, tokenizer, trainer_state or None)``. ``text=False`` also accepts a model of token ids (no
    tokenizer.json), whose tokenizer is ``None``; with ``text=True`` it is refused."""
    directory = checkpoint_dir(directory)
    manifest = verify_checkpoint(directory)
    try:
        config = config_from_dict(json.loads((directory / "config.json").read_text()))
    except json.JSONDecodeError:
        raise HopeError(f"checkpoint {directory} is corrupt: config.json is not valid JSON") from None
    if "tokenizer.json" not in manifest:
        if text:
            raise HopeError(f"checkpoint {directory} has no tokenizer: it models token ids (a task such as mqar), "
                            "not text")
        tokenizer = None
    else:
        tokenizer = tokenizer_from_json((directory / "tokenizer.json").read_text(encoding="utf-8"),
                                        f"{directory}/tokenizer.json")
    if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
        raise HopeError(f"checkpoint {directory}: tokenizer has {tokenizer.vocab_size} tokens but the model only {config.vocab_size}")
    trainer_state = None
    if with_trainer_state:
        if "trainer.json" not in manifest:
            raise HopeError(f"checkpoint {directory} holds weights only; it has no trainer state to resume from")
        try:
            skeleton = json.loads((directory / "trainer.json").read_text())
            trainer_state = unflatten(skeleton, load_file(str(directory / "trainer.safetensors")))
        except (json.JSONDecodeError, SafetensorError, KeyError, TypeError, ValueError) as err:
            raise HopeError(f"checkpoint {directory}: the trainer state is corrupt ({type(err).__name__}: {err})") from None
    return config, tokenizer, trainer_state


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu", with_trainer_state: bool = False,
                    text: bool = True) -> tuple[LanguageModel, Tokenizer | None, dict[str, Any] | None]:
    """Read and verify a checkpoint (or the one in a run directory): ``(model, tokenizer, trainer_state or None)``;
    a sharded one is gathered whole into this process (its optimizer state stays on disk). ``text``: as in
    :func:`read_header`."""
    directory = checkpoint_dir(directory)
    config, tokenizer, trainer_state = read_header(directory, with_trainer_state, text)
    model = LanguageModel(config)
    if (directory / SHARDED).is_dir():
        _load_sharded_weights(directory, model)
        return model.to(device), tokenizer, trainer_state
    try:
        weights = load_file(str(directory / "model.safetensors"))
    except SafetensorError as err:
        raise HopeError(f"checkpoint {directory} is corrupt: model.safetensors ({err})") from None
    if config.tie_embeddings:
        weights["head.weight"] = weights["embed.weight"]
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise HopeError(f"checkpoint {directory}: weights do not match config.json ({first})") from None
    return model.to(device), tokenizer, trainer_state


def _load_sharded_weights(directory: Path, model: LanguageModel) -> None:
    """The whole model of a sharded checkpoint, read in this process alone."""
    import torch.distributed.checkpoint as dcp

    state = {"model": model.state_dict()}
    try:
        dcp.load(state, checkpoint_id=directory / SHARDED, no_dist=True)
    except (RuntimeError, ValueError, KeyError) as err:
        raise HopeError(f"checkpoint {directory}: sharded weights do not match config.json "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    model.load_state_dict(state["model"], strict=True)
