"""Tests for ComposedOperator: chaining, adjoint, pseudo-inverse (chain vs CG), errors."""

import pytest
import torch

from diffinv.operators.base import LinearOperator, SVDOperator
from diffinv.operators.compose import ComposedOperator
from diffinv.operators.ct import ParallelBeamCT

DT = torch.float64


class Dense(LinearOperator):
    """``y = M vec(x)`` with an exact (dense) pseudo-inverse; a test helper."""

    def __init__(self, M: torch.Tensor, in_shape, out_shape):
        super().__init__(in_shape, out_shape)
        M = M.to(DT)
        self.register_buffer("M", M)
        self.register_buffer("Mp", torch.linalg.pinv(M))
        gram = M @ M.T
        c = gram.diagonal().mean()
        self.rows_orthonormal_scaled = bool(
            torch.allclose(gram, c * torch.eye(len(gram), dtype=DT), atol=1e-10)
        )

    def _A(self, x):
        return (x.reshape(x.shape[0], -1) @ self._const("M", x).T).reshape(x.shape[0], *self.out_shape)

    def _At(self, y):
        return (y.reshape(y.shape[0], -1) @ self._const("M", y)).reshape(y.shape[0], *self.in_shape)

    def _pinv(self, y):
        return (y.reshape(y.shape[0], -1) @ self._const("Mp", y).T).reshape(y.shape[0], *self.in_shape)


class SVDDense(Dense, SVDOperator):
    """Only used to check that a composite of SVD operators does not claim an SVD."""


class NoPinv(Dense):
    def _pinv(self, y):
        raise NotImplementedError


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def rand_matrix(m, n, seed=0):
    return torch.randn(m, n, dtype=DT, generator=_gen(seed))


def orth_rows(m, n, scale=1.0, seed=0):
    """An (m, n) matrix with orthogonal rows of equal norm ``scale`` (m <= n)."""
    q, _ = torch.linalg.qr(rand_matrix(n, n, seed))
    return scale * q[:m]


def dense(M, in_shape, out_shape, cls=Dense):
    return cls(M, in_shape, out_shape)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def check_moore_penrose(op, tol, seed=3):
    g = _gen(seed)
    x = torch.randn(2, *op.in_shape, dtype=DT, generator=g)
    y = torch.randn(2, *op.out_shape, dtype=DT, generator=g)
    Ax, Py = op.A(x), op.pinv(y)
    PAx, APy = op.pinv(Ax), op.A(Py)
    assert _rel(op.A(PAx), Ax) <= tol  # A A+ A = A
    assert _rel(op.pinv(APy), Py) <= tol  # A+ A A+ = A+
    assert abs((APy[0] * y[1]).sum() - (y[0] * APy[1]).sum()) <= tol * APy[0].norm() * y[1].norm()
    assert abs((PAx[0] * x[1]).sum() - (x[0] * PAx[1]).sum()) <= tol * PAx[0].norm() * x[1].norm()


def _matrix_of(op):
    """The dense matrix of a linear operator (columns = images of basis vectors)."""
    n = torch.Size(op.in_shape).numel()
    eye = torch.eye(n, dtype=DT).reshape(n, *op.in_shape)
    return op.A(eye).reshape(n, -1).T


# ----------------------------------------------------------------------------- structure
def test_order_shapes_adjoint():
    M1, M2, M3 = rand_matrix(12, 16, 1), rand_matrix(10, 12, 2), rand_matrix(5, 10, 3)
    ops = [dense(M1, (1, 4, 4), (3, 4)), dense(M2, (3, 4), (10,)), dense(M3, (10,), (5,))]
    op = ComposedOperator(ops)
    assert op.in_shape == (1, 4, 4) and op.out_shape == (5,)
    assert not op.has_svd
    x = torch.randn(3, 1, 4, 4, dtype=DT, generator=_gen(4))
    y = torch.randn(3, 5, dtype=DT, generator=_gen(5))
    # Applied left to right: ops[0] first.
    assert torch.allclose(op.A(x), x.reshape(3, -1) @ (M3 @ M2 @ M1).T)
    assert torch.allclose(op.At(y).reshape(3, -1), y @ (M3 @ M2 @ M1))
    Ax = op.A(x)
    assert abs((Ax * y).sum() - (x * op.At(y)).sum()) <= 1e-10 * Ax.norm() * y.norm()
    assert torch.allclose(op.AtA_ones(x)[0], op.At(op.A(torch.ones_like(x[:1])))[0])
    # float32 inputs follow through every factor.
    assert op.A(x.float()).dtype == torch.float32
    assert "pinv_method" in repr(op) and "->" in op.name


