"""Shared pieces of the gradient-guided and predictor-corrector solvers (MCG, score-proj, DPS, PiGDM).

Nothing here is registered as a method. Everything works in the prior's model space on batched
tensors ``(B, *shape)``; per-sample quantities (norms, step sizes) are computed per batch item so
that a batch of Monte-Carlo samples behaves exactly like independent runs.

* :func:`x0_with_vjp` -- Tweedie estimate x0|t and a closure for vector-Jacobian products
  ``v -> (d x0|t / d x_t)^T v`` (one network evaluation, back-propagated on demand).
* :func:`ddim_step` -- the DDIM update (Song et al. 2021, eq. 12); ``eta = 1`` is the DDPM
  ancestral step q(x_t' | x_t, x0) for an arbitrary (skipped) pair of levels t' < t.
* :func:`damped_pinv` -- ``A^T (A A^T + gamma I)^{-1} r``: exact in the spectral domain for SVD
  operators, conjugate gradients in measurement space otherwise, ``A^+ r`` for gamma = 0.
* VE predictor-corrector steps of score-SDE (Song et al. 2021b, Algorithms 2-3 with VE SDE):
  :func:`reverse_diffusion_step` and :func:`langevin_step`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..operators.base import LinearOperator, SVDOperator


def bview(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample vector ``(B,)`` reshaped to broadcast against ``like`` ``(B, ...)``."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def bnorm(v: torch.Tensor) -> torch.Tensor:
    """Per-sample Euclidean norm, shape ``(B,)``."""
    return v.reshape(v.shape[0], -1).norm(dim=1)


def safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` per sample (den of shape (B,)), 0 where den == 0."""
    den = bview(den, num)
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def x0_with_vjp(
    prior, x: torch.Tensor, t: int, ve: bool = False, need_grad: bool = True
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor] | None]:
    """Tweedie estimate at ``x`` (VP state, or VE state if ``ve``) and ``v -> J^T v``, J = dx0/dx.

    One network evaluation. The returned x0 is detached; the closure back-propagates through the
    network once (call it at most once). With ``need_grad=False`` no graph is built and the closure
    is None.
    """
    if not need_grad:
        x0 = prior.x0_ve(x, t) if ve else prior.x0(x, t)
        return x0.detach(), None
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        x0 = prior.x0_ve(xg, t) if ve else prior.x0(xg, t)

    def vjp(v: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            (g,) = torch.autograd.grad(x0, xg, grad_outputs=v.to(x0.dtype), allow_unused=True)
        return torch.zeros_like(xg) if g is None else g.detach()

    return x0.detach(), vjp


def ddim_coefficients(ab_t: float, ab_prev: float, eta: float) -> tuple[float, float]:
    """(c1, c2) of DDIM: c1 = eta sqrt((1 - ab_t/ab_prev)(1 - ab_prev)/(1 - ab_t)), c2 = sqrt(1 - ab_prev - c1^2)."""
    c1 = eta * math.sqrt(max((1.0 - ab_t / ab_prev) * (1.0 - ab_prev) / (1.0 - ab_t), 0.0))
    c2 = math.sqrt(max(1.0 - ab_prev - c1**2, 0.0))
    return c1, c2


def ddim_step(
    x0: torch.Tensor, eps: torch.Tensor, ab_t: float, ab_prev: float, eta: float, noise: torch.Tensor
) -> torch.Tensor:
    """x_t' = sqrt(ab_t') x0 + c2 eps + c1 z (DDIM, Song et al. 2021 eq. 12; eta = 1: DDPM posterior)."""
    c1, c2 = ddim_coefficients(ab_t, ab_prev, eta)
    return math.sqrt(ab_prev) * x0 + c2 * eps + c1 * noise


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, ab_t: float) -> torch.Tensor:
    """The noise estimate implied by x0|t: eps = (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t)."""
    return (x_t - math.sqrt(ab_t) * x0) / math.sqrt(1.0 - ab_t)


def _cg(
    apply: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int = 500, tol: float = 1e-12
) -> torch.Tensor:
    """Per-sample conjugate gradients for a symmetric positive-definite ``apply``, started at 0."""
    dims = tuple(range(1, b.dim()))
    tiny = torch.finfo(b.dtype).tiny
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = (r * r).sum(dims, keepdim=True)
    rs0 = rs.clamp_min(tiny)
    for _ in range(iters):
        Ap = apply(p)
        pAp = (p * Ap).sum(dims, keepdim=True)
        alpha = torch.where(pAp > 0, rs / pAp.clamp_min(tiny), torch.zeros_like(rs))
        x = x + alpha * p
        r = r - alpha * Ap
        rs_new = (r * r).sum(dims, keepdim=True)
        if bool((rs_new <= tol**2 * rs0).all()):
            break
        p = r + (rs_new / rs.clamp_min(tiny)) * p
        rs = rs_new
    return x


