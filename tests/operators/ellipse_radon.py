"""Closed-form line integrals of ellipse phantoms: an independent reference for the CT projectors.

An ellipse of density ``rho``, centre ``C``, semi-axes ``a, b`` and rotation ``phi`` is the unit
disc in the coordinates ``q = ((P - C) . e1 / a, (P - C) . e2 / b)``, ``e1 = (cos phi, sin phi)``,
``e2 = (-sin phi, cos phi)``. The line ``P(s) = P0 + s d`` (``|d| = 1``) becomes
``q(s) = q0 + s w`` with ``w = (d . e1 / a, d . e2 / b)``; it meets the disc where
``|w|^2 s^2 + 2 (q0 . w) s + |q0|^2 - 1 = 0``, so the chord has length
``2 sqrt((q0 . w)^2 - |w|^2 (|q0|^2 - 1)) / |w|^2`` and the line integral is ``rho`` times it.
For a parallel ray at signed distance ``s'`` from the centre this is the textbook
``2 rho a b sqrt(a_r^2 - s'^2) / a_r^2`` with ``a_r^2 = a^2 cos^2(theta - phi) + b^2 sin^2(theta - phi)``.

Coordinates are the operators' pixel units: ``X = j - c``, ``Y = c - i``, ``c = N // 2``.
"""

from __future__ import annotations

import numpy as np


def random_ellipses(rng: np.random.Generator, size: int, count: int = 6) -> np.ndarray:
    """``(count, 6)`` rows ``(rho, a, b, x0, y0, phi)`` in pixel units, inside the inscribed disc."""
    r = size / 2
    out = np.zeros((count, 6))
    out[0] = (0.5, 0.8 * r, 0.6 * r, 0.0, 0.0, rng.uniform(0, np.pi))
    for e in range(1, count):
        a, b = rng.uniform(0.08, 0.3, 2) * r
        ang = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(0, 0.35) * r
        out[e] = (rng.uniform(-0.3, 0.5), a, b, dist * np.cos(ang), dist * np.sin(ang), rng.uniform(0, np.pi))
    return out


def line_integrals(ellipses: np.ndarray, P0x, P0y, dx, dy) -> np.ndarray:
    """Integral of the phantom along the lines ``P0 + s d`` (arrays of one shape, ``|d| = 1``)."""
    total = np.zeros(np.broadcast(P0x, P0y, dx, dy).shape)
    for rho, a, b, x0, y0, phi in ellipses:
        c, s = np.cos(phi), np.sin(phi)
        qx = ((P0x - x0) * c + (P0y - y0) * s) / a
        qy = (-(P0x - x0) * s + (P0y - y0) * c) / b
        wx = (dx * c + dy * s) / a
        wy = (-dx * s + dy * c) / b
        ww = wx * wx + wy * wy
        qw = qx * wx + qy * wy
        disc = qw * qw - ww * (qx * qx + qy * qy - 1.0)
        total += rho * 2.0 * np.sqrt(np.maximum(disc, 0.0)) / ww
    return total


def rasterise(ellipses: np.ndarray, size: int, supersample: int = 8) -> np.ndarray:
    """Pixel averages (``size x size``) of the phantom by ``supersample^2`` samples per pixel."""
    c = size // 2
    off = (np.arange(supersample) + 0.5) / supersample - 0.5
    X = (np.arange(size)[:, None] - c + off[None, :]).ravel()  # columns, sub-sampled
    Y = (c - np.arange(size)[:, None] - off[None, :]).ravel()  # rows
    img = np.zeros((Y.size, X.size))
    for rho, a, b, x0, y0, phi in ellipses:
        co, si = np.cos(phi), np.sin(phi)
        dxx, dyy = X[None, :] - x0, Y[:, None] - y0
        u = (dxx * co + dyy * si) / a
        v = (-dxx * si + dyy * co) / b
        img += rho * (u * u + v * v <= 1.0)
    return img.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def parallel_reference(ellipses: np.ndarray, theta_deg: np.ndarray, bins: int, points: int = 8) -> np.ndarray:
    """``(views, bins)`` bin-averaged parallel projections (the strip model's continuous analogue)."""
    th = np.deg2rad(theta_deg)[:, None, None]
    gx, gw = np.polynomial.legendre.leggauss(points)
    t = (np.arange(bins) - bins // 2)[None, :, None] + 0.5 * gx[None, None, :]
    n = (np.cos(th), np.sin(th))
    d = (-np.sin(th), np.cos(th))
    p = line_integrals(ellipses, t * n[0], t * n[1], d[0] + 0 * t, d[1] + 0 * t)
    return (p * gw).sum(-1) / 2.0


def fan_reference(ellipses: np.ndarray, op) -> np.ndarray:
    """``(views, bins)`` exact line integrals along the rays of a FanBeamCT ``op``."""
    from diffinv.operators.ct_geometry import fan_rays

    Sx, Sy, dx, dy = fan_rays(np.deg2rad(op.angles.numpy()), op.gammas.numpy(), op.D)
    return line_integrals(ellipses, Sx, Sy, dx, dy).reshape(op.views, op.bins)
