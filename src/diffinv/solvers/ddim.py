"""Unconditional DDIM sampling (Song, Meng, Ermon 2021, arXiv:2010.02502): the speed baseline.

It ignores the measurement (``y`` only fixes the batch size, dtype and device), so it shows what the
prior alone produces at the same number of network evaluations as the restoration methods.
With x0 the prior's Tweedie estimate (clamped to the data range by network priors) and
``eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)`` the noise consistent with it (eq. 12;
``priors.steps.ddim_step``; ``priors.sampling.ddim_sample`` is the same sampler on the network's
eps and the raw x0):

    x_t' = sqrt(abar_t') x0 + sqrt(1 - abar_t' - sigma_t^2) eps + sigma_t z,
    sigma_t = eta sqrt((1 - abar_t') / (1 - abar_t)) sqrt(1 - abar_t / abar_t')        (eq. 16)

``eta = 0`` is the deterministic DDIM, ``eta = 1`` DDPM ancestral sampling. The output is the last
``x0`` (the state at the clean end), in [0, 1] units.

Example
-------
>>> x = get("ddim", prior, steps=100)(y, op, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
"""

from __future__ import annotations

from ..priors.steps import ddim_step_from_x0
from .base import Solver, register


@register
class DDIM(Solver):
    """Unconditional DDIM: samples the prior, ignoring y (baseline for cost and realism)."""

    name = "ddim"
    description = "Unconditional DDIM (Song et al. 2021); ignores y: prior-only baseline at equal steps"
    defaults = {"steps": 100, "eta": 0.0}

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        prior = self.prior
        eta = float(self.params["eta"])
        noise = self.noise_source(y, op, generator)
        x = noise()
        x0 = x
        for s in self.iterate(self.time_grid(), progress):
            x0, _ = self.tweedie(x, s, callback)
            z = noise() if eta > 0 and not s.last else None  # sigma_t > 0
            x = ddim_step_from_x0(x, x0, s.ab_t, s.ab_prev, eta, z)
        return prior.to_image(x0)
