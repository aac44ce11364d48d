"""score-proj: predictor-corrector sampling with measurement mixing (Song, Shen, Xing, Ermon, ICLR 2022).

Reference: Y. Song, L. Shen, L. Xing, S. Ermon, "Solving Inverse Problems in Medical Imaging with
Score-Based Generative Models", ICLR 2022, arXiv:2111.08005 ("score-CT").

The paper writes the measurement operator as A = P(Lambda) T with an invertible transform T (the
full-view sinogram / the Fourier transform) followed by a subsampling mask Lambda. Unconditional
score-SDE sampling is made conditional by (i) noising the measurement to the current level,

    y_i = y + sigma_i A z,          z ~ N(0, I) in image space            (a sample of p_i(y_i | y), VE)

and (ii) mixing it with the current sample in the transformed domain, with weight lambda in [0, 1]
(the solution of a proximal problem that trades the two off):

    x' = T^{-1} [ lambda Lambda P^{-1}(Lambda) y_i + (1 - lambda) Lambda T x + (I - Lambda) T x ]
       = x + lambda T^{-1} P(Lambda)^T (y_i - A x).

For a unitary T (MRI, and every operator whose A^+ = A^T, e.g. masks) T^{-1} P^T = A^+, and for a
general A the natural counterpart -- the one that mixes only in measurement space and is an exact
projection at lambda = 1 -- is

    x' = x + lambda A^+ (y_i - A x),                                                   (this module)

which is what we implement, for every operator. At lambda = 1 it is an exact projection
(A x' = y_i) for any A. For CT, T^{-1} P^T applied to the residual is the full-view reconstruction
of the zero-filled residual sinogram, a different (cheaper, approximate) left inverse; it agrees
with A^+ only when the measured rows of T are orthonormal. Cost: two ``op.pinv`` per step, which
for operators without an SVD (CT) are conjugate-gradient solves. lambda = 1 is the hard projection
(score-SDE inpainting / the "projection" baseline); lambda < 1 keeps part of the sample.

Sampling is score-SDE PC over the VE view of the prior (sigma_i = ``prior.schedule.sigmas[t_i]`` on
the selected grid, x_N ~ N(0, sigma_N^2 I)); at each level the data step precedes both the
Langevin corrector and the reverse-diffusion predictor (as in the authors' release; the paper's
Algorithm writes one data step per iteration of the PC update):

    x <- x + lambda A^+ (y_i - A x);  x <- x + e s(x) + sqrt(2 e) z,  e = 2 (snr ||z|| / ||s(x)||)^2
    x <- x + lambda A^+ (y_i' - A x); x <- x + (sigma_i^2 - sigma_{i-1}^2) s(x) + sqrt(sigma_i^2 - sigma_{i-1}^2) z

with sigma_{-1} = 0 and fresh y_i per data step; the Langevin norms are per sample (the score-SDE
code averages them over the batch; ``priors.steps.langevin_step``). The output is the last predictor's mean (noise
removal), finally mixed with the clean y: hard projection (lambda = 1) when sigma_y = 0, so that
A x = y, and weight lambda when sigma_y > 0 (the paper has no explicit noise model; lambda < 1
is its way of down-weighting noisy data).

Measurement noise (sigma_y > 0; ours, the paper has no noise model): A^+ amplifies the noise of y by
up to 1 / s_min (CT: the noisy sinogram made the samples diverge, benchmarks/results/ct-noisy/ct.md),
so every data step, the last one included, uses the damped pseudo-inverse instead,

    A^+ r  ->  A^T (A A^T + gamma_i I)^{-1} r = op.damped_pinv(r, gamma_i),   gamma_i = sigma_y^2 / sigma_i^2

(sigma_y in model units): the MAP step for x' ~ N(x, sigma_i^2 I) and y_i = A x' + sigma_y n, full
projection of the directions with s^2 >> gamma_i, none of those buried in the noise. The last
step uses the last level's sigma. For sigma_y = 0 nothing changes (A^+ exactly).

``predictor="ancestral"`` replaces the reverse-diffusion predictor by SMLD ancestral sampling
(score-SDE, Appendix F): the same mean, with the posterior noise
sqrt(sigma_{i-1}^2 (sigma_i^2 - sigma_{i-1}^2) / sigma_i^2) instead of sqrt(sigma_i^2 - sigma_{i-1}^2),
so that the chain stays on its noise levels when there are few steps (with tens of steps the
reverse-diffusion predictor leaves noise of about sigma_i behind at every step and fails).

Defaults are the authors' CT settings: 1000 steps (their N), snr = 0.246, lambda = 0.841, one
corrector step per level. Random draws per level: measurement noise, Langevin noise, measurement
noise, predictor noise.

NFE: two network evaluations per step (corrector and predictor).

Example
-------
>>> solver = get("score-proj", prior, steps=1000, lam=0.841, snr=0.246)           # doctest: +SKIP
>>> x = solver(sinogram, ParallelBeamCT(256, 23), generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
"""

