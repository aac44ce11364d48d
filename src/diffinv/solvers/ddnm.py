"""DDNM and DDNM+: range-null-space decomposition in the reverse diffusion (Wang, Yu, Zhang 2022).

Reference: Y. Wang, J. Yu, J. Zhang, "Zero-Shot Image Restoration Using Denoising Diffusion
Null-Space Model", ICLR 2023, arXiv:2212.00490.

Equation numbers below are not quoted: we cite sections and algorithms of the paper.

DDNM (Section 3.2, Algorithm 1). A solution of ``A x = y`` splits into a range part fixed by the
data and a free null-space part, ``x = A^+ y + (I - A^+ A) x_bar`` (Section 3.1). At every reverse
step the Tweedie estimate of the prior is made consistent by replacing its range-space content:

    x0|t  = (x_t - sqrt(1 - abar_t) eps(x_t, t)) / sqrt(abar_t)                      (Tweedie)
    x^0|t = A^+ y + (I - A^+ A) x0|t = x0|t + A^+ (y - A x0|t)            (range-null replacement)

and the state moves to the next (skipped) level t' < t. Two updates are offered (``noise``):

* ``"ddnm"`` (default), the update of the authors' code, with the network's eps:
      x_t' = sqrt(abar_t') x^0|t + sqrt(1 - abar_t') (eta z + sqrt(1 - eta^2) eps(x_t, t)).
  It is not marginal preserving: with an exact denoiser its samples are under-dispersed
  (about 0.7-0.75x the posterior variance at eta = 0.85 for a Gaussian prior, 100-1000 steps;
  see tests/solvers/test_ddnm.py).
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
``SVDOperator`` the CT operator uses it too, through its ``partial_svd()`` (U, s, V from the Gram
eigendecomposition): Sigma_t A^+ r = V diag(lambda_t,i / s_i) U^T r and
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
and eta = 1 (c_eps = 0) x_t' is built from x^0|t and fresh noise only. Measured with the shipped
natural prior (8 CBSD68 crops, 20 steps, sigma_y = 0.05): Gaussian deblurring 16.4 dB at eta 0.85
vs 24.8 dB at eta 1 (DDRM 25.1), 4x SR 22.5 vs 23.4 dB; CT 18 views, sigma_y = 0.01: 32.1 vs 32.6 dB.
(``noise="ddim"`` with eta = 1, the DDPM posterior of Algorithm 2, keeps the x_t term and also
fails on deblurring, 12.4 dB.)

Time travel (Section 3.4, the time-travel trick): after every ``travel_length`` (L) reverse steps,
the state x_t at grid position k is pushed back L grid steps with the forward process
``q(x_{t_(k-L)} | x_{t_k}) = N(sqrt(abar_(k-L)/abar_k) x, (1 - abar_(k-L)/abar_k) I)`` and the L steps
are redone; this happens ``travel_repeat`` (r) times at each such position (as in RePaint's jump
schedule), costing r L extra network evaluations per jump point. ``travel_length = 0`` disables it.

Calibration of the spread (:mod:`diffinv.posterior`; tests/solvers/test_posterior_calibration.py: exact Gaussian posterior, correlated
6x6 prior, 18 of 36 pixels observed, 2000 samples). Nominal 50% / 90% per-pixel intervals cover
draws of the exact posterior at: DDNM, 100 steps: 0.46 / 0.87, variance ratio 0.98; DDNM
noise="ddim", 100 steps: 0.56 / 0.94, variance ratio 1.94 (over-dispersed and biased: with a prior
correlated across the range and null spaces the replacement is not the posterior, and the
near-nominal coverage is two errors cancelling); DDNM+ with sigma_y = 0.05: 0.23 / 0.50, variance
ratio 0.46 (the same noise realisation in every sample, see above: its spread misses the
measurement noise). Where the prior is diagonal in the operator's singular basis, noise="ddim",
eta = 1, 1000 steps is exact: 0.49 / 0.89, variance ratio 0.97.

Example
-------
>>> solver = get("ddnm", prior, steps=100)                                     # doctest: +SKIP
>>> x = solver(y, op, generator=torch.Generator().manual_seed(0))              # doctest: +SKIP
>>> x = get("ddnm+", prior, travel_length=10, travel_repeat=2)(y, op, sigma_y=0.05)  # doctest: +SKIP
"""

