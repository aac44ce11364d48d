"""DDRM: Denoising Diffusion Restoration Models (Kawar, Elad, Ermon, Song 2022), arXiv:2201.11793.

DDRM samples in the spectral domain of ``A = U S V^T``. Write ``x_bar = V^T x`` for spectral
coordinates, ``y_bar_i = (U^T y)_i / s_i`` for the observed ones (``s_i > 0``), whose noise has std
``sigma_y / s_i``. The paper works with the variance-exploding variable ``x_t = x_0 + sigma_t n``; we
keep the VP state of the prior and convert, with ``sigma_t = sqrt((1 - abar_t) / abar_t)`` and
``x_ve = x_vp / sqrt(abar_t)`` (exact: both parametrise the same Gaussian path). With
``x_bar_theta = V^T x0(x_{t+1}, t+1)`` the prior's Tweedie estimate, each step samples (eq. 8)

    s_i = 0:                N( x_bar_theta + sqrt(1 - eta^2) sigma_t (x_bar_{t+1} - x_bar_theta) / sigma_{t+1},
                               eta^2 sigma_t^2 )
    sigma_t <  sigma_y/s_i: N( x_bar_theta + sqrt(1 - eta^2) sigma_t (y_bar - x_bar_theta) / (sigma_y / s_i),
                               eta^2 sigma_t^2 )
    sigma_t >= sigma_y/s_i: N( (1 - eta_b) x_bar_theta + eta_b y_bar,  sigma_t^2 - eta_b^2 sigma_y^2 / s_i^2 )

and the first state is (eq. 7) ``x_bar_T,i ~ N(y_bar_i, sigma_T^2 - sigma_y^2 / s_i^2)`` where
``s_i > 0`` and ``sigma_T >= sigma_y / s_i``; the other coordinates start from the VP prior
``x_T ~ N(0, I)`` (VE variance ``1 / abar_T``, i.e. ``sigma_T^2 + 1``: the paper's ``N(0, sigma_T^2)``
up to the unit data variance that the VE form neglects). The paper's eq. 7 assumes
``sigma_T >= sigma_y / s_i`` for every observed coordinate; coordinates with tiny ``s_i`` violate it and
are started like unobserved ones (they are then pulled towards ``y_bar`` by the middle case).

The last step goes to the clean end (``sigma = 0``), where every case has zero variance: the output
is ``x_bar_theta`` in unobserved and noisy coordinates and ``(1 - eta_b) x_bar_theta + eta_b y_bar``
where ``sigma_y = 0`` (so ``eta_b = 1`` gives ``A x = y`` exactly). Singular values at or below the
operator's ``pinv_threshold`` are treated as zero (unobserved), as its pseudo-inverse does.
Timesteps: ``priors.steps.TimeGrid`` over the prior's schedule (``steps`` network evaluations).
x0(x_t, t) is the prior's Tweedie estimate, which network priors clamp to their data range; the
first case's (x_bar_{t+1} - x_bar_theta) / sigma_{t+1} is then the noise consistent with the clamped
estimate.

Calibration of the spread against an exact Gaussian posterior (:mod:`diffinv.posterior`,
tests/solvers/test_posterior_calibration.py): benchmarks/results/solver_notes.md.

Deviations from the authors' code (github.com/bahjat-kawar/ddrm, ``efficient_generalized_steps``):

* x_bar_theta comes from the clamped x0 (network priors), and the unobserved coordinates use the
  noise consistent with it; theirs are the raw x0 and ``V^T`` of the network's eps (equal without
  the clamp).
* Last step, sigma_y = 0: their case tests are strict (``s_i sigma_t > sigma_y`` / ``<``), so at
  sigma = 0 every observed coordinate falls into the unobserved case and the output is x_bar_theta,
  which does not satisfy ``A x = y``; ours takes the "noisier than y" case there (sigma_t >= sigma_y /
  s_i), so eta_b = 1 gives ``A x = y`` exactly. At other steps the two differ only on the measure-zero
  boundary sigma_t = sigma_y / s_i.
* Initial state: theirs divides the VE state by sigma_T to get the VP one, ours multiplies by
  sqrt(abar_T) (the exact conversion): in the observed coordinates the two differ by the factor
  sqrt(1 - abar_T) (about 1 - 2e-5 for the linear 1000-step schedule).
* Time grid: theirs is ``range(0, T, T // S)``, ceil(T / (T // S)) steps (more than S when S does not
  divide T: 3 steps give 0, 333, 666, 999); ours is ``priors.steps.grid_times`` (exactly S steps;
  the same grid when S divides T).
* Small singular values: ours are zero at or below the operator's ``pinv_threshold`` (relative);
  theirs are whatever each of their operators keeps (some zero below a fixed absolute value).

Example
-------
>>> solver = get("ddrm", prior, steps=20, eta=0.85, eta_b=1.0)                  # doctest: +SKIP
>>> x = solver(y, op, sigma_y=0.05, generator=torch.Generator().manual_seed(0)) # doctest: +SKIP
"""

