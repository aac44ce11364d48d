"""Super-resolution: average-pooling and bicubic downsampling by an integer factor."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DiffinvError
from ._common import F64, check_image_shape, check_positive_int, inverse_permutation, orthonormal_completion
from .base import LinearOperator, Region, SVDOperator, WindowRule, check_tensor


def _check_factor(shape, factor, what: str) -> tuple[int, int, int, int]:
    C, H, W = check_image_shape(shape)
    k = check_positive_int(factor, "factor")
    if H % k or W % k:
        raise DiffinvError(f"{what}: image size {H}x{W} is not divisible by the factor {k}")
    return C, H, W, k


class SuperResolution(SVDOperator):
    """Average pooling over non-overlapping ``factor x factor`` blocks: ``(C, H, W) -> (C, H/k, W/k)``.

    SVD: per block an orthonormal ``k^2 x k^2`` basis whose first vector is constant ``1/k``;
    ``s = 1/k`` for every block (``C*H*W/k^2`` values), ``U`` = identity. ``Vt(x)`` lists the
    constant-vector coefficient of every block first (ordered like ``y``), then basis vector 1 of
    every block, and so on. ``A A^T = I / k^2``, so ``A^dagger y`` replicates each value over its block.

    Example
    -------
    >>> op = SuperResolution((3, 16, 16), 4)
    >>> op.out_shape
    (3, 4, 4)
    """

    rows_orthonormal_scaled = True

    def __init__(self, shape, factor: int):
        C, H, W, k = _check_factor(shape, factor, "SuperResolution")
        super().__init__((C, H, W), (C, H // k, W // k))
        self.factor = k
        self.register_buffer("basis", orthonormal_completion(torch.ones(k * k, dtype=F64)), persistent=False)
        self.register_buffer("s", torch.full((self.m,), 1.0 / k, dtype=F64), persistent=False)
        self.spec = f"sr{k}"

    def singulars(self) -> torch.Tensor:
        return self.s

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, h, w, k*k)``."""
        C, h, w = self.out_shape
        k = self.factor
        return (
            x.reshape(x.shape[0], C, h, k, w, k).permute(0, 1, 2, 4, 3, 5).reshape(x.shape[0], C, h, w, k * k)
        )

    def _unblocks(self, t: torch.Tensor) -> torch.Tensor:
        C, h, w = self.out_shape
        k = self.factor
        return (
            t.reshape(t.shape[0], C, h, w, k, k).permute(0, 1, 2, 4, 3, 5).reshape(t.shape[0], *self.in_shape)
        )

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        C, h, w = self.out_shape
        k = self.factor
        return x.reshape(x.shape[0], C, h, k, w, k).mean(dim=(3, 5))

    def _At(self, y: torch.Tensor) -> torch.Tensor:
        k = self.factor
        return y.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3) / (k * k)

    def _pinv(self, y: torch.Tensor) -> torch.Tensor:
        k = self.factor
        return y.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)

    def window_rule(self) -> WindowRule:
        return WindowRule(align=self.factor)  # block-local: windows hold whole pooling blocks

    def restrict_window(self, region: Region) -> tuple[SuperResolution, Region]:
        top, left, h, w = region
        k = self.factor
        if top % k or left % k or h % k or w % k:
            where = f"window {h}x{w} at ({top}, {left})"
            raise DiffinvError(f"{self.name}: {where} is not aligned to the factor {k}")
        return SuperResolution((self.in_shape[0], h, w), k), (top // k, left // k, h // k, w // k)

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, self.in_shape, "x", f"for {self.name}.Vt")
        coef = self._blocks(x) @ self._const("basis", x).T  # (B, C, h, w, k*k)
        return coef.permute(0, 4, 1, 2, 3).reshape(x.shape[0], -1)

    def V(self, z: torch.Tensor) -> torch.Tensor:
        check_tensor(z, (self.n,), "z", f"for {self.name}.V")
        C, h, w = self.out_shape
        coef = z.reshape(z.shape[0], self.factor**2, C, h, w).permute(0, 2, 3, 4, 1)
        return self._unblocks(coef @ self._const("basis", z))


