"""DAPS: decoupled annealing posterior sampling (Zhang, Chu, Berner, Meng, Anandkumar, Song, CVPR 2025).

Reference: B. Zhang, W. Chu, J. Berner, C. Meng, A. Anandkumar, Y. Song, "Improving Diffusion Inverse
Problem Solving with Decoupled Noise Annealing", CVPR 2025, arXiv:2407.01521.

Instead of small steps along one reverse trajectory, each noise level is a fresh draw around a
posterior sample of x0 (Algorithm 1), so that consecutive states may differ a lot and early errors
can be undone. In the VE view (``x_t = x0 + sigma_t n``), on a decreasing annealing grid
sigma_0 > ... > sigma_{N-1}, starting from x ~ N(0, sigma_0^2 I), for i = 0, ..., N-1:

    x0|t   = x0_hat(x_t): the probability-flow ODE solved from sigma_t down (Sec. 3.3)
    p(x0 | x_t, y) ~ N(x0; x0|t, r_t^2 I) p(y | x0),   r_t = sigma_t                        (eq. 8-9)
    x0^{j+1} = x0^j + eta_t [ (x0|t - x0^j) / r_t^2 + grad log p(y | x0^j) ] + sqrt(2 eta_t) eps_j  (eq. 10)
    log p(y | x0) = -||y - A(x0)||^2 / (2 tau^2),   x0^0 = x0|t,   j = 0, ..., langevin_steps - 1
    x_{t'} = x0^J + sigma_{i+1} z                                            (the next level, eq. 7)

and the last level returns x0^J itself. The annealing grid is the EDM one (rho = 7) from
``sigma_max`` to ``sigma_min``; the Langevin step decays linearly over the levels, eta_i = lr (1 +
(i / (N - 1)) (lr_min_ratio - 1)), from lr to lr * lr_min_ratio. x0|t: ``ode_steps`` Euler steps of
the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma on an EDM (rho = 7) grid of
``ode_steps`` levels from sigma_t to 0.01, the last step going to sigma = 0 (which returns the
denoiser's output D there); ``ode_steps=1`` is the one-step Tweedie estimate x0|t = D(x_t, sigma_t).
D(x, sigma) is the prior's VE denoiser (``prior.x0_ve``) at the continuous time whose noise level is
sigma (interpolated in log sigma between training levels), clamped to the prior's range of levels.

The data term uses A^T (y - A x0) for linear operators and autograd through A for nonlinear ones
(:class:`~diffinv.operators.nonlinear.NonlinearOperator`; the paper's phase retrieval and nonlinear
deblurring); no network gradient is needed, so the Langevin steps cost only A and A^T.

Defaults (the paper's pixel-space setting, DAPS-1K, Sec. 5 and its appendix tables): N = 200
annealing levels from sigma_max = 100 to sigma_min = 0.1 (ours: the prior's smallest level, below),
5 ODE steps, 100 Langevin steps, lr = 1e-4,
lr_min_ratio = 0.01, tau = 0.01 (model space, [-1, 1] for the shipped priors). The paper uses
lr = 5e-5 for box inpainting and phase retrieval (not a family here: set it explicitly). tau is the
assumed measurement std in model units and is *not* tied to sigma_y (the paper keeps 0.01 for data
with noise 0.05); set ``tau = sigma_y / scale`` for the likelihood of the actual noise, and scale lr
by tau^2 / 0.01^2 with it, since the data step is lr / tau^2. That step must stay below 2 / ||A||^2:
CT operators (||A||^2 in the thousands) get lr = 1e-7 (``task_defaults``, not tuned).

NFE: ``steps * ode_steps`` network evaluations (1000 by default), none back-propagated.

Deviations from the authors' code (github.com/zhangbingliang2019/DAPS, read for its settings):

* The ODE's last step goes to sigma = 0 (returns D at the last ODE level, 0.01); theirs stops at
  sigma = 0.01 with an Euler step. With ``ode_steps=1`` x0|t is exactly Tweedie's estimate.
* Their step-size decay uses the level index over N; ours over N - 1, so the last level's step is
  exactly lr * lr_min_ratio.
* Times between training levels: the network is called at the continuous time of sigma (log-sigma
  interpolation, ``VPSchedule.sigma_at``), where theirs calls an EDM-preconditioned network at sigma.
* ``sigma_min=None`` (the default) anneals down to the prior's smallest training level (0.01 for a
  linear 1000-step VP schedule) instead of the paper's 0.1: the last level returns the Langevin
  result around Tweedie's estimate at sigma_min, which at 0.1 (5 % of the image range) is visibly
  smooth. Faces sr4 / inpaint-box, 8 dev faces, 100 levels x 1 ODE step: LPIPS 0.098 / 0.039 at 0.1,
  0.081 at 0.02, 0.073 / 0.037 at 0.01, PSNR 23.17 -> 23.54 dB on sr4 (``benchmarks/results/daps_faces.md``).
  Low levels need the Langevin step eta_i <= sigma_i^2: the prior term N(x0; x0|t, sigma_i^2 I)
  contracts by 1 - eta_i / sigma_i^2 per step and diverges beyond 2, so eta_i is capped at
  sigma_i^2 (with the defaults, eta_i <= 1e-4 <= sigma_i^2, the cap never acts; it does for large
  user lr, e.g. lr = 0.04 with tau = 0.2 on noisy data).
* sigma_max is lowered to the prior's largest level when that is smaller (a linear 1000-step VP
  schedule reaches 157). Per-sample norms play no role (every step is elementwise), so a batch
  behaves exactly like independent runs.

Example
-------
>>> solver = get("daps", prior, steps=200, ode_steps=5, langevin_steps=100)       # doctest: +SKIP
>>> x = solver(y, op, sigma_y=0.05, generator=torch.Generator().manual_seed(0))   # doctest: +SKIP
"""

