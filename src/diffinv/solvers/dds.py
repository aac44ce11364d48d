"""DDS: decomposed diffusion sampling (Chung, Lee, Ye, ICLR 2024).

Reference: H. Chung, S. Lee, J. C. Ye, "Decomposed Diffusion Sampler for Accelerating Large-Scale
Inverse Problems", ICLR 2024, arXiv:2303.05754. Equation and section numbers are not quoted: the text we
could consult was the abstract and the authors' code, whose CT script we cite.

DDIM sampling in which the Tweedie estimate is made data-consistent by a few conjugate-gradient
iterations that start *at* the estimate, with no back-propagation through the network. If the
tangent space of the clean-data manifold at x0|t contains the Krylov subspace
K_M = span{A^T r, (A^T A) A^T r, ...}, r = y - A x0|t, then the CG update stays on the manifold
(the paper's main result), so it can replace MCG's manifold-constrained gradient:

    x0|t  = E[x_0 | x_t]                                                          (Tweedie)
    x^0|t = argmin_{x in x0|t + K_M}  ||y - A x||^2 + gamma ||x - x0|t||^2         (M CG steps)
    x_t'  = sqrt(abar_t') x^0|t + sqrt(1 - abar_t') (eta z + sqrt(1 - eta^2) eps)  (DDIM, DDNM form)

with eps = (x_t - sqrt(abar_t) x0|t) / sqrt(1 - abar_t) the noise of the (unrefined) estimate and
z ~ N(0, I); the last step returns x^0|t. The CG runs on (A^T A + gamma I) d = A^T r from d = 0 and
x^0|t = x0|t + d, which are exactly the iterates of CG on the normal equations started at x0|t
(``operators.cg.cg``). ``gamma = 0`` is the noiseless form; ``gamma > 0`` the noisy
form of the authors' code, whose proximity term keeps the update near x0|t. ``cg_iters=None``
replaces the M iterations by the exact minimiser ``x0|t + op.damped_pinv(r, gamma)`` (closed form
through the SVD, CT's Gram factors, or CG to convergence): with gamma = 0 that is DDNM's
range-null-space projection.

Parameters: ``steps`` (NFE: one per step), ``eta`` (0.85, the paper's and the CT script's value),
``cg_iters`` (M = 5, the authors' default), ``gamma`` (None: 0 without noise and the authors'
1.0 on their data-term weight -- ours is its reciprocal, see below -- when sigma_y > 0), ``start``
(1: from x_T ~ N(0, I) as in the paper; s < 1: the last ``steps`` levels of a grid of steps / s
levels, from ``op.initial_estimate(y)`` noised to the first of them, ``_guidance.warm_start``).

``data_tv`` (0: off) adds a total-variation term to the data step,

    x^0|t = argmin_x ||y - A x||^2 + gamma ||x - x0|t||^2 + data_tv TV(x)          (TV data step)

(isotropic TV in model units), solved from the quadratic step's x^0|t by ``tv_iters`` FISTA steps
with an FGP TV prox of ``tv_inner`` iterations (``classical.tv_prox_fgp``; Beck & Teboulle 2009).
DiffusionMBIR (Chung, Ryu, McCann, Klasky, Ye, CVPR 2023, arXiv:2211.10655), whose 3D CT setting
DDS takes up, puts such a term (TV along z) into the data step, solved by ADMM-CG; ours is
in-plane, for noisy 2D CT, where the quadratic step passes the sinogram's noise into the image,
and for very sparse views (results: benchmarks/results/solver_notes.md, "DDS: a TV term in the
data step"; off by default).

``data_box = True`` (False: off) keeps the data step in the image range [0, 1] (model units),

    x^0|t = argmin_{x in range} ||y - A x||^2 + gamma ||x - x0|t||^2 + data_tv TV(x)   (box data step)

by the same FISTA iteration with the FGP prox constrained to the range (Beck & Teboulle's
constrained TV denoising; with data_tv = 0 the prox is the projection, i.e. projected FISTA). It
is the noisy counterpart of ``feasible_rounds``: windowed CT holds most of its pixels at the ends
of the range (air and bone), and the unconstrained step lets the sinogram's noise push them out,
which the prior then has to undo. Ours, not the paper's (results: benchmarks/results/solver_notes.md,
"DDS: the image range in the noisy data step"; off by default).

``feasible_rounds = N`` (0: off; noiseless measurements only) ends every data step with N rounds of
alternating projections onto {x : A x = y} and the image range, in model units
(:func:`diffinv.operators.project_feasible`):

    x^0|t <- P_box P_{A x = y} ... P_box P_{A x = y} x^0|t                          (N rounds)

A noiseless sinogram allows only the images of that convex set, and the plain data step lands
on {A x = y} but outside the range (negative air, overshoot at edges), which the next DDIM step
then carries. Each round moves x^0|t no farther from any image of the set (the true one among
them). ``feasible_method="nearest"`` makes the N steps accelerated dual ascent towards the
nearest point of the set instead (:func:`diffinv.operators.nearest_feasible`; fewer steps for the
same effect). With noise the true image is not in {A x = y}, so a noisy measurement is refused.
Ours, not the paper's (results: benchmarks/results/solver_notes.md, "DDS: the image range in the data
step"; off by default).

CT defaults (``task_defaults["ct"]``, chosen on 4 dev slices of ct_real.py, 8 and 18 views, with
and without noise): eta = 1, start = 0.35 (from the FBP), ``cg_iters=None`` (the Gram
factors make the exact minimiser cheaper than 5 CG steps; at 18 views noiseless 5 steps were
0.7 dB below it). Each choice was worth 0.3-0.8 dB at 25 steps; results:
benchmarks/results/ct-real-dds/ct_real.md. 200 steps (25 before): on 8 real tuning slices outside
ct_real.py's 16, 25 / 50 / 100 / 200 steps gave 22.41 / 22.78 / 22.79 / 22.99 dB at 8 views and
27.25 / 27.96 / 28.26 / 28.79 dB at 18 (noiseless). The authors' CT script runs 50 steps from noise.

Deviations from the authors' code (github.com/HJ-harry/DDS, ``solver_2d.py``):

* Their noisy CG solves (I + g A^T A) x = x0|t + g A^T y with g = ``--gamma`` weighting the data
  term; ours weights the proximity term, gamma = 1 / g (the same minimiser and the same CG
  iterates, since CG is invariant to scaling the system), in the prior's model space.
* x0|t is the prior's estimate, clamped to the data range by network priors, and eps is the
  noise consistent with it; theirs is the raw estimate and the network's eps (for an exact prior
  the two agree).
* Time grid: ``priors.steps.grid_times`` (the same uniform skip as theirs when ``steps`` divides T);
  ``start < 1`` (the CT default) is ours.

Example
-------
>>> x = get("dds", prior, steps=25)(sinogram, op, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
"""

