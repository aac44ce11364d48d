"""DiffPIR (plug-and-play HQS with a diffusion denoiser, Zhu et al. 2023) on exact Gaussian posteriors."""

from __future__ import annotations

import math

import pytest
import torch
from problems import (
    DenseNoSVD,
    blind_estimate,
    correlated_prior,
    make_measurement,
    mc_mean_error,
    oracle_problem,
    small_operators,
    try_spec,
    wide_operator,
)

from diffinv import solvers
from diffinv.errors import DiffinvError

SHAPE = (1, 4, 4)
NUM = 300
STEPS = 50


@pytest.fixture(scope="module")
def prior():
    return correlated_prior(SHAPE)


OPERATORS = small_operators(SHAPE)


@pytest.mark.parametrize(
    "opname, sigma_y, params",
    [
        ("select", 0.0, {}),
        ("wide", 0.0, {}),
        ("blur", 0.0, {}),
        ("select", 0.05, {}),
        ("wide", 0.05, {}),
        ("wide", 0.1, {}),
        ("blur", 0.1, {}),
        ("blur", 0.05, {"zeta": 1.0}),
        ("wide", 0.0, {"zeta": 0.0}),
    ],
)
def test_sample_mean_beats_correlation_blind_estimate(prior, opname, sigma_y, params):
    op = OPERATORS[opname]()
    y, post_mean, blind = oracle_problem(op, prior, sigma_y)
    solver = solvers.get("diffpir", prior, steps=STEPS, **params)
    err, x = mc_mean_error(solver, op, y, post_mean, sigma_y=sigma_y, num=NUM)
    print(
        f"diffpir {params} {opname} sigma_y={sigma_y}: |mean - posterior mean| = {err:.4f}, blind = {blind:.4f}"
    )
    assert err < 0.75 * blind
    if sigma_y == 0:  # the last data step is the exact projection
        assert ((op.A(x) - y).flatten(1).norm(dim=1) <= 1e-8 * y.norm()).all()


def test_matches_written_out_update(prior):
    """x^0 = x0 + A^T (A A^T + rho I)^-1 (y - A x0), rho = lam s^2 ab / (1 - ab); zeta-mixed re-noising."""
    op = wide_operator(SHAPE, 6)
    sigma_y, steps, lam, zeta = 0.05, 6, 2.0, 0.3
    _, y = make_measurement(op, prior, sigma_y, seed=4, batch=2)
    x = solvers.get("diffpir", prior, steps=steps, lam=lam, zeta=zeta)(
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
        x0 = prior.x0(z, t).flatten(1)
        rho = lam * s2 * ab / (1 - ab)
        K = M @ M.T + rho * torch.eye(M.shape[0], dtype=torch.float64)
        x0h = x0 + torch.linalg.solve(K, (y_z - x0 @ M.T).T).T @ M
        x0h = x0h.reshape(shape)
        if tp < 0:
            break
        eps = (z - math.sqrt(ab) * x0h) / math.sqrt(1 - ab)
        noise = torch.randn(shape, generator=g, dtype=torch.float64)
        z = math.sqrt(abp) * x0h + math.sqrt(1 - abp) * (math.sqrt(1 - zeta) * eps + math.sqrt(zeta) * noise)
    torch.testing.assert_close(x, prior.to_image(x0h), rtol=0, atol=1e-9)


@pytest.mark.parametrize("sigma_y", [0.0, 0.05])
def test_svd_and_conjugate_gradient_paths_agree(prior, sigma_y):
    dense = wide_operator(SHAPE, 6)
    _, y = make_measurement(dense, prior, sigma_y, seed=2, batch=3)
    solver = solvers.get("diffpir", prior, steps=10)
    a = solver(y, dense, sigma_y, generator=torch.Generator().manual_seed(0))
    b = solver(y, DenseNoSVD(dense.matrix, SHAPE), sigma_y, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_noise_weight_lambda(prior):
    """A larger lambda trusts the noisy y less; with noise the data step is damped, not a projection."""
    op = OPERATORS["blur"]()
    _, y = make_measurement(op, prior, 0.1, seed=1)
    post_mean, _ = prior.posterior(op, y, 0.1)
    errs = {}
    for lam in (1e-4, 1.0):
        errs[lam], x = mc_mean_error(
            solvers.get("diffpir", prior, steps=30, lam=lam), op, y, post_mean, 0.1, 100
        )
    print(f"diffpir noisy blur: lam 1e-4 {errs[1e-4]:.4f}, lam 1 {errs[1.0]:.4f}")
    assert errs[1.0] < 0.5 * errs[1e-4]
    assert (op.A(x) - y).norm() > 1e-3


def test_real_ct_operator_defaults():
    op = try_spec("ct4", (1, 8, 8))
    if op is None:
        pytest.skip("ct4 unavailable")
    prior8 = correlated_prior((1, 8, 8))
    _, y = make_measurement(op, prior8, 0.0, seed=1)
    post_mean, _ = prior8.posterior(op, y, 0.0)
    blind = (blind_estimate(op, y, prior8) - post_mean).norm().item()
    solver = solvers.get("diffpir", prior8)  # the CT family's defaults: 200 steps from the FBP, zeta 1
    err, x = mc_mean_error(solver, op, y, post_mean, num=100)
    assert solver.params["zeta"] == 1.0 and solver.last_nfe == 200
    assert err < 0.75 * blind
    assert ((op.A(x) - y).flatten(1).norm(dim=1) <= 1e-6 * y.norm()).all()


def test_nfe_determinism_and_float32(prior):
    op = OPERATORS["blur"]()
    _, y = make_measurement(op, prior, 0.05, seed=0, batch=2)
    solver = solvers.get("diffpir", prior, steps=10)
    a = solver(y, op, 0.05, generator=torch.Generator().manual_seed(1))
    assert solver.last_nfe == 10
    b = solver(y, op, 0.05, generator=torch.Generator().manual_seed(1))
    c = solver(y, op, 0.05, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert not torch.allclose(a, c)
    x32 = solver(y.float(), op, 0.05, generator=torch.Generator().manual_seed(1))
    assert x32.dtype == torch.float32 and torch.isfinite(x32).all()


def test_parameters(prior):
    assert "diffpir" in solvers.available()
    assert solvers.get("diffpir", prior).params == {"steps": 100, "lam": 1.0, "zeta": 0.1, "start": 1.0}
    assert solvers.get("diffpir", prior).effective_params("inpaint-random0.5")["zeta"] == 1.0
    bad = [{"lam": 0.0}, {"lam": -1.0}, {"lam": float("inf")}, {"lam": True}, {"zeta": 1.5}, {"zeta": -0.1}]
    bad += [{"zeta": "a"}, {"start": 0.0}, {"steps": 0}, {"eta": 0.5}]
    for params in bad:
        with pytest.raises(DiffinvError) as info:
            solvers.get("diffpir", prior, **params)
        assert "\n" not in str(info.value)
