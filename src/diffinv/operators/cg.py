"""The one conjugate-gradient loop of the package.

Every iterative solve of a symmetric positive (semi-)definite system goes through :func:`cg`: the
default pseudo-inverse of :class:`~diffinv.operators.base.LinearOperator` (normal equations
``A^T A x = A^T y``), the damped pseudo-inverse ``A^T (A A^T + gamma I)^{-1} r`` (in measurement
space by default, in image space for CT), the ``cg-tikhonov`` solver and the damped least squares
of the tiling's soft known-region windows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


def cg(
    apply: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    iters: int | Iterable[int],
    tol: float,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Solve ``M x = b`` per sample by conjugate gradients from ``x = 0``; ``apply(p) = M p``.

    ``b`` is batched over dim 0 and every sample has its own step sizes. Stops after ``iters``
    iterations (an int, or an iterable of step numbers such as a progress bar over
    ``range(iters)``) or as soon as every sample's residual satisfies
    ``||r||^2 <= tol^2 ||b||^2``, with ``tol`` floored at ``8 eps`` of the dtype (about 1e-6 in
    float32): below that the recursively updated residual is rounding error, which for a singular
    ``M`` leaks into its null space, where ``p^T M p`` is rounding-small and the next step explodes
    (measured: colorize, float32, tol 1e-12: 1 iteration reaches 8e-8, 5 iterations a 3e8 error).
    A direction with ``p^T M p <= 0`` gets step 0.
    ``callback(k, x)`` is called after each update, before the stopping test.
    Started from 0, the iterates of a singular ``M = A^T A`` stay in ``range(A^T)`` and converge
    to the minimum-norm least-squares solution.
    """
    steps = range(iters) if isinstance(iters, int) else iters
    dims = tuple(range(1, b.dim()))
    tiny = torch.finfo(b.dtype).tiny
    tol = max(float(tol), 8 * torch.finfo(b.dtype).eps)
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = (r * r).sum(dims, keepdim=True)
    rs0 = rs.clamp_min(tiny)
    for k in steps:
        Ap = apply(p)
        pAp = (p * Ap).sum(dims, keepdim=True)
        alpha = torch.where(pAp > 0, rs / pAp.clamp_min(tiny), torch.zeros_like(rs))
        x = x + alpha * p
        r = r - alpha * Ap
        rs_new = (r * r).sum(dims, keepdim=True)
        if callback is not None:
            callback(k, x)
        if bool((rs_new <= tol**2 * rs0).all()):
            break
        p = r + (rs_new / rs.clamp_min(tiny)) * p
        rs = rs_new
    return x
