"""The configs of Hope (NL Sec. 8) and Hope-Attention (NL Sec. 8.3): a Continuum Memory System as channel
memory, under self-modifying Titans or softmax attention."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from hope.errors import HopeError
from hope.models.config import ModelConfig, check_memory_fields, check_memory_read, register
from hope.models.hope.cms import CMS
from hope.models.hope.self_modifying_titans import SelfModifyingTitans
from hope.models.transformer import TransformerConfig
from hope.ops.mlp_memory import READS

CMS_VARIANTS = ("sequential", "nested", "independent")
MEMORY_INPUTS = ("full", "full-separate", "head")


@dataclass
class CMSConfig(ModelConfig):
    """Mixin: the channel memory is a Continuum Memory System (NL Eqs. 70-74; docs/cms.md).

    Subclassed by ``HopeConfig`` (self-modifying Titans + CMS) and ``HopeAttentionConfig`` (attention + CMS).
    """

    cms_periods: tuple[int | None, ...] = (512, 2048, 8192)
    """Update period of each level in tokens (the chunk size C of NL Eq. 71; labels such as "512" and "2K" in
    the paper are periods), in chain order (NL Eq. 70: the first level reads the input first).
    ``None`` is a static level (update frequency 0, a plain MLP). The periods that are not ``None`` must divide
    one another (e.g. 16, 64, 256). The default is the paper's (NL Fig. 7 finds 2K the sweet spot; docs/cms.md,
    "Periods"): a level steps, and meta-learns its learning rate, only where training reads past its period,
    i.e. in streamed training whose windows divide the periods (``window=True``, ``hope.models.hope.window``)."""
    cms_levels: int = 0
    """How many levels to use: the first ``cms_levels`` entries of ``cms_periods``; 0 means all of them.
    ``cms_levels=1`` is the one-level ablation; ``cms_periods=(None,)`` is the paper's "w/o CMS" (a static MLP)."""
    cms_hidden: int = 0
    """Hidden width of each level's SwiGLU; 0 splits ``mlp_hidden`` evenly over the levels (rounded up to a
    multiple of 8), so that the CMS has the parameter count of the static MLP it replaces (Hope-3's levels are then
    a third as wide as Hope-1's; ``cms_hidden=mlp_hidden`` gives every level the full width: docs/results.md,
    "Ablations of Hope")."""
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
    cms_grad_window: int | None = 256
    """The in-context step (prefill, generation, ``model(ids, state)``) differentiates each position's loss back to
    the start of its window of ``cms_grad_window`` tokens (windows start at multiples of it) and no further: the
    truncation of streamed training, whose window-aligned steps take each window's gradient with the state cut at
    the window's start. With the window of streamed training (``--seq-len``, 256 by default) the in-context steps
    equal the steps the model was trained with; ``None`` differentiates through the whole period, where the
    gradients through the self-modifying memories of trained models grow by orders of magnitude (docs/cms.md,
    "Truncated in-context steps"). Only the inner step is truncated: outputs and outer gradients are unchanged."""
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
        if self.cms_grad_window is not None and (isinstance(self.cms_grad_window, bool)
                                                 or not isinstance(self.cms_grad_window, int)
                                                 or self.cms_grad_window < 1):
            raise HopeError(f"cms_grad_window must be a positive integer or None, got {self.cms_grad_window!r}")
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
        return CMS(self)


@register("hope-attention")
@dataclass
class HopeAttentionConfig(CMSConfig, TransformerConfig):
    """Hope-Attention (NL Sec. 8.3): softmax attention as the mixer, a Continuum Memory System as channel memory."""


