"""Several posterior samples per measurement, their summary, and calibration measures.

Every diffusion solver draws one sample ``x ~ p(x | y)`` per call (as well as its method
approximates the posterior). :func:`sample` draws ``K`` of them for each image of ``y`` and
summarises them per pixel:

    mean_i  = (1/K) sum_k x_i^(k)                                   (Monte-Carlo posterior mean)
    std_i   = sqrt( (1/(K-1)) sum_k (x_i^(k) - mean_i)^2 )          (0 when K = 1)
    q_i(p)  = empirical p-quantile of x_i^(1..K) (linear interpolation, as ``numpy.quantile``)

Why K samples: for an exact sampler ``E||x^(k) - x||^2 = 2 tr Cov(x | y)`` while the mean of K has
``(1 + 1/K) tr Cov(x | y)``: one sample has about twice the squared error of the posterior mean
(about 3 dB less PSNR), and the spread says which pixels the data and prior leave uncertain. The
spread is only as good as the method's sampler: :func:`coverage` and :func:`variance_ratio`
measure it (tests/solvers/test_posterior_calibration.py does so on the exact Gaussian oracle).

Batching: the K samples of each image go through the network together (``y`` repeated along the
batch axis, image-major: rows ``b*K .. b*K+K-1`` are image ``b``), at most ``batch`` rows per
solver call. All randomness comes from the one ``generator``, drawn call after call, so the same
seed gives the same samples; a different ``batch`` splits the draws differently and gives other
(equally valid) samples. ``K = 1`` with ``batch`` unset is exactly one ``solver(y, op, ...)`` call.

Example
-------
>>> from diffinv import posterior, solvers
>>> solver = solvers.get("ddnm", prior, steps=100, noise="ddim")                  # doctest: +SKIP
>>> post = posterior.sample(solver, y, op, n=8, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
>>> post.mean.shape, post.std.shape, post.samples.shape    # (B,C,H,W), (B,C,H,W), (K,B,C,H,W)  # doctest: +SKIP
>>> lo, hi = post.interval(0.9)                            # per-pixel central 90% interval  # doctest: +SKIP
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import DiffinvError
from .pipeline import Restoration

__all__ = [
    "DEFAULT_QUANTILES",
    "PosteriorSamples",
    "SampledRestoration",
    "check_samples",
    "coverage",
    "degrade_and_sample",
    "restore_samples",
    "sample",
    "sample_measured",
    "summarize",
    "variance_ratio",
]

#: the quantiles :func:`sample` stores by default: central 50% and 90% intervals and the median
DEFAULT_QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass
class PosteriorSamples:
    """K samples per image and their per-pixel summary (all in [0, 1] image units, not clamped).

    Attributes:
        samples: (K, B, C, H, W), sample ``k`` of image ``b`` at ``samples[k, b]``.
        mean: (B, C, H, W) sample mean.
        std: (B, C, H, W) sample standard deviation (divisor K - 1; zeros when K = 1).
        quantiles: ``{p: (B, C, H, W)}`` empirical per-pixel p-quantiles.
        nfe: network evaluations of all solver calls together (one batched call counts once).
        seconds: wall time of all solver calls together.
    """

    samples: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    quantiles: dict[float, torch.Tensor] = field(default_factory=dict)
    nfe: int = 0
    seconds: float = 0.0

    @property
    def n(self) -> int:
        """K, the number of samples per image."""
        return int(self.samples.shape[0])

    def interval(self, level: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel central interval holding ``level`` of the samples: the (1-level)/2 and (1+level)/2
        empirical quantiles, each (B, C, H, W)."""
        lo, hi = _central(level)
        return _quantiles(self.samples, (lo, hi))


