"""Colorization: an RGB image observed through its grey-level (luma) channel."""

from __future__ import annotations

import math

import torch

from ..errors import DiffinvError
from ._common import F64, check_image_shape, orthonormal_completion
from .base import Region, SVDOperator, WindowRule, check_tensor

#: ITU-R BT.601 luma weights, the ones PIL uses for ``Image.convert("L")`` on RGB images.
BT601 = (0.299, 0.587, 0.114)


class Colorize(SVDOperator):
    """Grey-level observation ``y = sum_c w_c x_c`` of an RGB image ``(3, H, W) -> (1, H, W)``.

    Parameters
    ----------
    shape:
        ``(3, H, W)``; other channel counts raise ``ValueError``.
    weights:
        Three channel weights. The default is ITU-R BT.601 luma ``(0.299, 0.587, 0.114)``, the
        weights PIL uses for RGB -> ``"L"``. ``"mean"`` gives the plain mean ``(1/3, 1/3, 1/3)``,
        as the simplified path of the DDNM code (its SVD path uses ``(0.3333, 0.3334, 0.3333)``);
        ``"bt601"`` names the default explicitly.

    SVD: per pixel a 3x3 orthogonal matrix whose first row is ``w / |w|``; ``s = |w|`` for each
    pixel (``k = H*W``), ``U`` = identity. ``Vt(x)`` lists the luma-direction coefficient of every
    pixel first (row-major), then the two null-space (chroma) coefficients of every pixel.
    ``A A^T = |w|^2 I``, so ``A^dagger y = w y / |w|^2``.
    """

    rows_orthonormal_scaled = True

    def __init__(self, shape, weights=BT601):
        C, H, W = check_image_shape(shape)
        if C != 3:
            raise DiffinvError(f"Colorize needs RGB images with 3 channels, got shape {(C, H, W)}")
        if isinstance(weights, str):
            key = weights.lower()
            if key == "mean":
                weights = (1 / 3, 1 / 3, 1 / 3)
            elif key in ("bt601", "luma"):
                weights = BT601
            else:
                raise DiffinvError(f"weights must be 3 numbers, 'bt601' or 'mean', got {weights!r}")
        try:
            w = torch.as_tensor(weights, dtype=F64).flatten()
        except (TypeError, ValueError, RuntimeError):
            raise DiffinvError(f"weights must be 3 numbers, 'bt601' or 'mean', got {weights!r}") from None
        if w.numel() != 3 or not bool(torch.isfinite(w).all()) or float(w.abs().sum()) == 0:
            raise DiffinvError(f"weights must be 3 finite numbers, not all zero, got {weights!r}")
        super().__init__((3, H, W), (1, H, W))
        norm = torch.linalg.vector_norm(w)
        self.register_buffer("w", w, persistent=False)
        self.register_buffer("w_pinv", w / norm**2, persistent=False)
        self.register_buffer("basis", orthonormal_completion(w), persistent=False)  # rows: basis vectors
        self.register_buffer("s", torch.full((H * W,), float(norm), dtype=F64), persistent=False)
        is_mean = all(math.isclose(float(v), 1 / 3) for v in w)
        is_default = all(math.isclose(float(a), b) for a, b in zip(w, BT601))
        self.spec = "colorize" if is_default else ("colorize-mean" if is_mean else None)

    def singulars(self) -> torch.Tensor:
        return self.s

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("c,bchw->bhw", self._const("w", x), x)[:, None]

    def _At(self, y: torch.Tensor) -> torch.Tensor:
        return self._const("w", y)[None, :, None, None] * y

    def _pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self._const("w_pinv", y)[None, :, None, None] * y

    def window_rule(self) -> WindowRule:
        return WindowRule()  # pixel-local

    def restrict_window(self, region: Region) -> tuple[Colorize, Region]:
        weights = self.w.detach().cpu().tolist()
        return Colorize((self.in_shape[0], region[2], region[3]), weights=weights), region

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, self.in_shape, "x", f"for {self.name}.Vt")
        return torch.einsum("ij,bjhw->bihw", self._const("basis", x), x).reshape(x.shape[0], -1)

    def V(self, z: torch.Tensor) -> torch.Tensor:
        check_tensor(z, (self.n,), "z", f"for {self.name}.V")
        z = z.reshape(z.shape[0], *self.in_shape)
        return torch.einsum("ij,bihw->bjhw", self._const("basis", z), z)
