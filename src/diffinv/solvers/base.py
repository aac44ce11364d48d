"""The solver interface and registry.

Every method is a :class:`Solver` subclass registered under a short name::

    solver = solvers.get("ddnm", prior, steps=100)
    x = solver(y, op, sigma_y=0.0, generator=torch.Generator().manual_seed(0))
    solver.last_nfe, solver.last_seconds

Hyperparameters are resolved when the solver is called, from the operator's family
(:func:`diffinv.families.family`: ct, inpaint, sr, deblur, colorize, cs, denoise)::

    explicit (constructor) params  >  cls.task_defaults[family]  >  cls.defaults

so that ``get("mcg", prior)`` on ``ct18`` runs the setting tuned for CT, while
``get("mcg", prior, steps=1000)`` keeps its 1000 steps. ``solver.effective_params(op)`` gives the
values before a call; after a call ``solver.params`` holds the values actually used (the CLI
writes them into each record).

Spaces: ``y`` and the returned ``x`` are in [0, 1] image units (``x`` is *not* clamped, so that
measurement consistency ``A x = y`` is exact where the method guarantees it; clamp for display).
Diffusion solvers work in the prior's model space, ``x = scale * z + shift``; since A is linear,

    A x = y   <=>   A z = (y - shift * A 1) / scale,    and sigma_y scales to sigma_y / scale.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from ..errors import DiffinvError
from ..families import family as operator_family
from ..operators.base import LinearOperator, check_tensor
from ..operators.nonlinear import is_nonlinear
from ..priors.base import Prior
from ..priors.steps import SPACING, Callback, GridStep, TimeGrid, report_step
from ._guidance import x0_with_vjp

_REGISTRY: dict[str, type[Solver]] = {}


@dataclass
class SolveResult:
    """What one solve returns: the restored image ``x`` (B, C, H, W, image units, not clamped), its
    cost (``nfe`` network evaluations, ``seconds`` of wall time), the hyperparameters it used
    (explicit > family defaults > generic) and the number of prior-sized ``windows`` it was
    restored in (1: the whole image at once; see :mod:`diffinv.tiling`)."""

    x: torch.Tensor
    nfe: int
    seconds: float
    params: dict = field(default_factory=dict)
    windows: int = 1


def register(cls: type[Solver]) -> type[Solver]:
    """Class decorator: add a solver to the registry under ``cls.name``."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute `name`")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> dict[str, str]:
    """Registered solver names with their one-line descriptions."""
    _load_all()
    return {name: cls.description for name, cls in sorted(_REGISTRY.items())}


def get_class(name: str) -> type[Solver]:
    """The solver class registered as ``name`` (ValueError listing the names if unknown)."""
    _load_all()
    cls = _REGISTRY.get(name)
    if cls is None:
        raise DiffinvError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return cls


def get(name: str, prior: Prior | None = None, **params) -> Solver:
    """Build the solver registered as ``name`` with hyperparameters ``params``."""
    return get_class(name)(prior=prior, **params)


def _load_all() -> None:
    # Importing the package registers every solver module.
    from .. import solvers  # noqa: F401


