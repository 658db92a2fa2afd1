"""The numbers behind chapters 1-6 of ``hope explore`` (docs/explore.md): one function per figure.

Each function is small enough to redraw a figure in well under a second on one CPU core (float64, tiny
problems) and returns a dict of tensors / lists; the page only draws them.

1. ``backprop_memory``: a small MLP fitting its data by GD; per-input surprise ``||grad_y L||`` (NL Eq. 9).
2. ``nested_optimisation``: an outer parameter stepped every ``C`` steps, an inner memory stepped every step
   and restarted from it (a two-level CMS, NL Eq. 71).
3. ``optimiser_paths`` and ``momentum_contributions``: SGD, momentum and Adam on NL Eq. 53's landscape, and the
   weight of each past gradient in the momentum memory (NL Eqs. 10-13, 33).
4. ``continuum_memory``: tasks in sequence, learned by 1 to k levels stepping at their own periods (NL Eqs. 70-71).
5. ``update_rules``: Hebbian, delta rule and deep DGD memories on one sequence (NL Eqs. 57, 64, 65, 88-89).
6. ``needle_retrieval``: a needle recalled after a haystack by CMS-like levels of linear memories (NL Eqs. 71, 88).
"""

from __future__ import annotations

import math

import torch

from hope.ops.dgd import dgd, dgd_step
from hope.ops.mlp_memory import MLPMemoryState, mlp_memory_step
from hope.optim import DeltaMomentum

DTYPE = torch.float64


# --- 1. Backpropagation as an associative memory --------------------------------------------------

def backprop_memory(lr: float, steps: int, n_inputs: int = 24, hidden: int = 16, seed: int = 0) -> dict:
    """Full-batch GD on a 2-layer tanh MLP fitting ``t = sin(x A)``; per step the mean loss and each input's
    surprise ``||dl_i / dy_i||`` (the local error signal that backpropagation writes into the weights, NL Eq. 9).

    Returns ``loss: [steps + 1]`` (mean of ``l_i = 0.5 ||y_i - t_i||^2``) and ``surprise: [steps + 1, n_inputs]``;
    entry ``s`` is measured before step ``s + 1``. A diverged run stops early (shorter tensors).
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_inputs, 4, generator=gen, dtype=DTYPE)
    target = torch.sin(x @ torch.randn(4, 2, generator=gen, dtype=DTYPE))
    w1 = (torch.randn(hidden, 4, generator=gen, dtype=DTYPE) / 2).requires_grad_()
    w2 = (torch.randn(2, hidden, generator=gen, dtype=DTYPE) / hidden**0.5).requires_grad_()
    losses, surprises = [], []
    for _ in range(steps + 1):
        y = torch.tanh(x @ w1.T) @ w2.T
        per_input = 0.5 * (y - target).pow(2).sum(1)
        grad_y, g1, g2 = torch.autograd.grad(per_input.mean(), (y, w1, w2))
        losses.append(per_input.mean().item())
        surprises.append(grad_y.norm(dim=1) * n_inputs)  # d l_i / d y_i (the mean divides by n_inputs)
        if not math.isfinite(losses[-1]) or losses[-1] > 1e6:
            break
        with torch.no_grad():
            w1 -= lr * g1
            w2 -= lr * g2
    return {"loss": torch.tensor(losses), "surprise": torch.stack(surprises)}


# --- 2. Two-level nested optimisation -------------------------------------------------------------

def nested_optimisation(outer_period: int, inner_lr: float, steps: int = 120, outer_lr: float = 0.05,
                        seed: int = 0) -> dict:
    """A stream ``y_t = a_t x_t`` whose slope ``a_t`` drifts; two levels fit it (NL Eq. 71, two levels).

    The inner memory ``w`` takes one GD step on ``0.5 (w x_t - y_t)^2`` per token. The outer parameter ``theta``
    steps only every ``outer_period`` tokens, by the gradients of its period's tokens summed at ``theta``; then
    ``w`` restarts from it. Returns per token ``theta``, ``inner`` (``w`` after its step), ``target`` (``a_t``),
    ``loss`` (inner loss before the step) and ``outer_steps`` (tokens at which ``theta`` stepped).
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, generator=gen, dtype=DTYPE)
    a = 1.0 + torch.sin(torch.arange(steps, dtype=DTYPE) * (2 * math.pi / 60))
    y = a * x
    theta, w, accumulated = 0.0, 0.0, 0.0
    thetas, inner, losses, outer_steps = [], [], [], []
    for t in range(steps):
        if t and t % outer_period == 0:
            theta -= outer_lr * accumulated
            w, accumulated = theta, 0.0
            outer_steps.append(t)
        xt, yt = x[t].item(), y[t].item()
        accumulated += (theta * xt - yt) * xt
        losses.append(0.5 * (w * xt - yt) ** 2)
        w -= inner_lr * (w * xt - yt) * xt
        thetas.append(theta)
        inner.append(w)
    as_tensor = lambda values: torch.tensor(values, dtype=DTYPE)  # noqa: E731
    return {"theta": as_tensor(thetas), "inner": as_tensor(inner), "target": a, "loss": as_tensor(losses),
            "outer_steps": outer_steps}


