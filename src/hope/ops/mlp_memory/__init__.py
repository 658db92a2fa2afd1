"""Deep (MLP) memories trained in context (NL Eqs. 88-93; Titans section 3).

    from hope.ops.mlp_memory import mlp_memory
    o, (W1, W2) = mlp_memory(q, k, v_hat, alpha, eta, W1, W2, *, objective, chunk_size, curvature, read,
                             proximal=True, dgd=True, mode="chunk")

Per batch element and head the memory is ``M(x) = x + W1 silu(W2 x)`` (NL Eq. 89) with
``W2: [E, D]``, ``W1: [D, E]``. Inside a chunk of ``C`` tokens, every layer input ``u_t`` and every
back-propagated error ``delta_t`` uses the weights left by the previous chunk (NL Eqs. 90-91), and so does
every read ``o_t = M(q_t)`` with ``read="start"`` (``"previous"``: the weights after the chunk's tokens before
``t``, NL Eq. 94; ``"running"``: after ``t``'s own update too; ``READS``); then each layer folds the chunk in
with DGD, token after token:

    W <- W (alpha_t I - eta'_t u_t u_t^T) - eta'_t delta_t u_t^T        (NL Eqs. 57, 88)

the linear DGD op (``hope.ops.dgd``) with keys ``u`` and values ``-delta``. Per layer, with
``z = W2 k``, ``h = silu(z)``, ``M(k) = k + W1 h``:

    objective "dot" (loss -<M(k), v_hat>):           g = -v_hat
    objective "l2"  (loss 0.5 ||M(k) - v_hat||^2):   g = k + W1 h - v_hat
    W1: u = h, delta = g;    W2: u = k, delta = silu'(z) * (W1^T g),  silu'(z) = s (1 + z (1 - s)), s = sigmoid(z)

``proximal=True``: ``eta' = eta / (1 + eta ||u||^2)`` per layer and token (NL Eq. 56), so every
step is contractive; ``dgd=False`` drops the ``-eta' u u^T`` term (GD with retention). ``C = 1`` is
exact per-token DGD. For a linear memory ``M(x) = S x`` the "dot" objective gives ``u = k``,
``-delta = v_hat``: exactly the gated delta rule of ``hope.ops.dgd``.

``titans_memory`` is the Titans baseline's rule on the same MLP (momentum and decay, gradients at the
chunk start; :mod:`hope.ops.mlp_memory.titans`). Both have ``naive`` (per-token reference),
``chunk`` and ``recurrent`` modes, plus ``*_prefill`` / ``*_step`` for decoding from a state.
"""

from hope.ops.mlp_memory._checks import READS, TITANS_READS
from hope.ops.mlp_memory.api import (
    mlp_memory,
    mlp_memory_prefill,
    mlp_memory_step,
    titans_memory,
    titans_memory_prefill,
    titans_memory_step,
)
from hope.ops.mlp_memory.recurrent import MLPMemoryState
from hope.ops.mlp_memory.titans import TitansMemoryState

__all__ = [
    "READS",
    "TITANS_READS",
    "MLPMemoryState",
    "TitansMemoryState",
    "mlp_memory",
    "mlp_memory_prefill",
    "mlp_memory_step",
    "titans_memory",
    "titans_memory_prefill",
    "titans_memory_step",
]
