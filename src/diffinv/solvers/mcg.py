"""MCG: manifold constrained gradients (Chung, Sim, Ryu, Ye, NeurIPS 2022).

Reference: H. Chung, B. Sim, D. Ryu, J. C. Ye, "Improving Diffusion Models for Inverse Problems
using Manifold Constraints", NeurIPS 2022, arXiv:2206.00941.

Projection-based solvers alternate an unconditional reverse-diffusion step with a projection onto
the (noised) measurement set; MCG adds, between the two, a gradient step of the data misfit of the
Tweedie estimate, taken w.r.t. the current noisy state *through the network* so that the update
stays near the data manifold (Section 3, eqs. 13-16; the numbers on the right are the steps of
Figure 1):

    x0|i      = E[x_0 | x_i]   (Tweedie, from the network)                                     (2)
    x'_{i-1}  = unconditional reverse step from x_i                                            (1)
    x''_{i-1} = x'_{i-1} - alpha_i d/dx_i || W (y - A x0|i) ||_2^2                              (3)
    x_{i-1}   = projection of x''_{i-1} onto {x : A x = y_{i-1}},  y_{i-1} ~ q(y_{i-1} | y)     (4-5)

W = I (``weight_matrix="identity"``) or W = A^+ (``"pinv"``, the weighting the paper uses for CT).
With g = -(1/2) d||W r||^2/dx0 = W^T W r (r = y - A x0|i): g = A^T r for W = I and g = A^+ r for
W = A^+ (because A^T (A A^T)^+ = A^+). The step size is normalised like DPS by the residual norm,
and in addition never lets the image-space gradient be longer than 1, alpha_i = alpha / max(||W r||,
||g||) with alpha = ``grad_weight``; the MCG term is the vector-Jacobian product

    2 alpha (d x0|i / d x_i)^T g / max(||W r||, ||g||)        (per sample, in the prior's model space)

For W = A^+ (||g|| = ||W r||) and for operators with ||A|| <= 1 (masks, pooling, blur, colour,
orthonormal CS: ||A^T r|| <= ||r||) this is the authors' alpha / ||W r||. For CT with W = I,
||A^T r|| / ||r|| is about 30 (line integrals), and alpha / ||r|| made MCG-VP with its defaults
diverge (``_mcg_direction``; benchmarks/results/solver_notes.md, MCG). ``grad_weight = 0`` removes
exactly the term and leaves the projection-only sampler the paper compares against (score-SDE /
ILVR-style replacement).

Two classes share that gradient (:class:`MCG`, the registered name "mcg"): ``form`` chooses the
class, ``get("mcg", prior)`` or ``form="vp"`` builds :class:`MCGVP`, ``form="ve"`` :class:`MCGVE`.
The VP form takes ``steps``, ``grad_weight``, ``weight_matrix`` and ``clip_grad``; the VE form also ``snr``,
``lam``, ``lam_end``, ``lam_schedule``, ``ve_projection``, ``null_space_grad`` and ``predictor``,
which passed to the VP form are an error (ValueError naming the parameter and its form).

VP form (``form="vp"``, the paper's inpainting/colorisation setting with ADM-type models): the
reverse step is the DDPM ancestral step q(x_{i-1} | x_i, x0|i) over the (possibly skipped) grid, and
the projection is onto the measurement noised to the level of x_{i-1},

    y_{i-1} = sqrt(abar_{i-1}) y + sqrt(1 - abar_{i-1}) A z,     x_{i-1} = x'' + A^+ (y_{i-1} - A x'')

(the projection written with A^+: for masks and colour projections A^+ = A^T, as in the paper). At the last step
abar = 1, y_{-1} = y and x_{-1} = x0|0 - (MCG step), projected: the output satisfies A x = y to
round-off. With measurement noise (sigma_y > 0) a hard projection would copy the noise into the
image, so the projection is relaxed to the Tikhonov step

    x_{i-1} = x'' + A^T (A A^T + gamma_i I)^{-1} (y_{i-1} - A x''),  gamma_i = abar_{i-1} sigma_y^2 / (1 - abar_{i-1}),

i.e. each singular direction is corrected by s^2 (1 - abar) / (s^2 (1 - abar) + abar sigma_y^2):
fully while the diffusion noise dominates the (scaled) measurement noise, not at all at the end,
where the MCG gradient alone fits the data (as in DPS). This relaxation is ours; the paper
treats the noiseless case. Random draws per step: the DDPM noise, then the measurement noise z.

VE form (``form="ve"``, the paper's sparse-view CT setting with score-SDE/NCSN++ models):
predictor-corrector sampling (score-SDE) over the VE view of the prior, sigma_i =
``prior.schedule.sigmas[t_i]`` on the selected grid, x_N ~ N(0, sigma_N^2 I). Each step:

    corrector + MCG:  x0 = x0_ve(x, t_i),  s = (x0 - x) / sigma_i^2                      (1 NFE)
                      x' = x + e s + sqrt(2 e) z,  e = 2 (snr ||z|| / ||s||)^2 per sample   (Langevin)
                      x'' = x' + 2 alpha (I - A^+ A) J^T W^T W r / ||W r||,  r = y - A x0   (MCG, step 4)
    projection:       x''' = x'' + lam_i A^T (y_i - A x'') / (A^T A 1),  y_i = y + sigma_i A z   (relaxed)
    predictor:        x = x''' + (sigma_i^2 - sigma_{i-1}^2) s(x''') + sqrt(sigma_i^2 - sigma_{i-1}^2) z  (1 NFE)

with sigma_{-1} = 0 and the last predictor's mean returned (noise removal). ``predictor="ancestral"``
swaps the reverse-diffusion predictor for SMLD ancestral sampling (same mean, noise
sqrt(sigma_{i-1}^2 (sigma_i^2 - sigma_{i-1}^2) / sigma_i^2); score-SDE Appendix F), which tolerates
coarse grids (tens of steps) where reverse diffusion leaves noise of about sigma_i behind. The MCG gradient is
restricted to the null space of A (Figure 1, step 4 "orthogonal complement"), because the relaxed
projection does not overwrite its range-space part (``null_space_grad=False`` skips this, saving
one A^+ per step). The relaxed projection is the SART-type normalised step of the authors' CT code (``AtA_ones`` is A^T A 1, elementwise division, 0 where it
vanishes); ``ve_projection="pinv"`` uses ``lam_i A^+ (y_i - A x'')`` instead, and ``"auto"`` picks
SART when A^T A 1 > 0 wherever the operator sees the image (non-negative operators: masks, blur, CT)
and the pseudo-inverse otherwise (e.g. random +-1 matrices, where A^T A 1 changes sign); with noise
(sigma_y > 0) ``"auto"`` always takes the damped pseudo-inverse below: on noisy sparse-view CT
(sigma 0.01, ``benchmarks/ct.py``, 10 steps) the damped SART step left MCG-VE at or below FBP
(22.80 / 26.97 dB at 8 / 18 views, FBP 20.67 / 27.08); the damped A^+ gives 26.58 / 32.81
(``benchmarks/results/ct-noisy-mcg/ct.md``).
lam_i is ``lam`` (``lam_schedule="constant"``) or goes linearly from ``lam`` to ``lam_end`` over the
steps (``"linear"``, the authors' CT setting 1.0 -> 0.6). For sigma_y = 0 the output is finally
projected exactly, ``x + A^+ (y - A x)``, so that A x = y. With noise (sigma_y > 0; ours, the paper
treats noiseless data) the projection is damped with gamma_i = sigma_y^2 / sigma_i^2 (model units):
``op.damped_pinv(r, gamma_i)`` for A^+, ``A^T r / (A^T A 1 + gamma_i)`` for SART (one majorised
step of ||y_i - A x'||^2 / sigma_y^2 + ||x' - x||^2 / sigma_i^2), and the output gets one damped
step ``x + op.damped_pinv(y - A x, sigma_y^2 / sigma_last^2)`` (sigma_last: the last level); before,
it was returned without a data step, which on noisy CT left MCG-VE below FBP
(benchmarks/results/ct-noisy/ct.md).
Random draws per step: Langevin noise, measurement noise, predictor noise.

Defaults. The paper runs 1000 (VP, ADM) and 2000 (VE, CT) steps. VP steps cannot exceed the prior's
training steps; the VE grid is continuous beyond them (``Solver.time_grid(continuous=True)``: times between training
levels, sigma interpolated in log sigma; at most ``MAX_VE_STEPS``), so ``form="ve", steps=2000,
predictor="reverse-diffusion"`` runs the paper's CT setting. The generic default is 1000 steps for
both forms. Per operator family (``diffinv.families``), ``task_defaults`` (VP) and
``ve_task_defaults`` (VE) replace defaults that are not set explicitly; on CT: VP 25 steps, VE 10
steps with the ancestral predictor (benchmarks/ct.py's validation split; see the class attributes).
``grad_weight=None`` selects the form's default: 1.0 for VP (alpha_i = 1 / ||W r|| for ||A|| <= 1,
DPS-style) and 0.05 for VE, which is the authors' CT weight 0.1 on ``d||A^+ r||/dx`` written in this
alpha / ||W r|| * d||W r||^2 convention. ``weight_matrix="auto"`` is W = I for VP (DPS-like; robust
to measurement noise, which A^+ amplifies for ill-conditioned A) and W = A^+ for VE (the authors'
CT code); the two coincide for masks. After a call ``solver.params`` holds the values used (None
and "auto" resolved). Langevin snr 0.16 (the authors' CT script). Small problems (the Gaussian
tests) need smaller alpha: the normalised step has a fixed length per iteration, large relative to
a 16-pixel image.

NFE: VP one evaluation per step (with back-propagation when grad_weight > 0); VE two per step.

Calibration of the VP form's spread against an exact Gaussian posterior (:mod:`diffinv.posterior`,
tests/solvers/test_posterior_calibration.py, 200 steps): strongly under-dispersed at the default
grad_weight 1.0 (90% coverage 0.63, variance ratio 0.46), close to nominal at 0.1 (0.86, 0.91);
benchmarks/results/solver_notes.md.
Cost: besides the network, a VE step applies A^+ up to twice (W = A^+ and the null-space
restriction). CT's ``op.pinv`` is exact and cheap up to about 64x64 (a cached Gram
eigendecomposition); for large geometries it falls back to conjugate gradients, which then dominates --
use ``weight_matrix="identity"``, ``null_space_grad=False`` there.

Deviations from the authors' code (github.com/HJ-harry/MCG_diffusion: ``p_sample_loop_progressive``
in ``guided_diffusion/gaussian_diffusion.py`` for VP inpainting, ``get_pc_radon_MCG`` in
``controllable_generation.py`` for VE CT; the VP update is also ``ManifoldConstraintGradient`` of
github.com/DPS2022/diffusion-posterior-sampling):

* Step length: theirs is ``scale * grad ||W r||`` (scale 1 in the inpainting code; weight 0.1 on
  ||A^+ r|| for CT), ours ``2 alpha J^T g / max(||W r||, ||g||)``: grad_weight = scale / 2 where
  ||A|| <= 1 or W = A^+ (the VP default 1.0 is twice their inpainting step). The max is ours.
* VP: they noise y to the level of the current step x_i, with noise at pixel size (masked), so
  even the last projection is onto a noisy y (std sqrt(1 - abar_0) ~ 0.01); ours noises it to the
  level of x_{i-1} as ``A z``, and the last projection is onto y (A x = y). Their DDPM step uses
  ADM's learned variance, ours the posterior variance; they run all 1000 steps. Their gradient is
  masked to the unobserved pixels; ours is not restricted in the VP form, which is the same after a
  hard projection (it replaces the range-space part) but not after our relaxed one for noisy data.
* VE: their loop takes the predictor first, then the corrector with the MCG gradient and the
  projection, and returns the last corrector's output; ours takes corrector + gradient + projection,
  then the predictor, and returns the last predictor's mean (projected onto y when sigma_y = 0).
  Their projection residual is taken before the gradient step, ours after it; their null-space
  restriction goes through the full-view CT operator, ``A_all^+ ((1 - mask) A_all g)``, ours is
  ``(I - A^+ A) g``. Their grid is continuous time ``linspace(1, eps, N)`` of their network's VE SDE,
  ours the prior's noise levels. Their Langevin step averages the norms over the batch (score-SDE's
  code), ours takes them per sample; their measurement noise (when on) is drawn in sinogram space,
  ours as ``A z``.
* x0 is the prior's estimate, clamped to the data range by network priors (their VP code clamps
  too, ``clip_denoised``; their VE code uses the raw x + sigma^2 s). ``clip_grad="identity"`` (the
  default) passes the clamp straight through the MCG gradient; theirs goes through ``torch.clamp``
  (0 on saturated pixels, our ``clip_grad="clamp"``), which leaks the range-space part of the
  gradient into the null space that the projection keeps: faces colorization 17.50 dB against
  21.27 dB. On CT the clamp's derivative is the default (``task_defaults``): there it was 0.1-0.6 dB
  better (benchmarks/results/solver_notes.md, "The clamp of x0 and the guidance gradient").

Example
-------
>>> x = get("mcg", prior, steps=1000)(y, op, generator=torch.Generator().manual_seed(0))   # doctest: +SKIP
>>> ct = get("mcg", prior, form="ve", lam_schedule="linear")(sino, op)                    # doctest: +SKIP
>>> ablation = get("mcg", prior, grad_weight=0.0)   # projection-only sampler              # doctest: +SKIP
"""

