"""Models: one ``LanguageModel`` (blocks = mixer + channel memory), a config per architecture, ``build``."""

from __future__ import annotations

from typing import Any

from hope.models.config import ARCHS, SIZES, ModelConfig, TransformerConfig, config_from_dict, make_config
from hope.models.lm import LanguageModel, LMOutput
from hope.models.state import HopeState


def build(arch: str = "transformer", size: str | None = "tiny", vocab_size: int = 4096, **overrides: Any) -> LanguageModel:
    """``build(arch="transformer", size="tiny", vocab_size=4096, **overrides)`` -> a fresh ``LanguageModel``."""
    return LanguageModel(make_config(arch, size, vocab_size=vocab_size, **overrides))


__all__ = [
    "ARCHS", "SIZES", "HopeState", "LMOutput", "LanguageModel", "ModelConfig", "TransformerConfig",
    "build", "config_from_dict", "make_config",
]
