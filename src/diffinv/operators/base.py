"""Base classes for linear degradation operators.

A degradation is a linear map ``A`` from images ``x`` of per-sample shape ``in_shape`` (C, H, W)
to measurements ``y`` of per-sample shape ``out_shape``. Every operator provides

* ``A(x)``      the forward map,
* ``At(y)``     its exact adjoint, ``<A x, y> = <x, At y>``,
* ``pinv(y)``   the Moore-Penrose pseudo-inverse ``A^dagger y``,
* ``measure(x, sigma_y, generator)`` ``= A x + sigma_y * n`` with ``n ~ N(0, I)``.

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

import torch
from torch import nn

Shape = tuple[int, ...]


def check_tensor(t: torch.Tensor, shape: Shape, name: str, what: str = "") -> None:
    """Raise ``ValueError`` unless ``t`` is a floating tensor of shape ``(B, *shape)``."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not (t.is_floating_point() or t.is_complex()):
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.dim() != len(shape) + 1 or tuple(t.shape[1:]) != tuple(shape):
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}, expected (B, {', '.join(map(str, shape))})"
            + (f" {what}" if what else "")
        )


def check_same(a: torch.Tensor, b: torch.Tensor, names: str = "inputs") -> None:
    """Raise ``ValueError`` if two tensors differ in dtype or device."""
    if a.dtype != b.dtype:
        raise ValueError(f"{names} have different dtypes ({a.dtype} vs {b.dtype})")
    if a.device != b.device:
        raise ValueError(f"{names} are on different devices ({a.device} vs {b.device})")


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
        sigma_y = float(sigma_y)
        if not math.isfinite(sigma_y) or sigma_y < 0:
            raise ValueError(f"sigma_y must be a finite number >= 0, got {sigma_y}")
        y = self.A(x)
        if sigma_y > 0:
            # Draw on the generator's device so a seed gives the same noise wherever y lives.
            device = generator.device if generator is not None else y.device
            noise = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=device)
            y = y + sigma_y * noise.to(y.device)
        return y

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
        b = self._At(y)
        dims = tuple(range(1, b.dim()))
        x = torch.zeros_like(b)
        r = b.clone()
        p = r.clone()
        rs = (r * r).sum(dims, keepdim=True)
        rs0 = rs.clamp_min(torch.finfo(b.dtype).tiny)
        for _ in range(iters):
            Ap = self._At(self._A(p))
            pAp = (p * Ap).sum(dims, keepdim=True)
            alpha = torch.where(pAp > 0, rs / pAp.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(rs))
            x = x + alpha * p
            r = r - alpha * Ap
            rs_new = (r * r).sum(dims, keepdim=True)
            if bool((rs_new <= tol**2 * rs0).all()):
                break
            p = r + (rs_new / rs.clamp_min(torch.finfo(b.dtype).tiny)) * p
            rs = rs_new
        return x

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
    orthonormal. ``singulars()`` returns the ``k`` leading singular values (float64; may contain
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
        raise NotImplementedError

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def singulars_like(self, like: torch.Tensor) -> torch.Tensor:
        """``singulars()`` cast to ``like``'s dtype/device."""
        return self.singulars().to(device=like.device, dtype=like.dtype)

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        s = self.singulars_like(x)
        k = s.numel()
        z = self.Vt(x)[:, :k] * s
        out = torch.zeros((x.shape[0], self.m), dtype=x.dtype, device=x.device)
        out[:, :k] = z
        return self.U(out)

    def _At(self, y: torch.Tensor) -> torch.Tensor:
        s = self.singulars_like(y)
        k = s.numel()
        z = self.Ut(y)[:, :k] * s
        out = torch.zeros((y.shape[0], self.n), dtype=y.dtype, device=y.device)
        out[:, :k] = z
        return self.V(out)

    def _pinv(self, y: torch.Tensor) -> torch.Tensor:
        s = self.singulars_like(y)
        k = s.numel()
        keep = s.abs() > self.pinv_threshold * s.abs().max()
        s_inv = torch.where(keep, 1.0 / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
        z = self.Ut(y)[:, :k] * s_inv
        out = torch.zeros((y.shape[0], self.n), dtype=y.dtype, device=y.device)
        out[:, :k] = z
        return self.V(out)


def dense_matrix(op: LinearOperator, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The (m, n) matrix of ``op`` (columns ``A e_i``), for small problems, tests and oracles."""
    n = math.prod(op.in_shape)
    eye = torch.eye(n, dtype=dtype, device=device).reshape(n, *op.in_shape)
    cols = [op.A(eye[i : i + 256]).reshape(-1, math.prod(op.out_shape)) for i in range(0, n, 256)]
    return torch.cat(cols).T.contiguous()