# ------------------------------------------------------------------------------------ bicubic
def keys_cubic(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel with parameter ``a`` (``-0.5``: MATLAB ``imresize``, PIL)."""
    t = np.abs(t)
    inner = (a + 2) * t**3 - (a + 3) * t**2 + 1
    outer = a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return np.where(t <= 1, inner, np.where(t < 2, outer, 0.0))


def bicubic_matrix(n_in: int, factor: int, a: float = -0.5) -> torch.Tensor:
    """The ``(n_in // factor, n_in)`` float64 matrix of antialiased 1-D bicubic downsampling.

    Output sample ``i`` sits at input coordinate ``c_i = (i + 0.5) * factor - 0.5`` (pixel centres
    aligned, as in MATLAB ``imresize`` and PIL); its weights are ``keys_cubic((j - c_i) / factor)``
    over the ``4 * factor`` taps in the support, normalised to sum 1. Taps falling outside the
    signal are reflected half-sample symmetrically (``-1 -> 0``, ``n -> n - 1``) and their weights
    added to the mirrored pixel, i.e. the boundary handling is folded into the matrix.
    """
    n_in = check_positive_int(n_in, "n_in")
    k = check_positive_int(factor, "factor")
    n_out = n_in // k
    centre = (np.arange(n_out) + 0.5) * k - 0.5
    taps = np.floor(centre)[:, None] + np.arange(-2 * k, 2 * k + 2)[None, :]
    weights = keys_cubic((taps - centre[:, None]) / k, a)
    weights /= weights.sum(axis=1, keepdims=True)
    period = 2 * n_in
    j = np.mod(taps.astype(np.int64), period)
    j = np.where(j >= n_in, period - 1 - j, j)
    M = np.zeros((n_out, n_in))
    np.add.at(M, (np.repeat(np.arange(n_out), taps.shape[1]), j.ravel()), weights.ravel())
    return torch.from_numpy(M)


def _svd_pinv(U: torch.Tensor, s: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``V[:, :k] diag(1/s) U^T`` with ``1/0 := 0``, for ``M = U diag(s) V[:, :k]^T`` (``k = len(s)``)."""
    s_inv = torch.where(s > 0, 1.0 / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(s))
    return (V[:, : s.numel()] * s_inv) @ U.T


class BicubicSuperResolution(SVDOperator):
    """Separable antialiased bicubic downsampling ``y_c = D_h x_c D_w^T`` for every channel ``c``.

    ``D_h`` (``h x H``) and ``D_w`` (``w x W``) are built by :func:`bicubic_matrix` (Keys kernel,
    ``a = -0.5``, stretched by the factor, symmetric boundaries), which matches MATLAB's
    ``imresize(x, 1/k)`` and, away from the borders, PIL's ``Image.resize(..., BICUBIC)`` (PIL
    renormalises truncated weights at the borders instead of reflecting).

    SVD: from the SVDs ``D_h = U_h S_h V_h^T`` and ``D_w = U_w S_w V_w^T`` (full ``V``):
    ``Vt(x)`` computes ``V_h^T x_c V_w`` (``H x W`` coefficients per channel), lists the leading
    ``h x w`` block of every channel first (ordered like ``y``), then the remaining coefficients
    (row-major); ``s = outer(s_h, s_w)`` per channel, ``Ut(y) = U_h^T y_c U_w``. ``pinv`` applies
    ``D_h^dagger y_c D_w^dagger^T`` (or the thresholded spectral formula if ``pinv_threshold > 0``).
    """

    def __init__(self, shape, factor: int, pinv_threshold: float = 0.0):
        C, H, W, k = _check_factor(shape, factor, "BicubicSuperResolution")
        h, w = H // k, W // k
        super().__init__((C, H, W), (C, h, w))
        self.factor = k
        self.pinv_threshold = float(pinv_threshold)
        Dh, Dw = bicubic_matrix(H, k), bicubic_matrix(W, k)
        Uh, sh, Vht = torch.linalg.svd(Dh, full_matrices=True)
        Uw, sw, Vwt = torch.linalg.svd(Dw, full_matrices=True)
        for name, t in [("Dh", Dh), ("Dw", Dw), ("Uh", Uh), ("Uw", Uw), ("Vh", Vht.T), ("Vw", Vwt.T)]:
            self.register_buffer(name, t.contiguous(), persistent=False)
        # Pseudo-inverses from the same SVDs (zero singular values, if any, are skipped).
        self.register_buffer("Ph", _svd_pinv(Uh, sh, Vht.T), persistent=False)
        self.register_buffer("Pw", _svd_pinv(Uw, sw, Vwt.T), persistent=False)
        self.register_buffer("s", torch.outer(sh, sw).repeat(C, 1, 1).flatten(), persistent=False)
        lead = torch.zeros(C, H, W, dtype=torch.bool)
        lead[:, :h, :w] = True
        perm = torch.sort((~lead).flatten().to(torch.int8), stable=True).indices
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("iperm", inverse_permutation(perm), persistent=False)
        self.spec = f"sr{k}-bicubic"

    def singulars(self) -> torch.Tensor:
        return self.s

    @staticmethod
    def _sandwich(L: torch.Tensor, x: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        """``L x R^T`` over the last two dims."""
        return torch.matmul(torch.matmul(L, x), R.T)

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        return self._sandwich(self._const("Dh", x), x, self._const("Dw", x))

    def _At(self, y: torch.Tensor) -> torch.Tensor:
        return self._sandwich(self._const("Dh", y).T, y, self._const("Dw", y).T)

    def _pinv(self, y: torch.Tensor) -> torch.Tensor:
        if self.pinv_threshold > 0:
            return super()._pinv(y)
        return self._sandwich(self._const("Ph", y), y, self._const("Pw", y))

    def window_rule(self) -> WindowRule:
        # rows overlap: the longest run of non-zero taps of D_h and D_w
        lengths = [(b - a + 1).max() for a, b in map(_row_support, (self.Dh, self.Dw))]
        return WindowRule(support=int(max(lengths)))

    def restrict_window(self, region: Region) -> tuple[SeparableWindow, Region]:
        """The rows of ``D_h`` / ``D_w`` whose taps all lie in the window (:class:`SeparableWindow`)."""
        top, left, h, w = region
        subs, out = [], []
        for D, start, size in ((self.Dh, top, h), (self.Dw, left, w)):
            D = D.detach().to("cpu", F64)
            first, last = _row_support(D)
            rows = torch.nonzero((first >= start) & (last < start + size)).flatten()
            if rows.numel() == 0:
                raise DiffinvError(f"{self.name}: a {h}x{w} window holds no complete bicubic row")
            if rows[-1] - rows[0] + 1 != rows.numel():  # supports move monotonically: cannot happen
                raise DiffinvError(f"{self.name}: non-contiguous bicubic rows in a window")
            r0, r1 = int(rows[0]), int(rows[-1]) + 1
            subs.append(D[r0:r1, start : start + size])
            out.append((r0, r1 - r0))
        (r0, h_out), (c0, w_out) = out
        return SeparableWindow(self.in_shape[0], subs[0], subs[1]), (r0, c0, h_out, w_out)

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, self.in_shape, "x", f"for {self.name}.Vt")
        coef = self._sandwich(self._const("Vh", x).T, x, self._const("Vw", x).T)
        return coef.reshape(x.shape[0], -1)[:, self.perm.to(x.device)]

    def V(self, z: torch.Tensor) -> torch.Tensor:
        check_tensor(z, (self.n,), "z", f"for {self.name}.V")
        coef = z[:, self.iperm.to(z.device)].reshape(z.shape[0], *self.in_shape)
        return self._sandwich(self._const("Vh", z), coef, self._const("Vw", z))

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        check_tensor(y, self.out_shape, "y", f"for {self.name}.Ut")
        return self._sandwich(self._const("Uh", y).T, y, self._const("Uw", y).T).reshape(y.shape[0], -1)

    def U(self, z: torch.Tensor) -> torch.Tensor:
        check_tensor(z, (self.m,), "z", f"for {self.name}.U")
        coef = z.reshape(z.shape[0], *self.out_shape)
        return self._sandwich(self._const("Uh", z), coef, self._const("Uw", z))


def _row_support(D: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last non-zero column of every row of ``D``."""
    nz = D != 0
    cols = torch.arange(D.shape[1])
    first = torch.where(nz, cols, D.shape[1]).amin(1)
    last = torch.where(nz, cols, -1).amax(1)
    return first, last


class SeparableWindow(LinearOperator):
    """``y_c = Dh x_c Dw^T`` per channel for explicit (sub)matrices ``Dh`` (h, H), ``Dw`` (w, W).

    The window of a :class:`BicubicSuperResolution`. The pseudo-inverse is exact:
    ``(Dh kron Dw)^+ = Dh^+ kron Dw^+``.
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


__all__ = ["SuperResolution", "BicubicSuperResolution", "SeparableWindow", "bicubic_matrix", "keys_cubic"]