from __future__ import annotations

import math

import torch

from ..errors import DiffinvError
from ..priors.base import check_clip_grad
from ..priors.steps import (
    MAX_VE_STEPS,
    VE_PREDICTORS,
    bnorm,
    check_predictor,
    ddim_step_from_x0,
    langevin_step,
    safe_div,
)
from ._guidance import noised_measurement
from .base import Solver, register

_FORMS = ("vp", "ve")
_WEIGHTS = ("auto", "identity", "pinv")
_LAM_SCHEDULES = ("constant", "linear")
_VE_PROJECTIONS = ("auto", "sart", "pinv")

#: the parameters of both forms
_COMMON = {"steps": 1000, "grad_weight": None, "weight_matrix": "auto", "clip_grad": "identity"}
#: the parameters of the VE (predictor-corrector) form only
_VE_ONLY = {
    "snr": 0.16,
    "lam": 1.0,
    "lam_end": 0.6,
    "lam_schedule": "linear",
    "ve_projection": "auto",
    "null_space_grad": True,
    "predictor": "reverse-diffusion",
}


def _form_class(form) -> type[MCG]:
    """The class of MCG's form ``form`` ("vp": :class:`MCGVP`, "ve": :class:`MCGVE`)."""
    if form not in _FORMS:
        raise DiffinvError(f"form must be one of {_FORMS}, got {form!r}")
    return MCGVP if form == "vp" else MCGVE


