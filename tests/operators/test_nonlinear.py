"""Nonlinear forward models: phase retrieval's values and gradient, and which solvers take them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffinv import solvers
from diffinv.errors import DiffinvError
from diffinv.operators.nonlinear import NonlinearOperator, PhaseRetrieval, is_nonlinear
from diffinv.priors import GaussianPrior, VPSchedule


def test_forward_matches_numpy_fft():
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    op = PhaseRetrieval((3, 5, 6), oversample=2.0)
    assert op.out_shape == (3, 10, 12)
    # centred zero padding: (10 - 5) // 2 = 2 rows above, 3 below; 3 columns each side
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 3), (3, 3)))
    expected = np.abs(np.fft.fft2(padded, axes=(-2, -1))) / np.sqrt(10 * 12)
    np.testing.assert_allclose(op(x).numpy(), expected, rtol=1e-12, atol=1e-12)
    # orthonormal DFT: Parseval
    np.testing.assert_allclose((op(x) ** 2).sum((1, 2, 3)).numpy(), (x**2).sum((1, 2, 3)).numpy(), rtol=1e-12)
    assert op(x.float()).dtype == torch.float32


def test_oversample_one_and_fractional():
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(
        PhaseRetrieval((1, 4, 4), 1.0)(x).numpy(), np.abs(np.fft.fft2(x.numpy(), norm="ortho")), atol=1e-12
    )
    assert PhaseRetrieval((1, 4, 6), 1.5).out_shape == (1, 6, 9)


def test_gradient_gradcheck_and_vjp():
    op = PhaseRetrieval((1, 3, 4), oversample=2.0)
    x = 0.2 + torch.rand(2, 1, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert torch.autograd.gradcheck(op, (x.clone().requires_grad_(),), eps=1e-6, atol=1e-7)
    v = torch.randn(2, *op.out_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    xg = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad((op(xg) * v).sum(), xg)
    torch.testing.assert_close(op.vjp(x, v), expected, rtol=0, atol=1e-12)


def test_measure_and_input_errors():
    op = PhaseRetrieval((1, 4, 4))
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    a = op.measure(x, 0.1, generator=torch.Generator().manual_seed(0))
    b = op.measure(x, 0.1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not a.requires_grad and torch.equal(op.measure(x), op(x))
    assert is_nonlinear(op) and not op.has_svd and "phase-retrieval" in op.name
    for bad in (
        lambda: op(torch.rand(1, 1, 5, 4)),
        lambda: op.measure(x, -1.0),
        lambda: PhaseRetrieval((1, 4, 4), 0.5),
        lambda: PhaseRetrieval((4, 4)),
    ):
        with pytest.raises(DiffinvError):
            bad()
    with pytest.raises(NotImplementedError):
        NonlinearOperator((1, 2, 2), (1, 2, 2), "bare")(torch.zeros(1, 1, 2, 2))


SHAPE = (1, 6, 6)


@pytest.fixture(scope="module")
def prior():
    n = 36
    idx = torch.arange(6, dtype=torch.float64)
    d2 = (idx[:, None, None, None] - idx[None, None, :, None]) ** 2 + (
        idx[None, :, None, None] - idx[None, None, None, :]
    ) ** 2
    cov = 0.04 * torch.exp(-d2.reshape(n, n) / 4.5) + 1e-3 * torch.eye(n, dtype=torch.float64)
    return GaussianPrior(torch.full(SHAPE, 0.5, dtype=torch.float64), cov, VPSchedule.linear(1000), 0.5, 0.5)


def test_daps_and_dps_fit_phase_retrieval(prior):
    """Both accept F = |FFT(pad x)| and bring F(x) closer to y than prior draws (DAPS much closer)."""
    op = PhaseRetrieval(SHAPE)
    g = torch.Generator().manual_seed(0)
    x_true = prior.sample(8, g)
    y = op.measure(x_true, 0.01, generator=g)
    ref = (op(prior.sample(8, g)) - y).flatten(1).norm(dim=1).mean()
    daps = solvers.get("daps", prior, steps=30, ode_steps=1, langevin_steps=30)
    dps = solvers.get("dps", prior, steps=100, zeta=0.1)
    res = {}
    for name, solver in (("daps", daps), ("dps", dps)):
        x = solver(y, op, 0.01, generator=torch.Generator().manual_seed(1))
        assert torch.isfinite(x).all()
        res[name] = float((op(x) - y).flatten(1).norm(dim=1).mean())
    print(f"phase retrieval 6x6: residual prior draw {ref:.4f}, daps {res['daps']:.4f}, dps {res['dps']:.4f}")
    assert res["daps"] < 0.3 * ref and res["dps"] < ref


@pytest.mark.parametrize("method", ["ddnm", "ddrm", "pigdm", "mcg", "score-proj", "reddiff", "pinv", "ddim"])
def test_linear_methods_refuse_it(prior, method):
    op = PhaseRetrieval(SHAPE)
    y = op.measure(prior.sample(1, torch.Generator().manual_seed(0)))
    solver = solvers.get(method, prior if solvers.get_class(method).needs_prior else None)
    with pytest.raises(DiffinvError, match=f"'{method}' needs a linear operator.*daps, dps"):
        solver(y, op)