from __future__ import annotations

import math

import torch

from ..errors import DiffinvError
from .base import Solver, randn, register


@register
class DDRM(Solver):
    """DDRM (Kawar et al. 2022): variational posterior sampling in the operator's spectral domain."""

    name = "ddrm"
    description = "DDRM (Kawar et al. 2022): spectral-domain posterior sampling; needs an SVD operator"
    defaults = {"steps": 20, "eta": 0.85, "eta_b": 1.0}
    requires_svd = True
    ends_consistent = True

    def validate_params(self) -> None:
        super().validate_params()
        if not 0.0 <= float(self.params["eta_b"]) <= 1.0:
            raise DiffinvError(f"eta_b must be in [0, 1], got {self.params['eta_b']}")

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        prior = self.prior
        eta, eta_b = float(self.params["eta"]), float(self.params["eta_b"])
        y_z, sigma_z = self.measurement_to_model(y, op, sigma_y)
        B, n = y.shape[0], op.n
        like = y_z

        s = op.singulars_full(like)  # (n,), zeros = unobserved
        obs = s > 0
        safe_s = torch.where(obs, s, torch.ones_like(s))
        k = op.singulars().numel()
        u = op.Ut(y_z)[:, :k]
        y_bar = torch.zeros((B, n), dtype=like.dtype, device=like.device)
        y_bar[:, :k] = u / safe_s[:k]
        y_bar = torch.where(obs, y_bar, torch.zeros_like(y_bar))
        # std of the noise of y_bar; +inf where unobserved
        noise = torch.where(obs, sigma_z / safe_s, torch.full_like(s, math.inf))

        grid = self.time_grid()  # VE noise levels grid.sigmas, 0 at the clean end

        # Initial state, eq. 7 (VE spectral coordinates).
        z = randn((B, n), generator, like)
        sig_T = grid.sigmas[0]
        start_obs = obs & (sig_T >= noise)
        x_bar = torch.where(
            start_obs,
            y_bar
            + (sig_T**2 - torch.where(start_obs, noise, torch.zeros_like(noise)) ** 2).clamp_min(0).sqrt()
            * z,
            z / math.sqrt(grid.alpha_bars[0]),
        )
        x0_bar = x_bar
        for step in self.iterate(grid, progress):
            sig_t, sig_prev = step.sigma, step.sigma_prev
            x_t = math.sqrt(step.ab_t) * op.V(x_bar)  # VP state
            x0 = prior.x0(x_t, step.t)
            self.report(callback, step.i, step.t, x_t, x0)
            x0_bar = op.Vt(x0)
            z = randn((B, n), generator, like)
            c = math.sqrt(max(1.0 - eta**2, 0.0))
            # unobserved (s_i = 0), eq. 8 first case
            mean_u = x0_bar + c * sig_prev * (x_bar - x0_bar) / sig_t
            std_u = torch.full_like(s, eta * sig_prev)
            # observed, sigma_t < sigma_y / s_i: pulled towards y_bar
            weak = obs & (sig_prev < noise)
            safe_noise = torch.where(weak, noise, torch.ones_like(noise))
            mean_w = x0_bar + c * sig_prev * (y_bar - x0_bar) / safe_noise
            # observed, sigma_t >= sigma_y / s_i
            strong = obs & ~weak
            mean_s = (1.0 - eta_b) * x0_bar + eta_b * y_bar
            fin = torch.where(strong, noise, torch.zeros_like(noise))
            std_s = (sig_prev**2 - (eta_b * fin) ** 2).clamp_min(0.0).sqrt()
            mean = torch.where(strong, mean_s, torch.where(weak, mean_w, mean_u))
            std = torch.where(strong, std_s, std_u)
            x_bar = mean + std * z
        return prior.to_image(op.V(x_bar))