# --- 3. Optimisers are memories -------------------------------------------------------------------

LANDSCAPE = (5.0, 1.0, 3.0)
"""``k, a, omega`` of NL Eq. 53's landscape (the values of ``benchmarks/toy_landscape.py``)."""
START = (-3.5, 2.0)


def landscape(w: torch.Tensor, k: float = LANDSCAPE[0], a: float = LANDSCAPE[1], omega: float = LANDSCAPE[2]) -> torch.Tensor:
    """NL Eq. 53: ``psi(r, theta) = r^2 + k (r - theta + a sin(omega r))^2`` at ``w = [..., (r, theta)]``."""
    r, theta = w[..., 0], w[..., 1]
    return r**2 + k * (r - theta + a * torch.sin(omega * r)) ** 2


def optimiser_paths(beta: float, steps: int = 150, lr: float = 0.004, adam_lr: float = 0.05) -> dict[str, dict]:
    """Paths of SGD, momentum ``beta`` (``hope.optim.DeltaMomentum`` with ``delta=0``) and Adam (``betas=(beta,
    0.999)``) from ``START`` on ``landscape``. Per optimiser: ``points: [n, 2]`` and ``loss: [n]``; a run that
    diverges stops there (``diverged=True``)."""
    makers = {
        "SGD": lambda p: DeltaMomentum([p], lr=lr, momentum=0.0, delta=0.0),
        f"momentum {beta:g}": lambda p: DeltaMomentum([p], lr=lr, momentum=beta, delta=0.0),
        f"Adam ({beta:g}, 0.999)": lambda p: torch.optim.Adam([p], lr=adam_lr, betas=(beta, 0.999)),
    }
    paths = {}
    for name, make in makers.items():
        w = torch.nn.Parameter(torch.tensor(START, dtype=DTYPE))
        opt = make(w)
        points, losses, diverged = [], [], False
        for _ in range(steps):
            opt.zero_grad()
            loss = landscape(w)
            points.append(w.detach().clone())
            losses.append(loss.item())
            if not math.isfinite(losses[-1]) or losses[-1] > 1e4:
                diverged = True
                break
            loss.backward()
            opt.step()
        paths[name] = {"points": torch.stack(points), "loss": torch.tensor(losses), "diverged": diverged}
    return paths


def gradients_for_share(beta: float, share: float) -> int:
    """How many of the latest gradients make up ``share`` of an EMA momentum: ``ceil(log(1 - share) / log(beta))``."""
    if beta <= 0:
        return 1
    return max(1, math.ceil(math.log(1 - share) / math.log(beta) - 1e-9))


def momentum_contributions(beta: float) -> dict:
    """The weight of the gradient of age ``k`` in the momentum memory ``m_t = beta m_{t-1} + (1 - beta) g_t``
    (NL Eqs. 10-11, 33), measured by running ``hope.optim.DeltaMomentum`` on one-hot gradients: gradient ``i``
    is the ``i``-th basis vector, so the buffer's entry ``i`` is its weight. The closed form is
    ``(1 - beta) beta^k``. Returns ``weights: [horizon]`` (age 0 first) and the 50% and 99% thresholds."""
    n99 = gradients_for_share(beta, 0.99)
    horizon = max(30, int(1.2 * n99) + 1)
    p = torch.nn.Parameter(torch.zeros(horizon, dtype=DTYPE))
    opt = DeltaMomentum([p], lr=1 - beta, momentum=beta, delta=0.0)
    for i in range(horizon):
        p.grad = torch.zeros_like(p)
        p.grad[i] = 1.0
        opt.step()
    buffer = -opt.state[p]["momentum_buffer"]
    return {"weights": buffer.flip(0), "n50": gradients_for_share(beta, 0.5), "n99": n99}


# --- 4. Continuum memory --------------------------------------------------------------------------

def level_periods(levels: int, factor: int = 4) -> list[int]:
    """Periods ``1, factor, factor^2, ...`` of ``levels`` CMS levels (NL Eq. 71's chunk sizes)."""
    return [factor**level for level in range(levels)]


