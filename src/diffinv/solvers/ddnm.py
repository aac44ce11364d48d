"""DDNM and DDNM+: range-null-space decomposition in the reverse diffusion (Wang, Yu, Zhang 2022).

Reference: Y. Wang, J. Yu, J. Zhang, "Zero-Shot Image Restoration Using Denoising Diffusion
Null-Space Model", ICLR 2023, arXiv:2212.00490.

Equation numbers below are not quoted: we cite sections and algorithms of the paper.

DDNM (Section 3.2, Algorithm 1). A solution of ``A x = y`` splits into a range part fixed by the
data and a free null-space part, ``x = A^+ y + (I - A^+ A) x_bar`` (Section 3.1). At every reverse
step the Tweedie estimate of the prior is made consistent by replacing its range-space content:

    x0|t  = E[x_0 | x_t], the prior's Tweedie estimate                               (Tweedie)
    x^0|t = A^+ y + (I - A^+ A) x0|t = x0|t + A^+ (y - A x0|t)            (range-null replacement)

and the state moves to the next (skipped) level t' < t. Which x0|t (``clip_x0``):

* ``clip_x0=True`` (default): ``prior.x0``, which network priors clamp to their data range
  (``NetworkPrior(clip_x0=True)``, the default of every loaded checkpoint); the eps of the update
  below is then the noise consistent with the clamped estimate,
  eps = (x_t - sqrt(abar_t) x0|t) / sqrt(1 - abar_t), not the network's output.
* ``clip_x0=False``: the raw estimate of the network's eps, x0|t = (x_t - sqrt(1 - abar_t) eps) /
  sqrt(abar_t), and that eps in the update: with ``noise="ddnm"`` and sigma_y = 0 this is exactly
  the update of the authors' SVD-based code (``ddnm_diffusion`` in ``functions/svd_ddnm.py``;
  ``tests/solvers/test_ddnm.py`` checks it against the update written out). The clamp matters: with the shipped prior the unclamped update diverges at eta 0
  (benchmarks/results/solver_notes.md, DDNM). For an exact prior (``GaussianPrior``, no clamp) the
  two settings agree up to round-off.

Two updates are offered (``noise``; the coefficients are ``priors.steps.ddim_coefficients``):

* ``"ddnm"`` (default), the form of the authors' update:
      x_t' = sqrt(abar_t') x^0|t + sqrt(1 - abar_t') (eta z + sqrt(1 - eta^2) eps).
  It is not marginal preserving: with an exact denoiser its samples are under-dispersed
  (benchmarks/results/solver_notes.md, calibration).
* ``"ddim"``, the marginal-preserving DDIM step (Song et al. 2021, eq. 12) with x0 := x^0|t:
      x_t' = sqrt(abar_t') x^0|t + sqrt(1 - abar_t' - s_t^2) eps^ + s_t z,
      s_t  = eta sqrt((1 - abar_t') / (1 - abar_t)) sqrt(1 - abar_t / abar_t'),
      eps^ = (x_t - sqrt(abar_t) x^0|t) / sqrt(1 - abar_t).
  eps^ is the noise *consistent with x^0|t and x_t*, not the network's eps: DDIM's
  q_sigma(x_t' | x_t, x_0) preserves the marginals q(x_t' | x_0) only when eps^ is defined from the
  same x_0 that the step conditions on (Song et al. 2021, Lemma 1). With eta = 1 the step is exactly
  the DDPM posterior q(x_t' | x_t, x^0|t) of the paper's Algorithm 1, so that, for an exact
  denoiser, 1000 steps sample the posterior (tested with a Gaussian prior). In the null space the
  two choices coincide (x^0|t and x0|t agree there); they differ in the range space.

DDNM+ (Section 3.3, Algorithm 2). For ``y = A x + n``, ``n ~ N(0, sigma_y^2 I)``, the range-space
correction is scaled so that the measurement noise it carries into x_t' never exceeds the noise the
step adds anyway. With A = U S V^T, ``s_i`` the singular values:

    x^0|t = x0|t - Sigma_t A^+ (A x0|t - y),      Sigma_t = V diag(lambda_t,i) V^T
    x_t'  ~ N(mu_t(x_t, x^0|t), Phi_t),           Phi_t   = V diag(gamma_t,i) V^T
    lambda_t,i = 1                       if sigma_t >= a_t sigma_y / s_i
               = s_i sigma_t / (a_t sigma_y)  otherwise
    gamma_t,i  = sigma_t^2 - (a_t lambda_t,i sigma_y / s_i)^2   (= sigma_t^2 where s_i = 0)

where ``a_t`` is the coefficient of x^0|t in the update and ``sigma_t`` the standard deviation of its
fresh noise (a_t lambda_t,i sigma_y / s_i is the std of the measurement noise that reaches x_t' in
spectral coordinate i). The paper writes them for the DDPM posterior; we use the values of the
update actually run: ``noise="ddnm"``: a_t = sqrt(abar_t'), sigma_t = eta sqrt(1 - abar_t');
``noise="ddim"``: a_t = sqrt(abar_t') - sqrt(1 - abar_t' - s_t^2) sqrt(abar_t / (1 - abar_t)),
sigma_t = s_t (for eta = 1 these are the paper's a_t and sigma_t). Only the range part of the SVD
is needed (lambda and gamma act as 1 and sigma_t^2 on the null space), so besides every
``SVDOperator`` the CT operator uses it too, through its ``spectral_view`` (the range part of the
SVD from the Gram eigendecomposition): Sigma_t A^+ r = V diag(lambda_t,i / s_i) U^T r and
Phi_t^1/2 z = sigma_t z + V diag(sqrt(gamma_t,i) - sigma_t) V^T z. This matters there: the exact
CT pseudo-inverse amplifies sinogram noise by up to 1/s_min (about 1e3 at 64 px), which the scalar
form cannot see. Other operators without an SVD use the paper's scalar simplification
Sigma_t = lambda_t I, Phi_t = gamma_t I (the formulas with s_i = 1, i.e. assuming ``A^+ n`` has
about the per-pixel std sigma_y, true for masks and row-orthonormal A).
With sigma_y = 0, lambda = 1 and gamma = sigma_t^2, so DDNM+ reduces exactly to DDNM. Note that the
last step (abar_t' = 1) has sigma_t = 0, hence lambda = 0 for noisy data: the returned image is the
prior's denoised estimate there, not a projection onto the noisy y. A property of the method (not
of this implementation): the measurement noise carried by lambda_t,i A^+ n is the *same* realisation
at every step and in every sample drawn for one y, though it stands in for fresh noise; where
``s_i`` is small but non-zero (deblurring) the sample mean then carries that noise realisation, an
error that averaging samples does not remove (see the usefulness numbers printed by
tests/solvers/test_ddnm.py; DDRM does better there).

DDNM+'s ``eta`` defaults to None: 0.85 (as DDNM) without noise, 1.0 with noise. With noise and
``eta < 1`` both updates carry part of x_t into x_t' (the network's eps, resp. eps^), and with it the
measurement noise that Sigma_t let into the previous step; since it is the same realisation every
step, the carried and the new copies add up coherently instead of in quadrature, and in
coordinates where lambda_t,i < 1 the noise left in x_t' exceeds its level. With ``noise="ddnm"``
and eta = 1 (c_eps = 0) x_t' is built from x^0|t and fresh noise only; ``noise="ddim"`` with eta = 1
(the DDPM posterior of Algorithm 2) keeps the x_t term (measured on deblurring, SR and CT:
benchmarks/results/solver_notes.md, DDNM).

Time travel (Section 3.4, the time-travel trick): after every ``travel_length`` (L) reverse steps,
the state x_t at grid position k is pushed back L grid steps with the forward process
``q(x_{t_(k-L)} | x_{t_k}) = N(sqrt(abar_(k-L)/abar_k) x, (1 - abar_(k-L)/abar_k) I)`` and the L steps
are redone; this happens ``travel_repeat`` (r) times at each such position (as in RePaint's jump
schedule), costing r L extra network evaluations per jump point. ``travel_length = 0`` disables it.

Calibration of the spread against an exact Gaussian posterior (:mod:`diffinv.posterior`,
tests/solvers/test_posterior_calibration.py, 100 steps): 90% coverage 0.87 at the default eta 0.85,
0.90 at eta 0.6 (variance ratio 1.08), which is the eta to use for several samples
(``solver.sample(..., n=K)``; on real data, benchmarks/results/posterior.md); details in
benchmarks/results/solver_notes.md.

Deviations from the authors' code (github.com/wyhuai/DDNM: ``functions/svd_ddnm.py``, and
``simplified_ddnm_plus`` / ``svd_based_ddnm_plus`` in ``guided_diffusion/diffusion.py``):

* x0|t is clamped to the data range and eps rebuilt from it (``clip_x0=True``, see above); theirs
  is the raw x0|t and the network's eps (``clip_x0=False``). Side by side on sr4 (same network,
  operator, schedule and x_T) the clamp was the whole difference (solver_notes.md).
* Time grid: ours is ``priors.steps.grid_times``; theirs is t_i = i * skip, skip = T // S. The two
  agree when S divides T (100 steps: 990, ..., 10, 0); otherwise ours is round(linspace(0, T - 1, S))
  and starts at T - 1 (3 steps: 999, 500, 0 against their 666, 333, 0). ``spacing="skip"`` gives
  theirs for every step count: with ``clip_x0=False`` and ``noise="ddnm"`` that is their update.
* ``noise="ddim"`` is ours; ``"ddnm"`` is their update (the paper's Algorithm 1 writes the DDPM
  posterior instead).
* DDNM+ (sigma_y > 0): their SVD path compares s_i sigma_t with a_t sigma_y using
  sigma_t = sqrt(1 - abar_t') whatever eta, multiplies lambda_t,i by sqrt(1 - eta^2) where it is < 1,
  and drops the eps term in every observed coordinate (fresh noise of std eta sigma_t where
  s_i sigma_t < a_t sigma_y, sqrt(sigma_t^2 - a_t^2 sigma_y^2 / s_i^2) where it is larger); their
  simplified path (no SVD) uses one scalar lambda_t, computed with sqrt(1 - abar_t'^2) and
  abar_t' (not its root) for a_t, and scales both noise terms by gamma_t (sqrt(1 - abar_t'^2) when
  sigma_y = 0, so that path differs from their SVD one even without noise). Ours derives lambda and
  gamma from the update actually run, for every operator with a spectral view (CT included), and
  keeps the c_eps eps term.
* Time travel: theirs follows RePaint's jump schedule, with jump points counted from the end of the
  grid, ``travel_repeat`` counting passes (r - 1 jumps per point), and each jump re-noising their
  last raw x0|t to the level L steps back, q(x_t'' | x0|t); ours jumps r times per point, counts
  points from the start, and noises the state itself forward, q(x_t'' | x_t).
* Their ``sigma_y`` is given for [0, 1] images and doubled for the [-1, 1] model space; ours is
  divided by the prior's scale, the same for [-1, 1] models.
* Colorization: their SVD path observes (0.3333, 0.3334, 0.3333) x, their simplified path the
  channel mean; our ``colorize`` uses BT.601 luma weights (``Colorize(shape, weights="mean")``: the
  channel mean).

Example
-------
>>> solver = get("ddnm", prior, steps=100)                                     # doctest: +SKIP
>>> x = solver(y, op, generator=torch.Generator().manual_seed(0))              # doctest: +SKIP
>>> x = get("ddnm+", prior, travel_length=10, travel_repeat=2)(y, op, sigma_y=0.05)  # doctest: +SKIP
"""

