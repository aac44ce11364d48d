"""One restoration, end to end: build the operator, measure (or take y), solve, score.

The CLI's ``restore``, ``eval`` and ``demo`` commands and the benchmarks all go through here, so a
method means the same thing everywhere.

Example
-------
>>> from diffinv import pipeline, priors
>>> prior = priors.load("natural-64")                                   # doctest: +SKIP
>>> r = pipeline.degrade_and_restore(x, "sr4", "ddnm", prior, seed=0)   # doctest: +SKIP
>>> r.metrics["psnr"], r.nfe, r.seconds                                 # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from . import metrics as M
from . import solvers, tiling
from .errors import DiffinvError
from .operators import from_spec
from .operators.base import LinearOperator
from .priors.base import Prior
from .priors.steps import Callback


@dataclass
class Restoration:
    """Result of one restoration. ``x_true`` and ``metrics`` are empty when y was given."""

    x_hat: torch.Tensor
    y: torch.Tensor
    op: LinearOperator
    nfe: int
    seconds: float
    x_true: torch.Tensor | None = None
    metrics: dict = field(default_factory=dict)
    #: the solver hyperparameters the run used (explicit > operator-family defaults > generic)
    params: dict = field(default_factory=dict)
    #: prior-sized windows the image was restored in (1: at once)
    windows: int = 1


def make_solver(method: str, prior: Prior | None, steps: int | None = None, **params) -> solvers.Solver:
    """``solvers.get`` with ``steps`` applied only to methods that have that hyperparameter."""
    cls_defaults = solvers.get_class(method).defaults
    if steps is not None:
        key = "steps" if "steps" in cls_defaults else "iters" if "iters" in cls_defaults else None
        if key is not None:
            params[key] = int(steps)
    needs_prior = solvers.get_class(method).needs_prior
    return solvers.get(method, prior=prior if needs_prior else None, **params)


def score(x_hat: torch.Tensor, x_true: torch.Tensor | None, op: LinearOperator, y: torch.Tensor) -> dict:
    """PSNR, SSIM and LPIPS against the ground truth (clamped to [0, 1]) and measurement consistency.

    SSIM needs images of at least 11x11 and LPIPS (AlexNet) at least 31x31 with 1 or 3 channels;
    a metric an image is too small for is left out of the dict.
    """
    out = {"consistency": float(M.consistency(op, x_hat.to(y.dtype), y).mean())}
    if x_true is not None:
        xc = x_hat.clamp(0, 1).to(x_true.dtype)
        out["psnr"] = float(M.psnr(xc, x_true).mean())
        if min(x_true.shape[-2:]) >= 11:
            out["ssim"] = float(M.ssim(xc, x_true).mean())
        if min(x_true.shape[-2:]) >= 31 and x_true.shape[1] in (1, 3):
            with torch.no_grad():  # a score, not a loss: no graph through the 2.5M-weight network
                out["lpips"] = float(M.lpips(xc, x_true).mean())
    return out


def as_solver(method: str | solvers.Solver, prior: Prior | None, steps: int | None = None, **params):
    """``method`` itself when it is a built :class:`~diffinv.solvers.Solver` (then ``steps`` and
    ``params`` must be empty), else :func:`make_solver` of the name."""
    if isinstance(method, solvers.Solver):
        if steps is not None or params:
            raise DiffinvError("give steps and parameters when building the solver, not with a built one")
        return method
    return make_solver(method, prior, steps, **params)


def solve(
    y: torch.Tensor,
    op: LinearOperator,
    solver: solvers.Solver,
    sigma_y: float = 0.0,
    seed: int = 0,
    progress: bool = False,
    callback: Callback | None = None,
    tile_overlap: int | None = None,
    tile_batch: int | None = None,
) -> solvers.SolveResult:
    """Run ``solver`` on y; its randomness comes from ``torch.Generator().manual_seed(seed)``.

    When the operator's images differ in size from the prior's, a diffusion method restores them
    in overlapping windows (:func:`diffinv.tiling.solve_windows`, overlap ``tile_overlap`` pixels
    or its default, up to ``tile_batch`` windows per network batch, default
    ``tiling.DEFAULT_TILE_BATCH``); the result's NFE and seconds are the totals over the windows.
    ``callback`` receives a dict per step (:func:`diffinv.priors.steps.report_step`).
    """
    if solver.prior is not None and tiling.needs_tiling(op, solver.prior.image_shape):
        return tiling.solve_windows(
            solver,
            y,
            op,
            sigma_y,
            seed,
            overlap=tile_overlap,
            progress=progress,
            callback=callback,
            tile_batch=tile_batch,
        )
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return solver.solve(y, op, sigma_y=sigma_y, generator=generator, progress=progress, callback=callback)


def solve_with_variance(
    y: torch.Tensor, op: LinearOperator, solver, variance: torch.Tensor, seed: int = 0, **options
):
    """:func:`solve` for a measurement with a known per-bin noise ``variance`` (shape of ``y``; e.g.
    from ``PoissonNoise``): the methods of ``operators.noise.WEIGHTED_METHODS`` solve the whitened
    problem ``(W^(1/2) A, W^(1/2) y)`` one sample at a time, with its white noise std, row i seeded
    with ``seed + i`` (so that repeated rows of y are independent posterior samples, as in one batched
    call); the others get ``sigma_y = sqrt(mean(var))``. The result's NFE and seconds are totals over
    the samples."""
    from .operators import noise

    if solver.name not in noise.WEIGHTED_METHODS:
        return solve(y, op, solver, noise.effective_sigma(variance), seed, **options)
    w = noise.whitening_weights(variance)
    parts = []
    for i in range(y.shape[0]):
        wop = noise.WeightedOperator(op, w[i : i + 1])
        sig = float((1.0 / (1.0 / variance[i]).mean()).sqrt())  # whitened noise std
        parts.append(solve(wop.whiten(y[i : i + 1]), wop, solver, sig, int(seed) + i, **options))
    return dataclasses.replace(
        parts[0],
        x=torch.cat([p.x for p in parts]),
        nfe=sum(p.nfe for p in parts),
        seconds=sum(p.seconds for p in parts),
    )


def degrade(
    x: torch.Tensor, task, sigma_y: float = 0.0, seed: int = 0
) -> tuple[LinearOperator, torch.Tensor]:
    """(op, y): the operator of ``task`` for images like ``x`` (a spec is built with ``seed``) and
    the measurement ``y = A x + sigma_y n``, the noise drawn from ``Generator().manual_seed(seed +
    7919)`` so that every command measures the same y for the same seed."""
    op = from_spec(task, tuple(x.shape[1:]), seed=seed) if isinstance(task, str) else task
    return op, op.measure(x, sigma_y, generator=torch.Generator().manual_seed(int(seed) + 7919))


def degrade_and_restore(x: torch.Tensor, task, method, prior, sigma_y=0.0, seed=0, **kwargs) -> Restoration:
    """Degrade a clean image ``x`` (B, C, H, W) with ``task`` (a spec or an operator; + noise
    ``sigma_y``, seeded: :func:`degrade`), restore it with ``method``, score: a :class:`Restoration`.

    ``method``: a built solver, or a name built with ``prior``, ``steps`` and the hyperparameters
    in ``kwargs``; ``progress``, ``callback``, ``tile_overlap``, ``tile_batch`` go to :func:`solve`.
    ``noise=PoissonNoise(...)`` (:mod:`diffinv.operators.noise`, CT) simulates a photon-count scan
    instead of adding ``sigma_y`` (then ignored), drawn from the same seeded generator.
    ``project=N`` (noiseless only): the restoration after N rounds of projection onto the images
    the measurement allows, ``{A x = y} ∩ [0, 1]`` (:func:`diffinv.operators.project_feasible`).
    """
    op, y, var = degrade_noise(x, task, sigma_y, seed, kwargs.pop("noise", None))
    return _restore(y, op, x, method, prior, sigma_y, seed, kwargs, var)


def degrade_noise(x: torch.Tensor, task, sigma_y: float = 0.0, seed: int = 0, noise=None):
    """``(op, y, variance)``: :func:`degrade` (``variance`` None), or with ``noise`` (a
    ``PoissonNoise``, CT) a photon-count scan of ``x``: its line integrals ``y`` and their per-bin
    variance, drawn from the same seeded generator (``sigma_y`` is then ignored)."""
    if noise is None:
        return *degrade(x, task, sigma_y, seed), None
    op = from_spec(task, tuple(x.shape[1:]), seed=seed) if isinstance(task, str) else task
    y, var = noise.measure(op, x, torch.Generator().manual_seed(int(seed) + 7919))
    return op, y, var


def restore_measured(y: torch.Tensor, op, method, prior, sigma_y=0.0, seed=0, **kwargs) -> Restoration:
    """Restore from an observation ``y`` already in the operator's measurement space (keywords as
    :func:`degrade_and_restore`, plus ``variance``: y's per-bin noise variance, e.g. from
    ``PoissonNoise.from_counts``); the metrics are consistency only."""
    return _restore(y, op, None, method, prior, sigma_y, seed, kwargs, kwargs.pop("variance", None))


_SOLVE_OPTIONS = ("progress", "callback", "tile_overlap", "tile_batch")


def check_projection(project, sigma_y: float = 0.0, noisy: bool = False) -> int | None:
    """``project`` (rounds of :func:`diffinv.operators.project_feasible` after the solve; None or 0:
    none) as an int or None; DiffinvError unless a positive integer on a noiseless measurement
    (``sigma_y`` 0 and not ``noisy``, e.g. Poisson counts): with noise the set ``{A x = y}`` does
    not hold the true image, and projecting onto it would fit the noise."""
    if project is None or (not isinstance(project, bool) and project == 0):
        return None
    number = isinstance(project, int | float) and not isinstance(project, bool) and math.isfinite(project)
    if not number or int(project) != project or project < 1:
        raise DiffinvError(f"project must be a positive integer (rounds), got {project!r}")
    if noisy or float(sigma_y) != 0.0:
        raise DiffinvError(
            "project needs a noiseless measurement (sigma_y 0, no photon noise): with noise "
            "{A x = y} does not hold the true image"
        )
    return int(project)


def project_measured(x: torch.Tensor, y: torch.Tensor, op: LinearOperator, project: int):
    """``(x, seconds)``: ``x`` after ``project`` rounds of :func:`diffinv.operators.project_feasible`
    onto ``{A x = y} ∩ [0, 1]`` and the time they took."""
    import time

    from .operators import project_feasible

    start = time.perf_counter()
    x = project_feasible(op, x, y, iters=project)
    return x, time.perf_counter() - start


def _restore(y, op, x_true, method, prior, sigma_y, seed, kwargs, variance=None) -> Restoration:
    """Solve and score; with a per-bin ``variance`` of y, by :func:`solve_with_variance`; with
    ``project=N`` in ``kwargs``, the result projected onto the images y allows (:func:`project_measured`)."""
    options = {k: kwargs.pop(k) for k in _SOLVE_OPTIONS if k in kwargs}
    project = check_projection(kwargs.pop("project", None), sigma_y, variance is not None)
    solver = as_solver(method, prior, kwargs.pop("steps", None), **kwargs)
    if variance is None:
        r = solve(y, op, solver, sigma_y, seed, **options)
    else:
        r = solve_with_variance(y, op, solver, variance, seed, **options)
    if project:
        x, seconds = project_measured(r.x, y, op, project)
        r = dataclasses.replace(r, x=x, seconds=r.seconds + seconds)
    metrics = score(r.x, x_true, op, y)
    return Restoration(r.x, y, op, r.nfe, r.seconds, x_true, metrics, r.params, r.windows)
