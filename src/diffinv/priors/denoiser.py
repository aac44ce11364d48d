"""Any Gaussian denoiser as a diffusion prior: :func:`from_denoiser`.

A denoiser ``D(x, sigma)`` that estimates a clean [0, 1] image from ``x = x0 + sigma n`` is, by
Tweedie's formula, the posterior mean E[x0 | x] of the prior it was trained on, so it gives the score
of that prior smoothed at level sigma (Robbins 1956; Efron 2011; the plug-and-play view of
DiffPIR / RED-diff / DAPS):

    x0(x, sigma) = D(x, sigma),     score(x, sigma) = (D(x, sigma) - x) / sigma^2.

:class:`DenoiserPrior` exposes it as a variance-exploding (VE) :class:`~diffinv.priors.base.Prior` on
the geometric levels of a :class:`~diffinv.priors.schedules.VESchedule` from ``sigma_min`` to
``sigma_max`` (``VESchedule.to_vp()`` gives the equivalent VP schedule, so every solver's time grid
applies). Model space is image space (scale 1, shift 0), so the VE state at time t is
``x = x0 + sigma_t n`` in [0, 1] units and ``prior.x0_ve(x, t) = D(x, sigma_t)`` exactly; the VP
view (``prior.x0(x_t, t)``, ``prior.eps``) follows by ``x_ve = x_vp / sqrt(abar_t)``.

Validity: the denoiser is called only at the levels of the schedule, up to ``sigma_max``. Solvers
that start from pure noise (x_T ~ N(0, sigma_max^2 I), or N(0, I) in the VP view) need sigma_max well
above the data range (say >= 20 for [0, 1] images); a denoiser trained up to sigma = 0.2 (DRUNet,
FFDNet) suits methods that start from an estimate (RED-diff starts from A^+ y) with a matching
``steps`` grid, and is a poor prior for the others.

Example
-------
>>> prior = from_denoiser(lambda x, s: x / (1 + s.view(-1, 1, 1, 1) ** 2), sigma_max=50.0,
...                       image_shape=(1, 8, 8))
>>> prior.x0_ve(torch.zeros(2, 1, 8, 8), 999).shape
torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..errors import DiffinvError
from .base import Prior
from .schedules import VESchedule

__all__ = ["DenoiserPrior", "from_denoiser"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class DenoiserPrior(Prior):
    """A VE prior from a Gaussian denoiser ``denoise(x, sigma)`` on [0, 1] images.

    ``denoise`` gets ``x`` of shape (B, C, H, W) and ``sigma`` a tensor of shape (B,) (noise std in
    [0, 1] units, ``x``'s dtype and device) and returns the estimate of the clean image, same shape.
    Every call counts as one network evaluation (``prior.nfe``). ``clip=True`` clamps x0 estimates
    to [0, 1] (``Prior.clip_x0``).
    """

    def __init__(
        self,
        denoise: Denoiser,
        schedule: VESchedule,
        image_shape: tuple[int, int, int],
        clip: bool = False,
    ):
        super().__init__(schedule.to_vp(), image_shape, scale=1.0, shift=0.0)
        self.denoise = denoise
        self.ve_schedule = schedule
        self.clip_x0 = bool(clip)

    def _x0(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar(t, x_t)  # (B, 1, 1, 1)
        sigma = ((1 - ab) / ab).sqrt()
        x = x_t / ab.sqrt()  # VE state x0 + sigma n
        self.nfe += 1
        out = self.denoise(x, sigma.reshape(-1))
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise DiffinvError(
                f"the denoiser must return a tensor of the input's shape {tuple(x.shape)}, "
                f"got {getattr(out, 'shape', type(out).__name__)}"
            )
        return out.to(x_t.dtype)

    def extra_repr(self) -> str:
        return (
            f"denoiser={getattr(self.denoise, '__name__', type(self.denoise).__name__)}, "
            + super().extra_repr()
        )


def from_denoiser(
    denoise: Denoiser,
    sigma_max: float,
    image_shape: tuple[int, int, int],
    sigma_min: float = 0.002,
    levels: int = 1000,
    clip: bool = False,
) -> DenoiserPrior:
    """Wrap ``denoise(x, sigma)`` (a Gaussian denoiser of [0, 1] images) as a VE diffusion prior.

    Parameters
    ----------
    denoise: ``(x (B, C, H, W), sigma (B,)) -> x0 estimate`` (a callable or an ``nn.Module``).
    sigma_max: the largest noise std (in [0, 1] units) it is valid for; the schedule's top level.
    image_shape: (C, H, W) the solvers will restore (the denoiser may accept other sizes too).
    sigma_min: the smallest level (default 0.002, as EDM); ``levels`` geometric levels in between.
    clip: clamp x0 estimates to [0, 1].
    """
    if not callable(denoise):
        raise DiffinvError(f"denoise must be callable as denoise(x, sigma), got {type(denoise).__name__}")
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise DiffinvError(f"image_shape must be (C, H, W) with positive sizes, got {tuple(image_shape)}")
    sigma_max, sigma_min = float(sigma_max), float(sigma_min)
    if not (math.isfinite(sigma_max) and math.isfinite(sigma_min) and 0 < sigma_min < sigma_max):
        raise DiffinvError(f"need 0 < sigma_min < sigma_max (finite), got {sigma_min} and {sigma_max}")
    if int(levels) != levels or levels < 2:
        raise DiffinvError(f"levels must be an integer >= 2, got {levels!r}")
    return DenoiserPrior(denoise, VESchedule(sigma_min, sigma_max, int(levels)), shape, clip=clip)
