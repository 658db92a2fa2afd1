"""``HopeHFConfig`` and ``HopeForCausalLM``: every hope architecture as a ``transformers`` causal language model.

``HopeForCausalLM`` wraps one ``hope.models.LanguageModel`` (under ``.model``, so its weights keep their hope names
behind a ``model.`` prefix). What the model learns in context (attention KV caches, memories, CMS fast weights:
NL Secs. 5, 7-8) is its per-sequence state; :class:`HopeCache` carries that state through ``generate()``, which
then reads the prompt once and feeds one token per step, as ``hope.generate.stream`` does.

Limits, refused with a one-line message: an ``attention_mask`` with zeros anywhere but at the end of a row (left
padding: the recurrent mixers and the CMS read every token into their state, so a padded prompt would change
it); beam search and assisted decoding (they would fork or rewind a state that changed by learning).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Cache, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from hope.models import LanguageModel, config_from_dict


class HopeHFConfig(PretrainedConfig):
    """``model_type="hope"``; ``hope`` is the dict of ``ModelConfig.to_dict()`` (``arch`` and its fields)."""

    model_type = "hope"

    def __init__(self, hope: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.hope = dict(hope or {"arch": "transformer"})
        model = config_from_dict(self.hope)
        self.vocab_size = model.vocab_size
        self.hidden_size = model.d_model
        self.num_hidden_layers = model.n_layers
        self.num_attention_heads = model.n_heads
        kwargs["tie_word_embeddings"] = model.tie_embeddings
        super().__init__(**kwargs)


class HopeCache(Cache):
    """The per-sequence state of a hope model (``out.state``) as a ``transformers`` cache: ``get_seq_length()`` is
    the number of tokens it has read, and the next call continues from it."""

    def __init__(self, state) -> None:
        super().__init__(layers=[])
        self.state = state

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.state.position

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise ValueError("hope models do not support beam search: their state learns in context and cannot be "
                         "forked per beam; use greedy or sampled decoding (num_beams=1)")


class HopeForCausalLM(PreTrainedModel, GenerationMixin):
    """``model(input_ids, attention_mask=None, cache=None, labels=None) -> CausalLMOutputWithPast`` whose ``cache`` is a
    :class:`HopeCache` holding the state after ``input_ids``; ``logits`` are float32 where hope computes them so."""

    config_class = HopeHFConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _is_stateful = True
    _no_split_modules = ["Block"]
    _tied_weights_keys = {"model.head.weight": "model.embed.weight"}

    def __init__(self, config: HopeHFConfig, model: LanguageModel | None = None) -> None:
        super().__init__(config)
        if model is None:
            with torch.device("cpu"):  # hope's layers initialise from CPU tensors; from_pretrained builds on "meta"
                model = LanguageModel(config_from_dict(config.hope))
        self.model = model
        if not config.tie_word_embeddings:
            self._tied_weights_keys = {}
        self.post_init()

    def _init_weights(self, module) -> None:
        """Nothing: ``LanguageModel`` initialises its own weights when built (``from_pretrained`` then loads them)."""

    @classmethod
    def from_hope(cls, model: LanguageModel) -> "HopeForCausalLM":
        """Wrap a built or loaded ``LanguageModel`` (its weights are shared, not copied)."""
        return cls(HopeHFConfig(hope=model.config.to_dict()), model)

    def get_input_embeddings(self):
        return self.model.embed

    def get_output_embeddings(self):
        return self.model.head

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                cache: HopeCache | None = None, labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                position_ids: torch.Tensor | None = None, **kwargs: Any) -> CausalLMOutputWithPast:
        """``position_ids`` are accepted and ignored (a hope model counts positions in its state); ``labels`` are
        the inputs themselves (shifted here, as in every ``transformers`` causal LM)."""
        if attention_mask is not None:
            _check_mask(attention_mask, continuing=cache is not None and cache.get_seq_length() > 0)
        state = cache.state if cache is not None else None
        out = self.model(input_ids, state=state)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(),
                                                     labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=out.logits,
                                      cache=HopeCache(out.state) if use_cache is not False else None)

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, cache: HopeCache | None = None,
                                      attention_mask: torch.Tensor | None = None, **kwargs: Any) -> dict[str, Any]:
        """The tokens the state has not read yet (the whole prompt first, then one token per step)."""
        read = cache.get_seq_length() if cache is not None else 0
        inputs = {"input_ids": input_ids[:, read:], "cache": cache, "use_cache": kwargs.get("use_cache", True)}
        if attention_mask is not None:
            inputs["attention_mask"] = attention_mask
        return inputs

    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs: Any):
        """``GenerationMixin.generate``, refusing beam search up front (see :class:`HopeCache`)."""
        beams = kwargs.get("num_beams", (generation_config or self.generation_config).num_beams)
        if beams is not None and beams > 1:
            raise ValueError("hope models do not support beam search: their state learns in context and cannot be "
                             "forked per beam; use greedy or sampled decoding (num_beams=1)")
        return super().generate(inputs, generation_config=generation_config, **kwargs)


def _check_mask(mask: torch.Tensor, continuing: bool) -> None:
    """Accept masks whose rows are ones then zeros (right padding: a causal model's outputs at the real tokens do
    not depend on what follows); refuse left padding and holes, and any zero once a state has read tokens."""
    mask = mask.bool()
    if mask.all():
        return
    if continuing or (mask[:, 1:] & ~mask[:, :-1]).any():
        raise ValueError("hope models read every token into their state, so they do not support left padding or "
                         "masked tokens before real ones: pass prompts one at a time (batch size 1) or pad on the "
                         "right for scoring")