def check_samples(n: object, name: str = "n") -> int:
    """``n`` as an int >= 1, else a one-line ValueError naming ``name``."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise DiffinvError(f"{name} must be an integer >= 1 (the number of samples), got {n!r}")
    if n < 1:
        raise DiffinvError(f"{name} must be an integer >= 1 (the number of samples), got {n}")
    return int(n)


def _check_batch(batch: object) -> int | None:
    if batch is None:
        return None
    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
        raise DiffinvError(f"batch must be a positive integer (rows per solver call), got {batch!r}")
    return int(batch)


def _central(level: float) -> tuple[float, float]:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise DiffinvError(f"level must be in (0, 1), got {level}")
    return (1.0 - level) / 2.0, (1.0 + level) / 2.0


def _quantiles(samples: torch.Tensor, probs: Sequence[float]) -> list[torch.Tensor]:
    """Empirical quantiles along dim 0 with linear interpolation (numpy's default).

    One sort for all probabilities; written out because ``torch.quantile`` refuses inputs of more
    than 2^24 elements (8 samples of a 3 x 1024 x 1024 image).
    """
    s = samples.sort(dim=0).values
    K = s.shape[0]
    out = []
    for p in probs:
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise DiffinvError(f"quantiles must be in [0, 1], got {p}")
        pos = p * (K - 1)
        i0 = math.floor(pos)
        i1 = min(i0 + 1, K - 1)
        w = pos - i0
        out.append(s[i0] if w == 0 else (1.0 - w) * s[i0] + w * s[i1])
    return out


def summarize(
    samples: torch.Tensor, quantiles: Sequence[float] = DEFAULT_QUANTILES, nfe: int = 0, seconds: float = 0.0
) -> PosteriorSamples:
    """Mean, std (divisor K - 1) and ``quantiles`` of ``samples`` (K, B, C, H, W)."""
    if samples.dim() < 2:
        raise DiffinvError(f"samples must have shape (K, B, ...), got {tuple(samples.shape)}")
    K = samples.shape[0]
    mean = samples.mean(0)
    std = samples.std(0, correction=1) if K > 1 else torch.zeros_like(mean)
    qs = dict(zip([float(q) for q in quantiles], _quantiles(samples, quantiles)))
    return PosteriorSamples(samples, mean, std, qs, int(nfe), float(seconds))


def sample(
    solver,
    y: torch.Tensor,
    op,
    n: int = 1,
    sigma_y: float = 0.0,
    generator: torch.Generator | None = None,
    batch: int | None = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    progress: bool = False,
    callback=None,
) -> PosteriorSamples:
    """``n`` samples of ``solver`` for each image of ``y`` (B, ...), drawn in batches, summarised.

    Args:
        solver: a :class:`diffinv.solvers.Solver` (any; a deterministic method gives std = 0).
        y, op, sigma_y, generator: as for ``solver(y, op, sigma_y=..., generator=...)``.
        n: K, samples per image (int >= 1).
        batch: at most this many rows (images x samples) per solver call; default all B*K at once.
        quantiles: the per-pixel quantiles to keep in ``PosteriorSamples.quantiles``.
        progress: the solver's progress bar.
        callback: the solver's ``callback(event)`` (a dict: step, t, x_t, x0), on every call (batch).

    The returned summary's ``nfe`` / ``seconds`` are the totals over the calls.

    Example
    -------
    >>> post = sample(solvers.get("ddrm", prior), y, op, n=16, sigma_y=0.05, batch=8)  # doctest: +SKIP
    """
    K = check_samples(n)
    batch = _check_batch(batch)
    B = y.shape[0]
    rows = y.repeat_interleave(K, dim=0) if K > 1 else y  # image-major: K consecutive rows per image
    size = rows.shape[0] if batch is None else batch
    outs, nfe, seconds = [], 0, 0.0
    for start in range(0, rows.shape[0], size):
        r = solver.solve(rows[start : start + size], op, sigma_y, generator, progress, callback)
        outs.append(r.x)
        nfe += r.nfe
        seconds += r.seconds
    x = torch.cat(outs, 0)
    samples = x.reshape(B, K, *x.shape[1:]).transpose(0, 1)  # (K, B, ...)
    return summarize(samples, quantiles, nfe, seconds)


def _chunk_seed(seed: int, chunk: int) -> int:
    """The seed of the ``chunk``-th call of a tiled run: ``seed`` itself for the first (so K = 1 is
    the plain run), then independent 63-bit seeds (SeedSequence mixing, as the window seeds)."""
    if chunk == 0:
        return int(seed)
    state = np.random.SeedSequence([int(seed) % 2**64, 0x53414D50, int(chunk)]).generate_state(1, np.uint64)[
        0
    ]
    return int(state) & (2**63 - 1)


def restore_samples(
    y: torch.Tensor,
    op,
    method: str,
    prior,
    sigma_y: float = 0.0,
    seed: int = 0,
    steps: int | None = None,
    n: int = 1,
    batch: int | None = None,
    progress: bool = False,
    tile_overlap: int | None = None,
    tile_batch: int | None = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    callback=None,
    **params,
):
    """:func:`diffinv.pipeline.solve` with ``n`` samples per image: returns (PosteriorSamples, solver).

    ``method``: a built solver, or a name built with ``prior``, ``steps`` and ``params``.

    Untiled: :func:`sample` with ``torch.Generator().manual_seed(seed)``, so ``n = 1`` gives exactly
    the image ``pipeline.solve`` gives. Images larger than the prior: the repeated ``y`` goes
    through :func:`diffinv.tiling.solve_tiled` (its windows batch the K samples too); with ``batch``
    smaller than B*K each further call gets its own seed (:func:`_chunk_seed`), since a tiled call
    seeds its windows from ``seed`` alone and would repeat the first call's samples.
    """
    from . import tiling
    from .pipeline import as_solver

    K = check_samples(n)
    batch = _check_batch(batch)
    solver = as_solver(method, prior, steps, **params)
    if solver.prior is None or not tiling.needs_tiling(op, solver.prior.image_shape):
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        post = sample(solver, y, op, K, sigma_y, generator, batch, quantiles, progress, callback)
        return post, solver
    B = y.shape[0]
    rows = y.repeat_interleave(K, dim=0) if K > 1 else y
    size = rows.shape[0] if batch is None else batch
    outs, nfe, seconds = [], 0, 0.0
    for c, start in enumerate(range(0, rows.shape[0], size)):
        r = tiling.solve_windows(
            solver,
            rows[start : start + size],
            op,
            sigma_y,
            _chunk_seed(seed, c),
            overlap=tile_overlap,
            progress=progress,
            callback=callback,
            tile_batch=tile_batch,
        )
        outs.append(r.x)
        nfe += r.nfe
        seconds += r.seconds
    x = torch.cat(outs, 0)
    return summarize(x.reshape(B, K, *x.shape[1:]).transpose(0, 1), quantiles, nfe, seconds), solver


# ---------------------------------------------------------------------- calibration measures
def coverage(post: PosteriorSamples | torch.Tensor, x: torch.Tensor, level: float) -> float:
    """Fraction of the values of ``x`` inside the per-pixel central ``level`` interval of the samples.

    ``post``: a :class:`PosteriorSamples` or samples (K, B, C, H, W). ``x``: (B, C, H, W), e.g.
    the ground truth; or (M, B, C, H, W), e.g. M draws of the exact posterior. For a calibrated
    sampler and x drawn from the same posterior, the expected value is ``level`` (up to the
    quantile-estimation error of K samples, which shrinks like 1/sqrt(K)).
    """
    samples = post.samples if isinstance(post, PosteriorSamples) else post
    lo, hi = _quantiles(samples, _central(level))
    x = x.to(lo)
    inside = (x >= lo) & (x <= hi)
    return float(inside.double().mean())


def variance_ratio(
    post: PosteriorSamples | torch.Tensor, variance: torch.Tensor, min_var: float = 0.0
) -> float:
    """``sum_i var_i(samples) / sum_i variance_i`` over the pixels with ``variance_i > min_var``.

    ``variance``: the reference per-pixel variance (B, C, H, W) or flat, e.g. the diagonal of an
    exact posterior covariance. 1 for a sampler with the right total spread; < 1 under-dispersed.
    """
    samples = post.samples if isinstance(post, PosteriorSamples) else post
    if samples.shape[0] < 2:
        raise DiffinvError("variance_ratio needs at least 2 samples per image")
    v = samples.var(0, correction=1).reshape(-1).double()
    ref = variance.reshape(-1).to(v)
    if ref.numel() != v.numel():
        raise DiffinvError(f"variance has {ref.numel()} values, the samples {v.numel()} pixels")
    keep = ref > min_var
    return float(v[keep].sum() / ref[keep].sum())


# ---------------------------------------------------------------------- restoration with K samples
@dataclass
class SampledRestoration(Restoration):
    """:class:`diffinv.pipeline.Restoration` with K samples: ``x_hat`` is their mean.

    ``metrics`` score the mean; ``sample_metrics`` are each metric averaged over the K samples
    (what one sample scores on average); ``post`` holds the samples and their summary.
    """

    post: PosteriorSamples | None = None
    sample_metrics: dict = field(default_factory=dict)


def _score_samples(post: PosteriorSamples, x_true, op, y) -> tuple[dict, dict]:
    from .pipeline import score

    per = [score(post.samples[k], x_true, op, y) for k in range(post.n)]
    sample_metrics = {key: float(np.mean([m[key] for m in per])) for key in per[0]}
    return score(post.mean, x_true, op, y), sample_metrics


def degrade_and_sample(x: torch.Tensor, task, method, prior, sigma_y=0.0, seed=0, n=1, **kwargs):
    """:func:`diffinv.pipeline.degrade_and_restore` with ``n`` samples: the same operator and noisy
    y for the same seed (:func:`diffinv.pipeline.degrade`), then :func:`restore_samples` (which
    takes the keywords: ``steps``, ``batch``, ``progress``, ...), scored (mean and per-sample): a
    :class:`SampledRestoration`. ``noise=PoissonNoise(...)`` (CT) simulates a photon-count scan as
    :func:`diffinv.pipeline.degrade_and_restore` does; the samples then solve its weighted problem."""
    from .pipeline import degrade_noise

    op, y, variance = degrade_noise(x, task, sigma_y, seed, kwargs.pop("noise", None))
    if variance is not None:
        kwargs["variance"] = variance
    return _sampled(y, op, x, method, prior, sigma_y, seed, n, kwargs)


def sample_measured(y: torch.Tensor, op, method, prior, sigma_y=0.0, seed=0, n=1, **kwargs):
    """:func:`diffinv.pipeline.restore_measured` with ``n`` samples (consistency scored only);
    ``variance``: y's per-bin noise variance, as there."""
    return _sampled(y, op, None, method, prior, sigma_y, seed, n, kwargs)


def _samples_with_variance(y, op, method, prior, variance, seed, n, kwargs):
    """``(PosteriorSamples, solver)``: ``n`` samples per image of a measurement with a per-bin noise
    ``variance`` (e.g. Poisson counts), as :func:`diffinv.pipeline.solve_with_variance` treats it.
    The weighted methods solve the whitened problem of each of the rows of ``y`` repeated ``n``
    times, one row per call, row ``i`` seeded with ``seed + i`` (so the samples are independent and
    ``n = 1`` gives the single restoration of the same seed); the others draw them batched
    (:func:`restore_samples`, ``batch`` applies) under white noise of the RMS std."""
    from .operators import noise
    from .pipeline import _SOLVE_OPTIONS, as_solver, solve_with_variance

    K = check_samples(n)
    options = {k: kwargs.pop(k) for k in (*_SOLVE_OPTIONS, "batch", "quantiles") if k in kwargs}
    solver = as_solver(method, prior, kwargs.pop("steps", None), **kwargs)
    if solver.name not in noise.WEIGHTED_METHODS:
        return restore_samples(y, op, solver, prior, noise.effective_sigma(variance), seed, n=K, **options)
    quantiles = options.pop("quantiles", DEFAULT_QUANTILES)
    _check_batch(options.pop("batch", None))  # checked, but each call is one row already
    rows, var_rows = y.repeat_interleave(K, 0), variance.repeat_interleave(K, 0)
    r = solve_with_variance(rows, op, solver, var_rows, seed, **options)
    samples = r.x.reshape(y.shape[0], K, *r.x.shape[1:]).transpose(0, 1)  # (K, B, ...)
    return summarize(samples, quantiles, r.nfe, r.seconds), solver


def _sampled(y, op, x_true, method, prior, sigma_y, seed, n, kwargs) -> SampledRestoration:
    """``n`` samples of ``y``, scored against ``x_true`` (None: consistency only); with
    ``project=N`` in ``kwargs`` (noiseless only) each sample is projected onto the images y allows
    (:func:`diffinv.pipeline.project_measured`; a sample of the exact posterior lies in that set),
    then summarised."""
    from .pipeline import check_projection, project_measured

    variance = kwargs.pop("variance", None)
    project = check_projection(kwargs.pop("project", None), sigma_y, variance is not None)
    if variance is None:
        post, solver = restore_samples(y, op, method, prior, sigma_y, seed, n=n, **kwargs)
    else:
        post, solver = _samples_with_variance(y, op, method, prior, variance, seed, n, kwargs)
    if project:
        K, B = post.samples.shape[:2]
        flat = post.samples.flatten(0, 1)  # row k * B + b is sample k of image b
        x, seconds = project_measured(flat, y.repeat(K, *[1] * (y.dim() - 1)), op, project)
        post = summarize(x.unflatten(0, (K, B)), tuple(post.quantiles), post.nfe, post.seconds + seconds)
    metrics, sample_metrics = _score_samples(post, x_true, op, y)
    return SampledRestoration(
        post.mean,
        y,
        op,
        post.nfe,
        post.seconds,
        x_true,
        metrics,
        dict(solver.params),
        post=post,
        sample_metrics=sample_metrics,
    )
