"""Denoising: the identity degradation ``y = x`` (plus measurement noise)."""

from __future__ import annotations

import math

import torch

from ._common import F64, check_image_shape
from .base import Region, SVDOperator, WindowRule


class Denoise(SVDOperator):
    """The identity map on images of shape ``(C, H, W)``.

    SVD: ``s = 1`` for every pixel and ``U = V`` = flattening (row-major over ``C, H, W``).

    Example
    -------
    >>> op = Denoise((3, 8, 8))
    >>> x = torch.rand(2, 3, 8, 8)
    >>> bool((op.A(x) == x).all())
    True
    """

    rows_orthonormal_scaled = True

    def __init__(self, shape):
        shape = check_image_shape(shape)
        super().__init__(shape, shape)
        self.register_buffer("s", torch.ones(math.prod(shape), dtype=F64), persistent=False)
        self.spec = "denoise"

    def singulars(self) -> torch.Tensor:
        return self.s

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def _At(self, y: torch.Tensor) -> torch.Tensor:
        return y.clone()

    def _pinv(self, y: torch.Tensor) -> torch.Tensor:
        return y.clone()

    def window_rule(self) -> WindowRule:
        return WindowRule()  # pixel-local

    def restrict_window(self, region: Region) -> tuple[Denoise, Region]:
        return Denoise((self.in_shape[0], region[2], region[3])), region

    # A = I: V = U = I (the base class's U, Ut), as image and measurement have the same shape
    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        return self.Ut(x)

    def V(self, z: torch.Tensor) -> torch.Tensor:
        return self.U(z)
