"""Images larger than the prior: restoration with overlapping windows and DDNM's mask-shift.

A diffusion prior restores images of exactly its training size ``P = (Ph, Pw)``. A larger image is
restored window by window: windows of size ``Ph x Pw`` in raster order, overlapping by ``overlap``
pixels, and each window *keeps the pixels already restored by earlier windows fixed and generates
only its new part* (the mask-shift idea of DDNM, Wang et al. 2022; Wang et al., "Unlimited-Size
Diffusion Restoration", 2023).

Windows
-------
Along each axis the window starts are ``0, S, 2S, ...`` with stride ``S = P - overlap``; the last
window is shifted to end exactly at the border (its overlap is then larger), so every window is
exactly ``P`` pixels and nothing is padded. Images smaller than the prior in either dimension are
refused (``ValueError`` naming the prior's size), as are CT operators of another size than the
prior's (the error names the size it reconstructs). ``overlap`` defaults to ``P // 4``, raised to
the minimum the operator needs and rounded up to its alignment (:func:`plan_tiles`).

A window *commits* (gives their final values to) only its new pixels at least ``commit_margin``
pixels from its edges that lie inside the image; default ``overlap // 2`` (aligned). The network
sees a window's edge as the image's border, so the pixels next to it are generated without the
context beyond it; committing them would make the next window continue from them and leave a
seam. With the margin, the next window keeps fixed only the inner part of the overlap and
regenerates the strip along the edge. Measured with ``benchmarks/tiling.py`` (:func:`seam_ratio`,
1.0 = no seam; benchmarks/results/tiling.md; 3 CBSD68 crops of 192x192, DDNM, 20 steps, the
shipped 64x64 prior): overlap 16 with margin 0 / 8 gives 1.60 / 1.07 for ``sr4`` and 1.36 / 1.02
for ``inpaint-random0.5`` (the ground truth: 0.94-1.10), at the same cost and +0.1 dB PSNR;
doubling the overlap without a margin does not help (1.60, 1.34) and costs 1.5x the windows.

Window operators
----------------
The operator ``A`` is built on the whole image. For the window at ``(top, left)``
:func:`window_operator` returns ``A_w``: exactly the rows of ``A`` that depend only on the
window's pixels, restricted to them (a block of the full matrix; the row indices into ``y`` come
with it). The operators themselves say how: ``op.window_rule()``
(:class:`~diffinv.operators.base.WindowRule`: alignment, row support, or why not) and
``op.restrict_window(region)``; this package knows no concrete operator class. Today:

* ``denoise``, ``inpaint-*``, ``colorize`` (pixel-local) and ``sr<k>`` (``k x k`` average pooling):
  the same operator on the window (inpainting: the window of the mask). For ``sr<k>`` window
  offsets, sizes and overlaps are multiples of ``k``, so every pooling block is wholly inside a
  window; a prior size not divisible by ``k`` is refused. (Image sizes not divisible by ``k`` are
  already refused by the operator itself.) These windows are *block-local*.
* ``sr<k>-bicubic``: the rows of the separable bicubic matrices whose taps all lie in the window
  (:class:`~diffinv.operators.superres.SeparableWindow`, exact pseudo-inverse).
* ``deblur-*``: the *valid* convolution, the blurred pixels whose kernel footprint lies in the
  window (:class:`~diffinv.operators.deblur.ValidBlurWindow`, pseudo-inverse by CG, no SVD).
* compositions (``colorize+sr4``, ``sr2+deblur-gauss``): the factors' windows chained; all factors
  but the last must be block-local.
* anything else (``cs*``, CT, dense matrices) mixes the whole image and is refused.

Mask-shift
----------
A window keeps fixed the pixels *committed* by earlier windows (``o``, an L-shape in general; ``f``
the others, ``k`` their values). Block-local operators, exact: the window's problem
``{x : A_w x = y_w, x = k on o}`` is the stacked system (:class:`KnownRegionOperator`)

    A' x = [ A_w (f x) ;  c (o x) ],      y' = [ P_B (y_w - A_w (o k)) ;  c (o k) ]

with ``B = A_w diag(f)``, ``P_B`` the projection onto ``range(B)`` (it zeroes the rows that see only
known pixels, so residual norms such as DPS's do not count them) and ``c = known_weight``. The
blocks act on disjoint pixels, so ``A'^+ = [B^+, M^T / c]``, and block alignment gives
``B^+ = f A_w^+`` in closed form; when ``A_w`` has an SVD (denoise, inpaint, colorize, sr), so does
``A'`` (:class:`KnownRegionSVDOperator`), and DDRM / DDNM+ run on every window. With
``sigma_y = 0`` DDNM satisfies ``A' x = y'`` to round-off: the known part of the overlap equals
the earlier restoration, and the stitched image satisfies ``A x = y`` on the whole image (the commit margin is
a multiple of the alignment, so known regions stay block-aligned).

Bicubic and deblur, approximate: their rows overlap, and a row that straddles committed pixels and
new ones pins the new pixels through the (small) kernel weights that reach them; fixing the known
pixels exactly turns the sweep over windows into a marching deconvolution whose values grow
geometrically from window to window (observed: x ~ 5000 after 16 windows of a 3x3 blur). Instead
(:class:`SoftKnownRegionOperator`) the known pixels are extra measurements,
``A' = [A_w ; c M]``, ``y' = [y_w ; c k]``, and the "pseudo-inverse" is the damped least-squares
solution ``(A'^T A' + 1e-3 I)^{-1} A'^T y'`` (CG): data and known pixels are balanced, directions
that the data barely sees are not enforced, and the sweep stays bounded. The commit margin is at
least ``support // 2`` (pixels near an edge see cut rows), so these operators need
``overlap >= 2 * (support // 2)``. The full circular blur's rows
within ``kernel // 2`` of the image border wrap around to the opposite side and belong to no
window: they are not enforced at all. The windows alone are therefore approximately consistent
(about 0.1-2 % relative residual in the tests); for the methods whose untiled output satisfies
``A x = y`` (DDNM, DDNM+, MCG, score-proj, noiseless data) :func:`solve_tiled` ends with one
whole-image correction ``x + A^+ (y - A x)`` with the full operator's cheap pseudo-inverse (FFT /
separable), which makes the result as consistent as an untiled one and moves committed pixels by
that minimum-norm correction only. These windows have no SVD (DDRM is refused).

For every solver, each window's committed pixels are pasted into the result and never changed by
later windows (a no-op for exactly consistent solvers). Noise-aware solvers treat the known rows
as measurements with noise ``sigma_y / c``; the default ``c = 1`` trusts them like the data.
Randomness: window ``i`` gets its own ``torch.Generator`` seeded from ``(seed, i)``
(:func:`window_seed`), so results are deterministic.

Order, batching and progress
----------------------------
A window depends only on the earlier windows it overlaps. :func:`tile_schedule` groups windows
into wavefront levels (anti-diagonals ``column + 2 row`` on a regular grid; no two windows of a
level overlap, and all of a window's dependencies are in lower levels), and :func:`solve_tiled`
solves up to ``tile_batch`` windows of a level at once: their solvers run in lockstep threads and
their network calls are stacked into one batch. Each window keeps exactly the pixels it keeps in
raster order, so ``tile_batch`` does not change the plan, only the round-off of the network's
batched calls. One progress bar covers all windows ("window k/N", steps of all windows, ETA).

Modules: :mod:`~diffinv.tiling.plan` (windows, commit zones, wavefront schedule, seam measures),
:mod:`~diffinv.tiling.known` (the mask-shift operators), :mod:`~diffinv.tiling.batch` (lockstep
threads, batched network calls, progress); :func:`solve_tiled` here runs them.

Example
-------
>>> from diffinv import operators, priors, solvers, tiling         # doctest: +SKIP
>>> prior = priors.load("natural-64")                               # doctest: +SKIP
>>> op = operators.from_spec("sr4", (3, 128, 192))                  # doctest: +SKIP
>>> x = tiling.solve_tiled(solvers.get("ddnm", prior), y, op, seed=0)   # doctest: +SKIP
"""

