"""Shared machinery of the CT operators: a projection matrix stored sparse, its exact adjoint and pseudo-inverse.

:class:`SparseCT` is the base of :class:`~diffinv.operators.ct.ParallelBeamCT` and
:class:`~diffinv.operators.ct_fan.FanBeamCT`. A subclass builds its projection matrix ``A``
(``m x n``, ``m = views * bins``, ``n = size^2``, float64 CSR) and its transpose, and hands them to
:meth:`SparseCT._setup`; forward and back-projection are then one sparse product each, so the
back-projection is the exact adjoint for every geometry.

Memory and caching
------------------
The float64 master (``A`` and ``A^T``, 12 bytes per non-zero each with int32 indices) is kept as
dense CSR components; per dtype/device sparse tensors are made on first use (float32: 8 bytes
per non-zero each). Matrices are shared in-process between operators of the same geometry
(:func:`cached_matrices`: the most recently used up to ``_MATRIX_MEMORY_BYTES``), so the
``from_spec`` that every pipeline call repeats does not rebuild a 512 px projector.

Pseudo-inverse
--------------
``pinv_method="auto"`` picks the closed form ``"gram"`` (:mod:`diffinv.operators.ct_gram`: range
SVD from the eigendecomposition of the smaller Gram matrix, dense, ``side^2`` float64) while that
side is ``<= gram_limit`` (8192, a 512 MB Gram matrix) and its factors ``U`` and ``V`` (``(m + n) x
side`` float64, kept for every later call) fit in ``gram_factor_bytes`` (2 GiB: 64 px at any view
count, 128 px up to 45 views, 256 px up to ~8 views), else ``"cg"``: matrix-free conjugate
gradients on the normal equations (:func:`diffinv.operators.cg.cg`). The choice is the attribute
``pinv_method`` and part of the ``repr``.
"""

from __future__ import annotations

import collections
import math
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from ..errors import DiffinvError
from .base import LinearOperator, WindowRule
from .cg import cg
from .ct_gram import _range_svd

_PINV_METHODS = ("auto", "gram", "cg")

#: Projection matrices kept in memory per process (least recently used dropped beyond this many
#: bytes of float64 masters; the newest is always kept).
_MATRIX_MEMORY_BYTES = 1 << 30
_MATRIX_MEMORY: collections.OrderedDict = collections.OrderedDict()
_MATRIX_LOCK = threading.Lock()


def _as_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise DiffinvError(f"CT {name} must be an integer, got {v!r}")
    return int(v)


def size_and_views(size, views) -> tuple[int, int]:
    """``(size, views)`` as ints, checked (image side >= 1, at least one view)."""
    size_i, views_i = _as_int(size, "size"), _as_int(views, "views")
    if size_i < 1:
        raise DiffinvError(f"CT image size must be >= 1, got {size}")
    if views_i < 1:
        raise DiffinvError(f"CT needs at least 1 view, got views={views}")
    return size_i, views_i


def range_pinv(r: torch.Tensor, factors, in_shape, gamma: float = 0.0) -> torch.Tensor:
    """``V diag(s / (s^2 + gamma)) U^T r`` from range factors ``(U, s, V)`` of ``A`` (``A^+ r`` for
    ``gamma = 0``, else the damped ``A^T (A A^T + gamma I)^{-1} r``), images of shape ``in_shape``."""
    U, s, V = factors
    c = r.reshape(r.shape[0], -1) @ U
    c = c / s if gamma == 0 else c * (s / (s * s + gamma))
    return (c @ V.T).reshape(r.shape[0], *in_shape)


def range_spectral_view(s: torch.Tensor, Vr: torch.Tensor, in_shape):
    """``(s, Vt, V)`` (see ``LinearOperator.spectral_view``) from the range part ``Vr`` of an SVD."""
    shape = tuple(in_shape)
    return s, (lambda x: x.reshape(x.shape[0], -1) @ Vr), (lambda c: (c @ Vr.T).reshape(c.shape[0], *shape))


