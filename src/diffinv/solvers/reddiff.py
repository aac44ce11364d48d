"""RED-diff: regularisation by denoising diffusion (Mardani, Song, Kautz, Vahdat, ICLR 2024).

Reference: M. Mardani, J. Song, J. Kautz, A. Vahdat, "A Variational Perspective on Solving Inverse
Problems with Diffusion Models", ICLR 2024, arXiv:2305.04391.

The posterior is approximated by q(x0 | y) = N(mu, sigma^2 I) with sigma -> 0, and mu minimises the
KL divergence to the posterior, which becomes a data term plus a score-matching regulariser over
all diffusion times (eq. 8-9). Its gradient needs no back-propagation through the network: with
x_t = sqrt(abar_t) mu + sqrt(1 - abar_t) eps, eps ~ N(0, I), the stochastic loss (eq. 10)

    loss(mu) = ||y - A mu||^2 / (2 sigma_v^2) + lambda_t (sg[eps_theta(x_t, t) - eps])^T mu,
    lambda_t = lambda sigma_t / alpha_t = lambda sqrt((1 - abar_t) / abar_t)       (Sec. 4.1, "linear")

(``sg`` = stop-gradient) is minimised by Adam, one step per time t, with t descending over the grid
(the paper's Algorithm 1 and its descending-time schedule, Sec. 4.2); mu starts at A^+ y and is
returned (for noisy data mu starts at the damped A^T (A A^T + sigma_y^2 I)^{-1} y instead, see
below). With the authors' normalisation the two terms are means, the data term over the
measurements and the regulariser over the pixels (per sample, in model space):

    grad = A^T (A mu - y) / m + lambda_t (eps_theta(x_t, t) - eps) / n,

so sigma_v is absorbed into lambda (their ``obs_weight = 1``). The gradient is computed in closed
form (no autograd); the Adam update is written out (betas 0.9 and 0.99 as in their code, eps 1e-8,
bias-corrected), per element, so a batch behaves exactly like independent runs. eps_theta is the
network's own noise prediction (not the one implied by a clamped x0).

Defaults: 1000 steps, lr = 0.1, lambda = 0.25 (the paper's setting for its linear tasks). For
sigma_y > 0 the same loss is used (the paper tunes lambda per task; a larger lambda trusts y less).

NFE: one network evaluation per step, without back-propagation; per step also one A and one A^T.

Deviations from the authors' code (github.com/NVlabs/RED-diff, ``algos/reddiff.py``, read for its
settings): mu starts at A^+ y only for sigma_y = 0; with noise at the Tikhonov-damped
A^T (A A^T + sigma_y^2 I)^{-1} y (model units), since A^+ y of a noisy blur or CT measurement amplifies
the noise by 1 / s_min and Adam's bounded steps (about lr per element) cannot undo that in a few
steps (theirs: A^+ y always); the data gradient is the closed form A^T(A mu - y) (theirs: autograd of the same loss);
means are per sample (theirs: over the batch, which only changes Adam's epsilon term); the time grid
is ``priors.steps.grid_times`` (uniform skip when ``steps`` divides T). Nonlinear forward models
(which the paper also treats) are refused: the closed-form gradient needs a linear A.

Example
-------
>>> solver = get("reddiff", prior, steps=1000, lr=0.1, lam=0.25)                   # doctest: +SKIP
>>> x = solver(y, op, sigma_y=0.0, generator=torch.Generator().manual_seed(0))    # doctest: +SKIP
"""

from __future__ import annotations

import math

from .base import Solver, register

BETAS = (0.9, 0.99)  # Adam's moment decays (the authors' code)
ADAM_EPS = 1e-8


@register
class REDDiff(Solver):
    """Variational posterior mean by Adam on the RED-diff loss (Algorithm 1, descending t)."""

    name = "reddiff"
    description = (
        "RED-diff (Mardani et al. 2024): Adam on ||y - A mu||^2 + SNR-weighted denoising regulariser"
    )
    defaults = {"steps": 1000, "lr": 0.1, "lam": 0.25}

    def validate_params(self) -> None:
        super().validate_params()
        self.check_numbers("lr", positive=True)
        self.check_numbers("lam")

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        prior = self.prior
        y_z, sigma_z, noise = self.model_problem(y, op, sigma_y, generator)
        lr, lam = float(self.params["lr"]), float(self.params["lam"])
        n, m = math.prod(op.in_shape), math.prod(op.out_shape)
        mu = op.damped_pinv(y_z, sigma_z**2)  # mu_0 = A^T (A A^T + sigma_y^2 I)^-1 y  (A^+ y if sigma_y = 0)
        m1, m2 = mu.new_zeros(mu.shape), mu.new_zeros(mu.shape)
        for k, s in enumerate(self.iterate(self.time_grid(), progress), start=1):
            eps = noise()
            x_t = math.sqrt(s.ab_t) * mu + math.sqrt(1.0 - s.ab_t) * eps
            eps_hat = prior.eps(x_t, s.t)  # one NFE, no back-propagation
            lam_t = lam * math.sqrt((1.0 - s.ab_t) / s.ab_t)  # lambda sigma_t / alpha_t
            grad = op.At(op.A(mu) - y_z) / m + lam_t * (eps_hat - eps) / n
            m1 = BETAS[0] * m1 + (1 - BETAS[0]) * grad  # Adam
            m2 = BETAS[1] * m2 + (1 - BETAS[1]) * grad * grad
            step = lr * (m1 / (1 - BETAS[0] ** k)) / ((m2 / (1 - BETAS[1] ** k)).sqrt() + ADAM_EPS)
            mu = mu - step
            self.report(callback, s.i, s.t, x_t, mu)
        return prior.to_image(mu)