from __future__ import annotations

import math

import torch

from ..errors import DiffinvError
from ..priors.steps import (
    SPACING,
    SPACINGS,
    VARIANCES,
    ddim_coefficients,
    eps_from_x0,
    forward_jump,
    x0_from_eps,
)
from .base import Solver, register

#: the ``noise`` modes: the parametrisations of ``priors.steps.ddim_coefficients``
_NOISE_MODES = VARIANCES


@register
class DDNM(Solver):
    """DDNM (Algorithm 1): replace the range-space part of the Tweedie estimate by A^+ y each step."""

    name = "ddnm"
    description = "DDNM (Wang et al. 2022): range-null-space projection of x0|t each step; exact A x = y"
    defaults = {"steps": 100, "eta": 0.85, "noise": "ddnm", "clip_x0": True, "spacing": SPACING}
    #: per operator family (``Solver.task_defaults``; DDNM+ inherits them). CT: 200 steps, chosen on
    #: 8 real tuning slices (one per patient, outside benchmarks/ct_real.py's 16): +0.4 dB (8 views)
    #: and +1.1 dB (18 views, mean of 8 samples) over 50 steps, which the ellipse phantoms had
    #: chosen (benchmarks/results/solver_notes.md, DDNM).
    task_defaults = {"ct": {"steps": 200}}
    ends_consistent = True

    def validate_params(self) -> None:
        super().validate_params()
        if self.params["spacing"] not in SPACINGS:
            raise DiffinvError(f"spacing must be one of {SPACINGS}, got {self.params['spacing']!r}")
        if self.params["noise"] not in _NOISE_MODES:
            raise DiffinvError(f"noise must be one of {_NOISE_MODES}, got {self.params['noise']!r}")
        if not isinstance(self.params["clip_x0"], bool):
            raise DiffinvError(f"clip_x0 must be True or False, got {self.params['clip_x0']!r}")
        for key in ("travel_length", "travel_repeat"):
            if key in self.params:
                v = self.params[key]
                if isinstance(v, bool) or int(v) != v or v < 0:
                    raise DiffinvError(f"{key} must be an integer >= 0, got {v!r}")

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        # Plain DDNM ignores sigma_y: it projects onto the (possibly noisy) y exactly.
        y_z, _ = self.measurement_to_model(y, op, sigma_y)
        return self._sample(y_z, op, 0.0, 0, 0, generator, progress, callback)

    # ------------------------------------------------------------------ shared sampler
    def _eta(self, sigma_z: float) -> float:
        return float(self.params["eta"])

    def _coefficients(self, ab_t: float, ab_prev: float, eta: float):
        """(a_t, sigma_t, c_eps) of the update x_t' = a x^0 + c_eps eps + sigma_t z (see module doc):
        ``priors.steps.ddim_coefficients`` with ``variance=noise``.

        For ``noise="ddim"`` the eps^ term itself contains x^0|t, which is folded into ``a_t``.
        """
        sigma, c_eps = ddim_coefficients(ab_t, ab_prev, eta, variance=self.params["noise"])
        a = math.sqrt(ab_prev)
        if self.params["noise"] == "ddim":
            a -= c_eps * math.sqrt(ab_t / (1.0 - ab_t))
        return a, sigma, c_eps

    def _correct(self, x0, y_z, op, sigma_z, a, sigma, z):
        """Range-space correction (DDNM / DDNM+) and the noise of the step (sigma_t z or Phi_t^1/2 z)."""
        if sigma_z == 0.0:
            x0_hat = op.project(x0, y_z)  # A^+ y + (I - A^+ A) x0|t   (Algorithm 1)
            noise = None if z is None else sigma * z
            return x0_hat, noise
        resid = op.pinv(op.A(x0) - y_z)  # A^+ (A x0|t - y)
        spectral = op.spectral_view(x0)  # full SVD, CT's range SVD, or None
        if spectral is not None:
            s, Vt, V = spectral  # zeros in s where A^+ drops the direction
            obs = s > 0
            safe_s = torch.where(obs, s, torch.ones_like(s))
            noise_std = a * sigma_z / safe_s  # std of the measurement noise reaching x_t', per coordinate
            if sigma > 0:
                # lambda_t,i = min(1, s_i sigma_t / (a_t sigma_y))
                lam = torch.clamp(sigma / noise_std, max=1.0)
            else:
                lam = torch.zeros_like(s)
            lam = torch.where(obs, lam, torch.zeros_like(lam))
            gamma = torch.where(
                obs, (sigma**2 - (lam * noise_std) ** 2).clamp_min(0.0), torch.full_like(s, sigma**2)
            )
            x0_hat = x0 - V(Vt(resid) * lam)  # x0|t - V Lambda_t V^T A^+ (A x0|t - y)
            # Phi_t^1/2 z = sigma_t z + V diag(sqrt(gamma_i) - sigma_t) V^T z (sigma_t z off the range)
            noise = None if z is None else sigma * z + V(Vt(z) * (gamma.sqrt() - sigma))
            return x0_hat, noise
        # Scalar simplification Sigma_t = lambda_t I, Phi_t = gamma_t I (s_i = 1).
        noise_std = a * sigma_z
        lam = min(1.0, sigma / noise_std) if noise_std > 0 else 1.0
        gamma = max(sigma**2 - (lam * noise_std) ** 2, 0.0)
        x0_hat = x0 - lam * resid
        noise = None if z is None else math.sqrt(gamma) * z
        return x0_hat, noise

    def _sample(self, y_z, op, sigma_z, travel_length, travel_repeat, generator, progress, callback):
        prior = self.prior
        grid = self.time_grid()
        S = len(grid)
        eta = self._eta(sigma_z)
        clip = self.params["clip_x0"]
        draw = self.noise_source(y_z, op, generator)
        x = draw()  # x_T ~ N(0, I)
        x0_hat = x
        pos, step = 0, 0
        jumps: dict[int, int] = {}
        total = S + travel_repeat * travel_length * (((S - 1) // travel_length) if travel_length else 0)
        bar = self.iterate(range(total), progress)
        it = iter(bar)
        while pos < S:
            s = grid[pos]
            if clip:  # x0|t as the prior gives it (clamped to the data range if the prior clamps)
                eps, x0 = None, prior.x0(x, s.t)
            else:  # the authors' code: the raw x0|t of the network's eps
                eps = prior.eps(x, s.t)
                x0 = x0_from_eps(x, eps, s.ab_t)
            a, sigma, c_eps = self._coefficients(s.ab_t, s.ab_prev, eta)
            z = draw() if sigma > 0 else None
            x0_hat, noise = self._correct(x0, y_z, op, sigma_z, a, sigma, z)
            if self.params["noise"] == "ddim":
                eps = eps_from_x0(x, x0_hat, s.ab_t)  # eps^, consistent with x^0|t
            elif eps is None:
                eps = eps_from_x0(x, x0, s.ab_t)  # consistent with the (clamped) x0|t
            self.report(callback, step, s.t, x, x0_hat)
            x = math.sqrt(s.ab_prev) * x0_hat + c_eps * eps
            if noise is not None:
                x = x + noise
            pos += 1
            step += 1
            next(it, None)
            # Time travel (Section 3.4): jump back L grid steps by forward noising, r times per point.
            if travel_length and pos < S and pos >= travel_length and pos % travel_length == 0:
                done = jumps.get(pos, 0)
                if done < travel_repeat:
                    jumps[pos] = done + 1
                    back = pos - travel_length
                    ab = grid.alpha_bars
                    x = forward_jump(x, ab[pos], ab[back], draw())
                    pos = back
        if hasattr(bar, "close"):
            bar.close()
        return prior.to_image(x0_hat)


@register
class DDNMPlus(DDNM):
    """DDNM+ (Section 3.3-3.4): noise-aware scaled range correction and time travel."""

    name = "ddnm+"
    description = "DDNM+ (Wang et al. 2022): noise-scaled range correction (per singular value) + time travel"
    defaults = {
        "steps": 100,
        "eta": None,
        "noise": "ddnm",
        "clip_x0": True,
        "spacing": SPACING,
        "travel_length": 0,
        "travel_repeat": 1,
    }

    def _eta(self, sigma_z: float) -> float:
        """``eta``, or for ``eta=None`` 0.85 without noise and 1.0 with noise (see the module doc)."""
        eta = self.params["eta"]
        if eta is None:
            return 1.0 if sigma_z > 0 else 0.85
        return float(eta)

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        y_z, sigma_z = self.measurement_to_model(y, op, sigma_y)
        self.params["eta"] = self._eta(float(sigma_z))  # eta=None resolved: params show the value used
        return self._sample(
            y_z,
            op,
            float(sigma_z),
            int(self.params["travel_length"]),
            int(self.params["travel_repeat"]),
            generator,
            progress,
            callback,
        )