def _csr_parts(M: scipy.sparse.csr_matrix) -> tuple:
    """``(crow_indices, col_indices, values, shape)`` of a CSR matrix as dense CPU tensors."""
    return (torch.from_numpy(M.indptr), torch.from_numpy(M.indices), torch.from_numpy(M.data), M.shape)


def _csr_tensor(parts: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    crow, col, val, shape = parts
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow.to(device),
            col.to(device),
            val.to(device=device, dtype=dtype),
            size=shape,
            check_invariants=False,
        )


def _parts_bytes(parts: tuple) -> int:
    return sum(int(t.numel() * t.element_size()) for t in parts[:3])


def cached_matrices(key: tuple, build: Callable[[], tuple]) -> tuple:
    """``(A_parts, AT_parts)`` for a geometry ``key``: from the in-process cache, else ``build()``.

    ``build`` returns ``(A, A^T)`` as scipy CSR matrices (float64).
    """
    with _MATRIX_LOCK:
        hit = _MATRIX_MEMORY.get(key)
        if hit is not None:
            _MATRIX_MEMORY.move_to_end(key)
            return hit
    A, AT = build()
    out = (_csr_parts(A), _csr_parts(AT))
    with _MATRIX_LOCK:
        _MATRIX_MEMORY[key] = out
        total = sum(_parts_bytes(a) + _parts_bytes(b) for a, b in _MATRIX_MEMORY.values())
        while len(_MATRIX_MEMORY) > 1 and total > _MATRIX_MEMORY_BYTES:
            _, (a, b) = _MATRIX_MEMORY.popitem(last=False)
            total -= _parts_bytes(a) + _parts_bytes(b)
    return out