from __future__ import annotations

import math

from ..errors import DiffinvError
from ..operators.cg import cg
from ..operators.feasible import nearest_feasible, project_feasible
from ..priors.steps import ddim_coefficients, eps_from_x0
from ._guidance import check_start, warm_start
from .base import Solver, register
from .classical import power_norm2, tv_prox_fgp

#: ``feasible_method``: alternating projections (a point of the set) or the nearest point of it
FEASIBLE_METHODS = {"pocs": project_feasible, "nearest": nearest_feasible}

#: the gamma (data-term weight g = 1 / gamma) of the authors' noisy runs
AUTHORS_NOISY_GAMMA = 1.0


@register
class DDS(Solver):
    """DDS: DDIM with the Tweedie estimate refined by M conjugate-gradient steps on the data."""

    name = "dds"
    description = (
        "DDS (Chung et al. 2024): DDIM + a few CG steps on ||y - A x||^2 from x0|t; no network gradient"
    )
    defaults = {
        "steps": 50,
        "eta": 0.85,
        "cg_iters": 5,
        "gamma": None,
        "start": 1.0,
        "data_tv": 0.0,
        "data_box": False,
        "tv_iters": 20,
        "tv_inner": 10,
        "feasible_rounds": 0,
        "feasible_method": "pocs",
    }
    #: per operator family (``Solver.task_defaults``). CT: 200 steps from the FBP at 0.35 of the
    #: time range, fresh noise, the exact minimiser (benchmarks/results/ct-real-dds/ct_real.md; the
    #: steps: benchmarks/results/solver_notes.md, DDS).
    task_defaults = {"ct": {"steps": 200, "eta": 1.0, "start": 0.35, "cg_iters": None}}

    def validate_params(self) -> None:
        super().validate_params()
        check_start(self.params["start"])
        m = self.params["cg_iters"]
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise DiffinvError(f"cg_iters must be a positive integer or None, got {m!r}")
        self.check_numbers("gamma", optional=True)
        self.check_numbers("data_tv")
        if not isinstance(self.params["data_box"], bool):
            raise DiffinvError(f"data_box must be True or False, got {self.params['data_box']!r}")
        for key in ("tv_iters", "tv_inner"):
            v = self.params[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise DiffinvError(f"{key} must be a positive integer, got {v!r}")
        v = self.params["feasible_rounds"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise DiffinvError(f"feasible_rounds must be an integer >= 0, got {v!r}")
        if self.params["feasible_method"] not in FEASIBLE_METHODS:
            raise DiffinvError(
                f"feasible_method must be one of {sorted(FEASIBLE_METHODS)}, got {self.params['feasible_method']!r}"
            )

    def gamma_for(self, sigma_y: float) -> float:
        """The proximity weight used: ``gamma``, or for None 0 (sigma_y = 0) / the authors' 1.0."""
        g = self.params["gamma"]
        if g is None:
            return 0.0 if sigma_y == 0 else AUTHORS_NOISY_GAMMA
        return float(g)

    def iterative_step(self) -> bool:
        """Whether the data step ends with :meth:`tv_refine` (a TV term or the range constraint)."""
        return bool(self.params["data_tv"] or self.params["data_box"])

    def refine(self, x0, y_z, op, gamma: float):
        """x^0|t: M CG steps on (A^T A + gamma I) d = A^T (y - A x0) from d = 0 (or the exact d)."""
        r = y_z - op.A(x0)
        m = self.params["cg_iters"]
        if m is None:
            x = x0 + op.damped_pinv(r, gamma)
        else:
            x = x0 + cg(lambda p: op.At(op.A(p)) + gamma * p, op.At(r), int(m), 1e-12)
        if self.iterative_step():
            x = self.tv_refine(x, x0, y_z, op, gamma)
        return x

    def tv_refine(self, x, x0, y_z, op, gamma: float):
        """FISTA from ``x`` on ||y - A x||^2 + gamma ||x - x0||^2 + data_tv TV(x) (isotropic TV, model
        units; with ``data_box`` over the image range only): ``tv_iters`` proximal-gradient steps,
        step 1 / Lip with Lip = 2 (||A||^2 + gamma), the prox of TV (+ the range) by FGP
        (``tv_inner`` iterations, warm-started dual; ``classical.tv_prox_fgp``; with data_tv = 0
        the prox is the projection onto the range: projected FISTA)."""
        tv = float(self.params["data_tv"])
        box, bounds = bool(self.params["data_box"]), self.prior.model_range()
        lip = 2.0 * (self._norm2 + gamma)
        u, x_prev, t, dual = x, x, 1.0, None
        for _ in range(int(self.params["tv_iters"])):
            grad = 2.0 * op.At(op.A(u) - y_z) + 2.0 * gamma * (u - x0)
            # argmin (lip / 2) ||z - b||^2 + tv TV(z) = argmin ||z - b||^2 + 2 (tv / lip) TV(z)
            z, dual = tv_prox_fgp(u - grad / lip, tv / lip, int(self.params["tv_inner"]), box, dual, bounds)
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            u = z + ((t - 1.0) / t_next) * (z - x_prev)
            x_prev, t = z, t_next
        return x_prev

    def estimate(self, x, step, y_z, op, callback):
        """x0|t at the state ``x`` (the prior's Tweedie estimate; SCD adapts the network first)."""
        return self.tweedie(x, step, callback)[0]

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        prior = self.prior
        y_z, sigma_z, noise = self.model_problem(y, op, sigma_y, generator)
        gamma = self.gamma_for(float(sigma_z))
        eta = float(self.params["eta"])
        rounds = int(self.params["feasible_rounds"])
        if rounds and float(sigma_z) > 0:
            # with noise the true image is not in {A x = y}: projecting onto it would fit the noise
            raise DiffinvError(
                f"feasible_rounds needs a noiseless measurement (sigma_y = 0), got sigma_y = {sigma_y:g}"
            )
        lo, hi = self.prior.model_range()
        to_feasible = FEASIBLE_METHODS[self.params["feasible_method"]]
        # ||A||^2 for the TV data step's step size, once per call
        self._norm2 = power_norm2(op, y_z) if self.iterative_step() else 0.0
        steps, x = warm_start(
            prior.schedule, int(self.params["steps"]), float(self.params["start"]), y_z, op, noise
        )
        x0_hat = x
        for s in self.iterate(steps, progress):
            x0 = self.estimate(x, s, y_z, op, callback)  # x0|t, one NFE
            x0_hat = self.refine(x0, y_z, op, gamma)  # M CG steps in x0|t + K_M
            if rounds:  # towards {A x = y} and the image range at once
                x0_hat = to_feasible(op, x0_hat, y_z, lo, hi, rounds)
            if not s.last:
                sigma, c_eps = ddim_coefficients(s.ab_t, s.ab_prev, eta, variance="ddnm")
                x = math.sqrt(s.ab_prev) * x0_hat + c_eps * eps_from_x0(x, x0, s.ab_t)
                if sigma > 0:
                    x = x + sigma * noise()
        return prior.to_image(x0_hat)
