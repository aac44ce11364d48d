"""Mask-shift window operators: a window's rows plus the pixels earlier windows committed.

See :mod:`diffinv.tiling` ("Mask-shift"): :class:`KnownRegionOperator` (exact, for block-local
operators; :class:`KnownRegionSVDOperator` keeps the window's SVD) and
:class:`SoftKnownRegionOperator` (known pixels as extra measurements, damped least squares, for
operators whose rows overlap).
"""

from __future__ import annotations

import math

import torch

from ..errors import DiffinvError
from ..operators.base import LinearOperator, SVDOperator, check_tensor
from ..operators.cg import cg

F64 = torch.float64


class _FreeRestricted(LinearOperator):
    """``B = A_w diag(f)``: the window operator seeing only the free (new) pixels."""

    def __init__(self, window_op: LinearOperator, free: torch.Tensor):
        super().__init__(window_op.in_shape, window_op.out_shape)
        self.window_op = window_op
        self.register_buffer("free", free, persistent=False)
        self.cg_iters, self.cg_tol = window_op.cg_iters, window_op.cg_tol

    def _A(self, x):
        return self.window_op._A(x * self._const("free", x))

    def _At(self, y):
        return self.window_op._At(y) * self._const("free", y)


class _KnownBase(LinearOperator):
    """A window operator ``A_w`` stacked over the known pixels: flat measurements ``[y_w ; c o k]``."""

    def __init__(self, window_op: LinearOperator, known: torch.Tensor, known_weight: float):
        C, H, W = window_op.in_shape
        known = torch.as_tensor(known).detach().to("cpu")
        if tuple(known.shape) != (H, W):
            raise DiffinvError(f"known mask has shape {tuple(known.shape)}, expected ({H}, {W})")
        c = float(known_weight)
        if not (math.isfinite(c) and c > 0):
            raise DiffinvError(f"known_weight must be a finite number > 0, got {known_weight!r}")
        self.m_w = math.prod(window_op.out_shape)
        super().__init__(window_op.in_shape, (self.m_w + C * H * W,))
        self.window_op = window_op
        self.known_weight = c
        self.register_buffer("known_mask", known.to(F64)[None].expand(C, H, W).contiguous(), persistent=False)

    def split(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y_w, known part)`` of a flat measurement, shaped like ``A_w``'s output and the image."""
        B = y.shape[0]
        return (
            y[:, : self.m_w].reshape(B, *self.window_op.out_shape),
            y[:, self.m_w :].reshape(B, *self.in_shape),
        )

    def _join(self, y1: torch.Tensor, y2: torch.Tensor) -> torch.Tensor:
        return torch.cat([y1.reshape(y1.shape[0], -1), y2.reshape(y2.shape[0], -1)], dim=1)

    def _check_measurement(self, y_w: torch.Tensor, x_known: torch.Tensor) -> torch.Tensor:
        """Validate the inputs of ``measurement``; returns the known image on known pixels, ``o k``."""
        check_tensor(y_w, self.window_op.out_shape, "y_w", f"for {self.window_op.name}")
        check_tensor(x_known, self.in_shape, "x_known", f"for {self.name}")
        return self._const("known_mask", x_known) * x_known


