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
with it):

* ``denoise``, ``inpaint-*``, ``colorize`` (pixel-local) and ``sr<k>`` (``k x k`` average pooling):
  the same operator on the window (inpainting: the window of the mask). For ``sr<k>`` window
  offsets, sizes and overlaps are multiples of ``k``, so every pooling block is wholly inside a
  window; a prior size not divisible by ``k`` is refused. (Image sizes not divisible by ``k`` are
  already refused by the operator itself.) These windows are *block-local*.
* ``sr<k>-bicubic``: the rows of the separable bicubic matrices whose taps all lie in the window
  (:class:`SeparableWindow`, exact pseudo-inverse).
* ``deblur-*``: the *valid* convolution, the blurred pixels whose kernel footprint lies in the
  window (:class:`ValidBlurWindow`, pseudo-inverse by CG, no SVD).
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

Example
-------
>>> from diffinv import operators, priors, solvers, tiling         # doctest: +SKIP
>>> prior = priors.load("natural-64")                               # doctest: +SKIP
>>> op = operators.from_spec("sr4", (3, 128, 192))                  # doctest: +SKIP
>>> x = tiling.solve_tiled(solvers.get("ddnm", prior), y, op, seed=0)   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .operators.base import LinearOperator, SVDOperator, check_tensor
from .operators.colorize import Colorize
from .operators.compose import ComposedOperator
from .operators.ct import ParallelBeamCT
from .operators.deblur import Blur
from .operators.denoise import Denoise
from .operators.inpaint import Inpaint
from .operators.superres import BicubicSuperResolution, SuperResolution
from .priors.base import Prior

F64 = torch.float64

#: What :func:`solve_tiled` accepts, for error messages.
TILEABLE = "denoise, inpaint-*, colorize, sr<k>, sr<k>-bicubic, deblur-* and compositions of them"

Region = tuple[int, int, int, int]  # (top, left, height, width)


# =====================================================================================  windows
class SeparableWindow(LinearOperator):
    """``y_c = Dh x_c Dw^T`` per channel for explicit (sub)matrices ``Dh`` (h, H), ``Dw`` (w, W).

    The pseudo-inverse is exact: ``(Dh kron Dw)^+ = Dh^+ kron Dw^+``.
    """

    def __init__(self, channels: int, Dh: torch.Tensor, Dw: torch.Tensor):
        Dh, Dw = Dh.detach().to("cpu", F64).contiguous(), Dw.detach().to("cpu", F64).contiguous()
        super().__init__((channels, Dh.shape[1], Dw.shape[1]), (channels, Dh.shape[0], Dw.shape[0]))
        self.register_buffer("Dh", Dh, persistent=False)
        self.register_buffer("Dw", Dw, persistent=False)
        self.register_buffer("Ph", torch.linalg.pinv(Dh), persistent=False)
        self.register_buffer("Pw", torch.linalg.pinv(Dw), persistent=False)

    def _A(self, x):
        return self._const("Dh", x) @ x @ self._const("Dw", x).T

    def _At(self, y):
        return self._const("Dh", y).T @ y @ self._const("Dw", y)

    def _pinv(self, y):
        return self._const("Ph", y) @ y @ self._const("Pw", y).T


class ValidBlurWindow(LinearOperator):
    """The rows of a blur whose kernel footprint lies inside the window: a *valid* convolution.

    ``(C, H, W) -> (C, H - kh + 1, W - kw + 1)``; output ``q`` is the full (circular) blur's pixel
    ``top + kh - 1 - kh // 2 + q`` (same for columns), which does not wrap. Computed as the
    circular blur of the window (FFT) cropped to those pixels, which do not wrap within the window
    either; the adjoint zero-pads and applies the adjoint blur. Pseudo-inverse by CG.
    """

    def __init__(self, shape, kernel: torch.Tensor, cg_iters: int = 200, cg_tol: float = 1e-10):
        C, H, W = shape
        kh, kw = kernel.shape
        super().__init__((C, H, W), (C, H - kh + 1, W - kw + 1))
        self.blur = Blur((C, H, W), kernel.detach().to("cpu", F64), pinv_threshold=0.0, normalize=False)
        self.r0, self.c0 = kh - 1 - kh // 2, kw - 1 - kw // 2
        self.cg_iters, self.cg_tol = int(cg_iters), float(cg_tol)

    def _A(self, x):
        _, h, w = self.out_shape
        return self.blur._A(x)[..., self.r0 : self.r0 + h, self.c0 : self.c0 + w]

    def _At(self, y):
        _, h, w = self.out_shape
        full = torch.zeros((y.shape[0], *self.in_shape), dtype=y.dtype, device=y.device)
        full[..., self.r0 : self.r0 + h, self.c0 : self.c0 + w] = y
        return self.blur._At(full)


@dataclass(frozen=True)
class _Structure:
    """How an operator splits into windows."""

    align: int  # window offsets, sizes and overlaps are multiples of this
    block_local: bool  # every row depends on one aligned pixel block only (exact closed forms)
    margin: int  # a window commits only pixels this far from its edges inside the image
    blur_last: Blur | None  # a final circular blur factor (its wrap rows are never enforced)

    @property
    def min_overlap(self) -> int:
        """Smallest overlap for which the windows' committed zones cover the image."""
        return 2 * self.margin