from __future__ import annotations

import time

import torch

from ..errors import DiffinvError
from ..operators.base import LinearOperator, check_tensor
from ..priors.steps import Callback
from ..solvers.base import SolveResult
from .batch import NETWORK_GRADIENT_METHODS, TileProgress, can_batch, solve_together, solve_window, steps_hint
from .known import KnownRegionOperator, KnownRegionSVDOperator, SoftKnownRegionOperator
from .plan import (
    TILEABLE,
    TileWindow,
    commit_owner,
    needs_tiling,
    plan_tiles,
    seam_ratio,
    tile_schedule,
    window_operator,
    window_rule,
    window_seed,
)

#: Default bound on the windows solved together (one network batch of up to this many windows).
DEFAULT_TILE_BATCH = 8


def solve_tiled(solver, y: torch.Tensor, op: LinearOperator, *args, **kwargs) -> torch.Tensor:
    """:func:`solve_windows` returning only the image; the totals go to ``solver.last_nfe``,
    ``last_seconds`` and ``last_windows`` (the interface of a plain solver call)."""
    r = solve_windows(solver, y, op, *args, **kwargs)
    solver.last_nfe, solver.last_seconds, solver.last_windows = r.nfe, r.seconds, r.windows
    return r.x


def solve_windows(
    solver,
    y: torch.Tensor,
    op: LinearOperator,
    sigma_y: float = 0.0,
    seed: int = 0,
    overlap: int | None = None,
    known_weight: float = 1.0,
    progress: bool = False,
    callback: Callback | None = None,
    final_projection: bool | None = None,
    tile_batch: int | None = None,
    commit_margin: int | None = None,
) -> SolveResult:
    """Restore a large image window by window with ``solver`` (a :class:`~diffinv.solvers.Solver`).

    ``y`` is the measurement of the full operator ``op``. Returns a
    :class:`~diffinv.solvers.SolveResult`: ``x`` (B, C, H, W) in image units, the totals over all
    windows (``nfe`` counted per window, also when windows share a network batch; ``seconds``),
    the parameters the windows used and the number of ``windows``. Windows follow
    :func:`plan_tiles` (``overlap``, ``commit_margin``); window ``i`` is solved with a generator
    seeded by ``window_seed(seed, i)``.

    Batching: windows run in the order of :func:`tile_schedule`, up to ``tile_batch`` (default
    :data:`DEFAULT_TILE_BATCH`) at once. The windows of a batch are solved in lockstep, one thread
    each, and their network evaluations are stacked into one call (a window's ``B`` samples times
    the windows); everything else, including the random draws, stays per window. Since every
    window keeps the same known pixels as in raster order, ``tile_batch`` changes the result only
    by the round-off of a batched network call. Solvers that back-propagate through the network
    (:data:`NETWORK_GRADIENT_METHODS`) and objects that are not :class:`~diffinv.solvers.Solver`
    instances run one window at a time.

    ``progress``: one bar over the whole image (steps of all windows, with "window k/N" and an
    ETA); the solvers' own per-window bars are off. ``callback(event)`` receives the solver's dict
    (:func:`diffinv.priors.steps.report_step`) with ``step`` a running count over all windows,
    ``x0`` the full image so far with the window's current estimate in place, and ``window`` its
    number (from the windows' threads, one call at a time).

    ``final_projection``: end with one whole-image range-space correction ``x + A^+ (y - A x)``
    (the full operator's own pseudo-inverse: FFT for deblur, separable for bicubic). By default
    (None) it is done for the approximate families (bicubic, deblur) when ``sigma_y = 0`` and the
    method's untiled output satisfies ``A x = y`` (its solver class says ``ends_consistent``), so that tiled
    results are as consistent as untiled ones; it moves committed pixels by that minimum-norm
    correction. Exact families never need it.
    """
    prior = solver.prior
    if prior is None:
        raise DiffinvError(f"method {solver.name!r} uses no prior: run it on the whole image, not in windows")
    check_tensor(y, op.out_shape, "y", f"for operator {op.name}")
    name = getattr(prior, "name", None) or "the prior"
    windows = plan_tiles(
        op, prior.image_shape, overlap, seed, known_weight, prior_name=str(name), commit_margin=commit_margin
    )
    if solver.requires_svd:
        bad = next((w for w in windows if not w.solve_op.has_svd), None)
        if bad is not None:
            raise DiffinvError(
                f"method {solver.name!r} needs an SVD, which windows of {op.name} do not have "
                f"(windows keep an SVD for denoise, inpaint, colorize and sr<k>); use e.g. ddnm or pigdm"
            )
    size = DEFAULT_TILE_BATCH if tile_batch is None else tile_batch
    batches = tile_schedule(windows, size)  # validates tile_batch
    if not can_batch(solver):
        batches = tile_schedule(windows, 1)
    B = y.shape[0]
    out = torch.zeros((B, *op.in_shape), dtype=y.dtype, device=y.device)
    start, nfe = time.perf_counter(), 0
    bar = TileProgress(len(windows), steps_hint(solver, windows[0].solve_op), progress, callback, out)
    try:
        for batch in batches:
            bar.begin(len(batch))
            jobs = []
            for w in batch:
                rows, cols = w.slices
                if w.solve_op is w.window_op:
                    y_solve = w.take(y)
                else:
                    y_solve = w.solve_op.measurement(w.take(y), out[:, :, rows, cols].contiguous())
                jobs.append((w, y_solve, torch.Generator(device="cpu").manual_seed(w.seed)))
            if len(jobs) == 1:
                results = [solve_window(solver, jobs[0], sigma_y, bar)]
            else:
                results = solve_together(solver, jobs, sigma_y, bar)
            for (w, _, _), (x_w, window_nfe) in zip(jobs, results):
                rows, cols = w.slices
                known = w.known.to(out.device)
                out[:, :, rows, cols] = torch.where(known, out[:, :, rows, cols], x_w.to(out.dtype))
                nfe += window_nfe
            bar.end(len(batch))
    finally:
        bar.close()
    if final_projection is None:
        exact = op.window_rule().block_local
        consistent = bool(getattr(solver, "ends_consistent", False))
        final_projection = not exact and float(sigma_y) == 0.0 and consistent
    if final_projection:
        out = out + op.pinv(y - op.A(out)).to(out.dtype)
    return SolveResult(out, nfe, time.perf_counter() - start, dict(solver.params), len(windows))


__all__ = [
    "DEFAULT_TILE_BATCH",
    "NETWORK_GRADIENT_METHODS",
    "TILEABLE",
    "KnownRegionOperator",
    "KnownRegionSVDOperator",
    "SoftKnownRegionOperator",
    "TileWindow",
    "commit_owner",
    "needs_tiling",
    "plan_tiles",
    "seam_ratio",
    "solve_tiled",
    "solve_windows",
    "tile_schedule",
    "window_operator",
    "window_rule",
    "window_seed",
]
