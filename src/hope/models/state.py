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

    Every tensor has the batch on its first axis, so :meth:`select` picks sequences out of a batch.
    """

    position: int = 0
    layers: list[BlockState] = field(default_factory=list)
    replay_ids: torch.Tensor | None = None
    snapshots: list[ModelState] = field(default_factory=list)

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> ModelState:
        """The same state with ``fn`` applied to every tensor (snapshots included)."""
        def apply(x: Any) -> Any:
            return fn(x) if isinstance(x, torch.Tensor) else x

        return ModelState(self.position, pytree.tree_map(apply, self.layers),
                          None if self.replay_ids is None else fn(self.replay_ids),
                          [snapshot.map_tensors(fn) for snapshot in self.snapshots])

    def detach(self) -> ModelState:
        """The same state cut from the autograd graph (truncated backpropagation through time, streaming over
        very long inputs)."""
        return self.map_tensors(torch.Tensor.detach)

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
        for k, snapshot in enumerate(self.snapshots):
            flat.update({f"snapshots.{k}.{key}": t for key, t in snapshot.tensors().items()})
        return flat

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        """Write the state to a safetensors file (atomically: temp file, then rename)."""
        path = Path(path)
        meta = {
            "position": str(self.position), "n_layers": str(len(self.layers)),
            "snapshot_positions": ",".join(str(s.position) for s in self.snapshots),
            "snapshot_layers": ",".join(str(len(s.layers)) for s in self.snapshots),
            **(metadata or {}),
        }
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
        n_layers = int(meta["n_layers"])
        if n_layers not in (0, len(model.blocks)):
            raise HopeError(f"state file {path} has {n_layers} layers, the model {len(model.blocks)}")
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
            raise HopeError(f"state file {path} is not a state of this model (no tensor {err})") from None
        state.snapshots = snapshots
        return state, meta


def _from_flat(flat: dict[str, torch.Tensor], position: int, model: LanguageModel | None) -> ModelState:
    """The state whose ``tensors()`` are ``flat`` (no layers without a ``model``)."""
    layers = []
    for i, block in enumerate(model.blocks if model is not None else []):
        parts = {part: {key[len(f"layers.{i}.{part}."):]: t for key, t in flat.items()
                        if key.startswith(f"layers.{i}.{part}.")} for part in BlockState._fields}
        layers.append(BlockState(block.mixer.state_from_flat(parts["mixer"], position),
                                 block.channel.state_from_flat(parts["channel"], position)))
    return ModelState(position, layers, flat.get("replay_ids"))


def _unshared(flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies of the tensors that share memory with an earlier one (safetensors refuses shared storage)."""
    seen: set[int] = set()
    out = {}
    for key, t in flat.items():
        pointer = t.untyped_storage().data_ptr()
        out[key] = t.clone() if pointer in seen else t
        seen.add(pointer)
    return out
