"""project_feasible (POCS onto {A x = y} ∩ [lo, hi]^n) and nearest_feasible (the nearest point of that
set, accelerated dual ascent): diffinv.operators.feasible."""

from __future__ import annotations

import pytest
import torch

from diffinv.errors import DiffinvError
from diffinv.operators import Inpaint, MatrixOperator, from_spec, nearest_feasible, project_feasible

F64 = torch.float64


def feasible_pair(op, g):
    """Two different images of the box [0, 1] with the same measurement y = A x1 = A x2."""
    x1 = 0.2 + 0.6 * torch.rand((1, *op.in_shape), generator=g, dtype=F64)
    r = torch.randn((1, *op.in_shape), generator=g, dtype=F64)
    d = r - op.pinv(op.A(r))  # a null-space direction: A d = 0
    assert d.abs().max() > 1e-3, "the operator must have a null space for this test"
    x2 = x1 + 0.15 * d / d.abs().max()  # stays inside [0.05, 0.95]
    return x1, x2, op.A(x1)


@pytest.mark.parametrize(
    "make_op",
    [
        lambda g: MatrixOperator(torch.randn(6, 12, generator=g, dtype=F64), in_shape=(1, 3, 4)),
        lambda g: from_spec("ct8", (1, 16, 16)),
        lambda g: from_spec("sr2", (1, 8, 8)),
    ],
    ids=["dense-6x12", "ct8-16px", "sr2-8px"],
)
def test_every_iterate_comes_no_farther_from_any_feasible_image(make_op):
    """Fejér monotonicity: for every x_c in C, ||x_k - x_c|| is non-increasing in k and <= ||z - x_c||
    (z far outside the box: the first projection onto it already helps); and the iterates end in C."""
    g = torch.Generator().manual_seed(3)
    op = make_op(g)
    x1, x2, y = feasible_pair(op, g)
    z = 1.5 * torch.randn((1, *op.in_shape), generator=g, dtype=F64)
    previous = [(z - x1).norm().item(), (z - x2).norm().item()]
    for iters in (1, 2, 5, 20, 100, 400):
        x = project_feasible(op, z, y, iters=iters)
        now = [(x - x1).norm().item(), (x - x2).norm().item()]
        assert all(n <= p * (1 + 1e-9) for n, p in zip(now, previous)), (iters, now, previous)
        previous = now
    assert x.min() >= 0 and x.max() <= 1
    assert (op.A(x) - y).norm() / y.norm() < 0.05  # and it ends close to A x = y
    assert previous[0] < 0.5 * (z - x1).norm()  # not a no-op: much closer than the start


def test_converges_into_the_feasible_set_of_a_small_dense_problem():
    g = torch.Generator().manual_seed(0)
    op = MatrixOperator(torch.randn(5, 16, generator=g, dtype=F64), in_shape=(1, 4, 4))
    _, _, y = feasible_pair(op, g)
    x = project_feasible(op, torch.rand((1, 1, 4, 4), generator=g, dtype=F64), y, iters=5000)
    assert (op.A(x) - y).norm() < 1e-8 * y.norm()
    assert x.min() >= 0 and x.max() <= 1