def continuum_memory(levels: int, forgetting: float, n_tasks: int = 4, task_steps: int = 80, lr: float = 0.5,
                     factor: int = 4, seed: int = 0) -> dict:
    """Tasks arrive in sequence; a sum of ``levels`` linear memories ``y = sum_l W_l x`` learns them (NL Eqs. 70-71).

    Task ``j`` maps inputs in its own 2-D subspace by a random target ``w_j``. Level ``l`` (period ``P_l``) sums
    the gradients of its period's tokens and, at its boundary, steps ``W_l <- (1 - forgetting) W_l - lr/P_l sum g``:
    it forgets ``forgetting`` per update, so a slow level forgets less per token. Returns ``loss: [steps, n_tasks]``
    (each task's expected loss ``0.5 ||P_j (W - w_j)||^2`` after each token), ``norms: [steps, levels]``,
    ``task_starts`` and ``periods``.
    """
    gen = torch.Generator().manual_seed(seed)
    dim = 2 * n_tasks
    targets = torch.zeros(n_tasks, dim, dtype=DTYPE)
    for j in range(n_tasks):
        targets[j, 2 * j: 2 * j + 2] = torch.randn(2, generator=gen, dtype=DTYPE)
    periods = level_periods(levels, factor)
    weights = torch.zeros(levels, dim, dtype=DTYPE)
    grads = torch.zeros(levels, dim, dtype=DTYPE)
    losses, norms = [], []
    for t in range(n_tasks * task_steps):
        j = t // task_steps
        x = torch.zeros(dim, dtype=DTYPE)
        x[2 * j: 2 * j + 2] = torch.randn(2, generator=gen, dtype=DTYPE)
        error = weights.sum(0) @ x - targets[j] @ x
        grads += error * x
        for level, period in enumerate(periods):
            if (t + 1) % period == 0:
                weights[level] = (1 - forgetting) * weights[level] - lr / period * grads[level]
                grads[level] = 0
        gap = (weights.sum(0) - targets).view(n_tasks, n_tasks, 2)
        losses.append(0.5 * gap.diagonal(dim1=0, dim2=1).pow(2).sum(0))
        norms.append(weights.norm(dim=1))
    return {"loss": torch.stack(losses), "norms": torch.stack(norms),
            "task_starts": [j * task_steps for j in range(n_tasks)], "periods": periods}


# --- 5. Update rules ------------------------------------------------------------------------------