def randn(shape: Iterable[int], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device, returned on ``like``'s device/dtype."""
    device = generator.device if generator is not None else like.device
    return torch.randn(tuple(shape), generator=generator, dtype=like.dtype, device=device).to(like.device)


class Solver:
    """Base class. Subclasses set ``name``, ``description``, ``defaults`` and implement ``_solve``.

    ``solver(y, op, ...)`` returns the image; :meth:`solve` returns a :class:`SolveResult` (image,
    NFE, seconds, params). Attributes set after each call, for convenience: ``last_nfe`` (network
    evaluations), ``last_seconds`` (wall time), ``params`` (the values used).
    """

    name: str = ""
    description: str = ""
    #: hyperparameters and their defaults; every one can be overridden in the constructor.
    defaults: dict = {}
    #: per operator family (``diffinv.families.FAMILIES``): values that replace ``defaults`` for
    #: that kind of degradation unless set explicitly; families not listed use ``defaults``.
    task_defaults: dict[str, dict] = {}
    needs_prior: bool = True
    requires_svd: bool = False
    #: True when the untiled output satisfies ``A x = y`` for noiseless data (the method ends with
    #: a projection); tiled restorations of operators with overlapping rows then end with one.
    ends_consistent: bool = False
    #: True when the method also takes a nonlinear forward model
    #: (:class:`~diffinv.operators.nonlinear.NonlinearOperator`): its data term goes through
    #: :meth:`measurement_fit` only; others refuse one in :meth:`check_operator`.
    accepts_nonlinear: bool = False

    def __init__(self, prior: Prior | None = None, **params):
        if self.needs_prior and prior is None:
            raise DiffinvError(f"method {self.name!r} needs a diffusion prior (prior=...)")
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise DiffinvError(
                f"unknown parameter(s) {sorted(unknown)} for method {self.name!r}; "
                f"accepted: {sorted(self.defaults) or 'none'}"
            )
        self.prior = prior
        #: the hyperparameters set explicitly (they win over every default)
        self.user_params = dict(params)
        #: generic values until a call; after a call, the values that call used
        self.params = {**self.defaults, **params}
        self.validate_params()
        self.last_nfe = 0
        self.last_seconds = 0.0
        self.last_family: str | None = None

    @classmethod
    def family_defaults(cls, family: str | None, params: dict | None = None) -> dict:
        """``task_defaults[family]`` (empty for None or unlisted families); subclasses may choose
        the table from the explicit ``params`` (MCG: per form)."""
        return dict(cls.task_defaults.get(family, {})) if family else {}

    @classmethod
    def resolve_params(cls, family: str | None, params: dict | None = None) -> dict:
        """explicit ``params`` > ``family``'s defaults > generic defaults (no solver needed)."""
        params = dict(params or {})
        return {**cls.defaults, **cls.family_defaults(family, params), **params}

    def effective_params(self, op: LinearOperator | str | None = None) -> dict:
        """The hyperparameters a call on ``op`` (an operator or a spec string) uses: explicit >
        the operator family's defaults > generic defaults."""
        return self.resolve_params(operator_family(op), self.user_params)

    def validate_params(self) -> None:
        """Check hyperparameters; raise ValueError naming the bad one. Override to add checks."""
        for key in ("steps", "iters"):
            if key in self.params and (int(self.params[key]) != self.params[key] or self.params[key] < 1):
                raise DiffinvError(f"{key} must be a positive integer, got {self.params[key]!r}")
        eta = self.params.get("eta")
        if eta is not None and not 0.0 <= float(eta) <= 1.0:
            raise DiffinvError(f"eta must be in [0, 1], got {self.params['eta']}")

    def check_numbers(self, *keys: str, positive: bool = False, optional: bool = False) -> None:
        """DiffinvError unless each ``params[key]`` is a finite real number >= 0 (> 0 if ``positive``;
        None allowed if ``optional``)."""
        for key in keys:
            v = self.params[key]
            if optional and v is None:
                continue
            try:
                ok = not isinstance(v, bool) and math.isfinite(float(v)) and float(v) >= 0
                ok = ok and not (positive and float(v) == 0)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                bound = ">" if positive else ">="
                raise DiffinvError(
                    f"{key} must be a finite number {bound} 0{' or None' if optional else ''}, got {v!r}"
                )

    def check_operator(self, op: LinearOperator) -> None:
        if is_nonlinear(op) and not self.accepts_nonlinear:
            takers = [n for n, c in sorted(_REGISTRY.items()) if c.accepts_nonlinear]
            raise DiffinvError(
                f"method {self.name!r} needs a linear operator; {op.name!r} is nonlinear "
                f"(methods that accept it: {', '.join(takers)})"
            )
        if self.requires_svd and not op.has_svd:
            svd_free = [n for n, c in sorted(_REGISTRY.items()) if not c.requires_svd]
            raise DiffinvError(
                f"method {self.name!r} needs an operator with an SVD; {op.name!r} has none "
                f"(methods that handle it: {', '.join(svd_free)})"
            )

    def __call__(self, y: torch.Tensor, op: LinearOperator, *args, **kwargs) -> torch.Tensor:
        """Restore ``x`` (B, C, H, W) in [0, 1] units from ``y = A x + sigma_y n``: the image of
        :meth:`solve` (same arguments)."""
        return self.solve(y, op, *args, **kwargs).x

    def solve(
        self, y: torch.Tensor, op: LinearOperator, sigma_y=0.0, generator=None, progress=False, callback=None
    ) -> SolveResult:
        """Restore ``x`` from ``y = A x + sigma_y n`` (``sigma_y`` in [0, 1] image units): a
        :class:`SolveResult` (image, NFE, seconds, params). Randomness from ``generator`` (a
        ``torch.Generator``); ``progress``: a tqdm bar; ``callback``: called with a dict per step
        (:meth:`report`).

        >>> r = solvers.get("pinv").solve(y, op)        # doctest: +SKIP
        >>> r.x.shape, r.nfe, r.seconds                   # doctest: +SKIP
        """
        check_tensor(y, op.out_shape, "y", f"for operator {op.name}")
        if not torch.isfinite(y).all():
            raise DiffinvError("y contains NaN or Inf values")
        sigma_y = float(sigma_y)
        if not math.isfinite(sigma_y) or sigma_y < 0:
            raise DiffinvError(f"sigma_y must be a finite number >= 0, got {sigma_y}")
        if self.prior is not None and tuple(op.in_shape) != tuple(self.prior.image_shape):
            raise DiffinvError(
                f"operator input shape {op.in_shape} does not match the prior's image shape "
                f"{self.prior.image_shape}"
            )
        self.check_operator(op)
        self.last_family = operator_family(op)
        self.params = self.effective_params(op)
        self.validate_params()
        if self.prior is not None:
            self.prior.reset_nfe()
        start = time.perf_counter()
        with torch.no_grad():
            x = self._solve(y, op, sigma_y, generator, progress, callback)
        self.last_seconds = time.perf_counter() - start
        self.last_nfe = self.prior.nfe if self.prior is not None else 0
        return SolveResult(x, self.last_nfe, self.last_seconds, dict(self.params))

    def _solve(self, y, op, sigma_y, generator, progress, callback) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, y: torch.Tensor, op: LinearOperator, n: int = 1, sigma_y=0.0, generator=None, **kwargs):
        """``n`` samples per image of ``y``, batched, with mean / std / quantiles: a
        :class:`diffinv.posterior.PosteriorSamples` (see :func:`diffinv.posterior.sample`)."""
        from ..posterior import sample  # (posterior imports nothing from here: no cycle)

        return sample(self, y, op, n=n, sigma_y=sigma_y, generator=generator, **kwargs)

    # ------------------------------------------------------------------ helpers for subclasses
    def measurement_to_model(self, y: torch.Tensor, op: LinearOperator, sigma_y: float):
        """(y_z, sigma_z): the measurement of the model-space image z, where x = scale z + shift.

        For a nonlinear ``op`` there is no such shift: y is returned as it is, and only
        :meth:`measurement_fit` reads it."""
        p = self.prior
        if is_nonlinear(op):
            return y, sigma_y / p.scale
        ones = torch.ones((1, *op.in_shape), dtype=y.dtype, device=y.device)
        return (y - p.shift * op.A(ones)) / p.scale, sigma_y / p.scale

    def measurement_fit(self, op, z: torch.Tensor, y_z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(r, g) at the model-space image ``z``: the residual ``r = y_z - A z`` (model units) and
        ``g = -grad_z ||r||^2 / 2``, which is ``A^T r`` for a linear ``op``. For a nonlinear F,
        ``r = (y - F(x)) / scale`` with ``x = scale z + shift`` and ``g = (dF/dx)^T r`` (autograd), the
        same quantities in the same units (``y_z`` is then y itself, see :meth:`measurement_to_model`)."""
        if not is_nonlinear(op):
            r = y_z - op.A(z)
            return r, op.At(r)
        with torch.enable_grad():
            zg = z.detach().requires_grad_(True)
            r = (y_z - op(self.prior.to_image(zg))) / self.prior.scale
            (g,) = torch.autograd.grad(r, zg, grad_outputs=-r.detach())
        return r.detach(), g.detach()

    def model_problem(
        self, y: torch.Tensor, op: LinearOperator, sigma_y: float, generator: torch.Generator | None
    ):
        """``(y_z, sigma_z, noise)``: y and its noise std in model space (:meth:`measurement_to_model`)
        and the standard normal source of the restored batch (:meth:`noise_source`): every
        sampler's opening."""
        y_z, sigma_z = self.measurement_to_model(y, op, sigma_y)
        return y_z, sigma_z, self.noise_source(y_z, op, generator)

    def noise_source(self, like: torch.Tensor, op: LinearOperator, generator: torch.Generator | None):
        """A function that draws standard normal noise in the shape of the restored batch,
        ``(B, *op.in_shape)`` with B = ``like.shape[0]``, from ``generator`` (:func:`randn`)."""
        shape = (like.shape[0], *op.in_shape)
        return lambda: randn(shape, generator, like)

    def tweedie(
        self, x: torch.Tensor, step: GridStep, callback: Callback | None = None, *, ve=False, need_grad=False
    ):
        """(x0, vjp): the prior's Tweedie estimate x0|t at the state ``x`` (VP, or VE if ``ve``) on the
        grid step ``step``, reported to ``callback`` (:meth:`report`), and ``v -> (dx0/dx)^T v``
        when ``need_grad`` (one back-propagation through the network; else None). One NFE."""
        clip_grad = self.params.get("clip_grad", "identity")  # guidance solvers' parameter
        x0, vjp = x0_with_vjp(self.prior, x, step.t, ve=ve, need_grad=need_grad, clip_grad=clip_grad)
        self.report(callback, step.i, step.t, x, x0)
        return x0, vjp

    def report(self, callback: Callback | None, i: int, t, x_t: torch.Tensor, x0: torch.Tensor) -> None:
        """Tell ``callback`` about step ``i`` (time ``t``; None for iterative methods): the state
        ``x_t`` and the current estimate ``x0``, both in model space (image units without a prior),
        as ``callback({"step": i, "t": t, "x_t": x_t, "x0": x0 in image units})``
        (:func:`diffinv.priors.steps.report_step`)."""
        if callback is not None:
            report_step(callback, i, t, x_t, self.prior.to_image(x0) if self.prior is not None else x0)

    def time_grid(self, continuous: bool = False) -> TimeGrid:
        """The :class:`~diffinv.priors.steps.TimeGrid` of ``steps`` levels on the prior's schedule.

        ``continuous=True`` for VE predictor-corrector samplers: up to the prior's T training steps
        the times are training levels; beyond, equally spaced continuous times whose sigmas are
        interpolated in log sigma, so the step count is bounded only by ``MAX_VE_STEPS``.
        """
        spacing = self.params.get("spacing", SPACING)  # a parameter of the solvers that offer it
        return TimeGrid(
            self.prior.schedule, int(self.params["steps"]), continuous=continuous, spacing=spacing
        )

    def iterate(self, seq, progress: bool, desc: str | None = None):
        if not progress:
            return seq
        from tqdm.auto import tqdm

        return tqdm(seq, desc=desc or self.name, leave=False)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"
