"""VE predictors: reverse diffusion (Euler-Maruyama) vs SMLD ancestral sampling (score-SDE, App. F)."""

from __future__ import annotations

import pytest
import torch
from problems import blind_estimate, correlated_prior, expand, make_measurement, small_operators

from diffinv import solvers
from diffinv.priors.steps import ancestral_step, reverse_diffusion_step


@pytest.mark.parametrize("sigma,sigma_prev", [(50.0, 10.0), (1.0, 0.9), (0.3, 0.0)])
def test_ancestral_step_keeps_a_point_mass_on_the_next_level(sigma, sigma_prev):
    """Data = a point x0, so the exact score is (x0 - x) / sigma^2: after one ancestral step
    x - x0 has variance exactly sigma_prev^2, after a reverse-diffusion step
    sigma_prev^4 / sigma^2 + sigma^2 - sigma_prev^2 (far above it on a coarse grid)."""
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.full((n,), 0.3, dtype=torch.float64)
    x = x0 + sigma * torch.randn(n, generator=g, dtype=torch.float64)
    z = torch.randn(n, generator=g, dtype=torch.float64)
    score = (x0 - x) / sigma**2
    xa, ma = ancestral_step(x, score, sigma, sigma_prev, z)
    xr, mr = reverse_diffusion_step(x, score, sigma, sigma_prev, z)
    assert torch.equal(ma, mr)  # same mean update
    var_a = float((xa - x0).var())
    var_r = float((xr - x0).var())
    expect_r = sigma_prev**4 / sigma**2 + sigma**2 - sigma_prev**2
    assert var_a == pytest.approx(sigma_prev**2, rel=0.02, abs=1e-12)
    assert var_r == pytest.approx(expect_r, rel=0.02)


SHAPE = (1, 4, 4)
OPERATORS = small_operators(SHAPE)


@pytest.mark.parametrize("method,params", [("score-proj", {}), ("mcg", {"form": "ve", "grad_weight": 0.0})])
def test_ancestral_predictor_works_with_few_steps(method, params):
    """10 steps on an exact Gaussian posterior. Both predictors have the same (linear) mean update,
    so they differ in the spread: with the ancestral one the samples' total variance is close to
    the posterior's; reverse diffusion leaves several times too much noise at this step count."""
    prior = correlated_prior(SHAPE)
    op = OPERATORS["select"]()
    _, y = make_measurement(op, prior, 0.0, seed=2)
    post_mean, post_cov = prior.posterior(op, y, 0.0)
    blind = (blind_estimate(op, y, prior) - post_mean).norm().item()
    ratio, err = {}, {}
    for pred in ("ancestral", "reverse-diffusion"):
        solver = solvers.get(method, prior, steps=10, predictor=pred, **params)
        xs = solver(expand(y, 500), op, generator=torch.Generator().manual_seed(0))
        ratio[pred] = float(xs.flatten(1).var(0).sum() / torch.diagonal(post_cov).sum())
        err[pred] = float((xs.mean(0) - post_mean[0]).norm())
    print(
        f"{method} 10 steps: variance / posterior variance: ancestral {ratio['ancestral']:.3f}, "
        f"reverse diffusion {ratio['reverse-diffusion']:.3f}; mean error {err['ancestral']:.3f} "
        f"(blind {blind:.3f})"
    )
    assert 0.6 < ratio["ancestral"] < 1.6
    assert ratio["reverse-diffusion"] > 2.5 * ratio["ancestral"]
    assert err["ancestral"] < blind


@pytest.mark.parametrize("method,params", [("score-proj", {}), ("mcg", {"form": "ve"})])
def test_unknown_predictor_is_rejected(method, params):
    prior = correlated_prior(SHAPE)
    with pytest.raises(ValueError, match="predictor must be one of"):
        solvers.get(method, prior, predictor="euler", **params)
