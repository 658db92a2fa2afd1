"""hope in the Hugging Face ecosystem (the ``hf`` extra: ``pip install -e '.[hf]'``).

Importing this package registers ``model_type="hope"`` with ``AutoConfig`` and ``AutoModelForCausalLM``, so that
``AutoModelForCausalLM.from_pretrained(DIR)`` loads a folder written by ``hope export`` (README, "Hugging Face").
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForCausalLM

from hope.hf.modeling import HopeCache, HopeForCausalLM, HopeHFConfig
from hope.hf.tokenizer import to_hf_tokenizer

AutoConfig.register("hope", HopeHFConfig, exist_ok=True)
AutoModelForCausalLM.register(HopeHFConfig, HopeForCausalLM, exist_ok=True)

__all__ = ["HopeCache", "HopeForCausalLM", "HopeHFConfig", "to_hf_tokenizer"]
