"""A dense-matrix operator with its exact SVD, for small problems, custom physics and oracles."""

from __future__ import annotations

import math

import torch

from ..errors import DiffinvError
from .base import Shape, SVDOperator


class MatrixOperator(SVDOperator):
    """``y = M vec(x)`` for an explicit (m, n) matrix ``M``; SVD by ``torch.linalg.svd`` (float64).

    Singular values below ``pinv_threshold * max(s)`` (default 1e-10, i.e. round-off of an exactly
    rank-deficient matrix) are treated as zero by the pseudo-inverse.

    Example
    -------
    >>> op = MatrixOperator(torch.randn(8, 16), in_shape=(1, 4, 4))
    >>> op.A(torch.rand(2, 1, 4, 4)).shape
    torch.Size([2, 8])
    """

    def __init__(
        self,
        matrix: torch.Tensor,
        in_shape: Shape,
        out_shape: Shape | None = None,
        pinv_threshold: float = 1e-10,
    ):
        matrix = torch.as_tensor(matrix, dtype=torch.float64)
        if matrix.dim() != 2 or matrix.shape[1] != math.prod(in_shape):
            raise DiffinvError(
                f"matrix must have shape (m, {math.prod(in_shape)}), got {tuple(matrix.shape)}"
            )
        if not torch.isfinite(matrix).all():
            raise DiffinvError("matrix contains NaN or Inf values")
        out_shape = (matrix.shape[0],) if out_shape is None else tuple(out_shape)
        if math.prod(out_shape) != matrix.shape[0]:
            raise DiffinvError(f"out_shape {out_shape} does not hold {matrix.shape[0]} values")
        super().__init__(in_shape, out_shape)
        self.pinv_threshold = float(pinv_threshold)
        U, s, Vh = torch.linalg.svd(matrix, full_matrices=True)
        self.register_buffer("matrix", matrix)
        self.register_buffer("u", U)
        self.register_buffer("s", s)
        self.register_buffer("vh", Vh)
        # Rows that are orthogonal with equal norms (M M^T = c I), used by ComposedOperator.
        gram = matrix @ matrix.T
        c = gram.diagonal().mean()
        self.rows_orthonormal_scaled = bool(
            c > 0 and torch.allclose(gram, c * torch.eye(len(gram), dtype=gram.dtype), atol=1e-12 * c)
        )

    def singulars(self) -> torch.Tensor:
        return self.s

    def _flat(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], -1)

    def _A(self, x):
        return (self._flat(x) @ self._const("matrix", x).T).reshape(x.shape[0], *self.out_shape)

    def _At(self, y):
        return (self._flat(y) @ self._const("matrix", y)).reshape(y.shape[0], *self.in_shape)

    def Vt(self, x):
        return self._flat(x) @ self._const("vh", x).T

    def V(self, z):
        return (z @ self._const("vh", z)).reshape(z.shape[0], *self.in_shape)

    def Ut(self, y):
        return self._flat(y) @ self._const("u", y)

    def U(self, z):
        return (z @ self._const("u", z).T).reshape(z.shape[0], *self.out_shape)
