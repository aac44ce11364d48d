"""Planning the windows of a tiled restoration (see :mod:`diffinv.tiling`).

:func:`plan_tiles` cuts the image into prior-sized windows in raster order, asks the operator for
each window's rows (:meth:`~diffinv.operators.base.LinearOperator.restrict_window`, under its
:meth:`~diffinv.operators.base.LinearOperator.window_rule`), decides which pixels each window
keeps fixed and which it commits, and wraps windows with known pixels in a mask-shift operator
(:mod:`diffinv.tiling.known`); :func:`tile_schedule` groups them into wavefront batches.
:func:`commit_owner` and :func:`seam_ratio` measure the seams of a result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DiffinvError
from ..operators.base import LinearOperator, Region, WindowRule
from .known import KnownRegionOperator, KnownRegionSVDOperator, SoftKnownRegionOperator

#: What :func:`solve_tiled` accepts, for error messages.
TILEABLE = "denoise, inpaint-*, colorize, sr<k>, sr<k>-bicubic, deblur-* and compositions of them"


def _not_tileable(op: LinearOperator, why: str = "") -> ValueError:
    return DiffinvError(
        f"cannot restore {op.name} with windows{': ' + why if why else ''}; windows handle {TILEABLE}"
    )


def window_rule(op: LinearOperator) -> WindowRule:
    """``op.window_rule()``; ValueError naming the reason when ``op`` cannot be windowed."""
    rule = op.window_rule()
    if rule.refusal:
        raise _not_tileable(op, rule.refusal)
    return rule


def _margin(rule: WindowRule) -> int:
    """Commit margin the operator needs: rows centred on committed pixels lie inside the window
    (the window's edge rows are cut); 0 for block-local operators."""
    return rule.support // 2


def window_operator(op: LinearOperator, top: int, left: int, height: int, width: int):
    """The rows of ``op`` that depend only on the window, restricted to its pixels.

    Returns ``(A_w, index)``: ``A_w`` acts on ``(C, height, width)`` and ``index`` (int64) holds the
    positions of its measurements in the flattened full ``y`` (``y.flatten(1)[:, index]``), so that
    ``A_w`` is the block ``M[index][:, window pixels]`` of the full matrix ``M`` and those rows of
    ``M`` are zero outside the window. ValueError for operators that cannot be windowed.
    """
    window_rule(op)  # refuses non-local operators with a clear message
    region: Region = (int(top), int(left), int(height), int(width))
    A_w, region = op.restrict_window(region)
    A_w.spec = f"{op.name} window"
    r0, c0, h, w = region
    grid = torch.arange(math.prod(op.out_shape)).reshape(op.out_shape)
    index = grid[:, r0 : r0 + h, c0 : c0 + w].reshape(-1)
    if tuple(A_w.out_shape) != (op.out_shape[0], h, w):  # guards the bookkeeping above
        raise AssertionError(f"window of {op.name}: out_shape {A_w.out_shape} vs region {region}")
    return A_w, index


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


def _check_prior_fit(op: LinearOperator, window_shape, prior_name: str) -> None:
    C, H, W = op.in_shape
    Pc, Ph, Pw = window_shape
    fixed = op.window_rule().fixed_size
    if fixed:
        raise DiffinvError(
            f"{prior_name} reconstructs {Ph}x{Pw} images; got {H}x{W} for {op.name} "
            f"({fixed}: reconstruct at {Ph}x{Pw})"
        )
    if C != Pc:
        raise DiffinvError(f"{prior_name} restores {Pc}-channel images; the image has {C} channel(s)")
    if H < Ph or W < Pw:
        raise DiffinvError(
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
    rule = window_rule(op)
    a, min_overlap = rule.align, 2 * _margin(rule)  # below it the committed zones leave gaps
    if Ph % a or Pw % a:
        raise DiffinvError(
            f"{op.name} needs windows that are multiples of {a} pixels; the prior's is {Ph}x{Pw}"
        )
    if (H - Ph) % a or (W - Pw) % a:  # the operator itself refuses this, but composites are built by hand
        raise DiffinvError(f"{op.name}: image size {H}x{W} is not a multiple of {a}")
    if overlap is None:
        ov = max(min(Ph, Pw) // 4, min_overlap)
        ov = -(-ov // a) * a
    else:
        if isinstance(overlap, bool) or int(overlap) != overlap:
            raise DiffinvError(f"overlap must be an integer number of pixels, got {overlap!r}")
        ov = int(overlap)
        if ov < min_overlap:
            raise DiffinvError(
                f"overlap {ov} is too small for {op.name}: it needs at least {min_overlap} pixels"
            )
        if ov % a:
            raise DiffinvError(f"overlap {ov} must be a multiple of {a} for {op.name}")
    if ov < 0 or ov >= min(Ph, Pw):
        raise DiffinvError(
            f"overlap must be in [0, {min(Ph, Pw)}) for {Ph}x{Pw} windows, got {ov}"
            + (f" (the minimum for {op.name} is {min_overlap})" if min_overlap else "")
        )
    m = _commit_margin(commit_margin, ov, rule, op.name)
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
            elif rule.block_local and win_op.has_svd:
                solve_op = KnownRegionSVDOperator(win_op, known, known_weight)
            elif rule.block_local:
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
        raise DiffinvError(f"windows leave {int((~committed).sum())} pixels unrestored; use a larger overlap")
    _check_coverage(op, rule, covered)
    return windows


def _commit_margin(commit_margin: int | None, overlap: int, rule: WindowRule, name: str) -> int:
    """The commit margin: checked when given, else ``overlap // 2`` aligned (see plan_tiles)."""
    a, least = rule.align, _margin(rule)
    if commit_margin is None:
        return max(least, (overlap // 2) // a * a)
    if isinstance(commit_margin, bool) or int(commit_margin) != commit_margin:
        raise DiffinvError(f"commit_margin must be an integer number of pixels, got {commit_margin!r}")
    m = int(commit_margin)
    if m < least or 2 * m > overlap or m % a:
        raise DiffinvError(
            f"commit_margin must be a multiple of {a} in [{least}, {overlap // 2}] for {name} "
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
        raise DiffinvError(f"tile_batch must be a positive integer, got {tile_batch!r}")
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
        raise DiffinvError(f"the windows do not commit every pixel of a {height}x{width} image")
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
        raise DiffinvError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    if tuple(owner.shape) != tuple(x.shape[-2:]):
        raise DiffinvError(f"owner has shape {tuple(owner.shape)}, expected {tuple(x.shape[-2:])}")
    if isinstance(align, bool) or int(align) != align or align < 1:
        raise DiffinvError(f"align must be a positive integer, got {align!r}")
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
        raise DiffinvError("owner has a single label: there is no border to measure")
    if not bool(ref.any()):
        raise DiffinvError(f"no pixel pairs inside the labels straddle the {align}-pixel grid")
    return d[:, border].mean(1) / d[:, ref].mean(1)


def _check_coverage(op: LinearOperator, rule: WindowRule, covered: torch.Tensor) -> None:
    """Every row of ``op`` lies in some window, except a final circular blur's wrap-around rows."""
    missing = ~covered.reshape(op.out_shape)
    if rule.wrap is not None:
        kh, kw = rule.wrap
        _, h, w = op.out_shape
        interior = torch.zeros(h, w, dtype=torch.bool)
        interior[kh - 1 - kh // 2 : h - kh // 2, kw - 1 - kw // 2 : w - kw // 2] = True
        missing = missing & interior
    if bool(missing.any()):
        raise DiffinvError(
            f"windows miss {int(missing.sum())} measurements of {op.name}; use a larger overlap"
        )
