"""A Llama turned into Hope-Attention (NL Sec. 7.3, ad-hoc level stacking): attention, norms and embeddings are the
Llama's; each block's MLP becomes the levels of a Continuum Memory System (NL Sec. 7.1) that can keep learning in
context (NL Eq. 71; docs/cms.md).

**One MLP onto several levels.** The Llama MLP ``down(silu(gate x) * up x)`` with ``I`` hidden units is split by its
hidden units: level ``l`` of ``L`` takes units ``l*h .. (l+1)*h - 1`` (``h = ceil(I / L)``; the last level's missing
units have zero weights, so they add nothing) and the CMS runs its ``independent`` variant (NL Eq. 74) with every
mixing weight 1. A SwiGLU is a sum over its hidden units, so the sum of the levels is the Llama MLP exactly. With
test-time learning off the converted model computes the Llama's function (logits equal to float rounding,
``tests/hf/test_llama.py``); with it on, each level steps on the next-token loss at multiples of its period and the
model learns in context, starting from exactly the Llama.

**Attention.** hope's attention (``hope.layers.attention``) rotates interleaved channel pairs ``(2i, 2i + 1)`` by
``theta^(-2i/d)``, Llama rotates ``(i, i + d/2)`` by the same angle: the converter permutes each head's query and key
rows so that channel ``i + d/2`` sits next to ``i`` (a permutation applied to both q and k leaves every score
unchanged). hope has one key/value head per query head: grouped-query attention is converted by repeating each
key/value head over its group (Llama's ``repeat_kv``), which is exact and costs KV-cache memory. Refused, with a
one-line ``HopeError``: RoPE scaling (``rope_type`` other than ``default``), attention or MLP biases, an activation
other than SiLU, and a ``head_dim`` other than ``hidden_size / num_attention_heads``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

from hope.errors import HopeError
from hope.hf.export import save_hf
from hope.models import CMSConfig, LanguageModel, make_config


def check_llama(config) -> None:
    """Refuse the Llama features that hope's Transformer++ block does not have (see the module docstring)."""
    if config.model_type != "llama":
        raise HopeError(f"hope convert reads Llama models (model_type 'llama'), got {config.model_type!r}")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise HopeError(f"RoPE scaling {rope.get('rope_type')!r} is not supported (hope's attention uses plain RoPE)")
    if config.hidden_act != "silu":
        raise HopeError(f"the Llama's MLP uses {config.hidden_act!r}; hope's SwiGLU levels use silu")
    if config.attention_bias or config.mlp_bias:
        raise HopeError("the Llama has attention or MLP biases; hope's attention and SwiGLU have none")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head_dim * config.num_attention_heads != config.hidden_size:
        raise HopeError(f"head_dim {head_dim} x {config.num_attention_heads} heads != hidden_size {config.hidden_size}: "
                        "hope's attention needs head_dim = hidden_size / heads")


