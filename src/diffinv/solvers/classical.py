"""Classical, prior-free reconstructions: pseudo-inverse / FBP, TV-regularised MFISTA, Tikhonov CG.

* ``pinv``: ``x = A^+ y`` (``op.pinv``); when ``use_fbp`` (default), the operator's own first
  estimate ``op.initial_estimate(y)`` instead: the filtered back-projection for CT, ``A^+ y`` otherwise.
* ``fista-tv``: ``min_x F(x) = 0.5 ||A x - y||^2 + lam TV(x)  (+ indicator of [0, 1]^n if box)`` by
  MFISTA, the monotone FISTA of Beck & Teboulle, "Fast gradient-based algorithms for constrained
  total variation image denoising and deblurring problems", IEEE TIP 18(11), 2009 (their MFISTA
  scheme): with step ``1/L``, ``L >= ||A||^2`` (power iteration on ``A^T A``),

      z_k     = prox_{(lam/L) TV + box}( u_k - A^T (A u_k - y) / L )
      t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2
      x_k     = argmin { F(x) : x in {z_k, x_{k-1}} }                     (monotone: F(x_k) <= F(x_{k-1}))
      u_{k+1} = x_k + (t_k / t_{k+1}) (z_k - x_k) + ((t_k - 1) / t_{k+1}) (x_k - x_{k-1}).

  TV is the isotropic TV ``sum_pixels sqrt((D_v x)^2 + (D_h x)^2)`` with forward differences and
  Neumann boundary (zero difference past the last row/column), summed over channels (channel-wise
  TV). The prox ``argmin_x ||x - b||^2 + 2 (lam/L) TV(x)`` (+ box) is solved inexactly by the same
  paper's FGP (fast gradient projection on the dual problem) with ``inner`` iterations, dual step
  ``1 / (8 lam/L)`` (``||D||^2 <= 8``), warm-started from the previous outer iteration's dual
  variable. Inexactness does not break monotonicity: the comparison with ``x_{k-1}`` is done with the
  exact objective (same TV). ``self.history`` holds ``F`` (summed over the batch) at ``x_0`` and after
  every iteration.
* ``cg-tikhonov``: conjugate gradients on ``(A^T A + lam I) x = A^T y`` from ``x = 0``; with
  ``lam = 0`` the iterates stay in ``range(A^T)`` and converge to the minimum-norm least-squares
  solution ``A^+ y``.

Example
-------
>>> x = get("fista-tv", lam=0.02, iters=200)(y, op)        # doctest: +SKIP
>>> solver = get("fista-tv"); solver(y, op); solver.history[-1]   # doctest: +SKIP
"""

from __future__ import annotations

import math

import torch

from ..errors import DiffinvError
from ..operators.cg import cg
from .base import Solver, register


def _initial(op, y, use_fbp: bool) -> torch.Tensor:
    """The operator's own first estimate (``initial_estimate``: FBP for CT) if ``use_fbp``, else ``A^+ y``."""
    return op.initial_estimate(y) if use_fbp else op.pinv(y)


