"""RED-diff (variational regularisation by denoising diffusion, Mardani et al. 2024) on exact Gaussian posteriors."""

from __future__ import annotations

import math

import pytest
import torch
from problems import (
    correlated_prior,
    make_measurement,
    mc_mean_error,
    oracle_problem,
    small_operators,
    wide_operator,
)

from diffinv import solvers
from diffinv.errors import DiffinvError
from diffinv.operators.nonlinear import PhaseRetrieval

SHAPE = (1, 4, 4)
NUM = 300
STEPS = 200


@pytest.fixture(scope="module")
def prior():
    return correlated_prior(SHAPE)


OPERATORS = small_operators(SHAPE)

# Noise: the same loss; a larger lambda trusts y less (the paper tunes lambda per task). With the
# default lambda the noisy blur fits the noise in its small singular directions.
CASES = [
    ("select", 0.0, {}),
    ("wide", 0.0, {}),
    ("blur", 0.0, {}),
    ("select", 0.05, {}),
    ("wide", 0.05, {}),
    ("blur", 0.05, {"lam": 1.0}),
]


@pytest.mark.parametrize("opname, sigma_y, extra", CASES)
def test_mean_beats_correlation_blind_estimate(prior, opname, sigma_y, extra):
    op = OPERATORS[opname]()
    y, post_mean, blind = oracle_problem(op, prior, sigma_y)
    solver = solvers.get("reddiff", prior, steps=STEPS, **extra)
    err, _ = mc_mean_error(solver, op, y, post_mean, sigma_y=sigma_y, num=NUM)
    print(
        f"reddiff {opname} sigma_y={sigma_y} {extra}: |mean - posterior mean| = {err:.4f}, blind = {blind:.4f}"
    )
    assert err < (0.5 if sigma_y == 0 and opname != "blur" else 0.6) * blind


@pytest.mark.parametrize("sigma_y", [0.0, 0.05])
def test_matches_autograd_and_torch_adam(prior, sigma_y):
    """The authors' loss (means, stop-gradient on eps) by autograd, minimised by torch.optim.Adam."""
    op = wide_operator(SHAPE, 6)
    steps, lr, lam = 12, 0.05, 0.4
    _, y = make_measurement(op, prior, sigma_y, seed=4, batch=1)
    x = solvers.get("reddiff", prior, steps=steps, lr=lr, lam=lam)(
        y, op, sigma_y, generator=torch.Generator().manual_seed(3)
    )

    M = op.matrix
    g = torch.Generator().manual_seed(3)
    y_z = (y - prior.shift * op.A(torch.ones((1, *SHAPE), dtype=torch.float64))) / prior.scale
    s2 = (sigma_y / prior.scale) ** 2
    K = M @ M.T + s2 * torch.eye(M.shape[0], dtype=torch.float64)
    mu = (torch.linalg.solve(K, y_z.T).T @ M).reshape(1, *SHAPE).requires_grad_(True)
    opt = torch.optim.Adam([mu], lr=lr, betas=(0.9, 0.99), eps=1e-8)
    for t in prior.schedule.timesteps(steps).tolist():
        ab = float(prior.schedule.alpha_bar(t))
        eps = torch.randn((1, *SHAPE), generator=g, dtype=torch.float64)
        with torch.no_grad():
            eps_hat = prior.eps(math.sqrt(ab) * mu + math.sqrt(1 - ab) * eps, t)
        with torch.enable_grad():
            loss_obs = ((y_z - mu.flatten(1) @ M.T) ** 2).mean() / 2
            loss_reg = ((eps_hat - eps) * mu).mean()
            loss = lam * math.sqrt((1 - ab) / ab) * loss_reg + loss_obs
            opt.zero_grad()
            loss.backward()
        opt.step()
    torch.testing.assert_close(x, prior.to_image(mu.detach()), rtol=0, atol=1e-10)


def test_nfe_determinism_and_batch(prior):
    op = wide_operator(SHAPE, 6)
    _, y = make_measurement(op, prior, 0.05, seed=0, batch=2)
    solver = solvers.get("reddiff", prior, steps=10)
    a = solver(y, op, 0.05, generator=torch.Generator().manual_seed(1))
    assert solver.last_nfe == 10
    b = solver(y, op, 0.05, generator=torch.Generator().manual_seed(1))
    c = solver(y, op, 0.05, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert not torch.allclose(a, c)


def test_parameters_and_refusals(prior):
    assert "reddiff" in solvers.available()
    assert solvers.get("reddiff", prior).params == {"steps": 1000, "lr": 0.1, "lam": 0.25}
    for bad in ({"lr": 0.0}, {"lr": -1.0}, {"lam": -0.1}, {"lam": float("inf")}, {"steps": 0}, {"eta": 1.0}):
        with pytest.raises(DiffinvError):
            solvers.get("reddiff", prior, **bad)
    op = PhaseRetrieval(SHAPE)
    y = op.measure(prior.sample(1, torch.Generator().manual_seed(0)))
    with pytest.raises(DiffinvError, match="'reddiff' needs a linear operator"):
        solvers.get("reddiff", prior, steps=2)(y, op)
