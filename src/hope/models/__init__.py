"""Models: one ``LanguageModel`` (blocks = mixer + channel memory), a module per architecture with its config
beside its mixer, ``build``. Importing this package imports every architecture, which registers it in ``ARCHS``."""

from __future__ import annotations

from typing import Any

from hope.models.config import ARCHS, SIZES, ModelConfig, config_from_dict, make_config
from hope.models.bdh import BDHConfig
from hope.models.gated_deltanet import GatedDeltaNetConfig
from hope.models.hope.config import CMSConfig, HopeAttentionConfig, HopeConfig
from hope.models.lm import LanguageModel, LMOutput
from hope.models.state import BlockState, ModelState
from hope.models.titans import TitansConfig
from hope.models.transformer import TransformerConfig


def build(arch: str = "transformer", size: str | None = "tiny", vocab_size: int = 4096, **overrides: Any) -> LanguageModel:
    """``build(arch="transformer", size="tiny", vocab_size=4096, **overrides)`` -> a fresh ``LanguageModel``."""
    return LanguageModel(make_config(arch, size, vocab_size=vocab_size, **overrides))


__all__ = [
    "ARCHS", "SIZES", "BDHConfig", "BlockState", "CMSConfig", "GatedDeltaNetConfig", "HopeAttentionConfig", "HopeConfig", "LMOutput",
    "LanguageModel", "ModelConfig", "ModelState", "TitansConfig", "TransformerConfig", "build", "config_from_dict",
    "make_config",
]