# ---------------------------------------------------------------------- total variation
def grad2d(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences (vertical, horizontal) with a zero last row / column (Neumann)."""
    dv = torch.zeros_like(x)
    dh = torch.zeros_like(x)
    dv[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    dh[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return dv, dh


def grad2d_adjoint(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Exact adjoint of :func:`grad2d` (minus the discrete divergence)."""
    out = torch.zeros_like(p)
    out[..., :-1, :] -= p[..., :-1, :]
    out[..., 1:, :] += p[..., :-1, :]
    out[..., :, :-1] -= q[..., :, :-1]
    out[..., :, 1:] += q[..., :, :-1]
    return out


def tv_iso(x: torch.Tensor) -> torch.Tensor:
    """Isotropic TV per sample (channel-wise, summed): sum sqrt(dv^2 + dh^2), shape (B,)."""
    dv, dh = grad2d(x)
    return (dv**2 + dh**2).sqrt().flatten(1).sum(1)


def tv_prox_fgp(
    b: torch.Tensor,
    weight: float,
    iters: int,
    box: bool,
    dual: tuple[torch.Tensor, torch.Tensor] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
):
    """FGP (Beck & Teboulle 2009): approx. argmin_x ||x - b||^2 + 2 weight TV(x) (+ x in ``bounds``
    if ``box``: their constrained denoising, the projection onto the box inside the dual map).

    Returns ``(x, (p, q))``; pass the dual ``(p, q)`` back to warm-start the next call.
    """
    lo, hi = bounds
    proj_c = (lambda v: v.clamp(lo, hi)) if box else (lambda v: v)
    if weight <= 0:
        return proj_c(b), dual
    if dual is None:
        p, q = torch.zeros_like(b), torch.zeros_like(b)
    else:
        p, q = dual
    r, s = p, q
    t = 1.0
    step = 1.0 / (8.0 * weight)
    for _ in range(iters):
        x = proj_c(b - weight * grad2d_adjoint(r, s))
        gv, gh = grad2d(x)
        pn, qn = r + step * gv, s + step * gh
        norm = (pn**2 + qn**2).sqrt().clamp_min(1.0)  # projection onto the isotropic unit ball
        pn, qn = pn / norm, qn / norm
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        r = pn + ((t - 1.0) / t_next) * (pn - p)
        s = qn + ((t - 1.0) / t_next) * (qn - q)
        p, q, t = pn, qn, t_next
    return proj_c(b - weight * grad2d_adjoint(p, q)), (p, q)


def power_norm2(op, like: torch.Tensor, iters: int = 30, seed: int = 0) -> float:
    """Estimate ``||A||^2 = lambda_max(A^T A)`` by power iteration (deterministic start)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn((1, *op.in_shape), generator=g, dtype=torch.float64).to(
        device=like.device, dtype=like.dtype
    )
    v = v / v.norm()
    est = 0.0
    for _ in range(iters):
        w = op.At(op.A(v))
        est = float((v * w).sum())
        nrm = w.norm()
        if nrm == 0:
            return 0.0
        v = w / nrm
    return max(est, float(nrm))


# ---------------------------------------------------------------------- solvers
@register
class PseudoInverse(Solver):
    """``A^+ y`` (or the FBP for CT operators)."""

    name = "pinv"
    description = "Pseudo-inverse A^+ y (filtered back-projection for CT operators when use_fbp)"
    defaults = {"use_fbp": True}
    needs_prior = False

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        return _initial(op, y, bool(self.params["use_fbp"]))


@register
class FistaTV(Solver):
    """MFISTA (monotone FISTA, Beck & Teboulle 2009) for 0.5||Ax - y||^2 + lam TV_iso(x)."""

    name = "fista-tv"
    description = "TV-regularised least squares by monotone FISTA (Beck & Teboulle 2009), FGP TV prox"
    defaults = {"lam": 0.02, "iters": 200, "inner": 20, "box": True, "use_fbp": True, "power_iters": 30}
    #: per operator family (``Solver.task_defaults``). CT: lam 0.05, chosen on benchmarks/ct.py's
    #: validation split at 8 and 18 views (43.0 dB at 18 views on the test phantoms).
    task_defaults = {"ct": {"lam": 0.05}}
    needs_prior = False

    def __init__(self, prior=None, **params):
        super().__init__(prior, **params)
        #: objective F (summed over the batch) at x_0 and after each iteration of the last call
        self.history: list[float] = []

    def validate_params(self) -> None:
        super().validate_params()
        self.check_numbers("lam")
        for key in ("inner", "power_iters"):
            v = self.params[key]
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise DiffinvError(f"{key} must be a positive integer, got {v!r}")

    def objective(self, op, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """F(x) per sample, shape (B,)."""
        r = (op.A(x) - y).flatten(1)
        return 0.5 * (r * r).sum(1) + float(self.params["lam"]) * tv_iso(x)

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        lam = float(self.params["lam"])
        box = bool(self.params["box"])
        L = 1.01 * power_norm2(op, y, int(self.params["power_iters"]))
        if L <= 0:
            raise DiffinvError(f"operator {op.name!r} appears to be zero (||A||^2 = 0)")
        x = _initial(op, y, bool(self.params["use_fbp"]))
        if box:
            x = x.clamp(0.0, 1.0)
        F_x = self.objective(op, x, y)
        self.history = [float(F_x.sum())]
        u, t, dual = x, 1.0, None
        shape = (-1,) + (1,) * (x.dim() - 1)
        for k in self.iterate(range(int(self.params["iters"])), progress):
            grad = op.At(op.A(u) - y)
            z, dual = tv_prox_fgp(u - grad / L, lam / L, int(self.params["inner"]), box, dual)
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            F_z = self.objective(op, z, y)
            better = (F_z <= F_x).reshape(shape)
            x_new = torch.where(better, z, x)
            F_x = torch.minimum(F_z, F_x)
            u = x_new + (t / t_next) * (z - x_new) + ((t - 1.0) / t_next) * (x_new - x)
            x, t = x_new, t_next
            self.history.append(float(F_x.sum()))
            self.report(callback, k, None, x, x)
        return x


@register
class CGTikhonov(Solver):
    """Conjugate gradients on (A^T A + lam I) x = A^T y; lam = 0 gives A^+ y."""

    name = "cg-tikhonov"
    description = "Tikhonov-regularised least squares, CG on (A^T A + lam I) x = A^T y (lam=0: A^+ y)"
    defaults = {"lam": 1e-3, "iters": 100, "tol": 1e-10}
    needs_prior = False

    def validate_params(self) -> None:
        super().validate_params()
        self.check_numbers("lam", "tol")

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        lam, tol = float(self.params["lam"]), float(self.params["tol"])
        steps = self.iterate(range(int(self.params["iters"])), progress)
        report = None if callback is None else (lambda k, x: self.report(callback, k, None, x, x))
        return cg(lambda p: op.At(op.A(p)) + lam * p, op.At(y), steps, tol, report)