def _interleave_rope(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of a q or k projection ``[heads * d, D]`` reordered per head from Llama's half-split RoPE layout to hope's
    interleaved pairs: new rows ``2i, 2i + 1`` are old rows ``i, i + d/2``."""
    d = weight.shape[0] // heads
    order = torch.stack([torch.arange(d // 2), torch.arange(d // 2) + d // 2], dim=-1).flatten()
    return weight.view(heads, d, -1)[:, order].reshape(weight.shape)


def _repeat_kv(weight: torch.Tensor, kv_heads: int, heads: int) -> torch.Tensor:
    """A k or v projection ``[kv_heads * d, D]`` with each key/value head repeated over its query group."""
    d = weight.shape[0] // kv_heads
    return weight.view(kv_heads, d, -1).repeat_interleave(heads // kv_heads, dim=0).reshape(heads * d, -1)


def llama_to_hope(llama, cms_periods: Sequence[int | None] | None = None, test_time_learning: bool = True,
                  cms_lr: float | None = None) -> LanguageModel:
    """A Hope-Attention ``LanguageModel`` from a ``transformers`` ``LlamaForCausalLM`` (float32 copies of its weights),
    one CMS level per entry of ``cms_periods`` (``None``: a static level; default: ``CMSConfig``'s periods), each
    stepping with learning rate ``cms_lr`` (default: ``CMSConfig``'s) when ``test_time_learning`` is on."""
    config = llama.config
    check_llama(config)
    cms_periods = tuple(CMSConfig.cms_periods if cms_periods is None else cms_periods)
    cms = {} if cms_lr is None else {"cms_lr": cms_lr}
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    levels = len(cms_periods)
    level_hidden = -(-config.intermediate_size // levels)
    hope_config = make_config(
        "hope-attention", None, vocab_size=config.vocab_size, d_model=config.hidden_size,
        n_layers=config.num_hidden_layers, n_heads=heads, mlp_hidden=config.intermediate_size,
        norm_eps=float(config.rms_norm_eps), tie_embeddings=bool(config.tie_word_embeddings),
        rope_theta=float((getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)),
        cms_periods=tuple(cms_periods), cms_hidden=level_hidden, cms_variant="independent",
        test_time_learning=test_time_learning, **cms)
    model = LanguageModel(hope_config)
    source = {name: tensor.detach().float() for name, tensor in llama.state_dict().items()}
    weights = {"embed.weight": source["model.embed_tokens.weight"], "norm.weight": source["model.norm.weight"],
               "head.weight": source["model.embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight"]}
    for i in range(config.num_hidden_layers):
        llama_layer, block = f"model.layers.{i}.", f"blocks.{i}."
        q, k, v = (source[f"{llama_layer}self_attn.{name}_proj.weight"] for name in "qkv")
        weights[block + "mixer.qkv.weight"] = torch.cat([
            _interleave_rope(q, heads), _interleave_rope(_repeat_kv(k, kv_heads, heads), heads),
            _repeat_kv(v, kv_heads, heads)])
        weights[block + "mixer.out.weight"] = source[f"{llama_layer}self_attn.o_proj.weight"]
        weights[block + "mixer_norm.weight"] = source[f"{llama_layer}input_layernorm.weight"]
        weights[block + "channel_norm.weight"] = source[f"{llama_layer}post_attention_layernorm.weight"]
        gate, up, down = (source[f"{llama_layer}mlp.{name}_proj.weight"] for name in ("gate", "up", "down"))
        padding = levels * level_hidden - config.intermediate_size
        gate, up = (torch.cat([w, w.new_zeros(padding, w.shape[1])]) for w in (gate, up))
        down = torch.cat([down, down.new_zeros(down.shape[0], padding)], dim=1)
        for level in range(levels):
            units = slice(level * level_hidden, (level + 1) * level_hidden)
            weights[f"{block}channel.levels.{level}.gate_up.weight"] = torch.cat([gate[units], up[units]])
            weights[f"{block}channel.levels.{level}.down.weight"] = down[:, units]
    missing = set(model.state_dict()) - set(weights)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name in weights:
                tensor.copy_(weights[name])
    if any(not name.endswith((".log_lr", ".mix")) for name in missing):
        raise HopeError(f"hope convert does not know where these weights come from: {sorted(missing)}")
    return model.eval()


def convert_llama(llama_dir: str | Path, out: str | Path, cms_periods: Sequence[int | None] | None = None,
                  test_time_learning: bool = True, cms_lr: float | None = None) -> Path:
    """``hope convert``: read a Llama folder (``LlamaForCausalLM.from_pretrained``, float32), convert it with
    :func:`llama_to_hope` and write a Hugging Face folder (``hope.hf.export.save_hf``) with the Llama's tokenizer,
    if the folder holds one."""
    llama_dir = Path(llama_dir)
    if not (llama_dir / "config.json").is_file():
        raise HopeError(f"--from-hf {llama_dir} is not a Hugging Face model folder (no config.json)")
    check_llama(AutoConfig.from_pretrained(llama_dir))
    llama = LlamaForCausalLM.from_pretrained(llama_dir, dtype=torch.float32)
    model = llama_to_hope(llama, cms_periods, test_time_learning, cms_lr)
    has_tokenizer = any((llama_dir / name).is_file() for name in ("tokenizer.json", "tokenizer.model"))
    tokenizer = AutoTokenizer.from_pretrained(llama_dir) if has_tokenizer else None
    return save_hf(model, out, tokenizer)
