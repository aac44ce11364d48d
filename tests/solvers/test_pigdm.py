"""PiGDM (pseudoinverse-guided diffusion, Song et al. 2023) on exact Gaussian posteriors."""

from __future__ import annotations

import math

import pytest
import torch
from problems import (
    blind_estimate,
    blur_operator,
    correlated_prior,
    make_measurement,
    mc_mean_error,
    small_operators,
    wide_operator,
)

from diffinv import solvers
from diffinv.operators.base import LinearOperator

SHAPE = (1, 4, 4)
NUM = 300
STEPS = 100


@pytest.fixture(scope="module")
def prior():
    return correlated_prior(SHAPE)


OPERATORS = small_operators(SHAPE)


class NoSVD(LinearOperator):
    """The same matrix without an SVD: PiGDM must fall back to conjugate gradients."""

    def __init__(self, dense):
        super().__init__(dense.in_shape, dense.out_shape)
        self.dense = dense

    def _A(self, x):
        return self.dense.A(x)

    def _At(self, y):
        return self.dense.At(y)


@pytest.mark.parametrize(
    "opname, sigma_y",
    [
        ("select", 0.0),
        ("wide", 0.0),
        ("blur", 0.0),
        ("select", 0.05),
        ("wide", 0.05),
        ("wide", 0.1),
        ("blur", 0.1),
    ],
)
def test_sample_mean_beats_correlation_blind_estimate(prior, opname, sigma_y):
    op = OPERATORS[opname]()
    _, y = make_measurement(op, prior, sigma_y, seed=1)
    post_mean, _ = prior.posterior(op, y, sigma_y)
    blind = (blind_estimate(op, y, prior) - post_mean).norm().item()
    err, x = mc_mean_error(
        solvers.get("pigdm", prior, steps=STEPS), op, y, post_mean, sigma_y=sigma_y, num=NUM
    )
    print(f"pigdm {opname} sigma_y={sigma_y}: |mean - posterior mean| = {err:.4f}, blind = {blind:.4f}")
    assert err < 0.75 * blind
    if sigma_y == 0:  # the last step is a full pseudoinverse correction
        assert ((op.A(x) - y).flatten(1).norm(dim=1) <= 1e-2 * y.norm()).all()


def test_real_operators():
    spec = pytest.importorskip("diffinv.operators.spec")
    shape = (1, 8, 8)
    prior8 = correlated_prior(shape)
    for name in ("inpaint-box", "sr2"):
        op = spec.from_spec(name, shape)
        _, y = make_measurement(op, prior8, 0.0, seed=1)
        post_mean, _ = prior8.posterior(op, y, 0.0)
        blind = (blind_estimate(op, y, prior8) - post_mean).norm().item()
        err, _ = mc_mean_error(solvers.get("pigdm", prior8, steps=50), op, y, post_mean, num=200)
        print(f"pigdm {name} (8x8): |mean - posterior mean| = {err:.4f}, blind = {blind:.4f}")
        assert err < 0.5 * blind


@pytest.mark.parametrize("sigma_y", [0.0, 0.05])
def test_svd_and_conjugate_gradient_paths_agree(prior, sigma_y):
    dense = wide_operator(SHAPE, 6)
    _, y = make_measurement(dense, prior, sigma_y, seed=2, batch=3)
    solver = solvers.get("pigdm", prior, steps=10)
    a = solver(y, dense, sigma_y, generator=torch.Generator().manual_seed(0))
    b = solver(y, NoSVD(dense), sigma_y, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_matches_written_out_algorithm(prior):
    """x_t' = sqrt(ab') x0 + c1 z + c2 eps + sqrt(ab) J^T A^T (r^2 A A^T + s^2 I)^{-1} r^2 (y - A x0)."""
    op = wide_operator(SHAPE, 6)
    sigma_y, steps, eta = 0.05, 8, 0.7
    _, y = make_measurement(op, prior, sigma_y, seed=4, batch=2)
    x = solvers.get("pigdm", prior, steps=steps, eta=eta)(
        y, op, sigma_y, generator=torch.Generator().manual_seed(3)
    )

    M = op.matrix
    g = torch.Generator().manual_seed(3)
    shape = (2, *SHAPE)
    y_z = (y - prior.shift * op.A(torch.ones((1, *SHAPE), dtype=torch.float64))) / prior.scale
    s2 = (sigma_y / prior.scale) ** 2
    grid = prior.schedule.timesteps(steps).tolist() + [-1]
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    for t, tp in zip(grid[:-1], grid[1:]):
        ab, abp = float(prior.schedule.alpha_bar(t)), float(prior.schedule.alpha_bar(tp))
        r2 = 1 - ab
        with torch.enable_grad():
            zg = z.detach().requires_grad_()
            x0 = prior.x0(zg, t)
            resid = y_z - x0.flatten(1) @ M.T
            K = r2 * M @ M.T + s2 * torch.eye(M.shape[0], dtype=torch.float64)
            v = torch.linalg.solve(K, resid.detach().T).T  # (r^2 A A^T + s^2 I)^{-1} (y - A x0)
            (gvec,) = torch.autograd.grad((x0.flatten(1) @ M.T * v).sum(), zg)  # eq. 8
        x0 = x0.detach()
        eps = (z - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
        c1 = eta * math.sqrt((1 - ab / abp) * (1 - abp) / (1 - ab))
        c2 = math.sqrt(1 - abp - c1**2)
        noise = torch.randn(shape, generator=g, dtype=torch.float64)
        z = math.sqrt(abp) * x0 + c1 * noise + c2 * eps + math.sqrt(ab) * r2 * gvec
    torch.testing.assert_close(x, prior.to_image(z), rtol=0, atol=1e-9)


def test_nfe_and_determinism(prior):
    op = blur_operator(SHAPE)
    _, y = make_measurement(op, prior, 0.05, seed=0, batch=2)
    solver = solvers.get("pigdm", prior, steps=10)
    a = solver(y, op, 0.05, generator=torch.Generator().manual_seed(1))
    assert solver.last_nfe == 10
    b = solver(y, op, 0.05, generator=torch.Generator().manual_seed(1))
    c = solver(y, op, 0.05, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_parameters(prior):
    assert "pigdm" in solvers.available()
    assert solvers.get("pigdm", prior).params == {"steps": 100, "eta": 1.0, "clip_grad": "identity"}
    for bad in ({"eta": 1.5}, {"steps": 0}, {"zeta": 1.0}):
        with pytest.raises(ValueError):
            solvers.get("pigdm", prior, **bad)