from __future__ import annotations

import math

import torch

from ..errors import DiffinvError
from .base import Solver, register

RHO = 7.0  # EDM's time discretisation exponent (the paper's 'poly-7')
ODE_SIGMA_MIN = 0.01


def edm_sigmas(n: int, sigma_max: float, sigma_min: float, rho: float = RHO) -> list[float]:
    """``n`` decreasing levels from sigma_max to sigma_min (Karras et al. 2022, eq. 5)."""
    if n == 1:
        return [float(sigma_max)]
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(a + i / (n - 1) * (b - a)) ** rho for i in range(n)]


def time_at_sigma(schedule, sigma: float) -> int | float:
    """The (continuous) time whose VE level is ``sigma``: log sigma interpolated between training
    levels (the inverse of ``VPSchedule.sigma_at``), clamped to [0, T - 1]."""
    log_s = schedule.sigmas.log()
    ls = math.log(sigma)
    if ls <= float(log_s[0]):
        return 0
    if ls >= float(log_s[-1]):
        return schedule.T - 1
    hi = int(torch.searchsorted(log_s, torch.tensor(ls, dtype=log_s.dtype)))
    lo = hi - 1
    t = lo + (ls - float(log_s[lo])) / float(log_s[hi] - log_s[lo])
    return int(round(t)) if abs(t - round(t)) < 1e-9 else t


@register
class DAPS(Solver):
    """Decoupled annealing posterior sampling (Algorithm 1, Langevin inner sampler)."""

    name = "daps"
    description = "DAPS (Zhang et al. 2025): decoupled noise annealing, ODE x0|t + Langevin on p(x0 | x_t, y)"
    defaults = {
        "steps": 200,
        "ode_steps": 5,
        "langevin_steps": 100,
        "lr": 1e-4,
        "lr_min_ratio": 0.01,
        "tau": 0.01,
        "sigma_max": 100.0,
        "sigma_min": None,  # the prior's smallest training level (the paper: 0.1; see the module doc)
    }
    task_defaults = {"ct": {"lr": 1e-7}}
    accepts_nonlinear = True

    def validate_params(self) -> None:
        super().validate_params()
        p = self.params
        for key in ("ode_steps", "langevin_steps"):
            if int(p[key]) != p[key] or p[key] < (1 if key == "ode_steps" else 0):
                raise DiffinvError(
                    f"{key} must be an integer >= {1 if key == 'ode_steps' else 0}, got {p[key]!r}"
                )
        self.check_numbers("lr", "tau", "sigma_max", positive=True)
        self.check_numbers("sigma_min", positive=True, optional=True)
        if not 0.0 < float(p["lr_min_ratio"]) <= 1.0:
            raise DiffinvError(f"lr_min_ratio must be in (0, 1], got {p['lr_min_ratio']!r}")
        if p["sigma_min"] is not None and float(p["sigma_min"]) >= float(p["sigma_max"]):
            raise DiffinvError(f"sigma_min must be below sigma_max, got {p['sigma_min']} >= {p['sigma_max']}")

    def annealing_sigmas(self) -> list[float]:
        """The N levels: EDM grid from min(sigma_max, prior's largest level) to sigma_min (None: the
        prior's smallest level)."""
        p, levels = self.params, self.prior.schedule.sigmas
        top = min(float(p["sigma_max"]), float(levels[-1]))
        bottom = float(levels[0]) if p["sigma_min"] is None else float(p["sigma_min"])
        return edm_sigmas(int(p["steps"]), top, min(bottom, top))

    def _denoise(self, x, sigma: float):
        return self.prior.x0_ve(x, time_at_sigma(self.prior.schedule, sigma))

    def _x0_ode(self, x, sigma: float):
        """x0|t: Euler steps of the probability-flow ODE from sigma to 0 (``ode_steps`` NFE)."""
        levels = edm_sigmas(int(self.params["ode_steps"]), sigma, min(ODE_SIGMA_MIN, sigma))
        for k, s in enumerate(levels):
            d = self._denoise(x, s)
            if k + 1 == len(levels):
                return d
            x = x + (levels[k + 1] - s) * (x - d) / s

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        p = self.params
        y_z, _, noise = self.model_problem(y, op, sigma_y, generator)
        n, J = int(p["steps"]), int(p["langevin_steps"])
        lr, ratio, inv_tau2 = float(p["lr"]), float(p["lr_min_ratio"]), 1.0 / float(p["tau"]) ** 2
        sigmas = self.annealing_sigmas()
        x = sigmas[0] * noise()  # x_T ~ N(0, sigma_max^2 I)
        for i in self.iterate(range(n), progress):
            sigma = sigmas[i]
            x0_hat = self._x0_ode(x, sigma)  # x0|t
            eta = lr * (1.0 + (i / (n - 1) if n > 1 else 0.0) * (ratio - 1.0))
            eta = min(eta, sigma**2)  # the prior term's step eta / sigma^2 <= 1 (see the module doc)
            x0 = x0_hat
            for _ in range(J):  # Langevin on N(x0; x0|t, sigma^2 I) p(y | x0)      (eq. 10)
                _, g = self.measurement_fit(op, x0, y_z)  # g = A^T (y - A x0)
                drift = (x0_hat - x0) / sigma**2 + inv_tau2 * g
                x0 = x0 + eta * drift + math.sqrt(2.0 * eta) * noise()
            self.report(callback, i, time_at_sigma(self.prior.schedule, sigma), x, x0)
            if i + 1 < n:
                x = x0 + sigmas[i + 1] * noise()  # decoupled re-noising to the next level
        return self.prior.to_image(x0)
