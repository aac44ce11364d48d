"""Geometry helpers of the fan-beam projector: equiangular fan rays and exact ray-pixel lengths (Siddon).

Coordinates are those of :mod:`diffinv.operators.ct`: unit pixels, pixel ``(row i, column j)``
centred at ``X = j - c``, ``Y = c - i`` with the rotation centre ``c = N // 2``, so the image
covers ``X in [-c - 1/2, N - c - 1/2]`` and ``Y in [c - N + 1/2, c + 1/2]``.

Fan geometry (equiangular: a curved detector, an arc centred on the source, with equal angular bins):

* the source of view ``v`` sits at ``S = D (cos beta_v, sin beta_v)``, ``D`` = source-to-centre
  distance in pixels; its central ray points at the rotation centre, ``u0 = -(cos beta, sin beta)``,
  and ``e = (-sin beta, cos beta)`` is the in-plane perpendicular;
* the ray of bin ``k`` leaves the source at fan angle ``gamma_k = (k - (bins - 1) / 2) * dgamma``
  in direction ``cos(gamma) u0 + sin(gamma) e``; a point ``P`` lies on the ray of fan angle
  ``atan2(P . e, D - P . n)`` with ``n = (cos beta, sin beta)``;
* the detector spans the fan ``[-gamma_max, gamma_max]``, ``gamma_max = asin(R / D)``, where ``R``
  is the radius of the circle through the image corners, so ``dgamma = 2 gamma_max / bins``.

:func:`siddon_matrix` returns the exact intersection lengths of every ray with every pixel (the
algorithm of Siddon 1985, vectorised over rays): entry ``A[(v, k), p]`` is the length, in pixel
units, of ray ``(v, k)`` inside pixel ``p``, so ``A x`` is the exact line integral of the
pixelwise-constant image ``x`` along each ray.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse

# Rays per chunk are chosen so that a chunk holds about this many ray-gridline crossings.
_CHUNK_ELEMS = 1 << 21
# Segments shorter than this (pixel units) are dropped (grid corners crossed exactly).
_MIN_LENGTH = 1e-10


def corner_radius(size: int) -> float:
    """Distance from the rotation centre ``N // 2`` to the farthest image corner (pixels)."""
    c = size // 2
    far_x = max(c + 0.5, size - c - 0.5)
    far_y = max(c + 0.5, size - c - 0.5)
    return math.hypot(far_x, far_y)


def fan_default_bins(size: int, source_distance: float = 2.0) -> int:
    """Default equiangular detector count: one pixel at the rotation centre, ``ceil(2 gamma_max D)``."""
    D = source_distance * size
    return math.ceil(2.0 * math.asin(corner_radius(size) / D) * D)


def fan_rays(beta_rad: np.ndarray, gammas: np.ndarray, D: float) -> tuple[np.ndarray, ...]:
    """Sources ``(Sx, Sy)`` and unit directions ``(dx, dy)`` of every ray, each ``(views * bins,)``, view-major."""
    cb, sb = np.cos(beta_rad)[:, None], np.sin(beta_rad)[:, None]
    cg, sg = np.cos(gammas)[None, :], np.sin(gammas)[None, :]
    dx = -cg * cb - sg * sb  # cos(g) u0 + sin(g) e with u0 = -(cb, sb), e = (-sb, cb)
    dy = -cg * sb + sg * cb
    Sx = np.broadcast_to(D * cb, dx.shape)
    Sy = np.broadcast_to(D * sb, dy.shape)
    return tuple(np.ascontiguousarray(a).ravel() for a in (Sx, Sy, dx, dy))


def _axis_alphas(S: np.ndarray, d: np.ndarray, lines: np.ndarray):
    """Ray parameters of the crossings with the grid lines of one axis, and the in-box interval."""
    flat = np.abs(d) < 1e-14
    safe = np.where(flat, 1.0, d)
    a = (lines[None, :] - S[:, None]) / safe[:, None]
    lo = np.minimum(a[:, 0], a[:, -1])
    hi = np.maximum(a[:, 0], a[:, -1])
    # A ray parallel to this axis' lines crosses none: inside the slab for all alpha, or never.
    inside = (S > lines[0]) & (S < lines[-1])
    lo = np.where(flat, np.where(inside, -np.inf, np.inf), lo)
    hi = np.where(flat, np.where(inside, np.inf, -np.inf), hi)
    a[flat] = np.inf
    return a, lo, hi


def siddon_matrix(size: int, Sx, Sy, dx, dy) -> scipy.sparse.csr_matrix:
    """Exact ray-pixel intersection lengths as a CSR matrix ``(rays, size^2)`` (float64, sorted columns)."""
    N = size
    c = N // 2
    x_lines = -c - 0.5 + np.arange(N + 1, dtype=np.float64)
    y_lines = c - N + 0.5 + np.arange(N + 1, dtype=np.float64)
    rays = Sx.size
    per = max(1, _CHUNK_ELEMS // (2 * N + 2))
    idx_dtype = np.int32 if N * N < np.iinfo(np.int32).max else np.int64
    cols_l, vals_l, counts = [], [], np.zeros(rays, dtype=np.int64)
    for r0 in range(0, rays, per):
        sl = slice(r0, min(rays, r0 + per))
        sx, sy, ddx, ddy = Sx[sl], Sy[sl], dx[sl], dy[sl]
        ax, lox, hix = _axis_alphas(sx, ddx, x_lines)
        ay, loy, hiy = _axis_alphas(sy, ddy, y_lines)
        a_in = np.maximum(np.maximum(lox, loy), 0.0)
        a_out = np.maximum(np.minimum(hix, hiy), a_in)  # a_out == a_in: the ray misses
        a_in_f = np.where(np.isfinite(a_in), a_in, 0.0)
        a_out_f = np.where(np.isfinite(a_out), a_out, a_in_f)
        alphas = np.concatenate([ax, ay], axis=1)
        np.clip(alphas, a_in_f[:, None], a_out_f[:, None], out=alphas)
        alphas.sort(axis=1)
        length = np.diff(alphas, axis=1)
        mid = 0.5 * (alphas[:, 1:] + alphas[:, :-1])
        X = sx[:, None] + mid * ddx[:, None]
        Y = sy[:, None] + mid * ddy[:, None]
        j = np.floor(X - x_lines[0]).astype(np.int64)
        i = (N - 1) - np.floor(Y - y_lines[0]).astype(np.int64)
        keep = (length > _MIN_LENGTH) & (j >= 0) & (j < N) & (i >= 0) & (i < N)
        cols_l.append((i * N + j)[keep].astype(idx_dtype))
        vals_l.append(length[keep])
        counts[sl] = keep.sum(1)
    indptr = np.zeros(rays + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    ptr_dtype = np.int32 if indptr[-1] < np.iinfo(np.int32).max else np.int64
    A = scipy.sparse.csr_matrix(
        (np.concatenate(vals_l), np.concatenate(cols_l).astype(ptr_dtype), indptr.astype(ptr_dtype)),
        shape=(rays, N * N),
    )
    A.sort_indices()
    return A
