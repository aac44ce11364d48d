"""priors.from_denoiser: a Gaussian denoiser D(x, sigma) as a VE prior, against the exact Gaussian oracle."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from diffinv import priors, solvers
from diffinv.errors import DiffinvError
from diffinv.priors import GaussianPrior, VESchedule

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "solvers"))
from problems import (  # noqa: E402
    blind_estimate,
    make_measurement,
    mc_mean_error,
    selection_operator,
    smooth_covariance,
    wide_operator,
)

SHAPE = (1, 4, 4)
F64 = torch.float64
SIGMA_MAX = 80.0


def wiener(mean, cov):
    """The exact MMSE denoiser of N(mean, cov): D(x, s) = m + C (C + s^2 I)^{-1} (x - m)."""
    lam, Q = torch.linalg.eigh(cov)
    m = mean.reshape(1, -1)

    def denoise(x, sigma):
        v = (x.reshape(x.shape[0], -1) - m) @ Q
        gain = lam / (lam + sigma.reshape(-1, 1) ** 2)
        return (m + (v * gain) @ Q.T).reshape(x.shape)

    return denoise


@pytest.fixture(scope="module")
def pair():
    """(wrapped Wiener denoiser, the exact GaussianPrior on the same schedule, in image units)."""
    mean, cov = torch.full(SHAPE, 0.5, dtype=F64), smooth_covariance(SHAPE)
    wrapped = priors.from_denoiser(wiener(mean, cov), sigma_max=SIGMA_MAX, image_shape=SHAPE)
    exact = GaussianPrior(mean, cov, VESchedule(0.002, SIGMA_MAX, 1000).to_vp(), scale=1.0, shift=0.0)
    return wrapped, exact


@pytest.mark.parametrize("t", [0, 250, 611, 999, 437.5])
def test_x0_and_score_match_the_exact_posterior_mean(pair, t):
    wrapped, exact = pair
    g = torch.Generator().manual_seed(0)
    x0 = exact.sample(3, g)
    sigma = float(wrapped.schedule.sigma_at(t))
    x_ve = x0 + sigma * torch.randn(x0.shape, generator=g, dtype=F64)
    torch.testing.assert_close(wrapped.x0_ve(x_ve, t), exact.x0_ve(x_ve, t), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(wrapped.score_ve(x_ve, t), exact.score_ve(x_ve, t), rtol=1e-8, atol=1e-8)
    x_vp = x_ve * float(wrapped.schedule.alpha_bar(t)) ** 0.5
    torch.testing.assert_close(wrapped.x0(x_vp, t), exact.x0(x_vp, t), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(wrapped.eps(x_vp, t), exact.eps(x_vp, t), rtol=1e-8, atol=1e-8)
    # Tweedie: score = (D(x, sigma) - x) / sigma^2, and the top level is sigma_max
    torch.testing.assert_close(wrapped.score_ve(x_ve, t), (wrapped.x0_ve(x_ve, t) - x_ve) / sigma**2)
    assert float(wrapped.schedule.sigmas[-1]) == pytest.approx(SIGMA_MAX)


@pytest.mark.parametrize(
    "method, params",
    [
        ("daps", {"steps": 20, "ode_steps": 2, "langevin_steps": 10, "lr": 1e-3, "tau": 0.05}),
        ("reddiff", {"steps": 50}),
        ("pigdm", {"steps": 20}),
    ],
)
def test_solvers_run_on_it_as_on_the_exact_prior(pair, method, params):
    wrapped, exact = pair
    op = wide_operator(SHAPE, 6)
    _, y = make_measurement(op, exact, 0.02, seed=1, batch=2)
    a = solvers.get(method, wrapped, **params)(y, op, 0.02, generator=torch.Generator().manual_seed(4))
    b = solvers.get(method, exact, **params)(y, op, 0.02, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    assert wrapped.nfe > 0


def test_daps_with_a_denoiser_prior_is_useful(pair):
    wrapped, exact = pair
    op = selection_operator(SHAPE, 5)
    _, y = make_measurement(op, exact, 0.0, seed=1)
    post_mean, _ = exact.posterior(op, y, 0.0)
    blind = (blind_estimate(op, y, exact) - post_mean).norm().item()
    solver = solvers.get("daps", wrapped, steps=50, ode_steps=1, langevin_steps=50, lr=2.5e-5, tau=0.005)
    err, _ = mc_mean_error(solver, op, y, post_mean, num=200)
    print(f"daps on a wrapped Wiener denoiser: |mean - posterior mean| = {err:.4f}, blind = {blind:.4f}")
    assert err < 0.5 * blind


def test_nfe_float32_and_errors():
    calls = []

    def denoise(x, sigma):
        calls.append((x.dtype, tuple(sigma.shape)))
        return x / (1 + sigma.view(-1, 1, 1, 1) ** 2)

    p = priors.from_denoiser(denoise, sigma_max=10.0, image_shape=(1, 3, 3))
    out = p.x0(torch.zeros(2, 1, 3, 3), 500)
    assert out.dtype == torch.float32 and calls == [(torch.float32, (2,))] and p.nfe == 1
    for bad in (
        dict(denoise=None, sigma_max=1.0, image_shape=(1, 3, 3)),
        dict(denoise=denoise, sigma_max=-1.0, image_shape=(1, 3, 3)),
        dict(denoise=denoise, sigma_max=1.0, image_shape=(3, 3)),
        dict(denoise=denoise, sigma_max=1.0, image_shape=(1, 3, 3), sigma_min=2.0),
        dict(denoise=denoise, sigma_max=1.0, image_shape=(1, 3, 3), levels=1),
    ):
        with pytest.raises(DiffinvError):
            priors.from_denoiser(**bad)
    wrong = priors.from_denoiser(lambda x, s: x[:, :, :2], sigma_max=1.0, image_shape=(1, 3, 3))
    with pytest.raises(DiffinvError, match="input's shape"):
        wrong.x0_ve(torch.zeros(1, 1, 3, 3), 10)
