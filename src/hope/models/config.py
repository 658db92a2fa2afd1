"""Model configs: one dataclass per architecture, size presets, and the registry behind ``build``.

A block is **mixer + channel memory** (DESIGN.md Sec. 2). Each config class says which mixer and
which channel memory its blocks use; everything else (embedding, norms, head) is shared.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from hope.errors import HopeError

ARCHS: dict[str, type["ModelConfig"]] = {}

SIZES: dict[str, dict[str, int]] = {
    "tiny": {"d_model": 128, "n_layers": 4, "n_heads": 4},
    "small": {"d_model": 384, "n_layers": 6, "n_heads": 6},
    "760m": {"d_model": 1536, "n_layers": 25, "n_heads": 12},
    "1.3b": {"d_model": 2048, "n_layers": 24, "n_heads": 16},
}
"""Presets of the Transformer++ shape. ``760m`` and ``1.3b`` are the paper's sizes (NL Sec. 9.3):
with its 32K vocabulary their parameter counts are within 5% of the name (``tests/models``)."""


def register(name: str):
    """Class decorator that makes a config class available as ``build(arch=name)``."""

    def wrap(cls: type["ModelConfig"]) -> type["ModelConfig"]:
        cls.arch = name
        ARCHS[name] = cls
        return cls

    return wrap


@dataclass
class ModelConfig:
    """Fields shared by every architecture. Subclasses add their mixer's fields."""

    arch: ClassVar[str] = ""
    vocab_size: int = 4096
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_hidden: int = 0
    """Hidden width of the SwiGLU channel memory; 0 means 8/3 * d_model rounded up to a multiple of 64."""
    norm_eps: float = 1e-6
    tie_embeddings: bool = True
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads"):
            if getattr(self, name) < 1:
                raise HopeError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise HopeError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.mlp_hidden < 0:
            raise HopeError(f"mlp_hidden must be >= 0, got {self.mlp_hidden}")
        if self.mlp_hidden == 0:
            self.mlp_hidden = -(-8 * self.d_model // 3 // 64) * 64

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def build_mixer(self, layer: int) -> nn.Module:
        raise NotImplementedError

    def build_channel(self, layer: int) -> nn.Module:
        from hope.layers.mlp import SwiGLU

        return SwiGLU(self.d_model, self.mlp_hidden)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, **dataclasses.asdict(self)}


@register("transformer")
@dataclass
class TransformerConfig(ModelConfig):
    """Transformer++: RMSNorm, RoPE attention (SDPA), SwiGLU."""

    rope_theta: float = 10000.0

    def build_mixer(self, layer: int) -> nn.Module:
        from hope.layers.attention import Attention

        return Attention(self.d_model, self.n_heads, self.rope_theta)


def make_config(arch: str, size: str | None = None, **overrides: Any) -> ModelConfig:
    """The config of ``arch`` at preset ``size`` (``None``: the class defaults), with ``overrides``."""
    if arch not in ARCHS:
        raise HopeError(f"unknown arch {arch!r}; expected one of {', '.join(sorted(ARCHS))}")
    cls = ARCHS[arch]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise HopeError(f"unknown config field(s) for arch {arch!r}: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    if size is not None:
        if size not in SIZES:
            raise HopeError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
        values.update(size_preset(cls, size))
    values.update(overrides)
    try:
        return cls(**values)
    except TypeError as err:
        raise HopeError(f"bad config for arch {arch!r}: {err}") from None


def size_preset(cls: type[ModelConfig], size: str) -> dict[str, Any]:
    """A size preset for ``cls``: the shared shape, refined by the class's own ``SIZE_OVERRIDES``."""
    return {**SIZES[size], **getattr(cls, "SIZE_OVERRIDES", {}).get(size, {})}


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Rebuild a config saved with ``to_dict`` (as in a checkpoint's ``config.json``)."""
    data = dict(data)
    arch = data.pop("arch", None)
    if arch is None:
        raise HopeError("model config has no 'arch' field")
    return make_config(arch, None, **data)