from __future__ import annotations

import math

import torch

from ..operators.base import SVDOperator
from .base import Solver, randn, register

_NOISE_MODES = ("ddnm", "ddim")


def _svd_singulars_full(op: SVDOperator, like: torch.Tensor) -> torch.Tensor:
    """Singular values padded to length n (zeros in the null space), with the operator's pinv threshold."""
    s = op.singulars_like(like).abs()
    full = torch.zeros(op.n, dtype=like.dtype, device=like.device)
    if s.numel():
        keep = s > op.pinv_threshold * s.max()
        full[: s.numel()] = torch.where(keep, s, torch.zeros_like(s))
    return full


def _spectral_basis(op, like: torch.Tensor):
    """``(s, Vt, V)`` for the spectral DDNM+ correction, or None when ``op`` exposes no SVD.

    ``s`` are singular values (zeros where the pseudo-inverse drops them), ``Vt`` maps an image batch
    to its coordinates along the matching right singular vectors and ``V`` maps coordinates back.
    For an ``SVDOperator`` V is a full basis; for operators with ``partial_svd()`` (CT) only the range
    part, which is all the correction needs.
    """
    if isinstance(op, SVDOperator) and op.has_svd:
        return _svd_singulars_full(op, like), op.Vt, op.V
    if hasattr(op, "partial_svd"):
        _, s, Vr = op.partial_svd(dtype=like.dtype, device=like.device)
        shape = tuple(op.in_shape)

        def Vt(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(x.shape[0], -1) @ Vr

        def V(c: torch.Tensor) -> torch.Tensor:
            return (c @ Vr.T).reshape(c.shape[0], *shape)

        return s, Vt, V
    return None


@register
class DDNM(Solver):
    """DDNM (Algorithm 1): replace the range-space part of the Tweedie estimate by A^+ y each step."""

    name = "ddnm"
    description = "DDNM (Wang et al. 2022): range-null-space projection of x0|t each step; exact A x = y"
    defaults = {"steps": 100, "eta": 0.85, "noise": "ddnm"}
    #: per operator family (``Solver.task_defaults``; DDNM+ inherits them). CT: 50 steps, chosen on
    #: the validation split of benchmarks/ct.py (ct_sweep.md: +0.9 dB from 25 to 50 steps at 8 and
    #: 18 views); 38.1 dB at 18 views on the test phantoms (FBP 27.8), ct-noisy: 37.0 dB with DDNM+.
    task_defaults = {"ct": {"steps": 50}}
    supports_noise = False

    def validate_params(self) -> None:
        super().validate_params()
        if self.params["noise"] not in _NOISE_MODES:
            raise ValueError(f"noise must be one of {_NOISE_MODES}, got {self.params['noise']!r}")
        for key in ("travel_length", "travel_repeat"):
            if key in self.params:
                v = self.params[key]
                if isinstance(v, bool) or int(v) != v or v < 0:
                    raise ValueError(f"{key} must be an integer >= 0, got {v!r}")

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        # Plain DDNM ignores sigma_y: it projects onto the (possibly noisy) y exactly.
        y_z, _ = self.measurement_to_model(y, op, sigma_y)
        return self._sample(y_z, op, 0.0, 0, 0, generator, progress, callback)

    # ------------------------------------------------------------------ shared sampler
    def _eta(self, sigma_z: float) -> float:
        return float(self.params["eta"])

    def _coefficients(self, ab_t: float, ab_n: float, eta: float):
        """(a_t, sigma_t, c_eps) of the update x_t' = a x^0 + c_eps eps + sigma_t z (see module doc).

        For ``noise="ddim"`` the eps^ term itself contains x^0|t, which is folded into ``a_t``.
        """
        if self.params["noise"] == "ddnm":
            sigma = eta * math.sqrt(1.0 - ab_n)
            c_eps = math.sqrt(1.0 - ab_n) * math.sqrt(max(1.0 - eta**2, 0.0))
            return math.sqrt(ab_n), sigma, c_eps
        # DDIM (Song et al. 2021, eq. 16): sigma_t(eta)
        sigma = eta * math.sqrt((1.0 - ab_n) / (1.0 - ab_t)) * math.sqrt(max(1.0 - ab_t / ab_n, 0.0))
        c_eps = math.sqrt(max(1.0 - ab_n - sigma**2, 0.0))
        a = math.sqrt(ab_n) - c_eps * math.sqrt(ab_t / (1.0 - ab_t))
        return a, sigma, c_eps

    def _correct(self, x0, y_z, op, sigma_z, a, sigma, z):
        """Range-space correction (DDNM / DDNM+) and the noise of the step (sigma_t z or Phi_t^1/2 z)."""
        if sigma_z == 0.0:
            x0_hat = op.project(x0, y_z)  # A^+ y + (I - A^+ A) x0|t   (Algorithm 1)
            noise = None if z is None else sigma * z
            return x0_hat, noise
        resid = op.pinv(op.A(x0) - y_z)  # A^+ (A x0|t - y)
        spectral = _spectral_basis(op, x0)
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
        sched = prior.schedule
        ts = [int(t) for t in self.timesteps().tolist()]
        grid = ts + [-1]
        abar = [float(sched.alpha_bar(t)) for t in grid]
        S = len(ts)
        eta = self._eta(sigma_z)
        shape = (y_z.shape[0], *op.in_shape)
        x = randn(shape, generator, y_z)  # x_T ~ N(0, I)
        x0_hat = x
        pos, step = 0, 0
        jumps: dict[int, int] = {}
        total = S + travel_repeat * travel_length * (((S - 1) // travel_length) if travel_length else 0)
        bar = self.iterate(range(total), progress)
        it = iter(bar)
        while pos < S:
            t, ab_t, ab_n = grid[pos], abar[pos], abar[pos + 1]
            x0 = prior.x0(x, t)  # x0|t, Tweedie
            a, sigma, c_eps = self._coefficients(ab_t, ab_n, eta)
            z = randn(shape, generator, y_z) if sigma > 0 else None
            x0_hat, noise = self._correct(x0, y_z, op, sigma_z, a, sigma, z)
            if self.params["noise"] == "ddnm":
                eps = (x - math.sqrt(ab_t) * x0) / math.sqrt(1.0 - ab_t)  # network eps
            else:
                eps = (x - math.sqrt(ab_t) * x0_hat) / math.sqrt(1.0 - ab_t)  # eps consistent with x^0|t
            if callback is not None:
                callback(step, x, prior.to_image(x0_hat))
            x = math.sqrt(ab_n) * x0_hat + c_eps * eps
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
                    ratio = abar[back] / abar[pos]
                    x = math.sqrt(ratio) * x + math.sqrt(1.0 - ratio) * randn(shape, generator, y_z)
                    pos = back
        if hasattr(bar, "close"):
            bar.close()
        return prior.to_image(x0_hat)


@register
class DDNMPlus(DDNM):
    """DDNM+ (Section 3.3-3.4): noise-aware scaled range correction and time travel."""

    name = "ddnm+"
    description = "DDNM+ (Wang et al. 2022): noise-scaled range correction (per singular value) + time travel"
    defaults = {"steps": 100, "eta": None, "noise": "ddnm", "travel_length": 0, "travel_repeat": 1}
    supports_noise = True

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