@register("hope")
@dataclass
class HopeConfig(CMSConfig):
    """Hope (NL Sec. 8): self-modifying Titans as mixer (NL Eqs. 83-97), a Continuum Memory System as channel memory.

    The ablations of NL Table 6 are overrides: ``dgd=False``, ``momentum=False``, ``retention=False``,
    ``cms_levels=1``, ``adaptive_q=True``, ``adaptive_k=False`` / ``adaptive_v=False`` (static k / v), and
    ``test_time_learning=False`` freezes every in-context update; ``self_targets=False`` drops NL Eq. 84's
    self-generated targets."""

    SIZE_OVERRIDES: ClassVar[dict[str, dict[str, int]]] = {
        "tiny": {"mlp_hidden": 264}, "small": {"mlp_hidden": 816},
        "760m": {"mlp_hidden": 3672}, "1.3b": {"mlp_hidden": 5064},
    }
    """SwiGLU widths (split over the CMS levels) that put the default Hope's parameters within 1% of
    Transformer++ (with ``memory_input="full"``; docs/results.md, "Ablations of Hope", has the counts)."""
    memory_input: str = "full"
    """What the memories M_k, M_v, M_eta, M_alpha (and M_q) read. ``full``: all of ``x_t``, as NL Eqs. 83-85
    write ``k_t = M_k(x_t)``: head ``h``'s memories read head ``h``'s slice of one learned full-width map
    ``x_t W_in`` (``d x d``, shared by the memories). ``full-separate``: one such map per memory (``n d x d``;
    each is the static projection that the "static k / v" ablations keep). ``head``: head ``h``'s memories read
    only head ``h``'s slice of ``x_t`` (1/H of the input; the model before this field, kept for the ablation
    and old checkpoints). Why ``full``: docs/results.md, "Ablations of Hope"."""
    memory: str = "deep"
    """``deep``: every memory is a 2-layer residual MLP per head (NL Eq. 89); ``linear``: a matrix per head (the
    fast path on ``hope.ops.dgd``). The paper's deep form is the default; at a 2-layer width-64 scale the linear form
    learned MQAR's pairs far faster (docs/results.md, "Why Hope stores less")."""
    memory_expansion: int = 1
    """Hidden width of each deep memory per head, in multiples of the head dimension."""
    memory_input_std: float | None = None
    """Standard deviation of a deep memory's initial input layer ``W2`` (its meta-learned initial state starts
    there); ``None``: ``1 / sqrt(head_dim)``, which gives the unit-norm keys hidden pre-activations of about
    ``1 / sqrt(head_dim)``. Larger values make each in-context step write more of a token's association
    (``benchmarks/memory_capacity.py``; docs/results.md, "Why a deep memory learns the pairs slowly")."""
    chunk_size: int = 64
    """Chunk of the memories M_k, M_v, M_eta, M_alpha (and M_q): inside a chunk every read, target and gradient
    uses the chunk-start state (NL Eqs. 90-91); part of the model. These memories only shape the keys, values
    and gates, so a long chunk (cheaper: fewer, larger steps) costs the outputs little."""
    memory_chunk_size: int = 16
    """Chunk of the output memory M_mem (NL Sec. 8.2: it has its own)."""
    memory_read: str = "previous"
    """How a token reads M_mem inside its chunk (``hope.ops.mlp_memory``'s ``read``; docs/ops_mlp_memory.md):
    ``previous``, after the updates of the chunk's tokens before it, ``o_t = M_{mem,t-1}(q_t)`` as NL Eq. 94
    writes it; ``running``, after its own update too (the dual form of Titans and TTT); ``start``, at the
    chunk-start state (NL Eq. 90), so the mixer sees the tokens of its own chunk only through the convolution.
    Why ``previous``: docs/results.md, "Ablations of Hope"."""
    objective: str = "l2"
    """Inner objective of every memory: ``l2`` (``0.5 ||M(k) - v_hat||^2``, NL Eq. 93 as printed) or ``dot``
    (``-<M(k), v_hat>``; a linear memory is then exactly the gated delta rule). ``dot`` is linear in a deep
    memory's output, so its two layers push each other's weights up without bound, while ``l2`` stops where
    ``M(k)`` meets the target (docs/results.md, "Why the defaults")."""
    proximal: bool = True
    """Step ``eta / (1 + eta ||u||^2)`` per layer (the exact solution of NL Eq. 56): every update contracts."""
    curvature: bool = True
    """With ``proximal`` and ``l2``: the proximal step also counts the objective's curvature along each layer's
    output (``hope.ops.mlp_memory``'s ``curvature``), so a deep memory's W2 steps do not overshoot once its W1
    grows (docs/results.md, "Why the defaults")."""
    normalize_v: bool = True
    """L2-normalise the values ``v`` (not in the paper, which normalises ``q`` and ``k``): the targets
    ``v_hat = M(v)`` feed a memory's output back into its update, so a value norm above one multiplies the
    memory's gain at every chunk (docs/paper_notes.md, "Where the code departs from the paper")."""
    sigmoid_gates: bool = True
    """Read ``eta``, ``alpha`` (and the momentum gate ``beta``) out of their memories through a sigmoid, so they
    stay in (0, 1); False: the plain linear read-out, as NL Eqs. 85-86 write ``eta_t = M_eta(x_t)`` (biases then
    start at the initial values themselves)."""
    dgd: bool = True
    """Delta gradient descent (NL Eq. 88); False drops the ``-eta u u^T`` term (the "w/o DGD" ablation)."""
    momentum: bool = True
    """Titans-style momentum over each chunk's update, gated by a read-out of M_eta ("w/o momentum" in NL Table 6)."""
    retention: bool = True
    """The retention gate alpha from M_alpha; False fixes alpha = 1 and drops M_alpha ("w/o weight decay")."""
    adaptive_k: bool = True
    """Keys from the memory M_k; False: a static projection learned only in pre-training ("static k")."""
    adaptive_v: bool = True
    """Values from the memory M_v; False: a static projection ("static v")."""
    adaptive_q: bool = False
    """Queries from a memory M_q; the default is the paper's static ``q = x W_q`` (NL Eq. 83)."""
    self_targets: bool = True
    """Every memory learns its own target ``v_hat = M(v)`` (NL Eq. 84); False: the value ``v`` itself, as Titans and
    the gated delta rule write it (the "w/o self-generated targets" ablation; with ``memory="linear"``,
    ``objective="dot"``, static k / v and ``memory_read="running"``, ``M_mem`` is then the gated delta rule)."""
    conv_width: int = 4
    """Width of the causal depthwise convolution after the k, v, q reads (NL Sec. 8.3)."""
    step_init: float = 0.5
    """Initial inner step ``eta`` (sigmoid of its read-out bias)."""
    momentum_init: float = 0.5
    """Initial momentum gate ``beta``."""
    retention_init: tuple[float, float] = (0.9, 0.999)
    """Range over the heads of the initial retention ``alpha``."""
    memory_max_norm: float | None = 4.0
    """Bound on every in-context memory (not in the paper): after each chunk's fold (and momentum), each head's
    weight matrix ``W [r, c]`` is projected onto the Frobenius ball of radius ``memory_max_norm * sqrt(min(r, c))``
    (a root-mean-square singular value of at most ``memory_max_norm``). Retention, the proximal step and the
    normalised keys bound each token's update, not their sum: carried across whole documents, the memories with
    self-generated targets and chunk momentum grew without bound (|W| 1e7 after 6K tokens, NaN in a streamed run;
    docs/paper_notes.md, "Where the code departs from the paper"). ``None``: unbounded, as the paper writes it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.memory not in ("deep", "linear"):
            raise HopeError(f"memory must be 'deep' or 'linear', got {self.memory!r}")
        if self.memory_input not in MEMORY_INPUTS:
            raise HopeError(f"memory_input must be one of {', '.join(MEMORY_INPUTS)}, got {self.memory_input!r}")
        if self.objective not in ("dot", "l2"):
            raise HopeError(f"objective must be 'dot' or 'l2', got {self.objective!r}")
        check_memory_read(self, READS)
        if self.memory_max_norm is not None and not (isinstance(self.memory_max_norm, (int, float))
                                                     and not isinstance(self.memory_max_norm, bool)
                                                     and 0 < self.memory_max_norm < float("inf")):
            raise HopeError(f"memory_max_norm must be a positive number or None, got {self.memory_max_norm!r}")
        if self.memory_input_std is not None and not (isinstance(self.memory_input_std, (int, float))
                                                      and not isinstance(self.memory_input_std, bool)
                                                      and 0 < self.memory_input_std < float("inf")):
            raise HopeError(f"memory_input_std must be a positive number or None, got {self.memory_input_std!r}")
        check_memory_fields(self, ("memory_expansion", "chunk_size", "memory_chunk_size", "conv_width"),
                             ("step_init", "momentum_init"))

    def build_mixer(self, layer: int) -> nn.Module:
        return SelfModifyingTitans(self)
