"""A hope checkpoint as a Hugging Face folder: ``config.json`` (``model_type="hope"``, the hope config inside),
``model.safetensors``, the tokenizer files and ``modeling_hope.py``.

``modeling_hope.py`` re-exports ``hope.hf``'s classes and ``config.json`` names them in ``auto_map``, so tools that
load a folder with ``trust_remote_code=True`` (``lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True``)
find the model without importing ``hope.hf`` first; the code that runs is the installed hope package's, nothing else.
"""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerBase

from hope.checkpoint import load_checkpoint
from hope.errors import HopeError
from hope.hf.modeling import HopeForCausalLM
from hope.hf.tokenizer import to_hf_tokenizer
from hope.models import LanguageModel

REMOTE_CODE = '''"""hope's Hugging Face classes (loaded by ``trust_remote_code=True``): the installed ``hope`` package's own."""

from hope.hf import HopeForCausalLM, HopeHFConfig

__all__ = ["HopeForCausalLM", "HopeHFConfig"]
'''

AUTO_MAP = {"AutoConfig": "modeling_hope.HopeHFConfig", "AutoModelForCausalLM": "modeling_hope.HopeForCausalLM"}


def save_hf(model: LanguageModel, out: str | Path, tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
    """Write ``model`` (and ``tokenizer``, whose BOS, EOS and padding ids go into the configs) as a Hugging Face
    folder ``out``, which must be new or empty."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HopeError(f"--out {out} already exists and is not an empty folder; name a new folder")
    hf = HopeForCausalLM.from_hope(model)
    hf.config.auto_map = AUTO_MAP
    if tokenizer is not None:
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(hf.config, name, getattr(tokenizer, name))
            setattr(hf.generation_config, name, getattr(tokenizer, name))
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    (out / "modeling_hope.py").write_text(REMOTE_CODE)
    return out


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """``hope export``: read a checkpoint (``hope.checkpoint.load_checkpoint``) and write it with :func:`save_hf`."""
    model, tokenizer, _ = load_checkpoint(checkpoint)
    return save_hf(model, out, to_hf_tokenizer(tokenizer))
