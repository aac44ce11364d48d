"""DAPS (decoupled annealing posterior sampling, Zhang et al. 2025) on exact Gaussian posteriors."""

from __future__ import annotations

import math

import pytest
import torch
from problems import (
    blind_estimate,
    correlated_prior,
    make_measurement,
    mc_mean_error,
    oracle_problem,
    selection_operator,
    small_operators,
    wide_operator,
)

from diffinv import solvers
from diffinv.errors import DiffinvError
from diffinv.operators.nonlinear import NonlinearOperator
from diffinv.solvers.daps import edm_sigmas, time_at_sigma

SHAPE = (1, 4, 4)
NUM = 300
FAST = {"steps": 50, "ode_steps": 1, "langevin_steps": 50}


@pytest.fixture(scope="module")
def prior():
    return correlated_prior(SHAPE)


OPERATORS = small_operators(SHAPE)

# Noiseless: the paper's tau = 0.01 (the blur, whose small singular values the data step
# lr s^2 / tau^2 barely moves, gets a larger lr). Noisy: the likelihood of the actual noise,
# tau = sigma_y / scale, with lr scaled by tau^2 / 0.01^2 so that the data step stays the same.
CASES = [
    ("select", 0.0, {}),
    ("wide", 0.0, {}),
    ("blur", 0.0, {"lr": 4e-4}),
    ("select", 0.05, {"tau": 0.1, "lr": 1e-2}),
    ("wide", 0.05, {"tau": 0.1, "lr": 1e-2}),
    ("wide", 0.1, {"tau": 0.2, "lr": 4e-2}),
    ("wide", 0.05, {}),  # the paper's tau = 0.01 on noisy data (over-trusts y, still useful)
]


@pytest.mark.parametrize("opname, sigma_y, extra", CASES)
def test_sample_mean_beats_correlation_blind_estimate(prior, opname, sigma_y, extra):
    op = OPERATORS[opname]()
    y, post_mean, blind = oracle_problem(op, prior, sigma_y)
    solver = solvers.get("daps", prior, **FAST, **extra)
    err, _ = mc_mean_error(solver, op, y, post_mean, sigma_y=sigma_y, num=NUM)
    print(
        f"daps {opname} sigma_y={sigma_y} {extra}: |mean - posterior mean| = {err:.4f}, blind = {blind:.4f}"
    )
    assert err < 0.5 * blind


def test_matches_written_out_algorithm(prior):
    """Algorithm 1: EDM annealing grid, Euler PF-ODE for x0|t, Langevin on N(x0|t, sigma^2) p(y|x0)."""
    op = wide_operator(SHAPE, 6)
    sigma_y, tau, lr, ratio = 0.05, 0.05, 1e-3, 0.1
    _, y = make_measurement(op, prior, sigma_y, seed=4, batch=2)
    params = {"steps": 3, "ode_steps": 2, "langevin_steps": 2, "lr": lr, "lr_min_ratio": ratio, "tau": tau}
    params["sigma_min"] = 0.1  # the paper's; the default (None) is the prior's smallest level
    x = solvers.get("daps", prior, **params)(y, op, sigma_y, generator=torch.Generator().manual_seed(3))

    M, sched = op.matrix, prior.schedule
    g = torch.Generator().manual_seed(3)
    y_z = (y - prior.shift * op.A(torch.ones((1, *SHAPE), dtype=torch.float64))) / prior.scale
    top = 100.0
    sig = [(top ** (1 / 7) + i / 2 * (0.1 ** (1 / 7) - top ** (1 / 7))) ** 7 for i in range(3)]

    def D(v, s):  # the VE denoiser at the continuous time of sigma s (clamped to the lowest level)
        log_s = sched.sigmas.log()
        ls = max(math.log(s), log_s[0].item())
        k = max(int((log_s < ls).sum()) - 1, 0)
        t = k + (ls - log_s[k].item()) / (log_s[k + 1] - log_s[k]).item()
        return prior.x0_ve(v, t)

    def randn():
        return torch.randn((2, *SHAPE), generator=g, dtype=torch.float64)

    z = sig[0] * randn()
    for i, s in enumerate(sig):
        ode = [(s ** (1 / 7) + k * (0.01 ** (1 / 7) - s ** (1 / 7))) ** 7 for k in range(2)]
        d = D(z, ode[0])
        x0_hat = D(z + (ode[1] - ode[0]) * (z - d) / ode[0], ode[1])
        eta = min(lr * (1 + i / 2 * (ratio - 1)), s**2)  # the cap on the prior term's step
        x0 = x0_hat
        for _ in range(2):
            grad_lik = ((y_z - x0.flatten(1) @ M.T) @ M).reshape(x0.shape) / tau**2
            x0 = x0 + eta * ((x0_hat - x0) / s**2 + grad_lik) + math.sqrt(2 * eta) * randn()
        if i < 2:
            z = x0 + sig[i + 1] * randn()
    torch.testing.assert_close(x, prior.to_image(x0), rtol=0, atol=1e-10)


