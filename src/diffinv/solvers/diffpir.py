"""DiffPIR: plug-and-play restoration with a diffusion denoiser (Zhu et al., CVPRW 2023).

Reference: Y. Zhu, K. Zhang, J. Liang, J. Cao, B. Wen, R. Timofte, L. Van Gool, "Denoising Diffusion
Models for Plug-and-Play Image Restoration", CVPR Workshops (NTIRE) 2023, arXiv:2305.08995.
Equation numbers are not quoted: the text we could consult was the abstract
and the authors' scripts and configs (``main_ddpir_sisr.py``, ``configs/*.yaml``), which we cite.

Half-quadratic splitting of  min_x  ||y - A x||^2 / (2 sigma_n^2) + lambda P(x)  into a
denoising subproblem, solved by the diffusion model's Tweedie estimate at the level whose noise
matches the splitting weight, and a data subproblem, solved in closed form; then a step to the
next level that mixes the *effective* noise of the corrected estimate with fresh noise:

    x0|t   = E[x_0 | x_t]                                            (denoising subproblem, Tweedie)
    x^0|t  = argmin_x ||y - A x||^2 + rho_t ||x - x0|t||^2,   rho_t = lambda sigma_n^2 / sigmabar_t^2
           = x0|t + A^T (A A^T + rho_t I)^{-1} (y - A x0|t)          (data subproblem)
    eps^   = (x_t - sqrt(abar_t) x^0|t) / sqrt(1 - abar_t)           (effective noise)
    x_t'   = sqrt(abar_t') x^0|t + sqrt(1 - abar_t') (sqrt(1 - zeta) eps^ + sqrt(zeta) z)

with sigmabar_t^2 = (1 - abar_t) / abar_t the noise level of x_t / sqrt(abar_t), sigma_n = sigma_y in
the prior's model space, and z ~ N(0, I); the last step returns x^0|t. The data step is
``op.damped_pinv`` (exact through the SVD for SVD operators, CT's Gram factors, conjugate
gradients otherwise). zeta = 0 is deterministic (DDIM-like with eps^), zeta = 1 draws all the
noise fresh. For sigma_y = 0, rho_t = 0 and the data step is the exact projection
x0|t + A^+ (y - A x0|t): the output satisfies A x = y.

Defaults: ``lam`` 1.0 and ``zeta`` 0.1 (the authors' sr and deblur configs), inpainting zeta 1.0
(their inpainting config), 100 steps (their ``iter_num``). ``start`` < 1 starts part-way down a
finer grid from ``op.initial_estimate(y)`` noised to that level (``_guidance.warm_start``; their
code has such a ``t_start`` from the upsampled y, set to T - 1 in their scripts). CT
(``task_defaults["ct"]``, chosen on 4 dev slices of ct_real.py): zeta 1, start 0.35;
results: benchmarks/results/ct-real-dds/ct_real.md; 200 steps (25 before; on 8 real tuning slices
22.41 / 22.79 / 22.99 dB at 25 / 100 / 200 steps, 8 views, 27.25 / 28.26 / 28.79 at 18). Without noise and with zeta = 1 the update
equals DDS's with eta = 1 and ``cg_iters=None``. NFE: one per step, no back-propagation.

Deviations from the authors' code (github.com/yuanzhi-zhu/DiffPIR, ``main_ddpir_*.py``):

* Noise level: theirs is max(0.001, sigma_y) in [0, 1] units, divided by sigmabar_t in the
  model's [-1, 1] units; ours is sigma_y / scale (model units, like sigmabar_t), so for [-1, 1]
  priors our rho_t is 4x theirs at equal lambda (their lambda = 4 x ours), and for sigma_y = 0
  ours is the exact projection (rho_t = 0) where their floor leaves rho_t <= lambda 1e-6 / sigmabar^2.
* They skip the data step at the last level and return the state there; we apply it and return
  x^0|t. Their grid is quadratic in t (``skip_type="quad"``) and starts from the noised upsampled
  y at t = T - 1; ours is ``priors.steps.grid_times`` from pure noise.
* x0|t is the prior's estimate, clamped to the data range by network priors.
* Their sr and deblur data steps are FFT closed forms for circular operators, their
  super-resolution "cubic" mode an iterative back-projection; ours is the operator's exact
  damped pseudo-inverse.

Example
-------
>>> x = get("diffpir", prior, lam=1.0, zeta=0.1)(y, op, sigma_y=0.05, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
"""

from __future__ import annotations

import math

from ..errors import DiffinvError
from ..priors.steps import eps_from_x0
from ._guidance import check_start, warm_start
from .base import Solver, register


@register
class DiffPIR(Solver):
    """DiffPIR: Tweedie denoising + closed-form data proximal step + zeta-mixed re-noising."""

    name = "diffpir"
    description = "DiffPIR (Zhu et al. 2023): HQS plug-and-play, x0|t + data proximal step rho_t, zeta noise"
    defaults = {"steps": 100, "lam": 1.0, "zeta": 0.1, "start": 1.0}
    #: per operator family (``Solver.task_defaults``): the authors' inpainting zeta; CT 200 steps.
    task_defaults = {"inpaint": {"zeta": 1.0}, "ct": {"steps": 200, "zeta": 1.0, "start": 0.35}}
    ends_consistent = True  # sigma_y = 0: the last data step is the exact projection

    def validate_params(self) -> None:
        super().validate_params()
        check_start(self.params["start"])
        self.check_numbers("lam", positive=True)
        zeta = self.params["zeta"]
        if isinstance(zeta, bool) or not isinstance(zeta, (int, float)) or not 0 <= zeta <= 1:
            raise DiffinvError(f"zeta must be in [0, 1], got {zeta!r}")

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        prior = self.prior
        y_z, sigma_z, noise = self.model_problem(y, op, sigma_y, generator)
        lam, zeta = float(self.params["lam"]), float(self.params["zeta"])
        steps, x = warm_start(
            prior.schedule, int(self.params["steps"]), float(self.params["start"]), y_z, op, noise
        )
        x0_hat = x
        for s in self.iterate(steps, progress):
            x0, _ = self.tweedie(x, s, callback)  # denoising subproblem, one NFE
            rho = lam * sigma_z**2 * s.ab_t / (1.0 - s.ab_t)  # lambda sigma_n^2 / sigmabar_t^2
            x0_hat = x0 + op.damped_pinv(y_z - op.A(x0), rho)  # data subproblem (rho = 0: A^+)
            if not s.last:
                eps = eps_from_x0(x, x0_hat, s.ab_t)  # effective noise of x^0|t
                x = math.sqrt(s.ab_prev) * x0_hat + math.sqrt(1.0 - s.ab_prev) * math.sqrt(1.0 - zeta) * eps
                if zeta > 0:
                    x = x + math.sqrt(1.0 - s.ab_prev) * math.sqrt(zeta) * noise()
        return prior.to_image(x0_hat)