@register
class MCG(Solver):
    """MCG, registered as "mcg": ``MCG(prior, form=...)`` builds the form's class (:class:`MCGVP`,
    the default, or :class:`MCGVE`); both share the manifold constrained gradient (:meth:`_mcg_direction`).

    The class attributes describe both forms for the registry and the CLI: ``defaults`` lists every
    parameter (each form accepts its own), ``task_defaults`` / ``ve_task_defaults`` are the two
    forms' family defaults, and the class methods :meth:`family_defaults` / :meth:`resolve_params`
    answer for the form named in ``params`` (VP when absent).
    """

    name = "mcg"
    description = (
        "MCG (Chung et al. 2022): reverse step + manifold-constrained gradient + measurement projection"
    )
    ends_consistent = True  # both forms end with the measurement projection
    defaults = {"form": "vp", **_COMMON, **_VE_ONLY}
    #: per operator family, VP form (``Solver.task_defaults``). CT: 25 steps (benchmarks/ct.py's
    #: validation split; grad_weight stays 1: see benchmarks/results/solver_notes.md, MCG) and the
    #: clamp's own derivative, ``clip_grad="clamp"``: CT images sit at the bottom of the data range
    #: (air), where the clamp's zero derivative keeps the gradient off the background; straight
    #: through cost 0.1-0.6 dB on phantoms and real slices (solver_notes.md, "The clamp of x0").
    task_defaults = {"ct": {"steps": 25, "clip_grad": "clamp"}}
    #: per operator family, VE form: CT as benchmarks/ct.py runs it (10 steps, the ancestral
    #: predictor; the authors' grad_weight 0.05 stays). ``steps=2000, predictor="reverse-diffusion"``
    #: is the paper's CT setting.
    ve_task_defaults = {"ct": {"steps": 10, "predictor": "ancestral", "clip_grad": "clamp"}}
    #: the form of a concrete class ("vp" / "ve"), and its defaults for ``grad_weight=None`` and
    #: ``weight_matrix="auto"``
    form: str = ""
    default_grad_weight: float = 1.0
    default_weight_matrix: str = "identity"

    def __new__(cls, prior=None, **params):
        if cls is MCG:  # the registered name: build the form's class
            cls = _form_class(params.get("form", "vp"))
        return super().__new__(cls)

    def __init__(self, prior=None, **params):
        if params.get("form", self.form) != self.form:
            raise DiffinvError(
                f"{type(self).__name__} is MCG's {self.form.upper()} form; got form={params['form']!r}"
            )
        other = "ve" if self.form == "vp" else "vp"
        for key in params:
            if key not in self.defaults and key in _form_class(other).defaults:
                raise DiffinvError(
                    f"parameter {key!r} belongs to MCG's {other.upper()} form (form={other!r}); the "
                    f"{self.form.upper()} form (form={self.form!r}) takes {', '.join(sorted(self.defaults))}"
                )
        super().__init__(prior, **params)

    @classmethod
    def family_defaults(cls, family, params=None) -> dict:
        """The family's defaults for the form in ``params`` (``task_defaults`` or ``ve_task_defaults``)."""
        if cls is MCG:
            return _form_class((params or {}).get("form", "vp")).family_defaults(family, params)
        return super().family_defaults(family, params)

    @classmethod
    def resolve_params(cls, family, params=None) -> dict:
        """As ``Solver.resolve_params`` for the form in ``params``, with ``grad_weight=None`` and
        ``weight_matrix="auto"`` replaced by the values the form uses, so that the effective
        parameters are the ones run."""
        if cls is MCG:
            return _form_class((params or {}).get("form", "vp")).resolve_params(family, params)
        out = super().resolve_params(family, params)
        if out.get("grad_weight") is None:
            out["grad_weight"] = cls.default_grad_weight
        if out.get("weight_matrix") == "auto":
            out["weight_matrix"] = cls.default_weight_matrix
        return out

    def validate_params(self) -> None:
        super().validate_params()
        p = self.params
        if p["form"] != self.form:
            raise DiffinvError(f"form must be {self.form!r} for {type(self).__name__}, got {p['form']!r}")
        if p["weight_matrix"] not in _WEIGHTS:
            raise DiffinvError(f"weight_matrix must be one of {_WEIGHTS}, got {p['weight_matrix']!r}")
        self.check_numbers("grad_weight", optional=True)
        check_clip_grad(p["clip_grad"])

    @property
    def alpha(self) -> float:
        """The MCG step constant: ``grad_weight``, or the form's default when it is None."""
        gw = self.params["grad_weight"]
        return self.default_grad_weight if gw is None else float(gw)

    @property
    def weight(self) -> str:
        """The MCG weighting W actually used: ``weight_matrix``, or the form's default for "auto"."""
        w = self.params["weight_matrix"]
        return self.default_weight_matrix if w == "auto" else w

    # ------------------------------------------------------------------ the MCG term (both forms)
    def _mcg_direction(self, op, y_z, x0, vjp):
        """2 (d x0 / d x)^T g / max(||W r||, ||g||),  g = W^T W r = -(1/2) d||W r||^2 / dx0, per sample.

        r = y - A x0; g = A^T r (W = I) or A^+ r (W = A^+, where ||g|| = ||W r||). Dividing by
        ||W r|| alone (DPS-style, the authors' code) gives g a length of ||A^T r|| / ||r|| <= ||A||,
        at most 1 for masks, pooling, blur, colour and orthonormal CS (for which nothing changes), but
        about 30 for 64-pixel CT with 18 views (line integrals over up to ~64 pixels), where that step
        was tens of model units long and its null-space part -- the Jacobian is not the identity,
        e.g. x0 is clamped to the data range -- survived the projection as salt-and-pepper noise.
        With the max, the image-space step is never longer than 2 alpha (measured figures:
        benchmarks/results/solver_notes.md, MCG).
        """
        r = y_z - op.A(x0)
        if self.weight == "pinv":
            g = op.pinv(r)  # W^T W r = A^T (A A^T)^+ r = A^+ r,  ||W r|| = ||A^+ r|| = ||g||
            nrm = bnorm(g)
        else:
            g = op.At(r)  # W = I
            nrm = torch.maximum(bnorm(r), bnorm(g))
        return 2.0 * safe_div(vjp(g), nrm)