def _bicubic_support(D: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last non-zero column of every row of ``D``."""
    nz = D != 0
    cols = torch.arange(D.shape[1])
    first = torch.where(nz, cols, D.shape[1]).amin(1)
    last = torch.where(nz, cols, -1).amax(1)
    return first, last


def _factors(op: LinearOperator) -> list[LinearOperator]:
    return list(op.ops) if isinstance(op, ComposedOperator) else [op]


def _not_tileable(op: LinearOperator, why: str = "") -> ValueError:
    return ValueError(
        f"cannot restore {op.name} with windows{': ' + why if why else ''}; windows handle {TILEABLE}"
    )


def _structure(op: LinearOperator) -> _Structure:
    """Alignment, locality and commit margin of a tileable operator (ValueError otherwise)."""
    factors = _factors(op)
    align, block_local, margin, blur_last = 1, True, 0, None
    for i, fac in enumerate(factors):
        last = i == len(factors) - 1
        if isinstance(fac, (Denoise, Inpaint, Colorize)):
            continue
        if isinstance(fac, SuperResolution):
            align *= fac.factor
            continue
        if isinstance(fac, (BicubicSuperResolution, Blur)):
            if not last:
                raise _not_tileable(op, f"{fac.name} must be the last factor of a composition")
            block_local = False
            if isinstance(fac, Blur):
                kh, kw = fac.kernel.shape
                support = max(kh, kw)
                blur_last = fac
            else:
                lengths = [(b - a + 1).max() for a, b in map(_bicubic_support, (fac.Dh, fac.Dw))]
                support = int(max(lengths))
            # Rows centred on committed pixels lie inside the window (the window's edge rows are cut).
            margin = max(margin, (support * align) // 2)
            continue
        if isinstance(fac, ParallelBeamCT):
            raise _not_tileable(op, "CT projections cross the whole image")
        raise _not_tileable(op, f"{fac.name} mixes the whole image")
    return _Structure(align, block_local, margin, blur_last)


def _window_one(op: LinearOperator, region: Region) -> tuple[LinearOperator, Region]:
    """Window of one factor on ``region`` of its input grid -> (window op, region of its output)."""
    top, left, h, w = region
    C = op.in_shape[0]
    if isinstance(op, Denoise):
        return Denoise((C, h, w)), region
    if isinstance(op, Inpaint):
        mask = op.mask.detach().to("cpu", F64)[:, top : top + h, left : left + w].clone()
        return Inpaint(mask), region
    if isinstance(op, Colorize):
        return Colorize((C, h, w), weights=op.w.detach().cpu().tolist()), region
    if isinstance(op, SuperResolution):
        k = op.factor
        if top % k or left % k or h % k or w % k:
            raise ValueError(f"{op.name}: window {h}x{w} at ({top}, {left}) is not aligned to the factor {k}")
        return SuperResolution((C, h, w), k), (top // k, left // k, h // k, w // k)
    if isinstance(op, BicubicSuperResolution):
        subs, out = [], []
        for D, start, size in ((op.Dh, top, h), (op.Dw, left, w)):
            D = D.detach().to("cpu", F64)
            first, last = _bicubic_support(D)
            rows = torch.nonzero((first >= start) & (last < start + size)).flatten()
            if rows.numel() == 0:
                raise ValueError(f"{op.name}: a {h}x{w} window holds no complete bicubic row")
            if rows[-1] - rows[0] + 1 != rows.numel():  # supports move monotonically: cannot happen
                raise ValueError(f"{op.name}: non-contiguous bicubic rows in a window")
            r0, r1 = int(rows[0]), int(rows[-1]) + 1
            subs.append(D[r0:r1, start : start + size])
            out.append((r0, r1 - r0))
        win = SeparableWindow(C, subs[0], subs[1])
        return win, (out[0][0], out[1][0], out[0][1], out[1][1])
    if isinstance(op, Blur):
        kh, kw = op.kernel.shape
        if kh > h or kw > w:
            raise ValueError(f"{op.name}: the {kh}x{kw} blur kernel does not fit in a {h}x{w} window")
        win = ValidBlurWindow((C, h, w), op.kernel, cg_iters=op.cg_iters, cg_tol=op.cg_tol)
        return win, (top + kh - 1 - kh // 2, left + kw - 1 - kw // 2, h - kh + 1, w - kw + 1)
    raise _not_tileable(op)


def window_operator(op: LinearOperator, top: int, left: int, height: int, width: int):
    """The rows of ``op`` that depend only on the window, restricted to its pixels.

    Returns ``(A_w, index)``: ``A_w`` acts on ``(C, height, width)`` and ``index`` (int64) holds the
    positions of its measurements in the flattened full ``y`` (``y.flatten(1)[:, index]``), so that
    ``A_w`` is the block ``M[index][:, window pixels]`` of the full matrix ``M`` and those rows of
    ``M`` are zero outside the window. ValueError for operators that cannot be windowed.
    """
    _structure(op)  # refuses non-local operators with a clear message
    ops, region = [], (int(top), int(left), int(height), int(width))
    for fac in _factors(op):
        win, region = _window_one(fac, region)
        ops.append(win)
    A_w = ops[0] if len(ops) == 1 else ComposedOperator(ops)
    A_w.spec = f"{op.name} window"
    r0, c0, h, w = region
    grid = torch.arange(math.prod(op.out_shape)).reshape(op.out_shape)
    index = grid[:, r0 : r0 + h, c0 : c0 + w].reshape(-1)
    if tuple(A_w.out_shape) != (op.out_shape[0], h, w):  # guards the bookkeeping above
        raise AssertionError(f"window of {op.name}: out_shape {A_w.out_shape} vs region {region}")
    return A_w, index


# ============================================================================  known overlap
class _FreeRestricted(LinearOperator):
    """``B = A_w diag(f)``: the window operator seeing only the free (new) pixels."""

    def __init__(self, window_op: LinearOperator, free: torch.Tensor):
        super().__init__(window_op.in_shape, window_op.out_shape)
        self.window_op = window_op
        self.register_buffer("free", free, persistent=False)
        self.cg_iters, self.cg_tol = window_op.cg_iters, window_op.cg_tol

    def _A(self, x):
        return self.window_op._A(x * self._const("free", x))

    def _At(self, y):
        return self.window_op._At(y) * self._const("free", y)


class KnownRegionOperator(LinearOperator):
    """Mask-shift window operator ``A' x = [A_w (f x) ; c (o x)]`` (see the module docstring).

    ``known`` is an ``(H, W)`` bool mask of the window's already-restored pixels (all channels);
    measurements are flat, ``(m_w + C*H*W,)``: the window's data, then ``c`` times the known image
    (zero on new pixels). Build them with :meth:`measurement`. ``block_local=True`` asserts that
    every row of ``A_w`` and every block of ``A_w^+`` lies wholly on new or wholly on known pixels
    (block-aligned windows of pixel/block-local operators), which gives ``B^+ = f A_w^+`` in
    closed form; otherwise ``B^+`` is computed by CG (exact, but :func:`plan_tiles` uses
    :class:`SoftKnownRegionOperator` for non-local operators, see the module docstring).
    """

    def __init__(
        self,
        window_op: LinearOperator,
        known: torch.Tensor,
        known_weight: float = 1.0,
        block_local: bool = False,
    ):
        C, H, W = window_op.in_shape
        known = torch.as_tensor(known).detach().to("cpu")
        if tuple(known.shape) != (H, W):
            raise ValueError(f"known mask has shape {tuple(known.shape)}, expected ({H}, {W})")
        c = float(known_weight)
        if not (math.isfinite(c) and c > 0):
            raise ValueError(f"known_weight must be a finite number > 0, got {known_weight!r}")
        self.m_w = math.prod(window_op.out_shape)
        super().__init__(window_op.in_shape, (self.m_w + C * H * W,))
        self.window_op = window_op
        self.known_weight = c
        self.block_local = bool(block_local)
        o = known.to(F64)[None].expand(C, H, W).contiguous()
        self.register_buffer("known_mask", o, persistent=False)
        self.register_buffer("free_mask", 1.0 - o, persistent=False)
        self.free_part = _FreeRestricted(window_op, 1.0 - o)
        self.cg_iters, self.cg_tol = window_op.cg_iters, window_op.cg_tol
        self.spec = f"{window_op.name} + known overlap"

    # -------------------------------------------------------------- helpers
    def split(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y_w, known part)`` of a flat measurement, shaped like ``A_w``'s output and the image."""
        B = y.shape[0]
        return (
            y[:, : self.m_w].reshape(B, *self.window_op.out_shape),
            y[:, self.m_w :].reshape(B, *self.in_shape),
        )

    def _join(self, y1: torch.Tensor, y2: torch.Tensor) -> torch.Tensor:
        return torch.cat([y1.reshape(y1.shape[0], -1), y2.reshape(y2.shape[0], -1)], dim=1)

    def _free_pinv(self, y1: torch.Tensor) -> torch.Tensor:
        """``B^+ y1`` with ``B = A_w diag(f)``."""
        if self.block_local:
            return self._const("free_mask", y1) * self.window_op._pinv(y1)
        return self.free_part.cg_normal(y1)

    def measurement(self, y_w: torch.Tensor, x_known: torch.Tensor) -> torch.Tensor:
        """``y' = [P_B (y_w - A_w (o k)) ; c (o k)]`` from the window's data and the known image."""
        check_tensor(y_w, self.window_op.out_shape, "y_w", f"for {self.window_op.name}")
        check_tensor(x_known, self.in_shape, "x_known", f"for {self.name}")
        ok = self._const("known_mask", x_known) * x_known
        r = y_w - self.window_op._A(ok)
        r = self.free_part._A(self._free_pinv(r))  # projection onto range(B)
        return self._join(r, self.known_weight * ok)

    # -------------------------------------------------------------- operator
    def _A(self, x):
        o, f = self._const("known_mask", x), self._const("free_mask", x)
        return self._join(self.window_op._A(f * x), self.known_weight * (o * x))

    def _At(self, y):
        y1, y2 = self.split(y)
        o, f = self._const("known_mask", y), self._const("free_mask", y)
        return f * self.window_op._At(y1) + self.known_weight * (o * y2)

    def _pinv(self, y):
        y1, y2 = self.split(y)
        return self._free_pinv(y1) + self._const("known_mask", y) * y2 / self.known_weight


def _damped_lsq(op: LinearOperator, y: torch.Tensor, damping: float, iters: int, tol: float) -> torch.Tensor:
    """``(A^T A + damping I)^{-1} A^T y`` by per-sample conjugate gradients from 0."""
    b = op._At(y)
    dims = tuple(range(1, b.dim()))
    tiny = torch.finfo(b.dtype).tiny
    tol = max(tol, 10 * torch.finfo(b.dtype).eps)  # float32 cannot reach 1e-10: stop at round-off
    x, r = torch.zeros_like(b), b.clone()
    p, rs = r.clone(), (r * r).sum(dims, keepdim=True)
    rs0 = rs.clamp_min(tiny)
    for _ in range(iters):
        Ap = op._At(op._A(p)) + damping * p
        alpha = rs / (p * Ap).sum(dims, keepdim=True).clamp_min(tiny)
        x, r = x + alpha * p, r - alpha * Ap
        rs_new = (r * r).sum(dims, keepdim=True)
        if bool((rs_new <= tol**2 * rs0).all()):
            break
        p, rs = r + (rs_new / rs.clamp_min(tiny)) * p, rs_new
    return x


class SoftKnownRegionOperator(LinearOperator):
    """``A' x = [A_w x ; c (o x)]``: the window's rows and the known pixels as extra measurements.

    Used for windows of non-local operators (bicubic, deblur), where fixing the known pixels
    exactly turns the window sweep into an unstable marching deconvolution (module docstring).
    ``pinv`` is *not* the Moore-Penrose inverse but the damped least-squares solution
    ``(A'^T A' + damping I)^{-1} A'^T y`` (CG; ``damping`` is absolute, the window operators here
    have norm about 1), which balances the data against the known values.
    """

    def __init__(
        self, window_op: LinearOperator, known: torch.Tensor, known_weight: float = 1.0, damping: float = 1e-3
    ):
        C, H, W = window_op.in_shape
        known = torch.as_tensor(known).detach().to("cpu")
        if tuple(known.shape) != (H, W):
            raise ValueError(f"known mask has shape {tuple(known.shape)}, expected ({H}, {W})")
        c = float(known_weight)
        if not (math.isfinite(c) and c > 0):
            raise ValueError(f"known_weight must be a finite number > 0, got {known_weight!r}")
        self.m_w = math.prod(window_op.out_shape)
        super().__init__(window_op.in_shape, (self.m_w + C * H * W,))
        self.window_op = window_op
        self.known_weight = c
        self.register_buffer("known_mask", known.to(F64)[None].expand(C, H, W).contiguous(), persistent=False)
        # An approximate method: 1e-6 relative CG residual is plenty and 2-3x cheaper than 1e-10.
        self.cg_iters, self.cg_tol = max(window_op.cg_iters, 200), max(window_op.cg_tol, 1e-6)
        self.damping = float(damping)
        if not (math.isfinite(self.damping) and self.damping > 0):
            raise ValueError(f"damping must be a finite number > 0, got {damping!r}")
        self.spec = f"{window_op.name} + known overlap (least squares)"

    def _join(self, y1, y2):
        return torch.cat([y1.reshape(y1.shape[0], -1), y2.reshape(y2.shape[0], -1)], dim=1)

    def measurement(self, y_w: torch.Tensor, x_known: torch.Tensor) -> torch.Tensor:
        """``y' = [y_w ; c (o k)]`` from the window's data and the known image."""
        check_tensor(y_w, self.window_op.out_shape, "y_w", f"for {self.window_op.name}")
        check_tensor(x_known, self.in_shape, "x_known", f"for {self.name}")
        return self._join(y_w, self.known_weight * self._const("known_mask", x_known) * x_known)

    def _A(self, x):
        return self._join(self.window_op._A(x), self.known_weight * self._const("known_mask", x) * x)

    def _pinv(self, y):
        return _damped_lsq(self, y, self.damping, self.cg_iters, self.cg_tol)

    def _At(self, y):
        B = y.shape[0]
        y1 = y[:, : self.m_w].reshape(B, *self.window_op.out_shape)
        y2 = y[:, self.m_w :].reshape(B, *self.in_shape)
        return self.window_op._At(y1) + self.known_weight * self._const("known_mask", y) * y2


class KnownRegionSVDOperator(KnownRegionOperator, SVDOperator):
    """:class:`KnownRegionOperator` with the exact SVD inherited from a block-local SVD window.

    Every right singular vector ``v_j`` of ``A_w`` lies on new pixels (``F``) or on known ones
    (``O``), so ``V' = V``; ``s'_j = s_j`` on new pixels (0 beyond ``A_w``'s rank), ``c`` on known
    ones. Left singular vectors (coordinates ``0..n-1`` pair with ``V``): ``(u_j, 0)`` for new
    ``j < k``, ``(0, v_j)`` otherwise; coordinates ``n + j`` complete the basis with the unused
    ``(u_j, 0)`` (known ``j < k`` and all ``j >= k``) and ``(0, v_j)`` (new ``j < k``).
    """

    def __init__(self, window_op: SVDOperator, known: torch.Tensor, known_weight: float = 1.0):
        if not isinstance(window_op, SVDOperator):
            raise ValueError(f"{window_op.name} has no SVD")
        super().__init__(window_op, known, known_weight, block_local=True)
        n = math.prod(self.in_shape)
        # V^T diag(o) V is diagonal with 0/1 entries iff each v_j lies wholly on known or new pixels.
        ones = torch.ones(1, n, dtype=F64)
        ind = window_op.Vt(self.known_mask[None] * window_op.V(ones))[0]
        if not bool(((ind - ind.round()).abs() < 1e-8).all()):
            raise ValueError(f"{window_op.name}: the known region is not aligned with its singular vectors")
        known_coord = ind.round() > 0.5
        s_w = window_op.singulars().detach().to("cpu", F64)
        self.k_w = s_w.numel()
        s_full = torch.zeros(n, dtype=F64)
        s_full[: self.k_w] = s_w
        self.register_buffer(
            "s", torch.where(known_coord, torch.full_like(s_full, self.known_weight), s_full)
        )
        self.register_buffer("coord_known", known_coord, persistent=False)
        self.pinv_threshold = float(window_op.pinv_threshold)

    def singulars(self) -> torch.Tensor:
        return self.s

    def Vt(self, x):
        check_tensor(x, self.in_shape, "x", f"for {self.name}.Vt")
        return self.window_op.Vt(x)

    def V(self, z):
        check_tensor(z, (self.n,), "z", f"for {self.name}.V")
        return self.window_op.V(z)

    def Ut(self, y):
        check_tensor(y, self.out_shape, "y", f"for {self.name}.Ut")
        y1, y2 = self.split(y)
        u1, u2 = self.window_op.Ut(y1), self.window_op.Vt(y2)
        k, O = self.k_w, self.coord_known.to(y.device)
        u1p = torch.zeros_like(u2)
        u1p[:, :k] = u1[:, :k]
        in_rank = torch.arange(self.n, device=y.device) < k
        first = torch.where(O | ~in_rank, u2, u1p)
        tail = u1.clone()
        tail[:, :k] = torch.where(O[:k], u1[:, :k], u2[:, :k])
        return torch.cat([first, tail], dim=1)

    def U(self, z):
        check_tensor(z, (self.m,), "z", f"for {self.name}.U")
        n, k = self.n, self.k_w
        first, tail = z[:, :n], z[:, n:]
        new = ~self.coord_known[:k].to(z.device)
        a = tail.clone()
        a[:, :k] = torch.where(new, first[:, :k], tail[:, :k])
        b = first.clone()
        b[:, :k] = torch.where(new, tail[:, :k], first[:, :k])
        return self._join(self.window_op.U(a), self.window_op.V(b))


# ==================================================================================  the plan
@dataclass
class TileWindow:
    """One window of a tiling plan, in raster order."""

    number: int
    top: int
    left: int
    height: int
    width: int
    window_op: LinearOperator  # rows of the full operator inside the window
    index: torch.Tensor  # positions of its measurements in the flattened full y
    known: torch.Tensor  # (height, width) bool: pixels committed by earlier windows (kept fixed)
    commit: torch.Tensor  # (height, width) bool: pixels this window commits (final values)
    solve_op: LinearOperator  # window_op, or its KnownRegionOperator when known.any()
    seed: int
    level: int = 0  # wavefront level: every overlapping earlier window has a lower level

    def overlaps(self, other: TileWindow) -> bool:
        """True when the two windows share at least one pixel."""
        return (
            self.top < other.top + other.height
            and other.top < self.top + self.height
            and self.left < other.left + other.width
            and other.left < self.left + self.width
        )

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)

    def take(self, y: torch.Tensor) -> torch.Tensor:
        """The window's part of the full measurement ``y`` (B, *out_shape of the full operator)."""
        return y.reshape(y.shape[0], -1)[:, self.index.to(y.device)].reshape(
            y.shape[0], *self.window_op.out_shape
        )


