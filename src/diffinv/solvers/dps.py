"""DPS: diffusion posterior sampling (Chung, Kim, Mccann, Klasky, Ye, ICLR 2023).

Reference: H. Chung, J. Kim, M. T. Mccann, M. L. Klasky, J. C. Ye, "Diffusion Posterior Sampling
for General Noisy Inverse Problems", ICLR 2023, arXiv:2209.14687.

The likelihood p(y | x_t) is approximated by p(y | x0|t) with the Tweedie estimate x0|t (the paper's
Section 3), so that its gradient w.r.t. x_t is a vector-Jacobian product through the network.
Algorithm 1 (Gaussian measurement noise), for i = N-1, ..., 0:

    x0|i      = E[x_0 | x_i], the prior's Tweedie estimate (clamped by network priors)   (Tweedie)
    x'_{i-1}  = DDPM ancestral step from x_i with x0|i (eta = 1 DDIM = q(x_{i-1} | x_i, x0|i))
    x_{i-1}   = x'_{i-1} - zeta_i grad_{x_i} || y - A x0|i ||_2^2,   zeta_i = zeta / || y - A x0|i ||

(the paper's step-size rule: a constant zeta divided by the residual norm). Since
``grad ||r||^2 / ||r|| = 2 grad ||r||``, this is ``x'_{i-1} + 2 zeta (d x0|i / d x_i)^T A^T r / ||r||``
with ``r = y - A x0|i``; the authors' released code applies ``scale * grad ||r||`` instead, so their
``scale`` equals ``2 zeta`` here (zeta = 0.5 reproduces scale = 1). Residual norms are taken per
sample (the paper runs one image at a time), in the model space of the prior. The returned image is
the last iterate x_{-1} (x0|0 after the final gradient step); no projection, so ``A x = y`` holds
only approximately.

Defaults: 1000 steps and zeta = 1.0. The paper tunes zeta per task and dataset (values between about 0.3
and 1 for FFHQ / ImageNet in its experimental details, in their code's scale convention); small images have
small residual norms, so the per-pixel step grows as the image shrinks and a smaller zeta is needed
(the Gaussian tests use 16-pixel images). ``clip_grad`` ("identity" / "clamp"): how the gradient
treats the prior's clamp of x0|i (straight through by default; see the deviations below).

Nonlinear forward models (:class:`~diffinv.operators.nonlinear.NonlinearOperator`, the paper's
Sec. 3.2 and Algorithm 1 as written for a general A(.)): ``A^T r`` becomes ``(dA/dx0)^T r`` at x0|i
by autograd (``Solver.measurement_fit``), the residual is taken in model units as for linear A.

NFE: one network evaluation per step, with back-propagation through it.

Calibration of the spread against an exact Gaussian posterior (:mod:`diffinv.posterior`,
tests/solvers/test_posterior_calibration.py, 200 steps): under-dispersed at zeta 0.2 (90% coverage
0.83, variance ratio 0.75), close to nominal at zeta 0.1 (0.87, 0.98); benchmarks/results/solver_notes.md.

Deviations from the authors' code (github.com/DPS2022/diffusion-posterior-sampling,
``PosteriorSampling`` in ``condition_methods.py``, ``p_sample_loop`` in ``gaussian_diffusion.py``):

* Variance of the DDPM step: theirs is ADM's learned variance (``model_var_type: learned_range``,
  from the network's extra output channels); ours is the posterior variance
  beta~ = (1 - abar_{i-1}) / (1 - abar_i) beta_i (the extra channels are dropped). Both use the
  posterior mean of x0|i clamped to the data range (their ``clip_denoised: True``, our network
  priors' ``clip_x0``), and neither adds noise at the last step. Their gradient goes through
  ``torch.clamp`` (0 on saturated pixels, our ``clip_grad="clamp"``); ours passes the clamp
  straight through (``clip_grad="identity"``, the default): through the clamp, the identity part of J^T A^T r
  (x0|i ~ x_i / sqrt(abar_i) at large i) is lost on saturated pixels only, which on faces
  colorization drove the colour (14.09 dB against 20.77 dB; benchmarks/results/solver_notes.md).
* ||y - A x0|i|| is one norm over the whole batch in their code (run with batch size 1), per sample
  here.
* Step size: their ``scale`` multiplies grad ||r||, so scale = 2 zeta (see above).
* Time grid: they run all 1000 steps; fewer steps would use ADM's ``space_timesteps`` (rounded
  linspace including t = T - 1, with respaced betas), ours ``priors.steps.grid_times`` (uniform skip
  when S divides T).

Example
-------
>>> solver = get("dps", prior, steps=1000, zeta=1.0)                              # doctest: +SKIP
>>> x = solver(y, op, sigma_y=0.05, generator=torch.Generator().manual_seed(0))   # doctest: +SKIP
"""

from __future__ import annotations

from ..priors.base import check_clip_grad
from ..priors.steps import bnorm, ddim_step_from_x0, safe_div
from .base import Solver, register


@register
class DPS(Solver):
    """Diffusion posterior sampling, Algorithm 1 (Gaussian noise)."""

    name = "dps"
    description = (
        "DPS (Chung et al. 2023): DDPM steps + normalised gradient of ||y - A x0|t|| through the network"
    )
    defaults = {"steps": 1000, "zeta": 1.0, "clip_grad": "identity"}
    #: per operator family (``Solver.task_defaults``). CT: benchmarks/ct.py's setting (25 steps,
    #: zeta 0.1 from its validation grid; benchmarks/results/solver_notes.md, DPS).
    task_defaults = {"ct": {"steps": 25, "zeta": 0.1}}
    accepts_nonlinear = True

    def validate_params(self) -> None:
        super().validate_params()
        self.check_numbers("zeta")
        check_clip_grad(self.params["clip_grad"])

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        prior = self.prior
        y_z, _, noise = self.model_problem(y, op, sigma_y, generator)
        zeta = float(self.params["zeta"])
        x = noise()  # x_N ~ N(0, I)
        for s in self.iterate(self.time_grid(), progress):
            x0, vjp = self.tweedie(x, s, callback, need_grad=zeta > 0)  # x0|i (Tweedie)
            # x'_{i-1}: DDPM posterior q(x_{i-1} | x_i, x0|i) (DDIM with eta = 1)
            x_prev = ddim_step_from_x0(x, x0, s.ab_t, s.ab_prev, 1.0, noise())
            if zeta > 0:
                r, g = self.measurement_fit(op, x0, y_z)  # r = y - A x0|i, g = A^T r
                # -grad_{x_i} ||r||^2 = 2 J^T A^T r ;  zeta_i = zeta / ||r||
                x_prev = x_prev + 2.0 * zeta * safe_div(vjp(g), bnorm(r))
            x = x_prev
        return prior.to_image(x)
