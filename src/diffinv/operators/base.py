"""Base classes for linear degradation operators.

A degradation is a linear map ``A`` from images ``x`` of per-sample shape ``in_shape`` (C, H, W)
to measurements ``y`` of per-sample shape ``out_shape``. Every operator provides

* ``A(x)``      the forward map,
* ``At(y)``     its exact adjoint, ``<A x, y> = <x, At y>``,
* ``pinv(y)``   the Moore-Penrose pseudo-inverse ``A^dagger y``,
* ``measure(x, sigma_y, generator)`` ``= A x + sigma_y * n`` with ``n ~ N(0, I)``.

and abilities that solvers and the tiling ask for instead of testing an operator's class, each
with a default that subclasses override (deepinv's ``LinearPhysics`` / ``DecomposablePhysics``
pattern):

* ``damped_pinv(r, gamma)`` ``= A^T (A A^T + gamma I)^{-1} r`` (default: CG, :mod:`.cg`; SVD
  operators: spectral; CT: its Gram factors),
* ``spectral_view(like)`` ``-> (s, Vt, V)`` or None (SVD operators: the full SVD; CT: the range part),
* ``initial_estimate(y)``: a prior-free first reconstruction (``A^+ y``; CT: FBP),
* ``window_rule()`` / ``restrict_window(region)``: how the operator restricts to an image window
  (:class:`WindowRule`), for :mod:`diffinv.tiling`; by default it cannot,
* ``has_svd`` and, on :class:`SVDOperator`, ``singulars_full(like)`` (length ``n``, zeros where
  ``pinv`` drops a direction).

:class:`SVDOperator` adds a spectral decomposition ``A = U diag(s) V^T`` used by DDRM and DDNM+.

Conventions
-----------
* Tensors are batched over the first dimension: ``x`` has shape ``(B, *in_shape)`` and ``y`` has
  shape ``(B, *out_shape)``.
* Device and dtype follow the input. Operators keep their constant tensors (masks, kernels,
  matrices) in float64 and cast them to the input's dtype/device on use (:meth:`_const`).
* Spectral coordinates (SVDOperator): ``Vt(x)`` has shape ``(B, n)`` with ``n = prod(in_shape)``
  and ``Ut(y)`` has shape ``(B, m)`` with ``m = prod(out_shape)``. ``singulars()`` has length
  ``k <= min(n, m)``; spectral coordinate ``i < k`` of ``Vt`` pairs with coordinate ``i`` of ``Ut``
  through ``s[i]`` (``s[i]`` may be zero). Coordinates ``>= k`` of ``Vt`` span the null space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DiffinvError
from .cg import cg

Shape = tuple[int, ...]
Region = tuple[int, int, int, int]  # (top, left, height, width) of an image window


@dataclass(frozen=True)
class WindowRule:
    """How an operator restricts to rectangular image windows (what :mod:`diffinv.tiling` needs).

    * ``refusal``: why it cannot (one clause, e.g. ``"cs0.5 mixes the whole image"``); empty when
      it can. ``fixed_size``: for operators tied to their own image size (CT), the note a caller
      adds when the image size differs from the one it can reconstruct.
    * ``align``: window offsets and sizes must be multiples of it (input pixels).
    * ``support``: 0 when every row depends on one aligned pixel block only (*block-local*: the
      known overlap of a window has closed forms); otherwise the longest extent of a row in input
      pixels (rows overlap, e.g. a blur kernel).
    * ``wrap``: the ``(kh, kw)`` kernel of a final circular convolution; its rows within the
      kernel of the border wrap around the image and belong to no window.
    """

    align: int = 1
    support: int = 0
    wrap: tuple[int, int] | None = None
    refusal: str = ""
    fixed_size: str = ""

    @property
    def block_local(self) -> bool:
        return self.support == 0


def check_tensor(t: torch.Tensor, shape: Shape, name: str, what: str = "") -> None:
    """Raise ``ValueError`` unless ``t`` is a floating tensor of shape ``(B, *shape)``."""
    if not isinstance(t, torch.Tensor):
        raise DiffinvError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not (t.is_floating_point() or t.is_complex()):
        raise DiffinvError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.dim() != len(shape) + 1 or tuple(t.shape[1:]) != tuple(shape):
        raise DiffinvError(
            f"{name} has shape {tuple(t.shape)}, expected (B, {', '.join(map(str, shape))})"
            + (f" {what}" if what else "")
        )


def check_same(a: torch.Tensor, b: torch.Tensor, names: str = "inputs") -> None:
    """Raise ``ValueError`` if two tensors differ in dtype or device."""
    if a.dtype != b.dtype:
        raise DiffinvError(f"{names} have different dtypes ({a.dtype} vs {b.dtype})")
    if a.device != b.device:
        raise DiffinvError(f"{names} are on different devices ({a.device} vs {b.device})")


def check_sigma(sigma_y) -> float:
    """``sigma_y`` as a float; DiffinvError unless finite and >= 0."""
    sigma_y = float(sigma_y)
    if not math.isfinite(sigma_y) or sigma_y < 0:
        raise DiffinvError(f"sigma_y must be a finite number >= 0, got {sigma_y}")
    return sigma_y


def add_gaussian_noise(y: torch.Tensor, sigma_y: float, generator: torch.Generator | None) -> torch.Tensor:
    """``y + sigma_y n``, ``n ~ N(0, I)`` drawn on the generator's device (so that a seed gives the
    same noise wherever ``y`` lives)."""
    sigma_y = check_sigma(sigma_y)
    if sigma_y == 0:
        return y
    device = generator.device if generator is not None else y.device
    noise = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=device)
    return y + sigma_y * noise.to(y.device)


class LinearOperator(nn.Module):
    """A linear map ``A: R^{in_shape} -> R^{out_shape}`` with exact adjoint and pseudo-inverse.

    Subclasses implement :meth:`_A` and :meth:`_At` (and usually :meth:`_pinv`) on validated,
    batched tensors. The default :meth:`_pinv` solves the normal equations ``A^T A x = A^T y`` by
    conjugate gradients started from 0, whose iterates stay in ``range(A^T)`` and so converge to
    the minimum-norm least-squares solution ``A^dagger y``.

    Example
    -------
    >>> op = from_spec("sr4", (3, 64, 64))          # doctest: +SKIP
    >>> y = op.measure(x, sigma_y=0.01, generator=torch.Generator().manual_seed(0))
    >>> x_hat = op.pinv(y)
    """

    #: CG settings for the default iterative pseudo-inverse.
    cg_iters: int = 200
    cg_tol: float = 1e-10

    #: True when ``A A^T = c I`` for some ``c > 0`` (orthogonal, equally scaled rows). Then
    #: ``A^dagger = A^T / c`` and ``(M A)^dagger = A^dagger M^dagger`` for any ``M``, which lets
    #: :class:`~diffinv.operators.compose.ComposedOperator` invert a chain factor by factor.
    #: Subclasses set it (class attribute, instance attribute or property) when it holds.
    rows_orthonormal_scaled: bool = False

    def __init__(self, in_shape: Shape, out_shape: Shape):
        super().__init__()
        self.in_shape: Shape = tuple(int(s) for s in in_shape)
        self.out_shape: Shape = tuple(int(s) for s in out_shape)
        self._const_cache: dict = {}

    # ----------------------------------------------------------------- public, validated API
    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Forward map ``y = A x``; ``x`` is ``(B, *in_shape)``."""
        check_tensor(x, self.in_shape, "x", f"for {self.name}")
        return self._A(x)

    def At(self, y: torch.Tensor) -> torch.Tensor:
        """Exact adjoint ``A^T y``; ``y`` is ``(B, *out_shape)``."""
        check_tensor(y, self.out_shape, "y", f"for {self.name}")
        return self._At(y)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """Moore-Penrose pseudo-inverse ``A^dagger y``."""
        check_tensor(y, self.out_shape, "y", f"for {self.name}")
        return self._pinv(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    def measure(
        self, x: torch.Tensor, sigma_y: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Simulate a measurement ``y = A x + sigma_y * n``, ``n ~ N(0, I)`` drawn from ``generator``."""
        check_sigma(sigma_y)
        return add_gaussian_noise(self.A(x), sigma_y, generator)

    def project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Range-null-space decomposition ``A^dagger y + (I - A^dagger A) x`` (consistent with y)."""
        check_same(x, y, "x and y")
        return x + self.pinv(y - self.A(x))

    def AtA_ones(self, like: torch.Tensor) -> torch.Tensor:
        """``A^T A 1`` per pixel (shape ``(1, *in_shape)``), the normaliser of MCG's relaxed projection."""
        ones = torch.ones((1, *self.in_shape), dtype=like.dtype, device=like.device)
        return self._At(self._A(ones))

    @property
    def name(self) -> str:
        return getattr(self, "spec", None) or type(self).__name__

    @property
    def has_svd(self) -> bool:
        return False

    # ----------------------------------------------------------------- abilities (override)
    def damped_pinv(self, r: torch.Tensor, gamma: float) -> torch.Tensor:
        """``A^T (A A^T + gamma I)^{-1} r`` (Tikhonov-damped pseudo-inverse, image space).

        ``gamma = 0`` gives ``A^+ r``, ``gamma = inf`` gives 0; otherwise :meth:`_damped_pinv`
        (default: CG on ``(A A^T + gamma I) u = r`` in measurement space, then ``A^T u``; SVD
        operators and CT override it with closed forms).
        """
        check_tensor(r, self.out_shape, "r", f"for {self.name}")
        gamma = float(gamma)
        if not gamma >= 0:
            raise DiffinvError(f"gamma must be >= 0, got {gamma}")
        if gamma == 0.0:
            return self._pinv(r)
        if math.isinf(gamma):
            return torch.zeros((r.shape[0], *self.in_shape), dtype=r.dtype, device=r.device)
        return self._damped_pinv(r, gamma)

    def initial_estimate(self, y: torch.Tensor) -> torch.Tensor:
        """A prior-free first reconstruction from ``y``: ``A^+ y`` (CT: the filtered back-projection)."""
        return self.pinv(y)

    def spectral_view(self, like: torch.Tensor):
        """``(s, Vt, V)``: singular values and maps to / from the matching right singular vectors.

        ``s`` has zeros where :meth:`pinv` drops a direction; ``Vt`` maps an image batch to its
        coordinates, ``V`` maps coordinates back. SVD operators give the full basis, CT the range
        part only; None when the operator exposes no SVD (the default).
        """
        return None

    def window_rule(self) -> WindowRule:
        """How this operator restricts to image windows (:class:`WindowRule`); default: it cannot."""
        return WindowRule(refusal=f"{self.name} mixes the whole image")

    def restrict_window(self, region: Region) -> tuple[LinearOperator, Region]:
        """``(A_w, out_region)``: the rows of ``A`` that depend only on the pixels of ``region``.

        ``region = (top, left, height, width)`` on the input grid; ``A_w`` acts on the window's
        pixels and ``out_region`` is the block of the output grid its rows form (the rows of ``A``
        there are zero outside the window). ValueError when the operator cannot be windowed.
        """
        raise DiffinvError(f"cannot restrict {self.name} to a window: {self.window_rule().refusal}")

    # ----------------------------------------------------------------- to implement
    def _A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _At(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self.cg_normal(y)

    # ----------------------------------------------------------------- helpers
    def cg_normal(self, y: torch.Tensor, iters: int | None = None, tol: float | None = None) -> torch.Tensor:
        """Minimum-norm least squares by CG on ``A^T A x = A^T y`` from ``x = 0`` (per sample)."""
        iters = self.cg_iters if iters is None else iters
        tol = self.cg_tol if tol is None else tol
        return cg(lambda p: self._At(self._A(p)), self._At(y), iters, tol)

    def _damped_pinv(self, r: torch.Tensor, gamma: float) -> torch.Tensor:
        """``A^T u`` with ``(A A^T + gamma I) u = r`` by CG (500 iterations at most, tolerance 1e-12)."""
        u = cg(lambda v: self._A(self._At(v)) + gamma * v, r, 500, 1e-12)
        return self._At(u)

    def _const(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """A float64 buffer/attribute ``name`` cast to ``like``'s dtype and device (cached)."""
        src = getattr(self, name)
        dtype = like.dtype
        if src.is_complex() and not like.is_complex():
            dtype = torch.complex128 if like.dtype == torch.float64 else torch.complex64
        key = (name, dtype, like.device, src.data_ptr(), src._version)
        hit = self._const_cache.get(key)
        if hit is None:
            hit = src.to(device=like.device, dtype=dtype)
            self._const_cache = {k: v for k, v in self._const_cache.items() if k[0] != name}
            self._const_cache[key] = hit
        return hit

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}"


class SVDOperator(LinearOperator):
    """A linear operator with a fast exact SVD ``A = U diag(s) V^T``.

    ``V``/``Vt`` map between image space ``(B, *in_shape)`` and spectral space ``(B, n)``;
    ``U``/``Ut`` map between measurement space ``(B, *out_shape)`` and ``(B, m)``. Both are
    orthonormal. ``U`` defaults to the identity (the measurement's own coordinates are its
    spectral ones: denoise, colorize, sr<k>); operators with another ``U`` override both. ``singulars()`` returns the ``k`` leading singular values (float64; may contain
    zeros). The defaults of :meth:`_A`, :meth:`_At` and :meth:`_pinv` are derived from the SVD;
    subclasses usually override them with direct (faster) formulas.

    ``pinv_threshold``: singular values ``<= pinv_threshold * max(s)`` are treated as zero by
    the pseudo-inverse (relevant for deblurring, where ``s`` can be arbitrarily small).
    """

    pinv_threshold: float = 0.0

    @property
    def has_svd(self) -> bool:
        return True

    @property
    def n(self) -> int:
        return math.prod(self.in_shape)

    @property
    def m(self) -> int:
        return math.prod(self.out_shape)

    def singulars(self) -> torch.Tensor:
        raise NotImplementedError

    def V(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def U(self, z: torch.Tensor) -> torch.Tensor:
        check_tensor(z, (self.m,), "z", f"for {self.name}.U")
        return z.reshape(z.shape[0], *self.out_shape).clone()

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        check_tensor(y, self.out_shape, "y", f"for {self.name}.Ut")
        return y.reshape(y.shape[0], -1).clone()

    def singulars_like(self, like: torch.Tensor) -> torch.Tensor:
        """``singulars()`` cast to ``like``'s dtype/device."""
        return self.singulars().to(device=like.device, dtype=like.dtype)

    def singulars_full(self, like: torch.Tensor) -> torch.Tensor:
        """``|s|`` padded to length ``n`` (zeros in the null space and where ``s <= pinv_threshold * max(s)``)."""
        s = self.singulars_like(like).abs()
        full = torch.zeros(self.n, dtype=like.dtype, device=like.device)
        if s.numel():
            keep = s > self.pinv_threshold * s.max()
            full[: s.numel()] = torch.where(keep, s, torch.zeros_like(s))
        return full

    def spectral_view(self, like: torch.Tensor):
        return self.singulars_full(like), self.Vt, self.V

    @staticmethod
    def _scaled(c: torch.Tensor, d: torch.Tensor, size: int, back) -> torch.Tensor:
        """``back(pad(c[:, :k] * d))``: the spectral coordinates ``c`` scaled by the k values ``d``,
        zero-padded to ``size`` and mapped back (by ``U`` or ``V``)."""
        k = d.numel()
        out = torch.zeros((c.shape[0], size), dtype=c.dtype, device=c.device)
        out[:, :k] = c[:, :k] * d
        return back(out)

    def _damped_pinv(self, r: torch.Tensor, gamma: float) -> torch.Tensor:
        """``V diag(s / (s^2 + gamma)) U^T r`` exactly."""
        s = self.singulars_like(r)
        return self._scaled(self.Ut(r), s / (s * s + gamma), self.n, self.V)

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        return self._scaled(self.Vt(x), self.singulars_like(x), self.m, self.U)

    def _At(self, y: torch.Tensor) -> torch.Tensor:
        return self._scaled(self.Ut(y), self.singulars_like(y), self.n, self.V)

    def _pinv(self, y: torch.Tensor) -> torch.Tensor:
        s = self.singulars_like(y)
        keep = s.abs() > self.pinv_threshold * s.abs().max()
        s_inv = torch.where(keep, 1.0 / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
        return self._scaled(self.Ut(y), s_inv, self.n, self.V)


def dense_matrix(op: LinearOperator, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The (m, n) matrix of ``op`` (columns ``A e_i``), for small problems, tests and oracles."""
    n = math.prod(op.in_shape)
    eye = torch.eye(n, dtype=dtype, device=device).reshape(n, *op.in_shape)
    cols = [op.A(eye[i : i + 256]).reshape(-1, math.prod(op.out_shape)) for i in range(0, n, 256)]
    return torch.cat(cols).T.contiguous()
