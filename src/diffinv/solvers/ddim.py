"""Unconditional DDIM sampling (Song, Meng, Ermon 2021, arXiv:2010.02502): the speed baseline.

It ignores the measurement (``y`` only fixes the batch size, dtype and device), so it shows what the
prior alone produces at the same number of network evaluations as the restoration methods.
With ``eps = eps(x_t, t)`` and ``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` (eq. 12):

    x_t' = sqrt(abar_t') x0 + sqrt(1 - abar_t' - sigma_t^2) eps + sigma_t z,
    sigma_t = eta sqrt((1 - abar_t') / (1 - abar_t)) sqrt(1 - abar_t / abar_t')        (eq. 16)

``eta = 0`` is the deterministic DDIM, ``eta = 1`` DDPM ancestral sampling. The output is the last
``x0`` (the state at the clean end), in [0, 1] units.

Example
-------
>>> x = get("ddim", prior, steps=100)(y, op, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
"""

from __future__ import annotations

import math

from .base import Solver, randn, register


@register
class DDIM(Solver):
    """Unconditional DDIM: samples the prior, ignoring y (baseline for cost and realism)."""

    name = "ddim"
    description = "Unconditional DDIM (Song et al. 2021); ignores y: prior-only baseline at equal steps"
    defaults = {"steps": 100, "eta": 0.0}

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        prior = self.prior
        eta = float(self.params["eta"])
        shape = (y.shape[0], *op.in_shape)
        ts = [int(t) for t in self.timesteps().tolist()]
        grid = ts + [-1]
        abar = [float(prior.schedule.alpha_bar(t)) for t in grid]
        x = randn(shape, generator, y)
        x0 = x
        for i in self.iterate(range(len(ts)), progress):
            ab_t, ab_n = abar[i], abar[i + 1]
            x0 = prior.x0(x, grid[i])
            eps = (x - math.sqrt(ab_t) * x0) / math.sqrt(1.0 - ab_t)
            if callback is not None:
                callback(i, x, prior.to_image(x0))
            sigma = eta * math.sqrt((1.0 - ab_n) / (1.0 - ab_t)) * math.sqrt(max(1.0 - ab_t / ab_n, 0.0))
            x = math.sqrt(ab_n) * x0 + math.sqrt(max(1.0 - ab_n - sigma**2, 0.0)) * eps
            if sigma > 0:
                x = x + sigma * randn(shape, generator, y)
        return prior.to_image(x0)
