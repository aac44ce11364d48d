"""Deblurring: circular (FFT) convolution with a 2-D kernel, its exact real-Fourier SVD, and kernels.

Kernel defaults are chosen for 64 x 64 images (the scale of this project's small priors); pass
explicit sizes for larger images. Every kernel function returns a non-negative float64 2-D tensor
summing to 1.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import DiffinvError
from ._common import F64, as_generator, check_image_shape, check_positive_int, rand, randn
from .base import LinearOperator, Region, SVDOperator, WindowRule, check_tensor

_SQRT2 = math.sqrt(2.0)


def _complex_of(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


class Blur(SVDOperator):
    """Circular convolution ``y_c = h * x_c`` of every channel with a real 2-D kernel ``h``.

    The kernel's centre (index ``(kh // 2, kw // 2)``) is the origin: the kernel is zero-padded to
    ``H x W`` and rolled so its centre lands at index ``(0, 0)``; a kernel larger than the image is
    wrapped around (folded) circularly. It is normalised to sum 1 unless ``normalize=False``.

    Exact SVD in the real Fourier domain. Let ``X = F x`` be the unitary 2-D DFT (``norm="ortho"``)
    and ``K`` the (unnormalised) DFT of the padded kernel, so that ``F y = K * X``. The real
    orthonormal Fourier basis consists of one vector per self-conjugate frequency (DC and the
    Nyquist frequencies; coordinate ``Re X[f]``) and two per conjugate pair ``{f, -f}``
    (coordinates ``sqrt(2) Re X[f]`` and ``sqrt(2) Im X[f]``). In that basis the convolution acts,
    per pair, as ``|K[f]|`` times a rotation by ``angle(K[f])`` (and as ``K[f]`` itself, a real
    number, on self-conjugate frequencies). Hence ``V`` = the real Fourier basis,
    ``s = |K|`` (each pair contributes ``|K[f]|`` twice) and ``U = V`` followed by that rotation.
    Per channel ``Vt`` lists the self-conjugate coordinates, the real parts of the pairs, then their
    imaginary parts; channels follow one another.

    ``pinv_threshold`` (default ``1e-3``): singular values ``<= pinv_threshold * max(s)`` are
    treated as zero by :meth:`pinv`, which is therefore the exact Moore-Penrose pseudo-inverse of the
    *thresholded* operator ``A_thr = U diag(s * [s > thr * max s]) V^T`` (and equals ``A^dagger``
    when no singular value is cut, e.g. with ``pinv_threshold=0`` and a kernel whose spectrum has no
    zeros). ``A`` and ``At`` are always the exact convolution and its adjoint.

    Example
    -------
    >>> op = Blur((3, 32, 32), gaussian_kernel(1.5))
    >>> op.A(torch.rand(1, 3, 32, 32)).shape
    torch.Size([1, 3, 32, 32])
    """

    def __init__(self, shape, kernel, pinv_threshold: float = 1e-3, normalize: bool = True):
        C, H, W = check_image_shape(shape)
        try:
            k = torch.as_tensor(np.asarray(kernel) if not isinstance(kernel, torch.Tensor) else kernel)
            k = k.detach().to(device="cpu", dtype=F64)
        except (TypeError, ValueError, RuntimeError):
            raise DiffinvError(
                f"kernel must be a 2-D array of numbers, got {type(kernel).__name__}"
            ) from None
        if k.dim() != 2 or k.numel() == 0:
            raise DiffinvError(f"kernel must be a non-empty 2-D array, got shape {tuple(k.shape)}")
        if not bool(torch.isfinite(k).all()):
            raise DiffinvError("kernel contains NaN or Inf values")
        if normalize:
            total = float(k.sum())
            if abs(total) <= 1e-12 * float(k.abs().sum()) or total == 0:
                raise DiffinvError("kernel sums to 0 and cannot be normalised (pass normalize=False)")
            k = k / total
        thr = float(pinv_threshold)
        if not (math.isfinite(thr) and 0 <= thr < 1):
            raise DiffinvError(f"pinv_threshold must be in [0, 1), got {pinv_threshold}")
        super().__init__((C, H, W), (C, H, W))
        self.pinv_threshold = thr

        kh, kw = k.shape
        rows = ((torch.arange(kh) - kh // 2) % H)[:, None].expand(kh, kw)
        cols = ((torch.arange(kw) - kw // 2) % W)[None, :].expand(kh, kw)
        padded = torch.zeros(H, W, dtype=F64).index_put_((rows, cols), k, accumulate=True)
        spectrum = torch.fft.rfft2(padded).flatten()  # (H * Wr,) complex128

        # Frequency bookkeeping on the rfft grid (kh in [0, H), kw in [0, W//2]).
        Wr = W // 2 + 1
        fh, fw = torch.meshgrid(torch.arange(H), torch.arange(Wr), indexing="ij")
        ch, cw = (-fh) % H, (-fw) % W  # conjugate frequency
        in_grid = cw < Wr
        flat = (fh * Wr + fw).flatten()
        conj_flat = torch.where(in_grid, ch * Wr + cw.clamp_max(Wr - 1), -1).flatten()
        in_grid = in_grid.flatten()
        is_self = in_grid & (conj_flat == flat)
        is_rep = ~in_grid | (in_grid & ~is_self & (flat < conj_flat))
        self_idx, rep_idx = flat[is_self], flat[is_rep]
        edge_pos = torch.nonzero(in_grid[is_rep]).flatten()  # reps whose conjugate is on the grid
        edge_conj = conj_flat[is_rep][edge_pos]
        assert self_idx.numel() + 2 * rep_idx.numel() == H * W

        # Make the sampled spectrum exactly Hermitian (it is, up to rounding).
        spectrum[self_idx] = spectrum[self_idx].real.to(spectrum.dtype)
        spectrum[edge_conj] = spectrum[rep_idx[edge_pos]].conj()
        mag = spectrum.abs()
        phase = torch.where(mag > 0, spectrum / torch.where(mag > 0, mag, 1.0), torch.ones_like(spectrum))

        self.register_buffer("kernel", k, persistent=False)
        self.register_buffer("spectrum", spectrum.reshape(H, Wr), persistent=False)
        self.register_buffer("phase", phase.reshape(H, Wr), persistent=False)
        self.register_buffer("self_idx", self_idx, persistent=False)
        self.register_buffer("rep_idx", rep_idx, persistent=False)
        self.register_buffer("edge_pos", edge_pos, persistent=False)
        self.register_buffer("edge_conj", edge_conj, persistent=False)
        s_channel = torch.cat([mag[self_idx], mag[rep_idx], mag[rep_idx]])
        self.register_buffer("s", s_channel.repeat(C), persistent=False)
        self.spec = None

    # ------------------------------------------------------------------ direct formulas
    def singulars(self) -> torch.Tensor:
        return self.s

    def _fft(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft2(x, norm="ortho")

    def _ifft(self, X: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(X, s=self.in_shape[1:], norm="ortho")

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        return self._ifft(self._fft(x) * self._const("spectrum", x))

    def _At(self, y: torch.Tensor) -> torch.Tensor:
        return self._ifft(self._fft(y) * self._const("spectrum", y).conj())

    def _pinv(self, y: torch.Tensor) -> torch.Tensor:
        K = self._const("spectrum", y)
        mag = K.abs()
        keep = mag > self.pinv_threshold * mag.max()
        inv = torch.where(keep, K.conj() / torch.where(keep, mag, 1.0) ** 2, torch.zeros_like(K))
        return self._ifft(self._fft(y) * inv)

    # ------------------------------------------------------------------ windows
    def window_rule(self) -> WindowRule:
        kh, kw = self.kernel.shape  # rows overlap; those within the kernel of the border wrap around
        return WindowRule(support=max(kh, kw), wrap=(kh, kw))

    def restrict_window(self, region: Region) -> tuple[ValidBlurWindow, Region]:
        """The blurred pixels whose kernel footprint lies in the window (:class:`ValidBlurWindow`)."""
        top, left, h, w = region
        kh, kw = self.kernel.shape
        if kh > h or kw > w:
            raise DiffinvError(f"{self.name}: the {kh}x{kw} blur kernel does not fit in a {h}x{w} window")
        C = self.in_shape[0]
        win = ValidBlurWindow((C, h, w), self.kernel, cg_iters=self.cg_iters, cg_tol=self.cg_tol)
        return win, (top + kh - 1 - kh // 2, left + kw - 1 - kw // 2, h - kh + 1, w - kw + 1)

    # ------------------------------------------------------------------ real Fourier basis
    def _coords(self, X: torch.Tensor) -> torch.Tensor:
        """rfft coefficients ``(B, C, H, Wr)`` -> real orthonormal coordinates ``(B, C*H*W)``."""
        Xf = X.flatten(-2)
        rep = Xf[..., self.rep_idx.to(X.device)]
        out = torch.cat(
            [Xf[..., self.self_idx.to(X.device)].real, _SQRT2 * rep.real, _SQRT2 * rep.imag], dim=-1
        )
        return out.reshape(X.shape[0], -1)

    def _spectrum_of(self, z: torch.Tensor) -> torch.Tensor:
        """Real coordinates ``(B, C*H*W)`` -> Hermitian-consistent rfft coefficients ``(B, C, H, Wr)``."""
        C, H, W = self.in_shape
        Wr = W // 2 + 1
        n_self, n_rep = self.self_idx.numel(), self.rep_idx.numel()
        z = z.reshape(z.shape[0], C, H * W)
        z_self, z_re, z_im = z.split([n_self, n_rep, n_rep], dim=-1)
        c = torch.complex(z_re, z_im) / _SQRT2
        X = torch.zeros(z.shape[0], C, H * Wr, dtype=_complex_of(z.dtype), device=z.device)
        X[..., self.self_idx.to(z.device)] = z_self.to(X.dtype)
        X[..., self.rep_idx.to(z.device)] = c
        X[..., self.edge_conj.to(z.device)] = c[..., self.edge_pos.to(z.device)].conj()
        return X.reshape(z.shape[0], C, H, Wr)

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, self.in_shape, "x", f"for {self.name}.Vt")
        return self._coords(self._fft(x))

    def V(self, z: torch.Tensor) -> torch.Tensor:
        check_tensor(z, (self.n,), "z", f"for {self.name}.V")
        return self._ifft(self._spectrum_of(z))

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        check_tensor(y, self.out_shape, "y", f"for {self.name}.Ut")
        return self._coords(self._fft(y) * self._const("phase", y).conj())

    def U(self, z: torch.Tensor) -> torch.Tensor:
        check_tensor(z, (self.m,), "z", f"for {self.name}.U")
        return self._ifft(self._spectrum_of(z) * self._const("phase", z))


class ValidBlurWindow(LinearOperator):
    """The rows of a blur whose kernel footprint lies inside the window: a *valid* convolution.

    ``(C, H, W) -> (C, H - kh + 1, W - kw + 1)``; output ``q`` is the full (circular) blur's pixel
    ``top + kh - 1 - kh // 2 + q`` (same for columns), which does not wrap. Computed as the
    circular blur of the window (FFT) cropped to those pixels, which do not wrap within the window
    either; the adjoint zero-pads and applies the adjoint blur. Pseudo-inverse by CG.
    """

    def __init__(self, shape, kernel: torch.Tensor, cg_iters: int = 200, cg_tol: float = 1e-10):
        C, H, W = shape
        kh, kw = kernel.shape
        super().__init__((C, H, W), (C, H - kh + 1, W - kw + 1))
        self.blur = Blur((C, H, W), kernel.detach().to("cpu", F64), pinv_threshold=0.0, normalize=False)
        self.r0, self.c0 = kh - 1 - kh // 2, kw - 1 - kw // 2
        self.cg_iters, self.cg_tol = int(cg_iters), float(cg_tol)

    def _A(self, x):
        _, h, w = self.out_shape
        return self.blur._A(x)[..., self.r0 : self.r0 + h, self.c0 : self.c0 + w]

    def _At(self, y):
        _, h, w = self.out_shape
        full = torch.zeros((y.shape[0], *self.in_shape), dtype=y.dtype, device=y.device)
        full[..., self.r0 : self.r0 + h, self.c0 : self.c0 + w] = y
        return self.blur._At(full)


# ------------------------------------------------------------------------------------ kernels
def _check_sigma(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DiffinvError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise DiffinvError(f"{name} must be a positive number, got {value!r}")
    return v


def _default_size(sigma: float) -> int:
    return 2 * math.ceil(3 * sigma) + 1


def _grid(size: int) -> torch.Tensor:
    return torch.arange(size, dtype=F64) - (size - 1) / 2


def gaussian_kernel(sigma: float = 1.5, size: int | None = None) -> torch.Tensor:
    """Isotropic Gaussian ``exp(-r^2 / (2 sigma^2))`` on a ``size x size`` grid, normalised.

    Defaults target 64 x 64 images: ``sigma = 1.5`` px (about DPS's ``sigma = 3`` at 256 px for
    the same visual strength relative to the image, made a little stronger so that the task is not
    trivial at low resolution) and ``size = 2 * ceil(3 sigma) + 1`` (11).
    """
    sigma = _check_sigma(sigma, "sigma")
    size = _default_size(sigma) if size is None else check_positive_int(size, "size")
    r = _grid(size)
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    k = g[:, None] * g[None, :]
    return k / k.sum()


def uniform_kernel(size: int = 9) -> torch.Tensor:
    """A ``size x size`` box filter (DDRM's uniform deblurring uses 9 x 9)."""
    size = check_positive_int(size, "size")
    return torch.full((size, size), 1.0 / size**2, dtype=F64)


def anisotropic_kernel(
    sigma_x: float = 4.0, sigma_y: float = 1.0, angle: float = 0.0, size: int | None = None
) -> torch.Tensor:
    """Anisotropic Gaussian with standard deviations ``sigma_x`` (along the rotated column axis) and
    ``sigma_y`` (along the rotated row axis); ``angle`` in degrees, from the column axis towards the
    row axis.

    DDRM's ``deblur_aniso`` (256 px images) uses 9-tap separable Gaussians with sigma 20 (almost a
    9-pixel box) and 1 along the two axes; the defaults here (``4`` and ``1`` px) give a similar
    elongated blur at 64 x 64. ``size`` defaults to ``2 * ceil(3 max(sigma)) + 1``.
    """
    sx, sy = _check_sigma(sigma_x, "sigma_x"), _check_sigma(sigma_y, "sigma_y")
    try:
        theta = math.radians(float(angle))
    except (TypeError, ValueError):
        raise DiffinvError(f"angle must be a number (degrees), got {angle!r}") from None
    if not math.isfinite(theta):
        raise DiffinvError(f"angle must be finite, got {angle!r}")
    size = _default_size(max(sx, sy)) if size is None else check_positive_int(size, "size")
    r = _grid(size)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    u = math.cos(theta) * xx + math.sin(theta) * yy
    v = -math.sin(theta) * xx + math.cos(theta) * yy
    k = torch.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    return k / k.sum()


def motion_kernel(
    size: int = 9, intensity: float = 0.5, generator: torch.Generator | int | None = 0
) -> torch.Tensor:
    """A seeded random camera-shake kernel: a random-walk trajectory rasterised on ``size x size``.

    The trajectory has ``4 * size`` unit steps whose heading starts uniformly at random and turns
    by ``N(0, (intensity * pi / 4)^2)`` per step (``intensity`` in ``[0, 1]``: 0 is a straight
    line). It is centred and scaled so its longer extent spans ``size - 1`` pixels, then drawn by
    bilinear splatting of densely sampled points and normalised to sum 1.
    """
    size = check_positive_int(size, "size")
    try:
        intensity = float(intensity)
    except (TypeError, ValueError):
        raise DiffinvError(f"intensity must be a number in [0, 1], got {intensity!r}") from None
    if not (0.0 <= intensity <= 1.0):
        raise DiffinvError(f"intensity must be in [0, 1], got {intensity}")
    g = as_generator(generator)
    if size == 1:
        return torch.ones(1, 1, dtype=F64)
    steps = 4 * size
    heading = float(rand(g, 1)) * 2 * math.pi + torch.cumsum(randn(g, steps) * intensity * math.pi / 4, 0)
    moves = torch.stack([torch.sin(heading), torch.cos(heading)], dim=1)
    verts = torch.cat([torch.zeros(1, 2, dtype=F64), torch.cumsum(moves, 0)])  # (steps + 1, 2)
    lo, hi = verts.amin(0), verts.amax(0)
    extent = float((hi - lo).max())
    verts = (verts - (lo + hi) / 2) * ((size - 1) / extent) + (size - 1) / 2
    # Dense sampling of the polyline (16 points per step) for a smooth rasterisation.
    t = torch.linspace(0, 1, 16 + 1, dtype=F64)[:-1]
    pts = (verts[:-1, None] + t[None, :, None] * (verts[1:] - verts[:-1])[:, None]).reshape(-1, 2)
    pts = torch.cat([pts, verts[-1:]]).clamp(0, size - 1)
    base = pts.floor().long().clamp(max=size - 2)
    frac = pts - base
    k = torch.zeros(size, size, dtype=F64)
    for dy in (0, 1):
        for dx in (0, 1):
            wgt = (frac[:, 0] if dy else 1 - frac[:, 0]) * (frac[:, 1] if dx else 1 - frac[:, 1])
            k.index_put_((base[:, 0] + dy, base[:, 1] + dx), wgt, accumulate=True)
    return k / k.sum()
