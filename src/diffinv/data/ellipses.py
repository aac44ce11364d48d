"""Random CT-like ellipse phantoms and the Shepp-Logan phantom, rendered analytically.

A phantom is a sum of ellipse indicator functions with additive attenuations: an outer body
ellipse (soft tissue), optionally a bright rim (bone), and a few nested / overlapping inner ellipses
of varied attenuation, plus optional smooth low-frequency texture inside the body. Values are
clipped to [0, 1]. Rendering is anti-aliased by supersampling.

Example
-------
>>> x = random_phantoms(8, size=64, generator=torch.Generator().manual_seed(0))  # (8, 1, 64, 64)
>>> sl = shepp_logan(64)                                                          # (1, 1, 64, 64)
"""

from __future__ import annotations

import math

import torch

from ..errors import DiffinvError

# Modified Shepp-Logan (Toft 1996): (intensity, semi-axis a, semi-axis b, x0, y0, angle in degrees).
_SHEPP_LOGAN = [
    (1.00, 0.6900, 0.920, 0.00, 0.0000, 0),
    (-0.80, 0.6624, 0.874, 0.00, -0.0184, 0),
    (-0.20, 0.1100, 0.310, 0.22, 0.0000, -18),
    (-0.20, 0.1600, 0.410, -0.22, 0.0000, 18),
    (0.10, 0.2100, 0.250, 0.00, 0.3500, 0),
    (0.10, 0.0460, 0.046, 0.00, 0.1000, 0),
    (0.10, 0.0460, 0.046, 0.00, -0.1000, 0),
    (0.10, 0.0460, 0.023, -0.08, -0.6050, 0),
    (0.10, 0.0230, 0.023, 0.00, -0.6060, 0),
    (0.10, 0.0230, 0.046, 0.06, -0.6050, 0),
]


