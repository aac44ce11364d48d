"""Compressed sensing: subsampled Walsh-Hadamard and block-random orthogonal measurements."""

from __future__ import annotations

import math

import torch

from ..errors import DiffinvError
from ._common import (
    F64,
    as_generator,
    check_image_shape,
    check_positive_int,
    inverse_permutation,
    randn,
    randperm,
)
from .base import SVDOperator, check_tensor


def _check_ratio(ratio) -> float:
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise DiffinvError(f"sampling ratio must be a number in (0, 1], got {ratio!r}") from None
    if not (0.0 < r <= 1.0):
        raise DiffinvError(f"sampling ratio must be in (0, 1], got {ratio!r}")
    return r


def _round(x: float) -> int:
    """Round half up (``round(0.5) = 1``), unlike Python's round-half-to-even."""
    return int(math.floor(x + 0.5))


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def fwht(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Orthonormal fast Walsh-Hadamard transform along ``dim`` (natural / Sylvester order).

    Equals ``hadamard(n) @ x / sqrt(n)`` along ``dim`` with ``scipy.linalg.hadamard``'s matrix,
    in ``O(n log n)`` by reshape butterflies. The transform is symmetric and its own inverse.
    """
    x = x.movedim(dim, -1)
    n = x.shape[-1]
    if not _is_pow2(n):
        raise DiffinvError(f"Walsh-Hadamard transform needs a power-of-two length, got {n}")
    lead = x.shape[:-1]
    h = 1
    while h < n:
        x = x.reshape(*lead, n // (2 * h), 2, h)
        a, b = x[..., 0, :], x[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2)
        h *= 2
    x = x.reshape(*lead, n) * (1.0 / math.sqrt(n))
    return x.movedim(-1, dim)


def fwht2(x: torch.Tensor) -> torch.Tensor:
    """Separable orthonormal 2-D Walsh-Hadamard transform over the last two dims (self-inverse)."""
    return fwht(fwht(x, -1), -2)


class WalshHadamardCS(SVDOperator):
    """Subsampled orthonormal 2-D Walsh-Hadamard measurements ``y = P W x`` with ``out_shape (M,)``.

    ``W`` is the per-channel separable orthonormal WHT (``H`` and ``W`` powers of two) and ``P``
    keeps ``M = round(ratio * C*H*W)`` coefficients chosen at random (seeded by ``generator``, a
    ``torch.Generator`` or int seed) and listed in increasing flat index (over ``C, H, W``).
    Rows are orthonormal (``A A^T = I``), so ``A^T = A^dagger``.

    SVD: ``s = 1`` (``M`` values), ``U`` = identity, ``Vt(x)`` = the WHT coefficients, the kept ones
    first (in measurement order), then the others (increasing flat index).
    """

    rows_orthonormal_scaled = True

    def __init__(self, shape, ratio: float, generator: torch.Generator | int | None = 0):
        C, H, W = check_image_shape(shape)
        for name, size in (("H", H), ("W", W)):
            if not _is_pow2(size):
                raise DiffinvError(f"WalshHadamardCS needs H and W to be powers of two, got {name}={size}")
        r = _check_ratio(ratio)
        n = C * H * W
        M = _round(r * n)
        if M < 1:
            raise DiffinvError(f"sampling ratio {ratio} keeps no coefficient of {n}")
        super().__init__((C, H, W), (M,))
        self.ratio = r
        perm = randperm(as_generator(generator), n)
        kept, _ = torch.sort(perm[:M])
        rest, _ = torch.sort(perm[M:])
        order = torch.cat([kept, rest])
        self.register_buffer("kept", kept, persistent=False)
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("iorder", inverse_permutation(order), persistent=False)
        self.register_buffer("s", torch.ones(M, dtype=F64), persistent=False)
        self.spec = None

    def singulars(self) -> torch.Tensor:
        return self.s

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        return fwht2(x).reshape(x.shape[0], -1)[:, self.kept.to(x.device)]

    def _At(self, y: torch.Tensor) -> torch.Tensor:
        coef = torch.zeros(y.shape[0], self.n, dtype=y.dtype, device=y.device)
        coef[:, self.kept.to(y.device)] = y
        return fwht2(coef.reshape(y.shape[0], *self.in_shape))

    def _pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self._At(y)

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, self.in_shape, "x", f"for {self.name}.Vt")
        return fwht2(x).reshape(x.shape[0], -1)[:, self.order.to(x.device)]

    def V(self, z: torch.Tensor) -> torch.Tensor:
        check_tensor(z, (self.n,), "z", f"for {self.name}.V")
        coef = z[:, self.iorder.to(z.device)].reshape(z.shape[0], *self.in_shape)
        return fwht2(coef)


def random_orthogonal(d: int, generator: torch.Generator | int | None = 0) -> torch.Tensor:
    """A seeded random ``(d, d)`` float64 orthogonal matrix: QR of a Gaussian matrix with the signs
    fixed (``diag(R) > 0``), which makes it Haar-distributed and deterministic per seed."""
    G = randn(as_generator(generator), d, d)
    Q, R = torch.linalg.qr(G)
    signs = torch.sign(torch.diagonal(R))
    signs[signs == 0] = 1
    return Q * signs[None, :]


class BlockRandomCS(SVDOperator):
    """Block compressed sensing: every ``block x block`` tile of every channel is measured by the
    first ``m_b = round(ratio * block^2)`` rows of one shared seeded random orthogonal matrix ``Q``.

    ``out_shape`` is ``(M,)`` with ``M = C * (H/block) * (W/block) * m_b``, ordered as
    ``(channel, tile row, tile column, measurement)``. Tiles are vectorised row-major. Rows are
    orthonormal, so ``A^T = A^dagger``.

    SVD: ``s = 1`` (``M`` values), ``U`` = identity; ``Vt(x)`` = ``Q`` applied to every tile, the
    kept coefficients of all tiles first (in measurement order), then the other coefficients
    (ordered by channel, tile, row of ``Q``).
    """

    rows_orthonormal_scaled = True

    def __init__(self, shape, ratio: float, block: int = 32, generator: torch.Generator | int | None = 0):
        C, H, W = check_image_shape(shape)
        b = check_positive_int(block, "block")
        if H % b or W % b:
            raise DiffinvError(f"BlockRandomCS: image size {H}x{W} is not divisible by the block size {b}")
        r = _check_ratio(ratio)
        mb = _round(r * b * b)
        if mb < 1:
            raise DiffinvError(f"sampling ratio {ratio} keeps no measurement per {b}x{b} block")
        super().__init__((C, H, W), (C * (H // b) * (W // b) * mb,))
        self.block, self.per_block, self.ratio, self.tiles = b, mb, r, (H // b, W // b)
        self.register_buffer("Q", random_orthogonal(b * b, generator), persistent=False)
        self.register_buffer("s", torch.ones(self.m, dtype=F64), persistent=False)
        self.spec = None

    def singulars(self) -> torch.Tensor:
        return self.s

    def _tiles(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, th, tw, b*b)``."""
        (th, tw), b = self.tiles, self.block
        blocks = x.reshape(x.shape[0], self.in_shape[0], th, b, tw, b).permute(0, 1, 2, 4, 3, 5)
        return blocks.reshape(x.shape[0], self.in_shape[0], th, tw, b * b)

    def _untiles(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, C, th, tw, b*b) -> (B, C, H, W)``, the inverse of :meth:`_tiles`."""
        (th, tw), b = self.tiles, self.block
        blocks = t.reshape(t.shape[0], self.in_shape[0], th, tw, b, b).permute(0, 1, 2, 4, 3, 5)
        return blocks.reshape(t.shape[0], *self.in_shape)

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        Qk = self._const("Q", x)[: self.per_block]
        return (self._tiles(x) @ Qk.T).reshape(x.shape[0], -1)

    def _At(self, y: torch.Tensor) -> torch.Tensor:
        C = self.in_shape[0]
        Qk = self._const("Q", y)[: self.per_block]
        return self._untiles(y.reshape(y.shape[0], C, *self.tiles, self.per_block) @ Qk)

    def _pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self._At(y)

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, self.in_shape, "x", f"for {self.name}.Vt")
        coef = self._tiles(x) @ self._const("Q", x).T  # (B, C, th, tw, b*b)
        B = x.shape[0]
        mb = self.per_block
        return torch.cat([coef[..., :mb].reshape(B, -1), coef[..., mb:].reshape(B, -1)], dim=1)

    def V(self, z: torch.Tensor) -> torch.Tensor:
        check_tensor(z, (self.n,), "z", f"for {self.name}.V")
        C = self.in_shape[0]
        B, mb, bb = z.shape[0], self.per_block, self.block**2
        kept = z[:, : self.m].reshape(B, C, *self.tiles, mb)
        rest = z[:, self.m :].reshape(B, C, *self.tiles, bb - mb)
        coef = torch.cat([kept, rest], dim=-1)
        return self._untiles(coef @ self._const("Q", z))