def damped_pinv(op: LinearOperator, r: torch.Tensor, gamma: float) -> torch.Tensor:
    """``A^T (A A^T + gamma I)^{-1} r`` (image space); ``gamma = 0`` gives ``A^+ r``, ``inf`` gives 0.

    SVD operators: ``V diag(s / (s^2 + gamma)) U^T r`` exactly. Operators with their own
    ``damped_pinv(r, gamma)`` method (CT) use it. Others: CG on ``(A A^T + gamma I) u = r``.
    """
    gamma = float(gamma)
    if gamma == 0.0:
        return op.pinv(r)
    if math.isinf(gamma):
        return torch.zeros((r.shape[0], *op.in_shape), dtype=r.dtype, device=r.device)
    if isinstance(op, SVDOperator):
        s = op.singulars_like(r)
        k = s.numel()
        coef = s / (s * s + gamma)
        z = op.Ut(r)[:, :k] * coef
        out = torch.zeros((r.shape[0], op.n), dtype=r.dtype, device=r.device)
        out[:, :k] = z
        return op.V(out)
    # e.g. ParallelBeamCT: closed form from its Gram eigendecomposition
    own = getattr(op, "damped_pinv", None)
    if callable(own):
        return own(r, gamma)
    u = _cg(lambda v: op.A(op.At(v)) + gamma * v, r)
    return op.At(u)


def noised_measurement(
    y: torch.Tensor, op: LinearOperator, a: float, b: float, noise: torch.Tensor
) -> torch.Tensor:
    """``a y + b A z``: the measurement carried to a diffusion level (VP: a = sqrt(ab), b = sqrt(1 - ab);
    VE: a = 1, b = sigma), with the noise ``z`` drawn in image space so it lies in range(A)."""
    return a * y + b * op.A(noise)


# ---------------------------------------------------------------------- VE predictor-corrector
def reverse_diffusion_step(
    x: torch.Tensor, score: torch.Tensor, sigma: float, sigma_prev: float, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reverse-diffusion predictor for the VE SDE (score-SDE, eq. 47 / Algorithm 2):

    x_mean = x + (sigma_i^2 - sigma_{i-1}^2) s(x, sigma_i),  x = x_mean + sqrt(sigma_i^2 - sigma_{i-1}^2) z.
    """
    g2 = sigma**2 - sigma_prev**2
    x_mean = x + g2 * score
    return x_mean + math.sqrt(max(g2, 0.0)) * noise, x_mean


def ancestral_step(
    x: torch.Tensor, score: torch.Tensor, sigma: float, sigma_prev: float, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ancestral sampling predictor for the VE (SMLD) chain (score-SDE, Appendix F):

        x_mean = x + (sigma_i^2 - sigma_{i-1}^2) s(x, sigma_i),
        x      = x_mean + sqrt(sigma_{i-1}^2 (sigma_i^2 - sigma_{i-1}^2) / sigma_i^2) z.

    The same mean as :func:`reverse_diffusion_step`, but the noise of the Gaussian posterior
    q(x_{i-1} | x_i, x_0) -- at most sigma_{i-1} -- instead of the Euler-Maruyama step's
    sqrt(sigma_i^2 - sigma_{i-1}^2), which is about sigma_i on a coarse grid. It therefore stays on the
    noise levels with tens of steps, where reverse diffusion needs hundreds.
    """
    g2 = max(sigma**2 - sigma_prev**2, 0.0)
    x_mean = x + g2 * score
    std = math.sqrt(sigma_prev**2 * g2 / sigma**2) if sigma > 0 else 0.0
    return x_mean + std * noise, x_mean


#: VE predictors by name (``predictor`` parameter of the VE samplers).
VE_PREDICTORS = {"reverse-diffusion": reverse_diffusion_step, "ancestral": ancestral_step}


def check_predictor(name) -> None:
    if name not in VE_PREDICTORS:
        raise ValueError(f"predictor must be one of {tuple(VE_PREDICTORS)}, got {name!r}")


def langevin_step(x: torch.Tensor, score: torch.Tensor, snr: float, noise: torch.Tensor) -> torch.Tensor:
    """Langevin corrector (score-SDE Algorithm 5 with alpha_i = 1 for VE):

        eps_i = 2 (snr ||z|| / ||s(x)||)^2,   x <- x + eps_i s(x) + sqrt(2 eps_i) z

    with norms per sample (the reference implementation averages them over the batch)."""
    step = 2.0 * (snr * safe_div(bnorm(noise), bnorm(score))) ** 2  # (B,)
    step = bview(step, x)
    return x + step * score + (2.0 * step).sqrt() * noise
