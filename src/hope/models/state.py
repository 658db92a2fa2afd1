"""``HopeState``: everything a sequence has learned in context, in one object.

Memory weights, CMS fast weights, convolution tails and attention KV caches of every layer live here, so
that ``model(ids, state=s)`` continues a sequence exactly and a state can be written to a safetensors file
and read back tomorrow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from hope.errors import HopeError

LayerState = dict[str, dict[str, torch.Tensor]]


@dataclass
class HopeState:
    """Per-layer states ``layers[i][part][name]`` (part is ``"mixer"`` or ``"channel"``) after ``position`` tokens.

    Models whose CMS learns in context also keep what a pending CMS step needs (docs/cms.md): ``snapshots``,
    the model state at the last boundary where each learning level stepped (sorted by position), and
    ``replay_ids [B, position - snapshots[0].position]``, the tokens read since the oldest of them.
    """

    position: int = 0
    layers: list[LayerState] = field(default_factory=list)
    replay_ids: torch.Tensor | None = None
    snapshots: list["HopeState"] = field(default_factory=list)

    def detach(self) -> "HopeState":
        """The same state cut from the autograd graph (for streaming over very long inputs)."""
        return HopeState(
            self.position,
            [{part: {k: v.detach() for k, v in tensors.items()} for part, tensors in layer.items()}
             for layer in self.layers],
            None if self.replay_ids is None else self.replay_ids.detach(),
            [snapshot.detach() for snapshot in self.snapshots],
        )

    def tensors(self) -> dict[str, torch.Tensor]:
        flat = {
            f"layers.{i}.{part}.{name}": t.contiguous()
            for i, layer in enumerate(self.layers)
            for part, tensors in layer.items()
            for name, t in tensors.items()
        }
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

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> tuple["HopeState", dict[str, str]]:
        """Read a state written by ``save``; returns it with the file's metadata."""
        path = Path(path)
        if not path.is_file():
            raise HopeError(f"state file {path} is missing")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
            flat = load_file(str(path), device=str(device))
        except (SafetensorError, OSError, json.JSONDecodeError) as err:
            raise HopeError(f"state file {path} is corrupt or truncated ({err})") from None
        if "position" not in meta or "n_layers" not in meta:
            raise HopeError(f"state file {path} is not a hope state (no position/n_layers metadata)")
        positions = [int(p) for p in meta.get("snapshot_positions", "").split(",") if p]
        n_layers = [int(n) for n in meta.get("snapshot_layers", "").split(",") if n]
        snapshots = [
            _unflatten({key[len(f"snapshots.{k}."):]: t for key, t in flat.items() if key.startswith(f"snapshots.{k}.")},
                       position, layers)
            for k, (position, layers) in enumerate(zip(positions, n_layers))
        ]
        state = _unflatten({k: t for k, t in flat.items() if not k.startswith("snapshots.")},
                           int(meta["position"]), int(meta["n_layers"]))
        state.snapshots = snapshots
        return state, meta


def _unflatten(flat: dict[str, torch.Tensor], position: int, n_layers: int) -> HopeState:
    layers: list[LayerState] = [{"mixer": {}, "channel": {}} for _ in range(n_layers)]
    for key, tensor in flat.items():
        if key == "replay_ids":
            continue
        _, index, part, name = key.split(".", 3)
        layers[int(index)].setdefault(part, {})[name] = tensor
    return HopeState(position, layers, flat.get("replay_ids"))


def _unshared(flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies of the tensors that share memory with an earlier one (safetensors refuses shared storage)."""
    seen: set[int] = set()
    out = {}
    for key, t in flat.items():
        pointer = t.untyped_storage().data_ptr()
        out[key] = t.clone() if pointer in seen else t
        seen.add(pointer)
    return out