class KnownRegionOperator(_KnownBase):
    """Mask-shift window operator ``A' x = [A_w (f x) ; c (o x)]`` (see the module docstring).

    ``known`` is an ``(H, W)`` bool mask of the window's already-restored pixels (all channels);
    measurements are flat, ``(m_w + C*H*W,)``: the window's data, then ``c`` times the known image
    (zero on new pixels). Build them with :meth:`measurement`. ``block_local=True`` asserts that
    every row of ``A_w`` and every block of ``A_w^+`` lies wholly on new or wholly on known pixels
    (block-aligned windows of pixel/block-local operators), which gives ``B^+ = f A_w^+`` in
    closed form; otherwise ``B^+`` is computed by CG (exact, but :func:`plan_tiles` uses
    :class:`SoftKnownRegionOperator` for non-local operators, see the module docstring).
    """

    def __init__(
        self,
        window_op: LinearOperator,
        known: torch.Tensor,
        known_weight: float = 1.0,
        block_local: bool = False,
    ):
        super().__init__(window_op, known, known_weight)
        self.block_local = bool(block_local)
        o = self.known_mask
        self.register_buffer("free_mask", 1.0 - o, persistent=False)
        self.free_part = _FreeRestricted(window_op, 1.0 - o)
        self.cg_iters, self.cg_tol = window_op.cg_iters, window_op.cg_tol
        self.spec = f"{window_op.name} + known overlap"

    # -------------------------------------------------------------- helpers
    def _free_pinv(self, y1: torch.Tensor) -> torch.Tensor:
        """``B^+ y1`` with ``B = A_w diag(f)``."""
        if self.block_local:
            return self._const("free_mask", y1) * self.window_op._pinv(y1)
        return self.free_part.cg_normal(y1)

    def measurement(self, y_w: torch.Tensor, x_known: torch.Tensor) -> torch.Tensor:
        """``y' = [P_B (y_w - A_w (o k)) ; c (o k)]`` from the window's data and the known image."""
        ok = self._check_measurement(y_w, x_known)
        r = y_w - self.window_op._A(ok)
        r = self.free_part._A(self._free_pinv(r))  # projection onto range(B)
        return self._join(r, self.known_weight * ok)

    # -------------------------------------------------------------- operator
    def _A(self, x):
        o, f = self._const("known_mask", x), self._const("free_mask", x)
        return self._join(self.window_op._A(f * x), self.known_weight * (o * x))

    def _At(self, y):
        y1, y2 = self.split(y)
        o, f = self._const("known_mask", y), self._const("free_mask", y)
        return f * self.window_op._At(y1) + self.known_weight * (o * y2)

    def _pinv(self, y):
        y1, y2 = self.split(y)
        return self._free_pinv(y1) + self._const("known_mask", y) * y2 / self.known_weight


class SoftKnownRegionOperator(_KnownBase):
    """``A' x = [A_w x ; c (o x)]``: the window's rows and the known pixels as extra measurements.

    Used for windows of non-local operators (bicubic, deblur), where fixing the known pixels
    exactly turns the window sweep into an unstable marching deconvolution (module docstring).
    ``pinv`` is *not* the Moore-Penrose inverse but the damped least-squares solution
    ``(A'^T A' + damping I)^{-1} A'^T y`` (CG; ``damping`` is absolute, the window operators here
    have norm about 1), which balances the data against the known values.
    """

    def __init__(
        self, window_op: LinearOperator, known: torch.Tensor, known_weight: float = 1.0, damping: float = 1e-3
    ):
        super().__init__(window_op, known, known_weight)
        # An approximate method: 1e-6 relative CG residual is plenty and 2-3x cheaper than 1e-10.
        self.cg_iters, self.cg_tol = max(window_op.cg_iters, 200), max(window_op.cg_tol, 1e-6)
        self.damping = float(damping)
        if not (math.isfinite(self.damping) and self.damping > 0):
            raise DiffinvError(f"damping must be a finite number > 0, got {damping!r}")
        self.spec = f"{window_op.name} + known overlap (least squares)"

    def measurement(self, y_w: torch.Tensor, x_known: torch.Tensor) -> torch.Tensor:
        """``y' = [y_w ; c (o k)]`` from the window's data and the known image."""
        return self._join(y_w, self.known_weight * self._check_measurement(y_w, x_known))

    def _A(self, x):
        return self._join(self.window_op._A(x), self.known_weight * self._const("known_mask", x) * x)

    def _pinv(self, y):
        """``(A'^T A' + damping I)^{-1} A'^T y`` by CG from 0."""
        tol = max(self.cg_tol, 10 * torch.finfo(y.dtype).eps)  # float32 cannot reach 1e-10: stop at round-off
        return cg(lambda p: self._At(self._A(p)) + self.damping * p, self._At(y), self.cg_iters, tol)

    def _At(self, y):
        y1, y2 = self.split(y)
        return self.window_op._At(y1) + self.known_weight * self._const("known_mask", y) * y2