def _grid(size: int, supersample: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in [-1, 1] (x to the right, y up), supersampled."""
    n = size * supersample
    c = (torch.arange(n, dtype=dtype) + 0.5) / n * 2 - 1
    yy, xx = torch.meshgrid(-c, c, indexing="ij")
    return xx, yy


def render_ellipses(params: torch.Tensor, size: int, supersample: int = 2) -> torch.Tensor:
    """Render ellipses into images.

    params: (B, E, 6) rows (intensity, a, b, x0, y0, angle_radians); rows with a = 0 are ignored.
    Returns (B, 1, size, size) float64, not clipped.
    """
    if size < 1 or supersample < 1:
        raise DiffinvError(f"size and supersample must be >= 1, got {size}, {supersample}")
    xx, yy = _grid(size, supersample)
    p = params.to(torch.float64)
    rho, a, b, x0, y0, th = (p[..., i, None, None] for i in range(6))
    dx, dy = xx - x0, yy - y0
    cos, sin = torch.cos(th), torch.sin(th)
    u = (dx * cos + dy * sin) / a.clamp_min(1e-12)
    v = (-dx * sin + dy * cos) / b.clamp_min(1e-12)
    inside = ((u**2 + v**2) <= 1) & (a > 0)
    img = (rho * inside).sum(1)  # (B, n, n)
    n = size * supersample
    img = img.reshape(-1, size, supersample, size, supersample).mean((2, 4))
    return img.reshape(-1, 1, size, size) if n else img


def shepp_logan(size: int = 64, supersample: int = 4) -> torch.Tensor:
    """The modified Shepp-Logan phantom, (1, 1, size, size), values in [0, 1]."""
    rows = torch.tensor(_SHEPP_LOGAN, dtype=torch.float64)
    rows[:, 5] = rows[:, 5] * math.pi / 180
    # Table axes: a along x, b along y.
    img = render_ellipses(rows[None], size, supersample)
    return img.clamp(0, 1).float()


def _uniform(shape, lo, hi, generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=generator, dtype=torch.float64)


def random_phantoms(
    n: int,
    size: int = 64,
    generator: torch.Generator | None = None,
    max_inner: int = 10,
    texture: bool = True,
    supersample: int = 2,
) -> torch.Tensor:
    """``n`` random ellipse phantoms, (n, 1, size, size) float32 in [0, 1], seeded by ``generator``.

    Structure: body ellipse (attenuation 0.2-0.5), a bright rim with probability 1/2, 2..max_inner
    inner ellipses inside the body with attenuations in [-0.3, 0.5] (nested and overlapping), and
    optional smooth texture (a few random low-frequency cosines, amplitude <= 0.05) in the body.
    """
    if n < 0 or size < 4 or max_inner < 2:
        raise DiffinvError(f"need n >= 0, size >= 4, max_inner >= 2; got {n}, {size}, {max_inner}")
    g = generator
    E = 2 + max_inner
    params = torch.zeros(n, E, 6, dtype=torch.float64)
    # Body.
    ba = _uniform(n, 0.55, 0.85, g)
    bb = _uniform(n, 0.55, 0.85, g)
    bx, by = _uniform(n, -0.08, 0.08, g), _uniform(n, -0.08, 0.08, g)
    bth = _uniform(n, 0, math.pi, g)
    body_mu = _uniform(n, 0.2, 0.5, g)
    rim = (torch.rand(n, generator=g, dtype=torch.float64) < 0.5).double()
    rim_w = _uniform(n, 0.03, 0.07, g)
    rim_mu = _uniform(n, 0.3, 0.5, g)
    # Rim: a bright outer ellipse, with the body ellipse shrunk inside it.
    params[:, 0] = torch.stack([body_mu + rim * rim_mu, ba, bb, bx, by, bth], 1)
    params[:, 1] = (
        torch.stack([-rim * rim_mu, ba - rim_w, bb - rim_w, bx, by, bth], 1)
        * torch.stack([torch.ones(n)] + [rim.float()] * 5, 1).double()
    )
    # Inner ellipses, centred inside the body (in its rotated frame).
    k = torch.randint(2, max_inner + 1, (n,), generator=g)
    r = _uniform((n, max_inner), 0.0, 0.7, g).sqrt()
    phi = _uniform((n, max_inner), 0, 2 * math.pi, g)
    u, v = r * torch.cos(phi) * ba[:, None] * 0.85, r * torch.sin(phi) * bb[:, None] * 0.85
    cx = bx[:, None] + u * torch.cos(bth)[:, None] - v * torch.sin(bth)[:, None]
    cy = by[:, None] + u * torch.sin(bth)[:, None] + v * torch.cos(bth)[:, None]
    room = (1 - r) * torch.minimum(ba, bb)[:, None]
    ia = _uniform((n, max_inner), 0.04, 1.0, g) * room.clamp_min(0.05) + 0.02
    ib = _uniform((n, max_inner), 0.3, 1.0, g) * ia
    ith = _uniform((n, max_inner), 0, math.pi, g)
    imu = _uniform((n, max_inner), -0.3, 0.5, g)
    active = (torch.arange(max_inner)[None] < k[:, None]).double()
    params[:, 2:] = torch.stack([imu, ia * active, ib, cx, cy, ith], -1)
    img = render_ellipses(params, size, supersample)
    if texture and n:
        body = render_ellipses(
            params[:, :1].clone().index_fill_(2, torch.tensor([0]), 1.0), size, supersample
        )
        xx, yy = _grid(size, 1)
        tex = torch.zeros(n, 1, size, size, dtype=torch.float64)
        for _ in range(3):
            fx, fy = _uniform((n, 1, 1, 1), -4, 4, g), _uniform((n, 1, 1, 1), -4, 4, g)
            ph = _uniform((n, 1, 1, 1), 0, 2 * math.pi, g)
            amp = _uniform((n, 1, 1, 1), 0, 0.05 / 3, g)
            tex = tex + amp * torch.cos(math.pi * (fx * xx + fy * yy) + ph)
        img = img + tex * body
    return img.clamp(0, 1).float()
