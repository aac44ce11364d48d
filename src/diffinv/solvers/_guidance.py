"""Shared pieces of the gradient-guided and predictor-corrector solvers (MCG, score-proj, DPS, PiGDM).

Nothing here is registered as a method. Everything works in the prior's model space on batched
tensors ``(B, *shape)``; per-sample quantities (norms, step sizes) are computed per batch item so
that a batch of Monte-Carlo samples behaves exactly like independent runs. The diffusion steps
themselves (DDIM / DDPM, the VE predictors, the Langevin corrector) and the time grid are in
:mod:`diffinv.priors.steps`.

* :func:`x0_with_vjp` -- Tweedie estimate x0|t and a closure for vector-Jacobian products
  ``v -> (d x0|t / d x_t)^T v`` (one network evaluation, back-propagated on demand).
* :func:`noised_measurement` -- the measurement carried to a diffusion level.
* :func:`warm_start` -- the grid steps and first state of a run that starts part-way down the grid
  from the operator's prior-free estimate (DDS, DiffPIR ``start`` < 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..errors import DiffinvError
from ..operators.base import LinearOperator
from ..priors.steps import GridStep, TimeGrid


def x0_with_vjp(
    prior, x: torch.Tensor, t: int, ve: bool = False, need_grad: bool = True, clip_grad: str = "identity"
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor] | None]:
    """Tweedie estimate at ``x`` (VP state, or VE state if ``ve``) and ``v -> J^T v``, J = dx0/dx.

    One network evaluation. Where the prior clamps x0 to the data range, ``clip_grad`` says how J
    treats the clamp (``Prior.using_clip_grad``): "identity" passes it straight through (J is the
    unclamped estimate's Jacobian), "clamp" takes its derivative (0 on saturated pixels). The
    returned x0 is detached; the closure back-propagates through the network once (call it at most
    once). With ``need_grad=False`` no graph is built and the closure
    is None.
    """
    if not need_grad:
        x0 = prior.x0_ve(x, t) if ve else prior.x0(x, t)
        return x0.detach(), None
    with torch.enable_grad(), prior.using_clip_grad(clip_grad):
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


def check_start(start) -> None:
    """DiffinvError unless ``start`` (the ``start`` parameter of :func:`warm_start`) is in (0, 1]."""
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not 0 < start <= 1:
        raise DiffinvError(f"start must be a number in (0, 1], got {start!r}")


def warm_start(
    schedule,
    steps: int,
    start: float,
    y_z: torch.Tensor,
    op: LinearOperator,
    noise: Callable[[], torch.Tensor],
) -> tuple[list[GridStep], torch.Tensor]:
    """(grid steps, x): ``steps`` steps to run and the state to start from.

    ``start = 1``: the whole grid of ``steps`` levels from x_T ~ N(0, I). ``start < 1``: the last
    ``steps`` levels of a grid of ``round(steps / start)`` levels (capped at T), i.e. the diffusion
    starts at the fraction ``start`` of the time range, from the operator's prior-free estimate
    ``op.initial_estimate(y_z)`` (CT: FBP) noised to that level, x = sqrt(abar) x_init + sqrt(1 - abar) z
    (the warm start of Chung et al.'s CCDF, 2022). Steps are renumbered from 0. NFE = ``steps``.
    """
    if start >= 1.0:
        return list(TimeGrid(schedule, steps)), noise()
    n = min(int(schedule.T), max(steps, round(steps / start)))
    grid = TimeGrid(schedule, n)
    k = n - steps
    ab = grid.alpha_bars[k]
    x = math.sqrt(ab) * op.initial_estimate(y_z) + math.sqrt(1.0 - ab) * noise()
    return [grid[i]._replace(i=i - k) for i in range(k, n)], x