def test_one_ode_step_is_tweedie(prior):
    solver = solvers.get("daps", prior, ode_steps=1)
    x = torch.randn(3, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    t = time_at_sigma(prior.schedule, 2.0)
    torch.testing.assert_close(solver._x0_ode(x, 2.0), prior.x0_ve(x, t), rtol=0, atol=1e-12)


def test_annealing_grid_and_times(prior):
    s = edm_sigmas(5, 100.0, 0.1)
    assert s[0] == pytest.approx(100.0) and s[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(s, s[1:]))
    sched = prior.schedule
    for t in (0, 17, 500, 999):
        assert time_at_sigma(sched, float(sched.sigmas[t])) == t
    for sigma in (0.05, 1.3, 42.0):
        assert float(sched.sigma_at(time_at_sigma(sched, sigma))) == pytest.approx(sigma, rel=1e-9)
    assert time_at_sigma(sched, 1e-6) == 0 and time_at_sigma(sched, 1e6) == sched.T - 1


def test_no_langevin_steps_ignores_the_measurement(prior):
    op = selection_operator(SHAPE, 5)
    _, y1 = make_measurement(op, prior, 0.0, seed=1)
    _, y2 = make_measurement(op, prior, 0.0, seed=2)
    solver = solvers.get("daps", prior, steps=5, ode_steps=1, langevin_steps=0)
    a = solver(y1, op, generator=torch.Generator().manual_seed(0))
    b = solver(y2, op, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


class AsNonlinear(NonlinearOperator):
    """A linear operator seen only through its forward map (the autograd path of the data term)."""

    def __init__(self, op):
        super().__init__(op.in_shape, op.out_shape, "linear-as-nonlinear")
        self.op = op

    def _forward(self, x):
        return self.op.A(x)


@pytest.mark.parametrize(
    "method, params",
    [("daps", {"steps": 4, "ode_steps": 2, "langevin_steps": 5}), ("dps", {"steps": 8, "zeta": 0.3})],
)
def test_autograd_data_term_equals_the_linear_one(prior, method, params):
    op = wide_operator(SHAPE, 6)
    _, y = make_measurement(op, prior, 0.05, seed=2, batch=2)
    solver = solvers.get(method, prior, **params)
    a = solver(y, op, 0.05, generator=torch.Generator().manual_seed(5))
    b = solver(y, AsNonlinear(op), 0.05, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_nfe_and_determinism(prior):
    op = wide_operator(SHAPE, 6)
    _, y = make_measurement(op, prior, 0.05, seed=0, batch=2)
    solver = solvers.get("daps", prior, steps=6, ode_steps=3, langevin_steps=4)
    a = solver(y, op, 0.05, generator=torch.Generator().manual_seed(1))
    assert solver.last_nfe == 18
    b = solver(y, op, 0.05, generator=torch.Generator().manual_seed(1))
    c = solver(y, op, 0.05, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert not torch.allclose(a, c)
    # a batch behaves like independent runs (every step is elementwise)
    a0 = solver(y[:1], op, 0.05, generator=torch.Generator().manual_seed(1))
    assert a0.shape == (1, *SHAPE) and torch.isfinite(a0).all()


def test_parameters(prior):
    assert "daps" in solvers.available()
    p = solvers.get("daps", prior).params
    assert p["steps"] == 200 and p["ode_steps"] == 5 and p["langevin_steps"] == 100
    assert p["lr"] == 1e-4 and p["tau"] == 0.01 and p["lr_min_ratio"] == 0.01
    levels = prior.schedule.sigmas
    grid = solvers.get(
        "daps", prior, steps=7
    ).annealing_sigmas()  # default: down to the prior's smallest level
    assert len(grid) == 7 and grid[-1] == pytest.approx(float(levels[0])) and grid[0] <= float(levels[-1])
    assert all(a > b for a, b in zip(grid, grid[1:]))
    assert solvers.get("daps", prior, steps=7, sigma_min=0.1).annealing_sigmas()[-1] == pytest.approx(0.1)
    for bad in (
        {"lr": 0.0},
        {"lr": float("nan")},
        {"tau": -1.0},
        {"ode_steps": 0},
        {"langevin_steps": -1},
        {"langevin_steps": 1.5},
        {"lr_min_ratio": 0.0},
        {"lr_min_ratio": 2.0},
        {"sigma_min": 200.0},
        {"steps": 0},
        {"zeta": 1.0},
    ):
        with pytest.raises(DiffinvError):
            solvers.get("daps", prior, **bad)


def test_real_operators():
    spec = pytest.importorskip("diffinv.operators.spec")
    shape = (1, 8, 8)
    prior8 = correlated_prior(shape)
    for name in ("inpaint-box", "sr2"):
        op = spec.from_spec(name, shape)
        _, y = make_measurement(op, prior8, 0.0, seed=1)
        post_mean, _ = prior8.posterior(op, y, 0.0)
        blind = (blind_estimate(op, y, prior8) - post_mean).norm().item()
        err, _ = mc_mean_error(solvers.get("daps", prior8, **FAST), op, y, post_mean, num=200)
        print(f"daps {name} (8x8): |mean - posterior mean| = {err:.4f}, blind = {blind:.4f}")
        assert err < 0.5 * blind