def window_seed(seed: int, number: int) -> int:
    """A 63-bit seed for window ``number`` derived from ``seed`` (NumPy SeedSequence mixing)."""
    state = np.random.SeedSequence([int(seed) % 2**64, int(number)]).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)


def needs_tiling(op: LinearOperator, image_shape) -> bool:
    """True when ``op``'s images differ in size from the prior's ``image_shape`` (C, H, W)."""
    return tuple(op.in_shape) != tuple(image_shape)


def _starts(n: int, size: int, stride: int) -> list[int]:
    starts = list(range(0, n - size + 1, stride))
    if starts[-1] != n - size:
        starts.append(n - size)  # last window shifted to end at the border
    return starts


def _describe(shape) -> str:
    return f"{shape[-2]}x{shape[-1]}"


def _check_prior_fit(op: LinearOperator, window_shape, prior_name: str) -> None:
    C, H, W = op.in_shape
    Pc, Ph, Pw = window_shape
    ct = [f for f in _factors(op) if isinstance(f, ParallelBeamCT)]
    if ct:
        raise ValueError(
            f"{prior_name} reconstructs {Ph}x{Pw} images; got {H}x{W} for {op.name} "
            f"(CT cannot be split into windows: reconstruct at {Ph}x{Pw})"
        )
    if C != Pc:
        raise ValueError(f"{prior_name} restores {Pc}-channel images; the image has {C} channel(s)")
    if H < Ph or W < Pw:
        raise ValueError(
            f"{prior_name} restores {Ph}x{Pw} images; got a {H}x{W} image, smaller than that "
            f"(images smaller than the prior are not supported: resize or pad it to at least {Ph}x{Pw})"
        )