def test_shape_mismatch_and_bad_factors():
    a = dense(rand_matrix(6, 16), (1, 4, 4), (6,))
    b = dense(rand_matrix(3, 5), (5,), (3,))
    with pytest.raises(ValueError, match=r"out_shape \(6,\).*in_shape \(5,\)"):
        ComposedOperator([a, b])
    with pytest.raises(ValueError, match="at least one operator"):
        ComposedOperator([])
    with pytest.raises(ValueError, match="factor 1 is not a LinearOperator"):
        ComposedOperator([a, torch.nn.Identity()])

    class NoAdjoint(LinearOperator):
        def _A(self, x):
            return x

    with pytest.raises(ValueError, match=r"factor 0 \(NoAdjoint\) does not implement At"):
        ComposedOperator([NoAdjoint((6,), (6,))])


def test_svd_factors_do_not_make_an_svd_operator():
    a = dense(orth_rows(8, 16), (16,), (8,), cls=SVDDense)
    b = dense(orth_rows(4, 8, seed=1), (8,), (4,), cls=SVDDense)
    assert a.has_svd and b.has_svd
    op = ComposedOperator([a, b])
    assert not op.has_svd and not isinstance(op, SVDOperator)


# ----------------------------------------------------------------------------- pseudo-inverse
def test_chain_pinv_is_exact():
    # Every factor but the last-applied one has A A^T = c I; the last one is arbitrary and rank deficient.
    last = rand_matrix(9, 4, 3) @ rand_matrix(4, 6, 4)  # 9 x 6, rank 4
    ops = [
        dense(orth_rows(12, 16, 2.0, seed=1), (1, 4, 4), (12,)),
        dense(orth_rows(6, 12, 0.5, seed=2), (12,), (6,)),
        dense(last, (6,), (9,)),
    ]
    assert [o.rows_orthonormal_scaled for o in ops] == [True, True, False]
    op = ComposedOperator(ops)
    assert op.pinv_method == "chain"
    assert not op.rows_orthonormal_scaled
    M = _matrix_of(op)
    y = torch.randn(4, 9, dtype=DT, generator=_gen(7))
    assert torch.allclose(op.pinv(y).reshape(4, -1), y @ torch.linalg.pinv(M).T, atol=1e-10)
    check_moore_penrose(op, 1e-10)


def test_cg_fallback_when_chain_would_be_wrong():
    # First factor has non-orthogonal rows: the reversed chain is *not* the Moore-Penrose inverse.
    ops = [dense(rand_matrix(10, 16, 1), (16,), (10,)), dense(rand_matrix(6, 10, 2), (10,), (6,))]
    assert not ops[0].rows_orthonormal_scaled
    op = ComposedOperator(ops)
    assert op.pinv_method == "cg"
    y = torch.randn(3, 6, dtype=DT, generator=_gen(8))
    exact = y @ torch.linalg.pinv(_matrix_of(op)).T
    chain = ops[0].pinv(ops[1].pinv(y))
    assert _rel(chain, exact) > 1e-2  # the naive chain is wrong here ...
    assert _rel(op.pinv(y), exact) < 1e-8  # ... CG on the composite is right
    check_moore_penrose(op, 1e-8)


def test_rows_orthonormal_scaled_nests():
    a = dense(orth_rows(8, 16, 3.0), (16,), (8,))
    b = dense(orth_rows(4, 8, 0.5, seed=1), (8,), (4,))
    ab = ComposedOperator([a, b])
    assert ab.rows_orthonormal_scaled and ab.pinv_method == "chain"
    gram = _matrix_of(ab) @ _matrix_of(ab).T
    assert torch.allclose(gram, (9.0 * 0.25) * torch.eye(4, dtype=DT))
    c = dense(rand_matrix(3, 4), (4,), (3,))
    nested = ComposedOperator([ab, c])
    assert nested.pinv_method == "chain"
    check_moore_penrose(nested, 1e-10)
    # A non-orthonormal factor anywhere but last forces CG.
    assert ComposedOperator([c.__class__(rand_matrix(8, 16), (16,), (8,)), b]).pinv_method == "cg"


def test_factor_without_pinv():
    a = dense(orth_rows(8, 16), (16,), (8,))
    bad = dense(rand_matrix(4, 8), (8,), (4,), cls=NoPinv)
    op = ComposedOperator([a, bad])
    assert op.pinv_method == "chain"
    with pytest.raises(ValueError, match=r"factor 1 \(NoPinv\) has no usable pseudo-inverse"):
        op.pinv(torch.randn(1, 4, dtype=DT))


def test_chain_with_ct_last():
    # A scaled orthogonal map of the image followed by CT: chain pinv with CT's CG pinv last.
    n = 16 * 16
    first = dense(orth_rows(n, n, 2.0, seed=5), (1, 16, 16), (1, 16, 16))
    ct = ParallelBeamCT(16, 30)
    op = ComposedOperator([first, ct])
    assert op.pinv_method == "chain" and op.cg_iters == ct.cg_iters
    y = torch.randn(1, *op.out_shape, dtype=DT, generator=_gen(9))
    assert torch.allclose(op.pinv(y), first.pinv(ct.pinv(y)))
    x = torch.randn(1, *op.in_shape, dtype=DT, generator=_gen(10))
    assert _rel(op.A(op.pinv(op.A(x))), op.A(x)) < 1e-3
