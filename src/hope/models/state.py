"""``HopeState``: everything a sequence has learned in context, in one object.

Memory weights, CMS fast weights, convolution tails and attention KV caches of every layer live
here (DESIGN.md Sec. 3, "State"), so that ``model(ids, state=s)`` continues a sequence exactly and a
state can be written to a safetensors file and read back tomorrow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hope.errors import HopeError

LayerState = dict[str, dict[str, torch.Tensor]]


@dataclass
class HopeState:
    """Per-layer states ``layers[i][part][name]`` (part is ``"mixer"`` or ``"channel"``) after ``position`` tokens."""

    position: int = 0
    layers: list[LayerState] = field(default_factory=list)

    def detach(self) -> "HopeState":
        """The same state cut from the autograd graph (for streaming over very long inputs)."""
        return HopeState(self.position, [
            {part: {k: v.detach() for k, v in tensors.items()} for part, tensors in layer.items()}
            for layer in self.layers
        ])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            f"layers.{i}.{part}.{name}": t.contiguous()
            for i, layer in enumerate(self.layers)
            for part, tensors in layer.items()
            for name, t in tensors.items()
        }

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        """Write the state to a safetensors file (atomically: temp file, then rename)."""
        path = Path(path)
        meta = {"position": str(self.position), "n_layers": str(len(self.layers)), **(metadata or {})}
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.detach().cpu() for k, v in self.tensors().items()}, str(tmp), metadata=meta)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> tuple["HopeState", dict[str, str]]:
        """Read a state written by ``save``; returns it with the file's metadata."""
        path = Path(path)
        if not path.is_file():
            raise HopeError(f"state file {path} is missing")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
            flat = load_file(str(path), device=str(device))
        except (SafetensorError, OSError, json.JSONDecodeError) as err:
            raise HopeError(f"state file {path} is corrupt or truncated ({err})") from None
        if "position" not in meta or "n_layers" not in meta:
            raise HopeError(f"state file {path} is not a hope state (no position/n_layers metadata)")
        layers: list[LayerState] = [{"mixer": {}, "channel": {}} for _ in range(int(meta["n_layers"]))]
        for key, tensor in flat.items():
            _, index, part, name = key.split(".", 3)
            layers[int(index)].setdefault(part, {})[name] = tensor
        return cls(int(meta["position"]), layers), meta