def plan_tiles(
    op: LinearOperator,
    window_shape,
    overlap: int | None = None,
    seed: int = 0,
    known_weight: float = 1.0,
    prior_name: str = "the prior",
    commit_margin: int | None = None,
) -> list[TileWindow]:
    """Windows (raster order) for restoring images of ``op.in_shape`` with a prior of ``window_shape``.

    ``overlap`` (pixels) defaults to ``P // 4`` (``P`` the smaller prior side), raised to the
    operator's minimum and rounded up to its alignment; an explicit value below the minimum or not
    aligned is refused. ``commit_margin`` (pixels): a window commits only pixels at least this far
    from its edges that lie inside the image; default ``overlap // 2`` rounded down to the
    alignment (the operator's own minimum for bicubic / deblur if larger); at most
    ``overlap // 2`` so that the windows' committed zones cover the image. Each window's ``level``
    is its wavefront level (:func:`tile_schedule`). ValueError for operators that cannot be
    windowed, CT of another size than the prior's, channel mismatches and images smaller than the
    prior.
    """
    window_shape = tuple(int(s) for s in window_shape)
    _check_prior_fit(op, window_shape, prior_name)
    _, H, W = op.in_shape
    _, Ph, Pw = window_shape
    st = _structure(op)
    a = st.align
    if Ph % a or Pw % a:
        raise ValueError(
            f"{op.name} needs windows that are multiples of {a} pixels; the prior's is {Ph}x{Pw}"
        )
    if (H - Ph) % a or (W - Pw) % a:  # the operator itself refuses this, but composites are built by hand
        raise ValueError(f"{op.name}: image size {H}x{W} is not a multiple of {a}")
    if overlap is None:
        ov = max(min(Ph, Pw) // 4, st.min_overlap)
        ov = -(-ov // a) * a
    else:
        if isinstance(overlap, bool) or int(overlap) != overlap:
            raise ValueError(f"overlap must be an integer number of pixels, got {overlap!r}")
        ov = int(overlap)
        if ov < st.min_overlap:
            raise ValueError(
                f"overlap {ov} is too small for {op.name}: it needs at least {st.min_overlap} pixels"
            )
        if ov % a:
            raise ValueError(f"overlap {ov} must be a multiple of {a} for {op.name}")
    if ov < 0 or ov >= min(Ph, Pw):
        raise ValueError(
            f"overlap must be in [0, {min(Ph, Pw)}) for {Ph}x{Pw} windows, got {ov}"
            + (f" (the minimum for {op.name} is {st.min_overlap})" if st.min_overlap else "")
        )
    m = _commit_margin(commit_margin, ov, st, op.name)
    tops, lefts = _starts(H, Ph, Ph - ov), _starts(W, Pw, Pw - ov)
    committed = torch.zeros(H, W, dtype=torch.bool)
    covered = torch.zeros(math.prod(op.out_shape), dtype=torch.bool)
    windows = []
    for top in tops:
        for left in lefts:
            number = len(windows)
            win_op, index = window_operator(op, top, left, Ph, Pw)
            covered[index] = True
            known = committed[top : top + Ph, left : left + Pw].clone()
            if not known.any():
                solve_op = win_op
            elif st.block_local and isinstance(win_op, SVDOperator):
                solve_op = KnownRegionSVDOperator(win_op, known, known_weight)
            elif st.block_local:
                solve_op = KnownRegionOperator(win_op, known, known_weight, block_local=True)
            else:
                solve_op = SoftKnownRegionOperator(win_op, known, known_weight)
            # The zone this window may commit: away from its edges that lie inside the image.
            zone = torch.zeros(Ph, Pw, dtype=torch.bool)
            r0, r1 = (m if top > 0 else 0), Ph - (m if top + Ph < H else 0)
            c0, c1 = (m if left > 0 else 0), Pw - (m if left + Pw < W else 0)
            zone[r0:r1, c0:c1] = True
            commit = zone & ~known
            committed[top : top + Ph, left : left + Pw] |= commit
            w = TileWindow(
                number, top, left, Ph, Pw, win_op, index, known, commit, solve_op, window_seed(seed, number)
            )
            # Longest chain of overlapping earlier windows: windows of one level never overlap.
            w.level = 1 + max((v.level for v in windows if v.overlaps(w)), default=-1)
            windows.append(w)
    if not bool(committed.all()):  # cannot happen with overlap >= 2 * margin; guards the geometry
        raise ValueError(f"windows leave {int((~committed).sum())} pixels unrestored; use a larger overlap")
    _check_coverage(op, st, covered)
    return windows


def _commit_margin(commit_margin: int | None, overlap: int, st: _Structure, name: str) -> int:
    """The commit margin: checked when given, else ``overlap // 2`` aligned (see plan_tiles)."""
    a = st.align
    if commit_margin is None:
        return max(st.margin, (overlap // 2) // a * a)
    if isinstance(commit_margin, bool) or int(commit_margin) != commit_margin:
        raise ValueError(f"commit_margin must be an integer number of pixels, got {commit_margin!r}")
    m = int(commit_margin)
    if m < st.margin or 2 * m > overlap or m % a:
        raise ValueError(
            f"commit_margin must be a multiple of {a} in [{st.margin}, {overlap // 2}] for {name} "
            f"with overlap {overlap}, got {m}"
        )
    return m


def tile_schedule(windows: list[TileWindow], tile_batch: int = 1) -> list[list[TileWindow]]:
    """Batches of windows that can be solved together, in an order that respects the mask-shift.

    A window depends on the earlier (raster-order) windows it overlaps: they commit the pixels it
    keeps fixed. Its ``level`` is one more than the highest level among them, so windows of one
    level never overlap and all their dependencies lie in lower levels; on a regular grid the
    levels are the anti-diagonals ``column + 2 row``. Batches are the levels in increasing order,
    each in raster order and cut into chunks of at most ``tile_batch`` windows. Every window sees
    exactly the known pixels it has in raster order (those come from the overlapping earlier
    windows, all in lower levels), so the plan and the result do not depend on ``tile_batch``.
    """
    if isinstance(tile_batch, bool) or int(tile_batch) != tile_batch or tile_batch < 1:
        raise ValueError(f"tile_batch must be a positive integer, got {tile_batch!r}")
    size = int(tile_batch)
    batches = []
    for level in sorted({w.level for w in windows}):
        same = [w for w in windows if w.level == level]
        batches += [same[i : i + size] for i in range(0, len(same), size)]
    return batches


def commit_owner(windows: list[TileWindow], height: int, width: int) -> torch.Tensor:
    """``(height, width)`` int64 map: the number of the window that committed each pixel."""
    owner = torch.full((height, width), -1, dtype=torch.int64)
    for w in windows:
        rows, cols = w.slices
        owner[rows, cols] = torch.where(w.commit, w.number, owner[rows, cols])
    if bool((owner < 0).any()):
        raise ValueError(f"the windows do not commit every pixel of a {height}x{width} image")
    return owner


def seam_ratio(x: torch.Tensor, owner: torch.Tensor, align: int = 1) -> torch.Tensor:
    """How strongly the borders between windows show: 1.0 = like the rest of the image.

    Mean absolute difference between neighbouring pixels (vertical and horizontal pairs, averaged
    over channels) across the borders of ``owner`` (an ``(H, W)`` label map such as
    :func:`commit_owner`'s: a border pair has different labels), divided by the same mean over
    the pairs inside one label. With ``align = k`` the reference counts only pairs that straddle
    a ``k``-pixel grid line (``i + 1`` divisible by ``k``), as the borders do: a method that
    leaves ``k x k`` blocks visible (``sr<k>`` at few steps) has larger differences across block
    lines everywhere, which is not a seam. Returns one ratio per image, shape ``(B,)``.
    """
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    if tuple(owner.shape) != tuple(x.shape[-2:]):
        raise ValueError(f"owner has shape {tuple(owner.shape)}, expected {tuple(x.shape[-2:])}")
    if isinstance(align, bool) or int(align) != align or align < 1:
        raise ValueError(f"align must be a positive integer, got {align!r}")
    owner = owner.to(x.device)
    H, W = owner.shape
    diffs, borders, refs = [], [], []
    for dim, n in ((-2, H), (-1, W)):
        d = x.diff(dim=dim).abs().mean(1)  # (B, H-1, W) or (B, H, W-1)
        border = owner.diff(dim=dim) != 0
        grid = (torch.arange(1, n, device=x.device) % int(align)) == 0
        grid = grid[:, None] if dim == -2 else grid[None, :]
        diffs.append(d.flatten(1))
        borders.append(border.flatten())
        refs.append((~border & grid).flatten())
    d, border, ref = torch.cat(diffs, 1), torch.cat(borders), torch.cat(refs)
    if not bool(border.any()):
        raise ValueError("owner has a single label: there is no border to measure")
    if not bool(ref.any()):
        raise ValueError(f"no pixel pairs inside the labels straddle the {align}-pixel grid")
    return d[:, border].mean(1) / d[:, ref].mean(1)


def _check_coverage(op: LinearOperator, st: _Structure, covered: torch.Tensor) -> None:
    """Every row of ``op`` lies in some window, except a final circular blur's wrap-around rows."""
    missing = ~covered.reshape(op.out_shape)
    if st.blur_last is not None:
        kh, kw = st.blur_last.kernel.shape
        _, h, w = op.out_shape
        interior = torch.zeros(h, w, dtype=torch.bool)
        interior[kh - 1 - kh // 2 : h - kh // 2, kw - 1 - kw // 2 : w - kw // 2] = True
        missing = missing & interior
    if bool(missing.any()):
        raise ValueError(f"windows miss {int(missing.sum())} measurements of {op.name}; use a larger overlap")


# ==================================================================================  solving
#: Methods whose output satisfies ``A x = y`` for noiseless data (they end with a projection).
PROJECTING_METHODS = frozenset({"ddnm", "ddnm+", "ddrm", "mcg", "score-proj"})

#: Default bound on the windows solved together (one network batch of up to this many windows).
DEFAULT_TILE_BATCH = 8

#: Methods that back-propagate through the network: solved one window at a time, since a batch
#: would keep one autograd graph per window alive at once.
NETWORK_GRADIENT_METHODS = frozenset({"dps", "pigdm", "mcg"})


def solve_tiled(
    solver,
    y: torch.Tensor,
    op: LinearOperator,
    sigma_y: float = 0.0,
    seed: int = 0,
    overlap: int | None = None,
    known_weight: float = 1.0,
    progress: bool = False,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    final_projection: bool | None = None,
    tile_batch: int | None = None,
    commit_margin: int | None = None,
) -> torch.Tensor:
    """Restore a large image window by window with ``solver`` (a :class:`~diffinv.solvers.Solver`).

    ``y`` is the measurement of the full operator ``op``; returns ``x`` (B, C, H, W) in image units.
    Windows follow :func:`plan_tiles` (``overlap``, ``commit_margin``); window ``i`` is solved with
    a generator seeded by ``window_seed(seed, i)``. Afterwards ``solver.last_nfe`` /
    ``solver.last_seconds`` hold the totals over all windows (NFE counted per window, also when
    windows share a network batch) and ``solver.last_windows`` their number.

    Batching: windows run in the order of :func:`tile_schedule`, up to ``tile_batch`` (default
    :data:`DEFAULT_TILE_BATCH`) at once. The windows of a batch are solved in lockstep, one thread
    each, and their network evaluations are stacked into one call (a window's ``B`` samples times
    the windows); everything else, including the random draws, stays per window. Since every
    window keeps the same known pixels as in raster order, ``tile_batch`` changes the result only
    by the round-off of a batched network call. Solvers that back-propagate through the network
    (:data:`NETWORK_GRADIENT_METHODS`) and objects that are not :class:`~diffinv.solvers.Solver`
    instances run one window at a time.

    ``progress``: one bar over the whole image (steps of all windows, with "window k/N" and an
    ETA); the solvers' own per-window bars are off. ``callback(step, x_t, image)`` is called with a
    running step count, the window's state and the full image so far with the window's current
    estimate in place (from the windows' threads, one call at a time).

    ``final_projection``: end with one whole-image range-space correction ``x + A^+ (y - A x)``
    (the full operator's own pseudo-inverse: FFT for deblur, separable for bicubic). By default
    (None) it is done for the approximate families (bicubic, deblur) when ``sigma_y = 0`` and the
    method's untiled output satisfies ``A x = y`` (:data:`PROJECTING_METHODS`), so that tiled
    results are as consistent as untiled ones; it moves committed pixels by that minimum-norm
    correction. Exact families never need it.
    """
    prior = solver.prior
    if prior is None:
        raise ValueError(f"method {solver.name!r} uses no prior: run it on the whole image, not in windows")
    check_tensor(y, op.out_shape, "y", f"for operator {op.name}")
    name = getattr(prior, "name", None) or "the prior"
    windows = plan_tiles(
        op, prior.image_shape, overlap, seed, known_weight, prior_name=str(name), commit_margin=commit_margin
    )
    if solver.requires_svd:
        bad = next((w for w in windows if not isinstance(w.solve_op, SVDOperator)), None)
        if bad is not None:
            raise ValueError(
                f"method {solver.name!r} needs an SVD, which windows of {op.name} do not have "
                f"(windows keep an SVD for denoise, inpaint, colorize and sr<k>); use e.g. ddnm or pigdm"
            )
    size = DEFAULT_TILE_BATCH if tile_batch is None else tile_batch
    batches = tile_schedule(windows, size)  # validates tile_batch
    if not _can_batch(solver):
        batches = tile_schedule(windows, 1)
    B = y.shape[0]
    out = torch.zeros((B, *op.in_shape), dtype=y.dtype, device=y.device)
    start, nfe = time.perf_counter(), 0
    bar = _TileProgress(len(windows), _steps_hint(solver, windows[0].solve_op), progress, callback, out)
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
                w, y_solve, generator = jobs[0]
                x_w = solver(
                    y_solve,
                    w.solve_op,
                    sigma_y=sigma_y,
                    generator=generator,
                    progress=False,
                    callback=bar.window_callback(w),
                )
                results = [(x_w, solver.last_nfe)]
            else:
                results = _solve_together(solver, jobs, sigma_y, bar)
            for (w, _, _), (x_w, window_nfe) in zip(jobs, results):
                rows, cols = w.slices
                known = w.known.to(out.device)
                out[:, :, rows, cols] = torch.where(known, out[:, :, rows, cols], x_w.to(out.dtype))
                nfe += window_nfe
            bar.end(len(batch))
    finally:
        bar.close()
    if final_projection is None:
        exact = _structure(op).block_local
        final_projection = not exact and float(sigma_y) == 0.0 and solver.name in PROJECTING_METHODS
    if final_projection:
        out = out + op.pinv(y - op.A(out)).to(out.dtype)
    solver.last_nfe = nfe
    solver.last_seconds = time.perf_counter() - start
    solver.last_windows = len(windows)
    return out


def _can_batch(solver) -> bool:
    from .solvers.base import Solver  # not at import time: the solvers package imports operators

    return isinstance(solver, Solver) and solver.name not in NETWORK_GRADIENT_METHODS


def _steps_hint(solver, op: LinearOperator) -> int:
    """Callback calls per window that a solver will make on ``op``, if its parameters say (else 1)."""
    effective = getattr(solver, "effective_params", None)  # per operator family, where solvers have it
    params = (effective(op) if callable(effective) else getattr(solver, "params", None)) or {}
    for key in ("steps", "iters"):
        if isinstance(params.get(key), int) and params[key] > 0:
            return params[key]
    return 1


# =============================================================================  progress
class _TileProgress:
    """One progress bar and the user's callback over all windows (thread-safe).

    The bar counts solver steps of all windows, ``windows x steps`` in total, so that tqdm's rate
    and ETA cover the whole image; its description names the windows being solved ("window k/N",
    "windows k-l/N" for a batch; k counts in the order they run). The steps per window come from
    the solver's ``steps`` and are corrected after the first batch from the callbacks it made
    (DDNM+'s time travel makes more).
    """

    def __init__(self, windows: int, steps_hint: int, progress: bool, callback, out: torch.Tensor):
        self.windows, self.per_window = windows, max(int(steps_hint), 1)
        self.done, self.calls, self.batch_steps, self.calibrated = 0, 0, 0, False
        self.user_callback, self.out = callback, out
        self.lock = threading.Lock()
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=windows * self.per_window, desc=f"window 1/{windows}", unit="step", leave=False
            )

    def begin(self, size: int) -> None:
        self.batch_steps = 0
        if self.bar is not None:
            k = self.done + 1
            desc = f"window {k}/{self.windows}" if size == 1 else f"windows {k}-{k + size - 1}/{self.windows}"
            self.bar.set_description(desc)

    def window_callback(self, w: TileWindow):
        """The callback handed to the solver for window ``w`` (None when nothing listens)."""
        if self.bar is None and self.user_callback is None:
            return None
        rows, cols = w.slices
        known = w.known.to(self.out.device)

        def window_callback(step: int, x_t: torch.Tensor, x0_image: torch.Tensor) -> None:
            with self.lock:
                self.batch_steps += 1
                if self.bar is not None:
                    self.bar.update(1)
                if self.user_callback is not None:
                    # the whole image so far, with this window's current estimate in place
                    preview = self.out.clone()
                    region = preview[:, :, rows, cols]
                    preview[:, :, rows, cols] = torch.where(known, region, x0_image.to(preview.dtype))
                    self.user_callback(self.calls, x_t, preview)
                self.calls += 1

        return window_callback

    def end(self, size: int) -> None:
        self.done += size
        if self.bar is None:
            return
        if not self.calibrated and self.batch_steps > 0:
            self.per_window = max(self.batch_steps // size, 1)
            self.bar.total = self.windows * self.per_window
            self.calibrated = True
        self.bar.n = self.done * self.per_window  # exact after every batch, whatever the solver reported
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# =============================================================================  batching
@dataclass
class _Request:
    """One network evaluation asked for by one window's thread."""

    worker: int
    kind: str  # "_eps" or "_x0"
    x: torch.Tensor
    t: torch.Tensor
    result: torch.Tensor | None = None
    error: BaseException | None = None
    done: bool = False


class _Cancelled(RuntimeError):
    """Raised in a window's thread when another window of its batch failed."""


class _NetworkBatcher:
    """Stacks the network evaluations of windows solved in lockstep into one call.

    Each window's solver runs in its own thread and asks for ``prior._eps`` / ``prior._x0``
    through a :class:`_BatchedPrior`. A request waits until every window still running has one
    pending; then the last to arrive evaluates them all, one network call per kind of request
    (windows in order, so the stacking is deterministic), and wakes the others. A window that
    finishes stops counting, so solvers that make different numbers of calls cannot deadlock.
    """

    def __init__(self, prior, workers: int):
        self.prior = prior
        self.live = workers
        self.pending: dict[int, _Request] = {}
        self.cond = threading.Condition()
        self.cancelled = False

    def evaluate(self, worker: int, kind: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        req = _Request(worker, kind, x, t)
        with self.cond:
            if self.cancelled:
                raise _Cancelled("another window of this batch failed")
            self.pending[worker] = req
            self._dispatch_if_ready()
            while not req.done:
                self.cond.wait()
        if req.error is not None:
            raise req.error
        return req.result

    def finish(self, worker: int) -> None:
        """Window ``worker``'s solver returned (or failed): stop waiting for it."""
        with self.cond:
            self.live -= 1
            self._dispatch_if_ready()

    def cancel(self) -> None:
        """Make every waiting and future request of this batch raise."""
        with self.cond:
            self.cancelled = True
            for req in self.pending.values():
                req.error, req.done = _Cancelled("another window of this batch failed"), True
            self.pending.clear()
            self.cond.notify_all()

    def _dispatch_if_ready(self) -> None:  # called with the lock held
        if not self.pending or len(self.pending) < self.live:
            return
        reqs = [self.pending.pop(k) for k in sorted(self.pending)]
        groups: dict[tuple, list[_Request]] = {}
        for r in reqs:
            key = (r.kind, r.x.dtype, r.x.device, tuple(r.x.shape[1:]), r.t.dtype)
            groups.setdefault(key, []).append(r)
        # Only gradient-free requests get here (see _BatchedPrior); the thread that dispatches may
        # be outside its solver's no_grad block (finish), so build no graph.
        with torch.no_grad():
            for (kind, *_), group in groups.items():
                try:
                    x = torch.cat([r.x for r in group])
                    t = torch.cat([r.t.to(x.device) for r in group])
                    parts = getattr(self.prior, kind)(x, t).split([r.x.shape[0] for r in group])
                    for r, part in zip(group, parts):
                        r.result = part
                except BaseException as exc:  # every window of the group sees the network's error
                    for r in group:
                        r.error = exc
        for r in reqs:
            r.done = True
        self.cond.notify_all()


class _BatchedPrior(Prior):
    """The prior as seen by one window's thread: network calls go through a :class:`_NetworkBatcher`.

    Same schedule, scaling and clipping as the wrapped prior; other attributes are read from it.
    It counts its own NFE, so that each window's solver reports its own. Calls that need a
    gradient through the network are evaluated directly (one graph per window).
    """

    def __init__(self, inner: Prior, batcher: _NetworkBatcher, worker: int):
        super().__init__(inner.schedule, inner.image_shape, inner.scale, inner.shift)
        self.clip_x0 = inner.clip_x0
        # not a submodule: the network's parameters stay the wrapped prior's alone
        object.__setattr__(self, "_inner", inner)
        self._batcher, self._worker = batcher, worker

    def __getattr__(self, key: str):
        try:
            return super().__getattr__(key)
        except AttributeError:
            inner = self.__dict__.get("_inner")
            if inner is None:  # still in __init__
                raise
            return getattr(inner, key)

    def _call(self, kind: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        if torch.is_grad_enabled() and x.requires_grad:
            return getattr(self._inner, kind)(x, t)
        return self._batcher.evaluate(self._worker, kind, x, t)

    def _eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._call("_eps", x_t, t)

    def _x0(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._call("_x0", x_t, t)


def _solve_together(solver, jobs, sigma_y: float, bar: _TileProgress) -> list[tuple[torch.Tensor, int]]:
    """Solve the windows of one batch in lockstep threads sharing network calls; ``[(x_w, nfe)]``."""
    batcher = _NetworkBatcher(solver.prior, len(jobs))
    results: list = [None] * len(jobs)
    errors: list = [None] * len(jobs)

    def work(i: int) -> None:
        w, y_solve, generator = jobs[i]
        own = copy.copy(solver)  # per-window last_nfe / last_seconds; parameters shared (read only)
        own.prior = _BatchedPrior(solver.prior, batcher, i)
        try:
            x_w = own(
                y_solve,
                w.solve_op,
                sigma_y=sigma_y,
                generator=generator,
                progress=False,
                callback=bar.window_callback(w),
            )
            results[i] = (x_w, own.last_nfe)
        except BaseException as exc:  # re-raised in the calling thread below
            errors[i] = exc
            batcher.cancel()
        finally:
            batcher.finish(i)

    threads = [
        threading.Thread(target=work, args=(i,), name=f"diffinv-window-{w.number}", daemon=True)
        for i, (w, _, _) in enumerate(jobs)
    ]
    for th in threads:
        th.start()
    try:
        for th in threads:
            while th.is_alive():
                th.join(0.1)  # short waits keep the main thread responsive to Ctrl-C
    except BaseException:
        batcher.cancel()
        raise
    first = next((e for e in errors if e is not None and not isinstance(e, _Cancelled)), None)
    first = first or next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return results


__all__ = [
    "DEFAULT_TILE_BATCH",
    "NETWORK_GRADIENT_METHODS",
    "PROJECTING_METHODS",
    "KnownRegionOperator",
    "KnownRegionSVDOperator",
    "SeparableWindow",
    "TileWindow",
    "ValidBlurWindow",
    "commit_owner",
    "needs_tiling",
    "plan_tiles",
    "seam_ratio",
    "solve_tiled",
    "tile_schedule",
    "window_operator",
    "window_seed",
]