from __future__ import annotations

from ..errors import DiffinvError
from ..priors.steps import MAX_VE_STEPS, VE_PREDICTORS, check_predictor, langevin_step
from ._guidance import noised_measurement
from .base import Solver, register


@register
class ScoreProj(Solver):
    """Score-SDE predictor-corrector with lambda-mixing of the noised measurement (score-CT)."""

    name = "score-proj"
    description = "score-SDE PC sampling + lambda-weighted measurement mixing (Song et al. 2022, score-CT)"
    defaults = {"steps": 1000, "snr": 0.246, "lam": 0.841, "predictor": "reverse-diffusion"}
    #: per operator family (``Solver.task_defaults``). CT: benchmarks/ct.py's setting (25 steps,
    #: ancestral predictor; lam 0.841 won its validation grid; benchmarks/results/solver_notes.md).
    task_defaults = {"ct": {"steps": 25, "predictor": "ancestral"}}
    ends_consistent = True

    def validate_params(self) -> None:
        super().validate_params()
        self.check_numbers("snr")
        lam = float(self.params["lam"])
        if not 0.0 <= lam <= 1.0:
            raise DiffinvError(f"lam must be in [0, 1], got {self.params['lam']!r}")
        check_predictor(self.params["predictor"])
        if int(self.params["steps"]) > MAX_VE_STEPS:
            raise DiffinvError(
                f"steps must be at most MAX_VE_STEPS = {MAX_VE_STEPS}, got {self.params['steps']}"
            )

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        prior = self.prior
        y_z, sigma_z, noise = self.model_problem(y, op, sigma_y, generator)
        snr, lam = float(self.params["snr"]), float(self.params["lam"])
        grid = self.time_grid(continuous=True)  # continuous beyond the training steps
        predict = VE_PREDICTORS[self.params["predictor"]]

        def data_step(r, sigma):  # A^+ r, or with noise the damped A^T (A A^T + sigma_y^2 / sigma^2 I)^-1 r
            return op.pinv(r) if sigma_z == 0.0 else op.damped_pinv(r, sigma_z**2 / sigma**2)

        def mix(x, sigma, weight=lam):
            y_i = noised_measurement(y_z, op, 1.0, sigma, noise())  # y_i = y + sigma_i A z
            return x + weight * data_step(y_i - op.A(x), sigma)

        x = grid.sigmas[0] * noise()  # x_N ~ N(0, sigma_max^2 I)
        x_mean = x
        for s in self.iterate(grid, progress):
            x = mix(x, s.sigma)
            x0, _ = self.tweedie(x, s, callback, ve=True)
            x = langevin_step(x, (x0 - x) / s.sigma**2, snr, noise())  # corrector
            x = mix(x, s.sigma)
            score = prior.score_ve(x, s.t)
            x, x_mean = predict(x, score, s.sigma, s.sigma_prev, noise())  # predictor
        x = x_mean  # noise removal
        x = x + (1.0 if sigma_z == 0.0 else lam) * data_step(y_z - op.A(x), grid.sigmas[-2])
        return prior.to_image(x)
