"""Inpainting: ``y = mask * x`` with a binary mask, and seeded mask generators.

Masks are float64 tensors of shape ``(1, H, W)`` with ``1 = observed (keep)`` and ``0 = missing``.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from ..errors import DiffinvError
from ._common import (
    F64,
    as_generator,
    check_image_shape,
    check_positive_int,
    inverse_permutation,
    rand,
)
from .base import Region, SVDOperator, WindowRule, check_tensor


class Inpaint(SVDOperator):
    """Pixel masking ``y = mask * x``: ``y`` has the shape of ``x`` with zeros where pixels are missing.

    ``A`` is an orthogonal projection, so ``A^T = A^dagger = A``.

    Parameters
    ----------
    mask:
        Tensor of shape ``(H, W)``, ``(1, H, W)`` (shared by all channels) or ``(C, H, W)``, with
        values exactly 0 (missing) or 1 (observed). Bool tensors are accepted.
    channels:
        Number of image channels ``C`` when ``mask`` has one channel (default: ``mask.shape[0]``).

    SVD: a permutation that lists the observed entries first (row-major order over ``C, H, W``),
    then the missing ones; ``U = V`` and ``s = 1`` for each observed entry.

    Example
    -------
    >>> op = Inpaint(box_mask(8, 8), channels=3)
    >>> op.in_shape, op.out_shape
    ((3, 8, 8), (3, 8, 8))
    """

    def __init__(self, mask: torch.Tensor, channels: int | None = None):
        if not isinstance(mask, torch.Tensor):
            mask = torch.as_tensor(np.asarray(mask))
        if mask.dim() == 2:
            mask = mask[None]
        if mask.dim() != 3 or mask.numel() == 0:
            raise DiffinvError(
                f"mask must have shape (H, W), (1, H, W) or (C, H, W), got {tuple(mask.shape)}"
            )
        mask = mask.detach().to(device="cpu", dtype=F64)
        if not bool(((mask == 0) | (mask == 1)).all()):
            bad = mask[(mask != 0) & (mask != 1)].flatten()[:3].tolist()
            raise DiffinvError(f"mask values must be exactly 0 or 1, found e.g. {bad}")
        if channels is not None:
            channels = check_positive_int(channels, "channels")
            if mask.shape[0] == 1:
                mask = mask.expand(channels, -1, -1)
            elif mask.shape[0] != channels:
                raise DiffinvError(f"mask has {mask.shape[0]} channels but channels={channels}")
        mask = mask.contiguous()
        shape = tuple(mask.shape)
        super().__init__(shape, shape)
        flat = mask.flatten()
        # Stable sort on "missing" puts observed entries first, each group in row-major order.
        perm = torch.sort((flat == 0).to(torch.int8), stable=True).indices
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("iperm", inverse_permutation(perm), persistent=False)
        self.register_buffer("s", torch.ones(int(flat.sum().item()), dtype=F64), persistent=False)
        self.rows_orthonormal_scaled = bool(flat.all())

    @property
    def observed_fraction(self) -> float:
        return self.s.numel() / self.n

    # -------------------------------------------------------------- construction helpers
    @classmethod
    def from_png(cls, path: str | os.PathLike, shape) -> Inpaint:
        """Load a mask image (white ``>= 0.5`` = keep, black = missing) for images of ``shape``.

        Colour images are converted to grey (PIL ``"L"``) first. The image must be exactly ``H x W``
        (no resizing is done); unreadable files and size mismatches raise ``ValueError``.
        """
        from PIL import Image, UnidentifiedImageError

        C, H, W = check_image_shape(shape)
        try:
            with Image.open(path) as im:
                im.load()
                if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                    arr = np.asarray(im, dtype=np.float64)
                    top = 65535.0 if arr.max(initial=0) > 255 else 255.0
                    if im.mode == "F":
                        top = 1.0 if arr.max(initial=0) <= 1 else 255.0
                    arr = arr / top
                else:
                    arr = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
        except (OSError, ValueError, UnidentifiedImageError) as e:
            raise DiffinvError(f"cannot read mask image {os.fspath(path)!r}: {e}") from e
        if arr.shape != (H, W):
            raise DiffinvError(
                f"mask image {os.fspath(path)!r} has size {arr.shape[0]}x{arr.shape[1]} (HxW), "
                f"expected {H}x{W} for image shape {(C, H, W)}"
            )
        mask = torch.from_numpy((arr >= 0.5).astype(np.float64))[None]
        return cls(mask, channels=C)

    # -------------------------------------------------------------- operator
    def singulars(self) -> torch.Tensor:
        return self.s

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._const("mask", x)

    def _At(self, y: torch.Tensor) -> torch.Tensor:
        return y * self._const("mask", y)

    def _pinv(self, y: torch.Tensor) -> torch.Tensor:
        return y * self._const("mask", y)

    def window_rule(self) -> WindowRule:
        return WindowRule()  # pixel-local

    def restrict_window(self, region: Region) -> tuple[Inpaint, Region]:
        top, left, h, w = region
        return Inpaint(self.mask.detach().to("cpu", F64)[:, top : top + h, left : left + w].clone()), region

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, self.in_shape, "x", f"for {self.name}.Vt")
        return x.reshape(x.shape[0], -1)[:, self.perm.to(x.device)]

    def V(self, z: torch.Tensor) -> torch.Tensor:
        check_tensor(z, (self.n,), "z", f"for {self.name}.V")
        return z[:, self.iperm.to(z.device)].reshape(z.shape[0], *self.in_shape)

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        check_tensor(y, self.out_shape, "y", f"for {self.name}.Ut")
        return y.reshape(y.shape[0], -1)[:, self.perm.to(y.device)]

    def U(self, z: torch.Tensor) -> torch.Tensor:
        check_tensor(z, (self.m,), "z", f"for {self.name}.U")
        return z[:, self.iperm.to(z.device)].reshape(z.shape[0], *self.out_shape)


# ---------------------------------------------------------------------------------- masks
def _check_hw(H, W) -> tuple[int, int]:
    return check_positive_int(H, "H"), check_positive_int(W, "W")


def box_mask(H: int, W: int, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """A ``(1, H, W)`` mask with a centred ``size`` box removed (default ``H//2 x W//2``).

    ``size`` is an int (square box) or ``(height, width)``; it must fit inside the image.
    """
    H, W = _check_hw(H, W)
    if size is None:
        bh, bw = H // 2, W // 2
    elif isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise DiffinvError(f"size must be an int or a (height, width) pair, got {size!r}")
        bh, bw = check_positive_int(size[0], "box height", 0), check_positive_int(size[1], "box width", 0)
    else:
        bh = bw = check_positive_int(size, "size", 0)
    if bh > H or bw > W:
        raise DiffinvError(f"box size {bh}x{bw} does not fit in a {H}x{W} image")
    mask = torch.ones(1, H, W, dtype=F64)
    top, left = (H - bh) // 2, (W - bw) // 2
    mask[:, top : top + bh, left : left + bw] = 0
    return mask


def random_mask(H: int, W: int, p: float, generator: torch.Generator | int | None = 0) -> torch.Tensor:
    """A ``(1, H, W)`` mask where each pixel is dropped independently with probability ``p``.

    ``0 <= p < 1``; ``generator`` is a ``torch.Generator`` or an int seed (deterministic).
    """
    H, W = _check_hw(H, W)
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise DiffinvError(f"drop probability p must be a number in [0, 1), got {p!r}") from None
    if not (0.0 <= p < 1.0):
        raise DiffinvError(f"drop probability p must be in [0, 1), got {p}")
    g = as_generator(generator)
    return (rand(g, 1, H, W) >= p).to(F64)


def _segment_distance(points: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance from each point ``(N, 2)`` to the nearest of the segments ``a[i] -> b[i]`` (``(S, 2)``)."""
    ab = b - a  # (S, 2)
    ap = points[:, None, :] - a[None]  # (N, S, 2)
    denom = (ab * ab).sum(-1).clamp_min(1e-12)
    t = ((ap * ab[None]).sum(-1) / denom).clamp(0, 1)  # (N, S)
    closest = a[None] + t[..., None] * ab[None]
    return torch.linalg.vector_norm(points[:, None, :] - closest, dim=-1).amin(1)


def stroke_mask(
    H: int,
    W: int,
    generator: torch.Generator | int | None = 0,
    *,
    min_coverage: float = 0.15,
    max_coverage: float = 0.40,
    max_vertices: int = 8,
    max_tries: int = 50,
) -> torch.Tensor:
    """A ``(1, H, W)`` free-form mask: random brush strokes (0) on a kept background (1).

    Each stroke is a random-walk polyline of 4..``max_vertices`` vertices (segment lengths 15-35%
    of the image size, turning by up to +-72 degrees per vertex) drawn with a round brush of radius
    3-7% of ``min(H, W)`` (at least 1 px). Segments are painted one at a time until the removed
    fraction reaches a target drawn uniformly from ``[min_coverage, max_coverage]``; a segment that
    would push it above ``max_coverage`` ends its stroke unpainted and a new stroke is started (at
    most ``max_tries`` strokes). Deterministic per seed.
    """
    H, W = _check_hw(H, W)
    if not (0.0 <= min_coverage <= max_coverage < 1.0):
        raise DiffinvError(
            f"need 0 <= min_coverage <= max_coverage < 1, got {min_coverage} and {max_coverage}"
        )
    max_vertices = check_positive_int(max_vertices, "max_vertices", 4)
    max_tries = check_positive_int(max_tries, "max_tries")
    g = as_generator(generator)
    yy, xx = torch.meshgrid(torch.arange(H, dtype=F64), torch.arange(W, dtype=F64), indexing="ij")
    points = torch.stack([yy.flatten(), xx.flatten()], dim=1)
    zero, hi = torch.zeros(2, dtype=F64), torch.tensor([H - 1, W - 1], dtype=F64)
    size, small = float(max(H, W)), float(min(H, W))

    target = min_coverage + (max_coverage - min_coverage) * float(rand(g, 1))
    hole = torch.zeros(H * W, dtype=torch.bool)
    n_hole = 0
    for _ in range(max_tries):
        n_vert = 4 + min(int(float(rand(g, 1)) * (max_vertices - 3)), max_vertices - 4)
        u = rand(g, 4 + 2 * n_vert)
        vert = u[:2] * hi
        angle = float(u[2]) * 2 * math.pi
        radius = max(1.0, (0.03 + 0.04 * float(u[3])) * small)
        for i in range(n_vert - 1):
            angle += (float(u[4 + 2 * i]) - 0.5) * 0.8 * math.pi
            length = (0.15 + 0.2 * float(u[5 + 2 * i])) * size
            step = torch.tensor([math.sin(angle), math.cos(angle)], dtype=F64) * length
            nxt = torch.minimum(torch.maximum(vert + step, zero), hi)
            candidate = hole | (_segment_distance(points, vert[None], nxt[None]) <= radius)
            n_cand = int(candidate.sum())
            if n_cand > max_coverage * H * W:
                break  # this segment would remove too much: end the stroke here
            hole, n_hole, vert = candidate, n_cand, nxt
            if n_hole >= target * H * W:
                return (~hole).to(F64).reshape(1, H, W)
    return (~hole).to(F64).reshape(1, H, W)