class SparseCT(LinearOperator):
    """A CT projector ``(1, size, size) -> (1, views, bins)`` given by a sparse matrix (see the module docstring).

    Subclasses call :meth:`_setup` from their constructor and provide ``fbp`` /
    :meth:`initial_estimate`.
    """

    #: Default CG cap and relative tolerance of the ``"cg"`` pseudo-inverse (see ParallelBeamCT).
    cg_iters: int = 2000
    cg_tol: float = 1e-10
    #: Largest Gram side for which ``pinv_method="auto"`` picks the closed form.
    gram_limit: int = 8192
    #: Largest size of the closed form's float64 factors U and V, ``(m + n) * side * 8`` bytes.
    gram_factor_bytes: int = 2 << 30
    #: Relative eigenvalue threshold of the closed-form pseudo-inverse (see :mod:`.ct_gram`).
    gram_rcond: float = 1e-12

    def _setup(
        self,
        parts: tuple,
        *,
        cg_iters: int | None,
        cg_tol: float | None,
        pinv_method: str,
        gram_rcond: float | None,
        cache_dir: str | os.PathLike | None,
    ) -> None:
        if cg_iters is not None:
            self.cg_iters = _as_int(cg_iters, "cg_iters")
        if cg_tol is not None:
            self.cg_tol = float(cg_tol)
        if pinv_method not in _PINV_METHODS:
            raise DiffinvError(
                f"CT pinv_method must be one of {', '.join(_PINV_METHODS)}, got {pinv_method!r}"
            )
        if gram_rcond is not None:
            rc = float(gram_rcond)
            if not (math.isfinite(rc) and 0.0 <= rc < 1.0):
                raise DiffinvError(f"CT gram_rcond must be in [0, 1), got {gram_rcond!r}")
            self.gram_rcond = rc
        if cache_dir is None:
            cache_dir = os.environ.get("DIFFINV_CACHE_DIR") or None
        self.cache_dir: Path | None = None if cache_dir is None else Path(cache_dir)
        # float64 master of A and A^T as dense CSR components (sparse tensors cannot be deep-copied
        # or pickled); sparse tensors per dtype/device are made on use and cached.
        self._csr64 = parts
        crow, col = parts[0][0], parts[0][1]
        self.nnz = int(col.numel())
        self._mat_cache: dict = {}
        self._filter_cache: dict = {}
        #: Side of the Gram matrix the closed form would factor (non-zero rows / columns of A).
        nz_rows = int(torch.count_nonzero(crow[1:] - crow[:-1]))
        nz_cols = int(torch.count_nonzero(parts[1][0][1:] - parts[1][0][:-1]))
        self.gram_size = min(nz_rows, nz_cols)
        if pinv_method == "auto":
            factors = (crow.numel() - 1 + parts[1][0].numel() - 1) * self.gram_size * 8
            fits = self.gram_size <= self.gram_limit and factors <= self.gram_factor_bytes
            pinv_method = "gram" if fits else "cg"
        #: "gram" (closed form) or "cg" (conjugate gradients), see the module docstring.
        self.pinv_method: str = pinv_method
        self._svd64: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._svd_cache: dict = {}
        self._ata_ones_cache: dict = {}

    # ----------------------------------------------------------------- matrices
    def _mats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (like.dtype, like.device)
        hit = self._mat_cache.get(key)
        if hit is None:
            hit = tuple(_csr_tensor(parts, like.dtype, like.device) for parts in self._csr64)
            self._mat_cache[key] = hit
        return hit

    def __getstate__(self):
        # Derived data is dropped (recomputed on use; the range SVD is also shared in-process).
        state = self.__dict__.copy()
        state["_mat_cache"] = {}
        state["_svd64"] = None
        state["_svd_cache"] = {}
        state["_ata_ones_cache"] = {}
        return state

    def _scipy_matrix(self) -> scipy.sparse.csr_matrix:
        crow, col, val, shape = self._csr64[0]
        return scipy.sparse.csr_matrix((val.numpy(), col.numpy(), crow.numpy()), shape=shape)

    def _range_svd64(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._svd64 is None:
            self._svd64 = _range_svd(self._scipy_matrix(), float(self.gram_rcond), self.cache_dir)
        return self._svd64

    def _factors(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (like.dtype, like.device)
        hit = self._svd_cache.get(key)
        if hit is None:
            hit = tuple(
                torch.from_numpy(a).to(device=like.device, dtype=like.dtype) for a in self._range_svd64()
            )
            self._svd_cache[key] = hit
        return hit

    def partial_svd(
        self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(U, s, V)`` with ``A = U diag(s) V^T`` up to the dropped singular values (range part only).

        ``U`` is ``(views*bins, r)`` and ``V`` is ``(size^2, r)``, both with orthonormal columns
        (over the flattened sinogram / image), ``s`` descending with ``s^2 > gram_rcond * max(s^2)``.
        Computed from the Gram eigendecomposition (:mod:`.ct_gram`) whatever ``pinv_method`` is. A
        basis of the null space is not available (it would need the full ``n x n`` decomposition),
        which is why the operator is not an ``SVDOperator``. The returned tensors are cached: do
        not modify them in place.
        """
        return self._factors(torch.empty(0, dtype=dtype, device=device))

    def weighted_range_svd(self, sqrt_w: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(U, s, V)`` float64 of ``diag(sqrt_w) A`` on its range, as :meth:`partial_svd` does for ``A``.

        For weighted least squares (:class:`~diffinv.operators.noise.WeightedOperator`); None when
        this operator uses CG (``pinv_method="cg"``): the weighted problem then uses CG too.
        """
        if self.pinv_method != "gram":
            return None
        w = sqrt_w.detach().to(device="cpu", dtype=torch.float64).reshape(-1).numpy()
        weighted = (scipy.sparse.diags(w) @ self._scipy_matrix()).tocsr()
        return _range_svd(weighted, float(self.gram_rcond), None)

    def matrix(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The projection matrix (sparse CSR, ``views*bins x size^2``) in the given dtype."""
        return self._mats(torch.empty(0, dtype=dtype))[0]

    # ----------------------------------------------------------------- operator
    def _A(self, x: torch.Tensor) -> torch.Tensor:
        A, _ = self._mats(x)
        B = x.shape[0]
        y = A @ x.reshape(B, -1).T.contiguous()
        return y.T.reshape(B, *self.out_shape)

    def _At(self, y: torch.Tensor) -> torch.Tensor:
        _, AT = self._mats(y)
        B = y.shape[0]
        x = AT @ y.reshape(B, -1).T.contiguous()
        return x.T.reshape(B, *self.in_shape)

    def _pinv(self, y: torch.Tensor) -> torch.Tensor:
        if self.pinv_method == "gram":
            return range_pinv(y, self._factors(y), self.in_shape)  # A^+ y = V diag(1/s) U^T y
        # CG on the normal equations from 0 (minimum-norm least squares), at most ``cg_iters``
        # iterations or until ||A^T (y - A x)|| <= cg_tol * ||A^T y||.
        return self.cg_normal(y)

    def _damped_pinv(self, r: torch.Tensor, gamma: float) -> torch.Tensor:
        """``A^T (A A^T + gamma I)^{-1} r`` for ``0 < gamma < inf`` (see :meth:`damped_pinv`).

        Closed form ``V diag(s / (s^2 + gamma)) U^T r`` with ``pinv_method="gram"``; otherwise CG on
        ``(A^T A + gamma I) x = A^T r`` (the same ``x``), capped at ``cg_iters`` iterations.
        """
        if self.pinv_method == "gram":
            return range_pinv(r, self._factors(r), self.in_shape, gamma)
        return cg(lambda p: self._At(self._A(p)) + gamma * p, self._At(r), self.cg_iters, self.cg_tol)

    def _filter_detector(
        self, y: torch.Tensor, key: str, response: Callable[[int], np.ndarray]
    ) -> torch.Tensor:
        """``y`` filtered along the detector axis by the frequency response ``response(pad)`` (rfft
        length ``pad``, zero padding to a power of two >= 2 * bins; cached per ``(pad, key)``)."""
        pad = max(64, 1 << math.ceil(math.log2(2 * self.bins)))
        H = self._filter_cache.get((pad, key))
        if H is None:
            H = self._filter_cache[(pad, key)] = torch.from_numpy(response(pad))
        Yf = torch.fft.rfft(y, n=pad, dim=-1)
        return torch.fft.irfft(Yf * H.to(device=y.device, dtype=y.dtype), n=pad, dim=-1)[..., : self.bins]

    def initial_estimate(self, y: torch.Tensor) -> torch.Tensor:
        """The filtered back-projection ``fbp`` (ramp filter)."""
        return self.fbp(y)

    def spectral_view(self, like: torch.Tensor):
        """``(s, Vt, V)`` of the range part of the SVD (:meth:`partial_svd`): all DDNM+ needs."""
        _, s, Vr = self.partial_svd(dtype=like.dtype, device=like.device)
        return range_spectral_view(s, Vr, self.in_shape)

    def window_rule(self) -> WindowRule:
        return WindowRule(
            refusal="CT projections cross the whole image", fixed_size="CT cannot be split into windows"
        )

    def AtA_ones(self, like: torch.Tensor) -> torch.Tensor:
        """``A^T A 1`` per pixel, ``(1, 1, size, size)`` (cached per dtype/device; do not modify in place).

        The normaliser of SART/SIRT-type updates (MCG-VE's relaxed projection).
        """
        cache = self._ata_ones_cache
        key, master = (like.dtype, like.device), (torch.float64, torch.device("cpu"))
        if key not in cache:
            if master not in cache:  # computed once in float64, then cast
                cache[master] = self._At(self._A(torch.ones((1, *self.in_shape), dtype=torch.float64)))
            cache[key] = cache[master].to(device=like.device, dtype=like.dtype)
        return cache[key]