class KnownRegionSVDOperator(KnownRegionOperator, SVDOperator):
    """:class:`KnownRegionOperator` with the exact SVD inherited from a block-local SVD window.

    Every right singular vector ``v_j`` of ``A_w`` lies on new pixels (``F``) or on known ones
    (``O``), so ``V' = V``; ``s'_j = s_j`` on new pixels (0 beyond ``A_w``'s rank), ``c`` on known
    ones. Left singular vectors (coordinates ``0..n-1`` pair with ``V``): ``(u_j, 0)`` for new
    ``j < k``, ``(0, v_j)`` otherwise; coordinates ``n + j`` complete the basis with the unused
    ``(u_j, 0)`` (known ``j < k`` and all ``j >= k``) and ``(0, v_j)`` (new ``j < k``).
    """

    def __init__(self, window_op: SVDOperator, known: torch.Tensor, known_weight: float = 1.0):
        if not window_op.has_svd:
            raise DiffinvError(f"{window_op.name} has no SVD")
        super().__init__(window_op, known, known_weight, block_local=True)
        n = math.prod(self.in_shape)
        # V^T diag(o) V is diagonal with 0/1 entries iff each v_j lies wholly on known or new pixels.
        ones = torch.ones(1, n, dtype=F64)
        ind = window_op.Vt(self.known_mask[None] * window_op.V(ones))[0]
        if not bool(((ind - ind.round()).abs() < 1e-8).all()):
            raise DiffinvError(f"{window_op.name}: the known region is not aligned with its singular vectors")
        known_coord = ind.round() > 0.5
        s_w = window_op.singulars().detach().to("cpu", F64)
        self.k_w = s_w.numel()
        s_full = torch.zeros(n, dtype=F64)
        s_full[: self.k_w] = s_w
        self.register_buffer(
            "s", torch.where(known_coord, torch.full_like(s_full, self.known_weight), s_full)
        )
        self.register_buffer("coord_known", known_coord, persistent=False)
        self.pinv_threshold = float(window_op.pinv_threshold)

    def singulars(self) -> torch.Tensor:
        return self.s

    def Vt(self, x):
        check_tensor(x, self.in_shape, "x", f"for {self.name}.Vt")
        return self.window_op.Vt(x)

    def V(self, z):
        check_tensor(z, (self.n,), "z", f"for {self.name}.V")
        return self.window_op.V(z)

    def Ut(self, y):
        check_tensor(y, self.out_shape, "y", f"for {self.name}.Ut")
        y1, y2 = self.split(y)
        u1, u2 = self.window_op.Ut(y1), self.window_op.Vt(y2)
        k, O = self.k_w, self.coord_known.to(y.device)
        u1p = torch.zeros_like(u2)
        u1p[:, :k] = u1[:, :k]
        in_rank = torch.arange(self.n, device=y.device) < k
        first = torch.where(O | ~in_rank, u2, u1p)
        tail = u1.clone()
        tail[:, :k] = torch.where(O[:k], u1[:, :k], u2[:, :k])
        return torch.cat([first, tail], dim=1)

    def U(self, z):
        check_tensor(z, (self.m,), "z", f"for {self.name}.U")
        n, k = self.n, self.k_w
        first, tail = z[:, :n], z[:, n:]
        new = ~self.coord_known[:k].to(z.device)
        a = tail.clone()
        a[:, :k] = torch.where(new, first[:, :k], tail[:, :k])
        b = first.clone()
        b[:, :k] = torch.where(new, tail[:, :k], first[:, :k])
        return self._join(self.window_op.U(a), self.window_op.V(b))