def key_value_sequence(dim: int, n_pairs: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_pairs`` random unit keys and values in ``R^dim`` (``[n_pairs, dim]`` each)."""
    gen = torch.Generator().manual_seed(seed)
    keys = torch.nn.functional.normalize(torch.randn(n_pairs, dim, generator=gen, dtype=DTYPE), dim=1)
    values = torch.nn.functional.normalize(torch.randn(n_pairs, dim, generator=gen, dtype=DTYPE), dim=1)
    return keys, values


def recall_error(read: torch.Tensor, values: torch.Tensor) -> float:
    """Mean over pairs of ``||read_i - v_i||^2``."""
    return (read - values).pow(2).sum(1).mean().item()


def linear_recall(keys: torch.Tensor, values: torch.Tensor, lr: float, rule: str) -> torch.Tensor:
    """Recall error over the pairs seen so far after each pair, for a matrix memory written by ``hope.ops.dgd``'s
    ``dgd_step`` (``rule="gd"``: Hebbian ``S += lr v k^T``, NL Eq. 64; ``"dgd"``: delta rule, NL Eqs. 57, 65)."""
    n, dim = keys.shape
    state = keys.new_zeros(1, 1, dim, dim)
    gate = keys.new_ones(1, 1)
    errors = []
    for t in range(n):
        k, v = keys[t].view(1, 1, dim), values[t].view(1, 1, dim)
        _, state = dgd_step(state, k, k, v, gate, gate * lr, rule)
        errors.append(recall_error(keys[: t + 1] @ state[0, 0].T, values[: t + 1]))
    return torch.tensor(errors)


def deep_recall(keys: torch.Tensor, values: torch.Tensor, lr: float, seed: int = 0) -> torch.Tensor:
    """The same for Hope's deep memory ``M(x) = x + W1 silu(W2 x)`` (NL Eq. 89), written token by token by DGD
    on ``0.5 ||M(k) - v||^2`` with proximal steps (``hope.ops.mlp_memory.mlp_memory_step``, NL Eqs. 56, 88)."""
    n, dim = keys.shape
    gen = torch.Generator().manual_seed(seed)
    w1 = torch.zeros(1, 1, dim, dim, dtype=DTYPE)
    w2 = torch.randn(1, 1, dim, dim, generator=gen, dtype=DTYPE) / dim**0.5
    state = MLPMemoryState.start(w1, w2)
    gate = keys.new_ones(1, 1)
    errors = []
    for t in range(n):
        k, v = keys[t].view(1, 1, dim), values[t].view(1, 1, dim)
        _, state = mlp_memory_step(state, k, k, v, gate, gate * lr, objective="l2", chunk_size=1, curvature=True,
                                   read="start")
        w1, w2 = (w[0, 0] for w in state.weights)
        seen = keys[: t + 1]
        errors.append(recall_error(seen + torch.nn.functional.silu(seen @ w2.T) @ w1.T, values[: t + 1]))
    return torch.tensor(errors)


def update_rules(dim: int, lr: float, n_pairs: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """Recall error over time of Hebbian, delta-rule and deep DGD memories of size ``dim`` on one sequence of
    ``n_pairs`` key-value pairs (chapter 5)."""
    keys, values = key_value_sequence(dim, n_pairs, seed)
    return {"Hebbian (dgd rule='gd')": linear_recall(keys, values, lr, "gd"),
            "delta rule (dgd rule='dgd')": linear_recall(keys, values, lr, "dgd"),
            "deep memory, DGD (mlp_memory)": deep_recall(keys, values, lr, seed)}


# --- 6. Hope's levels and retrieval ---------------------------------------------------------------

CONTEXTS = (4, 8, 16, 32, 64, 128, 256, 512)


def needle_retrieval(levels: int, slowest_period: int, retention: float = 0.95, dim: int = 16, n_filler: int = 8,
                     trials: int = 32, contexts: tuple[int, ...] = CONTEXTS, seed: int = 0) -> dict:
    """Retrieval accuracy of a needle against context length, for CMS-like levels of linear memories.

    A needle pair ``(k*, v*)`` comes first, then a haystack drawn from ``n_filler`` filler pairs. Level ``l`` has
    period ``P_l`` (powers of two from 1 to ``slowest_period``, evenly spaced in log). At each boundary it folds its
    chunk token by token with the delta rule (``hope.ops.dgd.dgd``, ``eta = 1``) after one retention step
    ``S <- retention S`` (NL Eqs. 71, 88): a level forgets once per update, so slow levels forget less per token,
    and a level has read only the tokens up to its last boundary. After ``L`` tokens a read ``S k*`` is correct if
    ``v*`` is the closest (cosine) of the needle and filler values. Returns ``accuracy`` (the levels' reads summed)
    and ``level_accuracy`` (each level alone) per context length, ``contexts`` and ``periods``.
    """
    gen = torch.Generator().manual_seed(seed)
    top = int(math.log2(slowest_period))
    exponents = [0] if levels == 1 else [round(top * i / (levels - 1)) for i in range(levels)]
    periods = sorted({2**e for e in exponents})
    length = max(contexts)
    unit = lambda x: torch.nn.functional.normalize(x, dim=-1)  # noqa: E731
    pair_keys = unit(torch.randn(trials, n_filler + 1, dim, generator=gen, dtype=DTYPE))
    pair_values = unit(torch.randn(trials, n_filler + 1, dim, generator=gen, dtype=DTYPE))
    order = torch.cat([torch.zeros(trials, 1, dtype=torch.long),
                       torch.randint(1, n_filler + 1, (trials, length - 1), generator=gen)], dim=1)
    keys = pair_keys.gather(1, order[..., None].expand(-1, -1, dim))[:, :, None]
    values = pair_values.gather(1, order[..., None].expand(-1, -1, dim))[:, :, None]
    probe = pair_keys[:, 0]
    reads = {}
    for period in periods:
        alpha = torch.ones(trials, length, 1, dtype=DTYPE)
        alpha[:, ::period] = retention
        state, folded, level_reads = torch.zeros(trials, 1, dim, dim, dtype=DTYPE), 0, []
        for context in contexts:
            until = context // period * period
            if until > folded:
                part = slice(folded, until)
                _, state = dgd(keys[:, part], keys[:, part], values[:, part], alpha[:, part],
                               torch.ones_like(alpha[:, part]), initial_state=state, output_final_state=True)
                folded = until
            level_reads.append(state[:, 0] @ probe[..., None])
        reads[period] = torch.cat(level_reads, dim=-1)  # [trials, dim, contexts]

    def accuracy(read: torch.Tensor) -> torch.Tensor:
        scores = unit(pair_values) @ read  # [trials, pairs, contexts]
        return (scores[:, 0] > scores[:, 1:].amax(1)).double().mean(0)

    return {"accuracy": accuracy(sum(reads.values())), "contexts": list(contexts), "periods": periods,
            "level_accuracy": {period: accuracy(read) for period, read in reads.items()}}
