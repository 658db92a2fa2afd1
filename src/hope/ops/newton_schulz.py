"""Newton-Schulz orthogonalisation: the inner optimiser of Muon and M3 (NL Eqs. 42-44, Algorithm 1).

``newton_schulz(G)`` returns an approximation of the polar factor ``U V^T`` of ``G = U S V^T``
(all singular values pushed towards 1) with only matrix products. Each step is the odd polynomial

    A = X X^T,    X <- a X + (b A + c A^2) X

after one Frobenius normalisation (so that every singular value is at most 1). Two coefficient sets:

- ``CUBIC = (1.5, -0.5, 0)``: the classic iteration ``X <- 3/2 X - 1/2 X X^T X``. It is one gradient
  step, of size 1/4, on the orthogonality objective of NL Eqs. 43-44 (``hope.optim.memory``), and
  converges to ``U V^T``.
- ``QUINTIC = (3.4445, -4.7750, 2.0315)``: Muon's coefficients (K. Jordan), which maximise the slope
  at zero; five steps leave singular values in roughly [0.7, 1.2] instead of converging to 1.
"""

from __future__ import annotations

import torch

CUBIC: tuple[float, float, float] = (1.5, -0.5, 0.0)
QUINTIC: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)


def newton_schulz(matrix: torch.Tensor, steps: int = 5, coefficients: tuple[float, float, float] = QUINTIC,
                  eps: float = 1e-7, dtype: torch.dtype | None = None, normalize: bool = True) -> torch.Tensor:
    """Orthogonalise ``matrix`` ``[..., m, n]`` (each trailing matrix on its own) by Newton-Schulz.

    ``dtype``: the precision of the iteration (Muon uses ``torch.bfloat16``; ``None`` keeps the input's).
    ``normalize``: divide each matrix by its Frobenius norm (clamped below at ``eps``) first.
    The result has the shape and dtype of ``matrix``. Wide and tall matrices take the same path
    (tall ones are transposed so that the Gram matrix ``X X^T`` is the smaller one).
    """
    if matrix.ndim < 2:
        raise ValueError(f"matrix must have at least 2 dims [..., m, n], got shape {list(matrix.shape)}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if len(coefficients) != 3:
        raise ValueError(f"coefficients must be three numbers (a, b, c), got {coefficients}")
    a, b, c = coefficients
    batch_shape, (rows, cols) = matrix.shape[:-2], matrix.shape[-2:]
    x = matrix.reshape(-1, rows, cols).to(dtype or matrix.dtype)
    tall = rows > cols
    if tall:
        x = x.mT
    if normalize:
        x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        if c == 0:
            poly = b * gram
        else:
            poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, poly, x, beta=a)
    if tall:
        x = x.mT
    return x.reshape(*batch_shape, rows, cols).to(matrix.dtype)
