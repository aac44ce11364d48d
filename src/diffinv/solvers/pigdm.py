"""PiGDM: pseudoinverse-guided diffusion models (Song, Vahdat, Mardani, Kautz, ICLR 2023).

Reference: J. Song, A. Vahdat, M. Mardani, J. Kautz, "Pseudoinverse-Guided Diffusion Models for
Inverse Problems", ICLR 2023.

The conditional score adds to the prior's score the gradient of a Gaussian approximation of
p_t(y | x_t) centred on the Tweedie estimate x0|t with covariance r_t^2 I around it (eq. 7-8):

    p_t(y | x_t) ~= N(A x0|t, r_t^2 A A^T + sigma_y^2 I)
    g = ((y - A x0|t)^T (r_t^2 A A^T + sigma_y^2 I)^{-1} A  d x0|t / d x_t)^T                 (eq. 8)

with r_t^2 = sigma_t^2 / (1 + sigma_t^2) = 1 - abar_t (the paper's choice for data of unit
variance, written in VP terms). For noiseless data this is, up to the factor r_t^{-2}, the
pseudoinverse guidance of eq. 7 and Algorithm 1, ``g = ((A^+ y - A^+ A x0|t)^T d x0|t / d x_t)^T``.
We use the r_t^2-scaled form of eq. 8 throughout,

    g = (d x0|t / d x_t)^T A^T (A A^T + (sigma_y^2 / r_t^2) I)^{-1} (y - A x0|t),

which equals Algorithm 1's guidance exactly when sigma_y = 0 and, with noise, damps the
correction of each singular direction by s^2 r_t^2 / (s^2 r_t^2 + sigma_y^2). The inverse is
computed exactly in the spectral domain for SVD operators and by conjugate gradients otherwise
(``A^+`` for sigma_y = 0). Algorithm 1 then takes a DDIM step with the guidance scaled by
sqrt(abar_t):

    c1 = eta sqrt((1 - abar_t / abar_t')(1 - abar_t') / (1 - abar_t)),  c2 = sqrt(1 - abar_t' - c1^2)
    x_t' = sqrt(abar_t') x0|t + c1 z + c2 eps + sqrt(abar_t) g,   eps = (x_t - sqrt(abar_t) x0|t) / sqrt(1 - abar_t)

(``priors.steps.ddim_step``).

All in the prior's model space. Defaults: 100 steps, eta = 1.0 (the paper's ImageNet setting),
``clip_grad="identity"`` (how the vector-Jacobian product treats the prior's clamp of x0; see the
deviations below). The
returned image is the last iterate (x0|0 plus its guidance step); with sigma_y = 0 that last step is
a full pseudoinverse correction through the (near-identity) Jacobian, so ``A x ~= y``.

NFE: one network evaluation per step, with back-propagation through it.

Calibration of the spread against an exact Gaussian posterior (:mod:`diffinv.posterior`,
tests/solvers/test_posterior_calibration.py): under-dispersed, benchmarks/results/solver_notes.md.

Deviations: the paper links no code of its own, so this follows the paper, with these choices
where it leaves room or where our priors differ:

* x0|t is the prior's estimate, clamped to the data range by network priors, and eps in the DDIM
  step is the noise consistent with it (not the network's output); the vector-Jacobian product
  passes the clamp straight through (``clip_grad="identity"``, the default: the unclamped
  estimate's Jacobian). Through the clamp's own derivative (0 where it is active) the data gradient leaked
  into the null space: faces colorize 13.78 dB and sr8 13.40 dB against 20.00 and 18.10
  (benchmarks/results/solver_notes.md, "The clamp of x0 and the guidance gradient").
* The noisy form (eq. 8, r_t^2 = 1 - abar_t) is used for every sigma_y, with the inverse computed
  by ``op.damped_pinv`` (exact for SVD operators, conjugate gradients otherwise).
* Time grid: ``priors.steps.grid_times`` (uniform skip when ``steps`` divides T).

Example
-------
>>> solver = get("pigdm", prior, steps=100, eta=1.0)                              # doctest: +SKIP
>>> x = solver(y, op, sigma_y=0.05, generator=torch.Generator().manual_seed(0))   # doctest: +SKIP
"""

from __future__ import annotations

import math

from ..priors.base import check_clip_grad
from ..priors.steps import ddim_step_from_x0
from .base import Solver, register


@register
class PiGDM(Solver):
    """Pseudoinverse-guided DDIM (Algorithm 1 with the noisy guidance of eq. 8)."""

    name = "pigdm"
    description = "PiGDM (Song et al. 2023): DDIM + pseudoinverse guidance (r_t^2 A A^T + sigma_y^2 I)^-1"
    defaults = {"steps": 100, "eta": 1.0, "clip_grad": "identity"}

    def validate_params(self) -> None:
        super().validate_params()
        check_clip_grad(self.params["clip_grad"])

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        prior = self.prior
        y_z, sigma_z, noise = self.model_problem(y, op, sigma_y, generator)
        eta = float(self.params["eta"])
        x = noise()  # x_T ~ N(0, I)
        for s in self.iterate(self.time_grid(), progress):
            x0, vjp = self.tweedie(x, s, callback, need_grad=True)  # x0|t (Tweedie)
            r2 = 1.0 - s.ab_t  # r_t^2
            # v = A^T (A A^T + sigma_y^2 / r_t^2 I)^{-1} (y - A x0|t)  (= A^+ (y - A x0|t) if sigma_y = 0)
            v = op.damped_pinv(y_z - op.A(x0), sigma_z**2 / r2)
            g = vjp(v)  # (d x0|t / d x_t)^T v                                      (eq. 7-8)
            x = ddim_step_from_x0(x, x0, s.ab_t, s.ab_prev, eta, noise()) + math.sqrt(s.ab_t) * g
        return prior.to_image(x)