class MCGVP(MCG):
    """MCG's VP form (``form="vp"``): DDPM ancestral step + MCG step + projection onto the noised y."""

    form = "vp"
    defaults = {"form": "vp", **_COMMON}
    default_grad_weight = 1.0
    default_weight_matrix = "identity"

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        prior = self.prior
        y_z, sigma_z, noise = self.model_problem(y, op, sigma_y, generator)
        alpha = self.alpha
        x = noise()  # x_N ~ N(0, I)
        for s in self.iterate(self.time_grid(), progress):
            x0, vjp = self.tweedie(x, s, callback, need_grad=alpha > 0)  # x0|i (Tweedie)
            # (1) x'_{i-1}: DDPM ancestral step q(x_{i-1} | x_i, x0|i)
            x_prev = ddim_step_from_x0(x, x0, s.ab_t, s.ab_prev, 1.0, noise())
            # (3) x''_{i-1} = x'_{i-1} - alpha_i d/dx_i ||W (y - A x0|i)||^2,  alpha_i = alpha / max(||W r||, ||W^T W r||)
            if alpha > 0:
                x_prev = x_prev + alpha * self._mcg_direction(op, y_z, x0, vjp)
            # (4-5) projection onto A x = y_{i-1},  y_{i-1} = sqrt(abar) y + sqrt(1 - abar) A z
            a, b = math.sqrt(s.ab_prev), math.sqrt(1.0 - s.ab_prev)
            y_prev = noised_measurement(y_z, op, a, b, noise())
            if sigma_z == 0.0:
                x_prev = x_prev + op.pinv(y_prev - op.A(x_prev))
            elif s.ab_prev < 1.0:
                gamma = s.ab_prev * sigma_z**2 / (1.0 - s.ab_prev)
                x_prev = x_prev + op.damped_pinv(y_prev - op.A(x_prev), gamma)
            x = x_prev
        return prior.to_image(x)


