"""Shared pieces of the gradient-guided and predictor-corrector solvers (MCG, score-proj, DPS, PiGDM).

Nothing here is registered as a method. Everything works in the prior's model space on batched
tensors ``(B, *shape)``; per-sample quantities (norms, step sizes) are computed per batch item so
that a batch of Monte-Carlo samples behaves exactly like independent runs. The diffusion steps
themselves (DDIM / DDPM, the VE predictors, the Langevin corrector) and the time grid are in
:mod:`diffinv.priors.steps`.

* :func:`x0_with_vjp` -- Tweedie estimate x0|t and a closure for vector-Jacobian products
  ``v -> (d x0|t / d x_t)^T v`` (one network evaluation, back-propagated on demand).
* :func:`noised_measurement` -- the measurement carried to a diffusion level.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..operators.base import LinearOperator


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


def noised_measurement(
    y: torch.Tensor, op: LinearOperator, a: float, b: float, noise: torch.Tensor
) -> torch.Tensor:
    """``a y + b A z``: the measurement carried to a diffusion level (VP: a = sqrt(ab), b = sqrt(1 - ab);
    VE: a = 1, b = sigma), with the noise ``z`` drawn in image space so it lies in range(A)."""
    return a * y + b * op.A(noise)
