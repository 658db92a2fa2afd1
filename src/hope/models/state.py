"""``ModelState``: everything a sequence has learned in context, in one object, for every architecture.

Each layer's state is a :class:`BlockState` of typed states defined beside their modules (attention's KV cache,
the memories of Titans, Gated DeltaNet and self-modifying Titans with their convolution tails, the CMS fast
weights), so that ``model(ids, state=s)`` continues a sequence exactly; a state can be written to a safetensors
file and read back tomorrow (docs/paper_notes.md, "State").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch.utils import _pytree as pytree

from hope.errors import HopeError

if TYPE_CHECKING:
    from hope.models.lm import LanguageModel


class BlockState(NamedTuple):
    """One block's state: its mixer's and its channel memory's (``None`` for a module that keeps none, such as a
    static SwiGLU)."""

    mixer: Any
    channel: Any

    def to_flat(self) -> dict[str, torch.Tensor]:
        """``{"mixer.{name}": ..., "channel.{name}": ...}`` with each part's own ``to_flat`` names."""
        return {f"{part}.{name}": t for part, state in self._asdict().items() if state is not None
                for name, t in state.to_flat().items()}


@dataclass
class ModelState:
    """Per-layer states ``layers[i]`` after ``position`` tokens.

    Models whose CMS learns in context also keep what a pending CMS step needs (docs/cms.md): ``snapshots``,
    the model state at the last boundary where each learning level stepped (sorted by position), and
    ``replay_ids [B, position - snapshots[0].position]``, the tokens read since the oldest of them.

    A streamed state (docs/training.md, streaming) also says which rows start a new document at ``position``:
    ``restart [B]`` (bool); the model replaces those rows by the initial state there (after any pending CMS step,
    which it drops for them), and parts that keep no state across windows (attention) restart for every row.

    Every tensor has the batch on its first axis, so :meth:`select` picks sequences out of a batch.
    """

    position: int = 0
    layers: list[BlockState] = field(default_factory=list)
    replay_ids: torch.Tensor | None = None
    snapshots: list[ModelState] = field(default_factory=list)
    restart: torch.Tensor | None = None

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> ModelState:
        """The same state with ``fn`` applied to every tensor (snapshots included)."""
        def apply(x: Any) -> Any:
            return fn(x) if isinstance(x, torch.Tensor) else x

        return ModelState(self.position, pytree.tree_map(apply, self.layers),
                          None if self.replay_ids is None else fn(self.replay_ids),
                          [snapshot.map_tensors(fn) for snapshot in self.snapshots],
                          None if self.restart is None else fn(self.restart))

    def detach(self) -> ModelState:
        """The same state cut from the autograd graph (truncated backpropagation through time, streaming over
        very long inputs)."""
        return self.map_tensors(torch.Tensor.detach)

    def carried(self, initial: list[BlockState]) -> ModelState:
        """The state cut from the autograd graph for the next streamed window (truncated backpropagation through
        time), with every tensor that starts as a parameter (``initial``, per layer: CMS fast weights, the
        Titans and Hope memories' initial weights) carried as ``initial + detached displacement``: its value is
        unchanged and the parameter keeps a gradient of identity Jacobian, as in one unbroken first-order pass
        (docs/training.md, streaming). Snapshots are carried alike."""
        return ModelState(self.position, [_carried_block(block, start) for block, start in zip(self.layers, initial)],
                          None if self.replay_ids is None else self.replay_ids.detach(),
                          [snapshot.carried(initial) for snapshot in self.snapshots],
                          None if self.restart is None else self.restart.detach())

    def to(self, device: torch.device | str) -> ModelState:
        """The state with every tensor on ``device``."""
        return self.map_tensors(lambda t: t.to(device))

    def select(self, rows: torch.Tensor | list[int] | slice) -> ModelState:
        """The state of the sequences ``rows`` of the batch (indices, a boolean mask or a slice)."""
        return self.map_tensors(lambda t: t[rows])

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor under its name in a state file: ``layers.{i}.{mixer|channel}.{name}`` (names from each
        part's ``to_flat``), ``replay_ids`` and ``snapshots.{k}.{...}``."""
        flat = {f"layers.{i}.{name}": t.contiguous()
                for i, layer in enumerate(self.layers) for name, t in layer.to_flat().items()}
        if self.replay_ids is not None:
            flat["replay_ids"] = self.replay_ids.contiguous()
        if self.restart is not None:
            flat["restart"] = self.restart.contiguous()
        for k, snapshot in enumerate(self.snapshots):
            flat.update({f"snapshots.{k}.{key}": t for key, t in snapshot.tensors().items()})
        return flat

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        """Write the state to a safetensors file (atomically: temp file, then rename)."""
        path = Path(path)
        meta = {**self.metadata(), **(metadata or {})}
        tmp = path.with_name(path.name + ".tmp")
        save_file(_unshared({k: v.detach().cpu() for k, v in self.tensors().items()}), str(tmp), metadata=meta)
        tmp.replace(path)

    @staticmethod
    def read_metadata(path: str | Path) -> dict[str, str]:
        """The metadata of a state file (``position``, ``n_layers``, and what ``save`` was given)."""
        path = Path(path)
        if not path.is_file():
            raise HopeError(f"state file {path} is missing")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
        except (SafetensorError, OSError, json.JSONDecodeError) as err:
            raise HopeError(f"state file {path} is corrupt or truncated ({err})") from None
        if "position" not in meta or "n_layers" not in meta:
            raise HopeError(f"state file {path} is not a hope state (no position/n_layers metadata)")
        return meta

    @classmethod
    def load(cls, path: str | Path, model: LanguageModel,
             device: torch.device | str = "cpu") -> tuple[ModelState, dict[str, str]]:
        """Read a state written by ``save`` for ``model`` (its layers read their parts with ``state_from_flat``);
        returns it with the file's metadata."""
        meta = cls.read_metadata(path)
        try:
            flat = load_file(str(path), device=str(device))
        except (SafetensorError, OSError) as err:
            raise HopeError(f"state file {path} is corrupt or truncated ({err})") from None
        return cls.from_tensors(flat, meta, model, f"state file {path}"), meta

    def metadata(self) -> dict[str, str]:
        """What :meth:`from_tensors` needs beside :meth:`tensors`: the position, layer counts and snapshot
        positions."""
        return {"position": str(self.position), "n_layers": str(len(self.layers)),
                "snapshot_positions": ",".join(str(s.position) for s in self.snapshots),
                "snapshot_layers": ",".join(str(len(s.layers)) for s in self.snapshots)}

    @classmethod
    def from_tensors(cls, flat: dict[str, torch.Tensor], meta: dict[str, str], model: LanguageModel,
                     source: str = "state") -> ModelState:
        """The state whose :meth:`tensors` are ``flat`` and :meth:`metadata` ``meta`` (``source`` names it in
        errors)."""
        n_layers = int(meta["n_layers"])
        if n_layers not in (0, len(model.blocks)):
            raise HopeError(f"{source} has {n_layers} layers, the model {len(model.blocks)}")
        positions = [int(p) for p in meta.get("snapshot_positions", "").split(",") if p]
        snapshot_layers = [int(n) for n in meta.get("snapshot_layers", "").split(",") if n]
        try:
            snapshots = [
                _from_flat({key[len(f"snapshots.{k}."):]: t for key, t in flat.items()
                            if key.startswith(f"snapshots.{k}.")}, position, model if layers else None)
                for k, (position, layers) in enumerate(zip(positions, snapshot_layers))
            ]
            state = _from_flat({k: t for k, t in flat.items() if not k.startswith("snapshots.")},
                               int(meta["position"]), model if n_layers else None)
        except KeyError as err:
            raise HopeError(f"{source} is not a state of this model (no tensor {err})") from None
        state.snapshots = snapshots
        return state


def _from_flat(flat: dict[str, torch.Tensor], position: int, model: LanguageModel | None) -> ModelState:
    """The state whose ``tensors()`` are ``flat`` (no layers without a ``model``)."""
    layers = []
    for i, block in enumerate(model.blocks if model is not None else []):
        parts = {part: {key[len(f"layers.{i}.{part}."):]: t for key, t in flat.items()
                        if key.startswith(f"layers.{i}.{part}.")} for part in BlockState._fields}
        layers.append(BlockState(block.mixer.state_from_flat(parts["mixer"], position),
                                 block.channel.state_from_flat(parts["channel"], position)))
    return ModelState(position, layers, flat.get("replay_ids"), restart=flat.get("restart"))


def _carried_block(block: BlockState, initial: BlockState) -> BlockState:
    """:meth:`ModelState.carried` of one layer: a part with no initial state (attention) is only detached, a
    part that keeps none (a CMS without learning levels) stays ``None``."""
    def carry(state: Any, start: Any) -> Any:
        if start is None or state is None:
            return pytree.tree_map(lambda x: x.detach() if isinstance(x, torch.Tensor) else x, state)
        return _zip_leaves(state, start, lambda now, first: first.to(now.dtype) + (now - first.to(now.dtype)).detach()
                           if first.requires_grad and first.shape == now.shape else now.detach())

    return BlockState(*(carry(state, start) for state, start in zip(block, initial)))


def restart_rows(layers: list[BlockState], initial: list[BlockState], rows: torch.Tensor) -> list[BlockState]:
    """``layers`` with the rows where ``rows`` (bool ``[B]``) is true replaced by ``initial``; a part whose
    initial state is ``None`` (attention, which keeps no state across streamed windows) restarts in every row."""
    def restart(state: Any, start: Any) -> Any:
        if start is None or state is None:
            return None
        return _zip_leaves(state, start, lambda now, first: torch.where(
            rows.view(-1, *[1] * (now.ndim - 1)), _same_shape(first, now).to(now.dtype), now))

    return [BlockState(*(restart(state, start) for state, start in zip(block, first)))
            for block, first in zip(layers, initial)]


def _zip_leaves(state: Any, initial: Any, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Any:
    """``state`` with ``fn(tensor, its initial tensor)`` at every tensor (other leaves, such as a position in a
    chunk, kept); the two must have the same structure."""
    leaves, spec = pytree.tree_flatten(state)
    starts, start_spec = pytree.tree_flatten(initial)
    if spec != start_spec:
        raise ValueError(f"a state and the initial state differ in structure ({spec} vs {start_spec})")
    return pytree.tree_unflatten([fn(now, first) if isinstance(now, torch.Tensor) else now
                                  for now, first in zip(leaves, starts)], spec)


def _same_shape(initial: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    if initial.shape != state.shape:
        raise ValueError(f"a state tensor of shape {list(state.shape)} has initial shape {list(initial.shape)}: rows "
                         "restart only where every memory starts a chunk (docs/training.md, streaming)")
    return initial


def _unshared(flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies of the tensors that share memory with an earlier one (safetensors refuses shared storage)."""
    seen: set[int] = set()
    out = {}
    for key, t in flat.items():
        pointer = t.untyped_storage().data_ptr()
        out[key] = t.clone() if pointer in seen else t
        seen.add(pointer)
    return out
