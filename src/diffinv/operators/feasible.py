"""Projection onto the images that a noiseless measurement allows: ``{x : A x = y, lo <= x <= hi}``.

A noiseless measurement ``y = A x*`` of an image with values in ``[lo, hi]`` puts ``x*`` in

    C = C_y ∩ C_box,    C_y = {x : A x = y} (affine),    C_box = [lo, hi]^n (a box),

a closed convex set. So does every image the posterior ``p(x | y)`` can produce, and hence its
mean ``E[x | y]`` (a convex set holds the means of the distributions it supports). A restoration
``z`` that leaves C (a Monte-Carlo posterior mean, a regularised reconstruction, an FBP) moves
towards all of them under projections onto convex sets (POCS; Bregman 1965, Gubin, Polyak and
Raik 1967; for image restoration Youla and Webb 1982):

    x_0     = P_box(z)
    x_{k+1} = P_box(P_y(x_k)),   P_y(x) = x + A^+ (y - A x),   P_box(x) = min(max(x, lo), hi)   (1)

``P_y`` is the orthogonal projection onto C_y when ``A^+`` is the Moore-Penrose pseudo-inverse
(:meth:`LinearOperator.project`), ``P_box`` the one onto the box. The projection onto a closed
convex set containing ``c`` is non-expansive towards ``c``: ``||P(x) - c|| <= ||x - c||``, because
``x - P(x)`` makes an obtuse angle with ``c - P(x)``. Every iterate of (1) is therefore at least as
close as ``z`` to every point of C at once, the true image and the exact posterior mean among
them, and more iterations never move away from them (Fejér monotonicity); the iterates converge to
a point of C (not in general the nearest one to ``z``, which Dykstra's variant would give, without
that guarantee for its intermediate iterates). Convergence is linear with a rate set by the angle
between C_y and the faces of the box, slow for CT with few views: on 64x64 chest slices at 8 / 18
views the relative residual ``||A x_k - y|| / ||y||`` falls from 4e-3 to ~3e-4 in 1000 iterations,
each costing one ``A`` and one ``A^+`` (0.1-0.4 ms a 64x64 slice with CT's Gram factors, batched).
Operators whose ``A^+`` is a CG solve (large CT geometries) pay that solve every round.

Only for noiseless measurements: with noise, C_y does not hold the true image (and may miss the
box altogether), and (1) fits the noise. Noisy problems keep their solvers' own data terms.

Example
-------
>>> op = from_spec("ct18", (1, 64, 64))
>>> y = op.measure(x)                                             # noiseless
>>> x_hat = project_feasible(op, restoration, y, iters=1000)      # closer to x, in [0, 1]
"""

from __future__ import annotations

import math

import torch

from ..errors import DiffinvError
from .base import LinearOperator, check_tensor


def project_feasible(
    op: LinearOperator,
    x: torch.Tensor,
    y: torch.Tensor,
    lo: float = 0.0,
    hi: float = 1.0,
    iters: int = 1000,
) -> torch.Tensor:
    """``iters`` rounds of (1) from ``x``: the image moved into ``[lo, hi]`` and towards ``A x = y``,
    never farther from any image of ``{A x = y, lo <= x <= hi}`` than ``x`` was.

    ``x``: (B, *op.in_shape); ``y``: (B, *op.out_shape), noiseless; dtype and device follow ``x``.
    The result lies in the box exactly and satisfies ``A x = y`` up to the residual that the
    iterations leave (see the module's docstring).
    """
    lo, hi = _checked(op, x, y, lo, hi, iters)
    y = y.to(x.dtype)
    x = x.clamp(lo, hi)
    for _ in range(int(iters)):
        x = op.project(x, y).clamp(lo, hi)
    return x


def nearest_feasible(
    op: LinearOperator,
    v: torch.Tensor,
    y: torch.Tensor,
    lo: float = 0.0,
    hi: float = 1.0,
    iters: int = 100,
) -> torch.Tensor:
    """The point of ``C = {x : A x = y, lo <= x <= hi}`` nearest to ``v``, by ``iters`` steps of
    accelerated dual ascent (for DDS's ``feasible_method="nearest"``).

    P_C(v) = argmin_x 1/2 ||x - v||^2 subject to A x = y and x in the box. Its Lagrange dual gives
    x(lam) = P_box(v + A^T lam) and the dual gradient y - A x(lam); ascent preconditioned by
    (A A^T)^+, written in u = v + A^T lam (so that only ``A`` and ``A^+`` appear), is

        u_{k+1} = w_k + A^+ (y - A P_box(w_k)),   x_k = P_box(u_k)                           (2)

    with Nesterov's momentum w_k = u_k + ((t_k - 1) / t_{k+1}) (u_k - u_{k-1}) (Beck & Teboulle
    2009). The preconditioned dual gradient is 1-Lipschitz (P_box is non-expansive and A^+ A a
    projection), so the unit step is safe. Unlike (1), whose limit is some point of C, (2) tends to
    the nearest one; (1) is (2) without the momentum and with the part ``u - P_box(u)`` dropped at
    each step. On real 64x64 CT slices (18 views), 20 steps of (2) inside DDS scored like 100 rounds of
    (1) (benchmarks/results/solver_notes.md). The result lies in the box exactly; ``A x = y``
    holds up to the residual the steps leave.
    """
    lo, hi = _checked(op, v, y, lo, hi, iters)
    y = y.to(v.dtype)
    u = u_prev = v
    t = 1.0
    for _ in range(int(iters)):
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        w = u + ((t - 1.0) / t_next) * (u - u_prev)
        u_prev, u = u, w + op.pinv(y - op.A(w.clamp(lo, hi)))
        t = t_next
    return u.clamp(lo, hi)


def _checked(op: LinearOperator, x, y, lo, hi, iters) -> tuple[float, float]:
    """(lo, hi) as floats; DiffinvError (one line) for bad shapes, NaN, iters or box."""
    check_tensor(x, op.in_shape, "x", f"for operator {op.name}")
    check_tensor(y, op.out_shape, "y", f"for operator {op.name}")
    if x.shape[0] != y.shape[0]:
        raise DiffinvError(f"x holds {x.shape[0]} images but y holds {y.shape[0]} measurements")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise DiffinvError("x and y must not contain NaN or Inf values")
    if isinstance(iters, bool) or int(iters) != iters or iters < 1:
        raise DiffinvError(f"iters must be a positive integer, got {iters!r}")
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise DiffinvError(f"the box needs finite lo < hi, got lo={lo}, hi={hi}")
    return lo, hi