class MCGVE(MCG):
    """MCG's VE form (``form="ve"``): Langevin corrector + MCG step + relaxed projection, then a VE predictor."""

    form = "ve"
    defaults = {"form": "ve", **_COMMON, **_VE_ONLY}
    task_defaults = MCG.ve_task_defaults
    default_grad_weight = 0.05
    default_weight_matrix = "pinv"

    def validate_params(self) -> None:
        super().validate_params()
        p = self.params
        for key, allowed in (("lam_schedule", _LAM_SCHEDULES), ("ve_projection", _VE_PROJECTIONS)):
            if p[key] not in allowed:
                raise DiffinvError(f"{key} must be one of {allowed}, got {p[key]!r}")
        self.check_numbers("snr")
        check_predictor(p["predictor"])
        if int(p["steps"]) > MAX_VE_STEPS:
            raise DiffinvError(
                f"steps must be at most MAX_VE_STEPS = {MAX_VE_STEPS} for form='ve', got {p['steps']}"
            )
        if not isinstance(p["null_space_grad"], bool):
            raise DiffinvError(f"null_space_grad must be True or False, got {p['null_space_grad']!r}")
        for key in ("lam", "lam_end"):
            v = float(p[key])
            if not 0.0 <= v <= 1.0:
                raise DiffinvError(f"{key} must be in [0, 1], got {p[key]!r}")

    def _lam(self, i: int, n: int) -> float:
        lam, lam_end = float(self.params["lam"]), float(self.params["lam_end"])
        if self.params["lam_schedule"] == "constant" or n == 1:
            return lam
        return lam + (lam_end - lam) * i / (n - 1)

    def _ve_normaliser(self, op, like, noisy: bool = False):
        """A^T A 1 for the SART-type projection, or None to use A^+ (see ``ve_projection``; "auto"
        with noisy data: the damped A^+)."""
        mode = self.params["ve_projection"]
        if mode == "pinv" or (mode == "auto" and noisy):
            return None
        d = op.AtA_ones(like)
        if mode == "auto":
            # A pixel seen by A (non-zero column, probed with a positive non-uniform u) must have
            # A^T A 1 > 0 for the SART step to be a descent step; otherwise fall back to A^+.
            m = math.prod(op.out_shape)
            u = (1.0 + torch.arange(m, dtype=like.dtype, device=like.device) / m).reshape(1, *op.out_shape)
            seen = op.At(u).abs()
            tol = 1e-10 * float(torch.maximum(d.abs().max(), seen.max()).clamp_min(1e-300))
            if bool(((d <= tol) & (seen > tol)).any()):
                return None
        return d

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        prior = self.prior
        y_z, sigma_z, noise = self.model_problem(y, op, sigma_y, generator)
        alpha = self.alpha
        snr = float(self.params["snr"])
        grid = self.time_grid(continuous=True)  # continuous beyond the training steps
        n = len(grid)
        D = self._ve_normaliser(op, y_z, noisy=sigma_z > 0)
        if D is not None:
            pos = D > 0
            D_inv = torch.where(pos, 1.0 / torch.where(pos, D, torch.ones_like(D)), torch.zeros_like(D))

        def project(resid, sigma):  # the relaxed projection's step; damped by sigma_y^2 / sigma^2 with noise
            if sigma_z == 0.0:
                return op.pinv(resid) if D is None else op.At(resid) * D_inv
            gamma = sigma_z**2 / sigma**2
            if D is None:
                return op.damped_pinv(resid, gamma)
            return op.At(resid) * torch.where(pos, 1.0 / (D + gamma), torch.zeros_like(D))

        predict = VE_PREDICTORS[self.params["predictor"]]
        x = grid.sigmas[0] * noise()  # x_N ~ N(0, sigma_max^2 I)
        x_mean = x
        for s in self.iterate(grid, progress):
            # corrector (Langevin) with the MCG gradient, one network evaluation
            x0, vjp = self.tweedie(x, s, callback, ve=True, need_grad=alpha > 0)
            score = (x0 - x) / s.sigma**2
            x_new = langevin_step(x, score, snr, noise())
            if alpha > 0:
                g = self._mcg_direction(op, y_z, x0, vjp)
                if self.params["null_space_grad"]:
                    g = g - op.pinv(op.A(g))  # restricted to the null space of A (Fig. 1, step 4)
                x_new = x_new + alpha * g
            # relaxed projection onto the measurement noised to sigma_i
            y_i = noised_measurement(y_z, op, 1.0, s.sigma, noise())
            resid = y_i - op.A(x_new)
            lam = self._lam(s.i, n)
            x_new = x_new + lam * project(resid, s.sigma)
            # predictor (reverse diffusion sigma_i -> sigma_{i-1}), one network evaluation
            score = prior.score_ve(x_new, s.t)
            x, x_mean = predict(x_new, score, s.sigma, s.sigma_prev, noise())
        x = x_mean  # noise removal: the last predictor's mean (sigma_{-1} = 0)
        if sigma_z == 0.0:
            x = x + op.pinv(y_z - op.A(x))
        else:  # the damped step at the last level's sigma
            x = x + op.damped_pinv(y_z - op.A(x), sigma_z**2 / grid.sigmas[-2] ** 2)
        return prior.to_image(x)