def test_inpainting_has_its_closed_form_after_one_round():
    """For a pixel mask, C is 'known pixels = y, the rest in the box': one round of (1) reaches the
    nearest point of C, which is known = y, unknown = clamp(z)."""
    g = torch.Generator().manual_seed(1)
    mask = (torch.rand(1, 8, 8, generator=g) < 0.5).to(F64)
    op = Inpaint(mask, channels=3)
    x_true = torch.rand((2, 3, 8, 8), generator=g, dtype=F64)
    y = op.A(x_true)
    z = 2 * torch.randn((2, 3, 8, 8), generator=g, dtype=F64)
    expected = mask * x_true + (1 - mask) * z.clamp(0, 1)
    torch.testing.assert_close(project_feasible(op, z, y, iters=1), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(project_feasible(op, z, y, iters=30), expected, atol=1e-12, rtol=0)


def test_a_feasible_image_stays_and_dtype_follows_the_input():
    g = torch.Generator().manual_seed(2)
    op = from_spec("ct8", (1, 16, 16))
    x1, _, y = feasible_pair(op, g)
    torch.testing.assert_close(project_feasible(op, x1, y, iters=10), x1, atol=1e-8, rtol=0)
    out = project_feasible(op, x1.float(), y.float(), iters=3)
    assert out.dtype == torch.float32 and out.shape == x1.shape


def test_other_boxes():
    """[lo, hi] other than [0, 1]: HU-like ranges work the same way."""
    g = torch.Generator().manual_seed(4)
    op = from_spec("ct8", (1, 16, 16))
    x1, _, y = feasible_pair(op, g)
    lo, hi = -1000.0, 1000.0
    x_hu, y_hu = 2000 * x1 - 1000, 2000 * y - 1000 * op.A(torch.ones_like(x1))
    z = x_hu + 500 * torch.randn(x1.shape, generator=g, dtype=F64)
    x = project_feasible(op, z, y_hu, lo=lo, hi=hi, iters=50)
    assert x.min() >= lo and x.max() <= hi
    assert (x - x_hu).norm() < (z.clamp(lo, hi) - x_hu).norm()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"iters": 0}, "iters must be a positive integer"),
        ({"iters": 2.5}, "iters must be a positive integer"),
        ({"lo": 1.0, "hi": 0.0}, "finite lo < hi"),
        ({"hi": float("inf")}, "finite lo < hi"),
    ],
)
@pytest.mark.parametrize("function", [project_feasible, nearest_feasible])
def test_bad_parameters_are_refused(kwargs, message, function):
    op = from_spec("ct8", (1, 16, 16))
    x = torch.rand(1, 1, 16, 16)
    with pytest.raises(DiffinvError, match=message):
        function(op, x, op.A(x), **kwargs)


@pytest.mark.parametrize("function", [project_feasible, nearest_feasible])
def test_bad_inputs_are_refused(function):
    op = from_spec("ct8", (1, 16, 16))
    x = torch.rand(2, 1, 16, 16)
    y = op.A(x)
    with pytest.raises(DiffinvError, match="holds 2 images but y holds 1"):
        function(op, x, y[:1])
    with pytest.raises(DiffinvError, match="x has shape"):
        function(op, x[:, :, :8], y)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(DiffinvError, match="NaN"):
        function(op, bad, y)


def _scipy_nearest(op, v, y, lo=0.0, hi=1.0):
    """Independent reference: argmin 1/2 ||x - v||^2 s.t. A x = y, lo <= x <= hi by SciPy's SLSQP
    on the dense matrix of a small operator."""
    import numpy as np
    from scipy.optimize import minimize

    n = v[0].numel()
    A = op.A(torch.eye(n, dtype=F64).reshape(n, *op.in_shape)).reshape(n, -1).T.numpy()
    vv, yy = v.reshape(-1).numpy(), y.reshape(-1).numpy()
    res = minimize(
        lambda x: 0.5 * np.sum((x - vv) ** 2),
        np.clip(vv, lo, hi),
        jac=lambda x: x - vv,
        constraints=[{"type": "eq", "fun": lambda x: A @ x - yy, "jac": lambda x: A}],
        bounds=[(lo, hi)] * n,
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    assert res.success, res.message
    return torch.from_numpy(res.x).reshape(v.shape)


@pytest.mark.parametrize(
    "make_op",
    [
        lambda g: MatrixOperator(torch.randn(5, 16, generator=g, dtype=F64), in_shape=(1, 4, 4)),
        lambda g: from_spec("sr2", (1, 6, 6)),
    ],
    ids=["dense-5x16", "sr2-6px"],
)
def test_nearest_feasible_finds_the_nearest_point_scipy_finds(make_op):
    """nearest_feasible agrees with SciPy's SLSQP on the projection onto {A x = y} ∩ [0, 1]^n (to
    1e-5), and its point is no farther from v than any other point of the set: two feasible images
    and the POCS limit of project_feasible, which is a point of the set but not the nearest."""
    g = torch.Generator().manual_seed(5)
    op = make_op(g)
    x1, x2, y = feasible_pair(op, g)
    v = x1 + 0.8 * torch.randn(x1.shape, generator=g, dtype=F64)  # far outside the box
    x = nearest_feasible(op, v, y, iters=3000)
    ref = _scipy_nearest(op, v, y)
    assert (x - ref).abs().max() < 1e-5, (x - ref).abs().max()
    assert x.min() >= 0 and x.max() <= 1
    assert (op.A(x) - y).norm() < 1e-6 * y.norm()
    pocs = project_feasible(op, v, y, iters=5000)
    for other in (x1, x2, pocs):
        assert (x - v).norm() <= (other - v).norm() + 1e-7
    assert (x - v).norm() < (pocs - v).norm() - 1e-4  # POCS's point is not the nearest here
