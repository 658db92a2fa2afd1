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


CMS_VARIANTS = ("sequential", "nested", "independent")


@dataclass
class CMSConfig(ModelConfig):
    """Mixin: the channel memory is a Continuum Memory System (NL Eqs. 70-74; DESIGN.md Sec. 3; docs/cms.md).

    Subclassed by ``HopeConfig`` (self-modifying Titans + CMS) and ``HopeAttentionConfig`` (attention + CMS).
    """

    cms_periods: tuple[int | None, ...] = (32, 64, 128)
    """Update period of each level in tokens (the chunk size C of NL Eq. 71; labels such as "512" and "2K" in
    the paper are periods, paper_spec A9), in chain order (NL Eq. 70: the first level reads the input first).
    ``None`` is a static level (update frequency 0, a plain MLP). The periods that are not ``None`` must divide
    one another (e.g. 16, 64, 256). A level only meta-learns its learning rate if it steps inside the training
    sequences: the default suits the default ``seq_len`` of 256 (the slowest level steps at 128)."""
    cms_levels: int = 0
    """How many levels to use: the first ``cms_levels`` entries of ``cms_periods``; 0 means all of them.
    ``cms_levels=1`` is the one-level ablation; ``cms_periods=(None,)`` is the paper's "w/o CMS" (a static MLP)."""
    cms_hidden: int = 0
    """Hidden width of each level's SwiGLU; 0 splits ``mlp_hidden`` evenly over the levels (rounded up to a
    multiple of 8), so that the CMS has the parameter count of the static MLP it replaces."""
    cms_variant: str = "sequential"
    """``sequential`` (NL Eq. 70 + 73: levels chained, every initial state meta-learned by the outer loop),
    ``nested`` (NL Eq. 72: at each boundary of a level the next faster level is re-initialised, and its initial
    state is learned in context by that slower level) or ``independent`` (NL Eq. 74: levels read the same input
    in parallel and their outputs are summed with learnable weights)."""
    cms_lr: float = 0.1
    """Initial inner learning rate eta_l of every level (the step on the mean next-token loss of its period)."""
    cms_learnable_lr: bool = True
    """Meta-learn each level's learning rate (stored as its logarithm); False keeps ``cms_lr`` fixed."""
    cms_second_order: bool = False
    """Differentiate through the inner gradient (create_graph=True: full second-order meta-gradient). The
    default is first order: the inner gradient is a constant for the outer loss, which still reaches the
    initial states and the learning rates through the fast weights."""
    test_time_learning: bool = True
    """False freezes every in-context update (CMS fast weights and self-modifying Titans memories): the model
    then runs with its meta-learned initial states as static weights."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.cms_periods = tuple(self.cms_periods)
        if not self.cms_periods:
            raise HopeError("cms_periods must name at least one level (a period in tokens, or None for static)")
        for period in self.cms_periods:
            if period is not None and (isinstance(period, bool) or not isinstance(period, int) or period < 1):
                raise HopeError(f"cms_periods entries must be positive integers or None, got {period!r}")
        if not 0 <= self.cms_levels <= len(self.cms_periods):
            raise HopeError(f"cms_levels must be in 0..{len(self.cms_periods)} (len(cms_periods)), got {self.cms_levels}")
        active = sorted(p for p in self.level_periods if p is not None)
        if any(slow % fast for fast, slow in zip(active, active[1:])):
            raise HopeError(f"cms_periods must divide one another (e.g. 16, 64, 256), got {self.cms_periods}")
        if self.cms_variant not in CMS_VARIANTS:
            raise HopeError(f"cms_variant must be one of {', '.join(CMS_VARIANTS)}, got {self.cms_variant!r}")
        if self.cms_hidden < 0:
            raise HopeError(f"cms_hidden must be >= 0, got {self.cms_hidden}")
        if not self.cms_lr > 0:
            raise HopeError(f"cms_lr must be > 0, got {self.cms_lr}")

    @property
    def level_periods(self) -> tuple[int | None, ...]:
        """The periods of the levels in use (the first ``cms_levels`` of ``cms_periods``)."""
        return self.cms_periods[: self.cms_levels or len(self.cms_periods)]

    @property
    def level_hidden(self) -> int:
        levels = len(self.level_periods)
        return self.cms_hidden or -(-self.mlp_hidden // levels // 8) * 8

    def build_channel(self, layer: int) -> nn.Module:
        from hope.layers.cms import CMS

        return CMS(self.d_model, self.level_hidden, self.level_periods, variant=self.cms_variant, lr=self.cms_lr,
                   learnable_lr=self.cms_learnable_lr, second_order=self.cms_second_order,
                   test_time_learning=self.test_time_learning)


@register("hope-attention")
@dataclass
class HopeAttentionConfig(CMSConfig, TransformerConfig):
    """Hope-Attention (NL Sec. 8.3): softmax attention as the mixer, a Continuum Memory System as channel memory."""


@register("gated-deltanet")
@dataclass
class GatedDeltaNetConfig(ModelConfig):
    """Gated DeltaNet: the linear DGD memory (gated delta rule) as mixer, a static SwiGLU as channel memory."""

    SIZE_OVERRIDES: ClassVar[dict[str, dict[str, int]]] = {
        "tiny": {"mlp_hidden": 335}, "small": {"mlp_hidden": 888},
        "760m": {"mlp_hidden": 3580}, "1.3b": {"mlp_hidden": 4813},
    }
    """Narrower SwiGLUs that pay for the mixer's extra gate projection: parameters within 1% of Transformer++."""
    conv_width: int = 4
    """Width of the causal depthwise convolution after the q, k, v projections."""
    chunk_size: int = 64
    """Tokens per chunk of the chunk-parallel DGD op (speed only: the result does not depend on it)."""
    retention_init: tuple[float, float] = (0.9, 0.999)
    """Range over the heads of the initial retention ``alpha`` (sigmoid of the gate bias)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_memory_fields(self, ("conv_width", "chunk_size"), ())

    def build_mixer(self, layer: int) -> nn.Module:
        from hope.layers.gated_deltanet import GatedDeltaNet

        return GatedDeltaNet(self.d_model, self.n_heads, conv_width=self.conv_width, chunk_size=self.chunk_size,
                             retention_init=self.retention_init, norm_eps=self.norm_eps)


def _check_memory_read(config: ModelConfig) -> None:
    """``memory_read`` of the deep-memory mixers: one of ``hope.ops.mlp_memory.READS``."""
    from hope.ops.mlp_memory import READS

    if config.memory_read not in READS:
        raise HopeError(f"memory_read must be {' or '.join(map(repr, READS))}, got {config.memory_read!r}")


def _check_memory_fields(config: ModelConfig, positive: tuple[str, ...], gates: tuple[str, ...]) -> None:
    """Shared checks of the recurrent mixers' fields: positive integers, gate values in (0, 1), and
    ``retention_init`` as ``(low, high)`` with ``0 < low <= high < 1``."""
    for name in positive:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HopeError(f"{name} must be a positive integer, got {value!r}")
    for name in gates:
        if not 0 < getattr(config, name) < 1:
            raise HopeError(f"{name} must be in (0, 1), got {getattr(config, name)}")
    config.retention_init = tuple(config.retention_init)
    if len(config.retention_init) != 2 or not 0 < config.retention_init[0] <= config.retention_init[1] < 1:
        raise HopeError(f"retention_init must be (low, high) with 0 < low <= high < 1, got {config.retention_init}")


@register("titans")
@dataclass
class TitansConfig(ModelConfig):
    """Titans (LMM): a deep neural memory trained in context by GD with momentum and decay (Titans Sec. 3) as
    mixer, a static SwiGLU as channel memory."""

    SIZE_OVERRIDES: ClassVar[dict[str, dict[str, int]]] = {
        "tiny": {"mlp_hidden": 291}, "small": {"mlp_hidden": 801},
        "760m": {"mlp_hidden": 3397}, "1.3b": {"mlp_hidden": 4631},
    }
    """Narrower SwiGLUs that pay for the memory and the gate projection: parameters within 1% of Transformer++."""
    memory_expansion: int = 2
    """Hidden width of the memory MLP per head, in multiples of the head dimension."""
    chunk_size: int = 16
    """Tokens per chunk: inside a chunk every gradient uses the chunk-start memory (part of the model)."""
    conv_width: int = 4
    """Width of the causal depthwise convolution after the q, k, v projections."""
    step_init: float = 0.01
    """Initial inner learning rate ``theta`` (sigmoid of its gate bias). With momentum 0.9 the effective step is
    ten times larger; at 0.1 the memory of a 16-dim head overflowed within 200 tokens of random text at
    initialisation (``tests/models/test_long_input_stability.py``). With running reads, 0.02 trained unstably
    on the 299K-token recipe of docs/results.md (val bpb 2.176); 0.01 reached 1.945 and 0.005 1.944."""
    momentum_init: float = 0.9
    """Initial momentum gate ``beta``."""
    retention_init: tuple[float, float] = (0.9, 0.999)
    """Range over the heads of the initial ``1 - forget``."""
    max_grad_norm: float | None = 1.0
    """Clip each token's gradient of each memory layer to this Frobenius norm (``None``: the rule as printed).
    Unclipped, the memory overflowed within 256 tokens at training step 7 of ``benchmarks/compare_archs.py``
    (docs/results.md)."""
    memory_read: str = "running"
    """How a token reads the memory inside its chunk: ``running``, after its own update (the Titans paper's
    ``y_t = M*_t(q_t)``; ``hope.ops.mlp_memory.titans_memory``'s ``read``); ``start``, at the chunk-start weights,
    so the memory does not see the earlier tokens of its own chunk."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_memory_fields(self, ("memory_expansion", "chunk_size", "conv_width"), ("step_init", "momentum_init"))
        _check_memory_read(self)
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise HopeError(f"max_grad_norm must be None or positive, got {self.max_grad_norm}")

    def build_mixer(self, layer: int) -> nn.Module:
        from hope.layers.titans import Titans

        return Titans(self.d_model, self.n_heads, expansion=self.memory_expansion, chunk_size=self.chunk_size,
                      conv_width=self.conv_width, step_init=self.step_init, momentum_init=self.momentum_init,
                      retention_init=self.retention_init, max_grad_norm=self.max_grad_norm, memory_read=self.memory_read,
                      norm_eps=self.norm_eps)


@register("hope")
@dataclass
class HopeConfig(CMSConfig):
    """Hope (NL Sec. 8): self-modifying Titans as mixer (NL Eqs. 83-97), a Continuum Memory System as channel memory.

    The ablations of NL Table 6 are overrides: ``dgd=False``, ``momentum=False``, ``retention=False``,
    ``cms_levels=1``, ``adaptive_q=True``, ``adaptive_k=False`` / ``adaptive_v=False`` (static k / v), and
    ``test_time_learning=False`` freezes every in-context update."""

    SIZE_OVERRIDES: ClassVar[dict[str, dict[str, int]]] = {
        "tiny": {"mlp_hidden": 299}, "small": {"mlp_hidden": 913},
        "760m": {"mlp_hidden": 4157}, "1.3b": {"mlp_hidden": 5760},
    }
    """SwiGLU widths (split over the CMS levels) that put Hope's parameters within 1% of Transformer++."""
    memory: str = "deep"
    """``deep``: every memory is a 2-layer residual MLP per head (NL Eq. 89); ``linear``: a matrix per head (the
    fast path on ``hope.ops.dgd``)."""
    memory_expansion: int = 1
    """Hidden width of each deep memory per head, in multiples of the head dimension."""
    chunk_size: int = 64
    """Chunk of the memories M_k, M_v, M_eta, M_alpha (and M_q): inside a chunk every read, target and gradient
    uses the chunk-start state (NL Eqs. 90-91); part of the model. These memories only shape the keys, values
    and gates, so a long chunk (cheaper: fewer, larger steps) costs the outputs little."""
    memory_chunk_size: int = 16
    """Chunk of the output memory M_mem (NL Sec. 8.2: it has its own)."""
    memory_read: str = "running"
    """How a token reads M_mem inside its chunk: ``running``, after the updates of the chunk's tokens up to itself
    (the dual form of Titans and TTT; ``hope.ops.mlp_memory``'s ``read``); ``start``, at the chunk-start state, so
    the mixer sees the tokens of its own chunk only through the convolution. Measured (docs/results.md): on the
    same 299K tokens ``running`` reaches val bpb 1.943 against 1.970, and (aa)* 100% against 23% at training
    lengths."""
    objective: str = "l2"
    """Inner objective of every memory: ``l2`` (``0.5 ||M(k) - v_hat||^2``, NL Eq. 93 as printed) or ``dot``
    (``-<M(k), v_hat>``; a linear memory is then exactly the gated delta rule). ``l2`` is the default because
    ``dot`` is linear in a deep memory's output: its two layers then push each other's weights up without bound
    (measured: overflow within ~200 tokens at initialisation), while ``l2`` stops where ``M(k)`` meets the target."""
    proximal: bool = True
    """Step ``eta / (1 + eta ||u||^2)`` per layer (the exact solution of NL Eq. 56): every update contracts."""
    curvature: bool = True
    """With ``proximal`` and ``l2``: the proximal step also counts the objective's curvature along each layer's
    output (``hope.ops.mlp_memory``'s ``curvature``). Without it a deep memory's W2 steps overshoot once its W1
    grows (measured: the tiny preset's memories overflowed at training step 20 of ``make demo``)."""
    dgd: bool = True
    """Delta gradient descent (NL Eq. 88); False drops the ``-eta u u^T`` term (the "w/o DGD" ablation)."""
    momentum: bool = True
    """Titans-style momentum over each chunk's update, gated by a read-out of M_eta (paper_spec A2)."""
    retention: bool = True
    """The retention gate alpha from M_alpha; False fixes alpha = 1 and drops M_alpha ("w/o weight decay")."""
    adaptive_k: bool = True
    """Keys from the memory M_k; False: a static projection learned only in pre-training ("static k")."""
    adaptive_v: bool = True
    """Values from the memory M_v; False: a static projection ("static v")."""
    adaptive_q: bool = False
    """Queries from a memory M_q; the default is the paper's static ``q = x W_q`` (paper_spec A1)."""
    conv_width: int = 4
    """Width of the causal depthwise convolution after the k, v, q reads (NL Sec. 8.3)."""
    step_init: float = 0.5
    """Initial inner step ``eta`` (sigmoid of its read-out bias)."""
    momentum_init: float = 0.5
    """Initial momentum gate ``beta``."""
    retention_init: tuple[float, float] = (0.9, 0.999)
    """Range over the heads of the initial retention ``alpha``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.memory not in ("deep", "linear"):
            raise HopeError(f"memory must be 'deep' or 'linear', got {self.memory!r}")
        if self.objective not in ("dot", "l2"):
            raise HopeError(f"objective must be 'dot' or 'l2', got {self.objective!r}")
        _check_memory_read(self)
        _check_memory_fields(self, ("memory_expansion", "chunk_size", "memory_chunk_size", "conv_width"),
                             ("step_init", "momentum_init"))

    def build_mixer(self, layer: int) -> nn.Module:
        from hope.layers.self_modifying_titans import SelfModifyingTitans

        return SelfModifyingTitans(
            self.d_model, self.n_heads, memory=self.memory, expansion=self.memory_expansion,
            chunk_size=self.chunk_size, memory_chunk_size=self.memory_chunk_size, objective=self.objective,
            proximal=self.proximal, curvature=self.curvature, memory_read=self.memory_read, dgd=self.dgd,
            momentum=self.momentum, retention=self.retention,
            adaptive_k=self.adaptive_k, adaptive_v=self.adaptive_v, adaptive_q=self.adaptive_q,
            test_time_learning=self.test_time_learning, conv_width=self.conv_width,
            retention_init=self.retention_init, step_init=self.step_init, momentum_init=self.momentum_init,
            norm_eps=self.norm_eps)


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


LEGACY_VALUES: dict[str, dict[str, Any]] = {
    "hope": {"curvature": False, "memory_read": "start"},
    "titans": {"max_grad_norm": None, "memory_read": "start"},
}
"""Per arch, fields added after checkpoints were first saved whose default changes what the model computes, with
the value that computes what the model did before the field existed. A saved config without such a field gets
this value, not the new default, so an old checkpoint keeps the function it was trained with."""


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Rebuild a config saved with ``to_dict`` (as in a checkpoint's ``config.json``); fields it predates take
    their ``LEGACY_VALUES``."""
    data = dict(data)
    arch = data.pop("arch", None)
    if arch is None:
        raise HopeError("model config has no 'arch' field")
    return make_config(arch, None, **{**LEGACY_VALUES.get(arch, {}), **data})
