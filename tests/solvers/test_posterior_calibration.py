"""Calibration of the diffusion solvers' samples on the exact Gaussian oracle (GaussianPrior).

For one measurement y of a 6x6 image (correlated prior, model space [-1, 1]) the exact posterior
N(mu, Sigma) is known. Each method draws N = 2000 samples (one batched call, fixed seed); we measure

* coverage(p): the fraction of M = 4000 draws of the exact posterior (all uncertain pixels) that lie
  inside the per-pixel central p-interval of the method's samples (:func:`diffinv.posterior.coverage`);
  nominal p for a calibrated sampler;
* the variance ratio sum_i var_i(samples) / sum_i Sigma_ii (:func:`diffinv.posterior.variance_ratio`).

The expected values are the ones quoted in each method's docstring. Bands: the Monte-Carlo error of
coverage with N = 2000 samples is about 0.01 (quantile estimation; the exact draws add < 0.003) and
of the variance ratio about 2% (sqrt(2/N) per pixel, pooled over 18 correlated pixels), so
+-0.04 / +-10% are 4-5 standard errors: numbers that move further mean the method changed.
Run with ``-s`` to print the measured numbers.
"""

from __future__ import annotations

import pytest
import torch
from problems import (
    correlated_prior,
    make_measurement,
    random_wide_matrix,
    selection_operator,
    svd_diagonal_prior,
)

from diffinv import posterior, solvers
from diffinv.operators.dense import MatrixOperator

N, M = 2000, 4000
COV_TOL, VR_TOL = 0.04, 0.10


def _problem(prior, op, sigma_y: float):
    _, y = make_measurement(op, prior, sigma_y, seed=3)
    mean, cov = prior.posterior(op, y, sigma_y)
    var = cov.diagonal()
    keep = var > 1e-8  # noiseless observed pixels are exact: no interval to cover
    k = int(keep.sum())
    L = torch.linalg.cholesky(cov[keep][:, keep] + 1e-12 * torch.eye(k, dtype=cov.dtype))
    z = torch.randn(M, k, generator=torch.Generator().manual_seed(9), dtype=cov.dtype)
    draws = mean.reshape(-1)[keep] + z @ L.T
    return y, keep, var[keep], draws


def _measure(prior, op, sigma_y, method, params):
    y, keep, var, draws = _problem(prior, op, sigma_y)
    post = solvers.get(method, prior, **params).sample(
        y, op, n=N, sigma_y=sigma_y, generator=torch.Generator().manual_seed(1)
    )
    s = post.samples.reshape(N, 1, -1)[..., keep]  # (K, B=1, uncertain pixels)
    d = draws[:, None]
    return (
        posterior.coverage(s, d, 0.5),
        posterior.coverage(s, d, 0.9),
        posterior.variance_ratio(s, var),
    )


SHAPE = (1, 6, 6)

# method, params, sigma_y, (coverage 50%, coverage 90%, variance ratio) as in the docstrings
CASES = [
    ("ddnm", {"steps": 100}, 0.0, (0.46, 0.87, 0.98)),
    ("ddnm", {"steps": 100, "noise": "ddim"}, 0.0, (0.56, 0.94, 1.94)),
    ("ddnm", {"steps": 100, "eta": 0.6}, 0.0, (0.50, 0.90, 1.08)),
    ("ddrm", {}, 0.0, (0.46, 0.87, 1.32)),
    ("dps", {"steps": 200, "zeta": 0.2}, 0.0, (0.43, 0.83, 0.75)),
    ("dps", {"steps": 200, "zeta": 0.1}, 0.0, (0.47, 0.87, 0.98)),
    ("mcg", {"steps": 200}, 0.0, (0.29, 0.63, 0.46)),
    ("mcg", {"steps": 200, "grad_weight": 0.1}, 0.0, (0.45, 0.86, 0.91)),
    ("pigdm", {"steps": 100}, 0.0, (0.43, 0.83, 0.77)),
    ("ddnm+", {"steps": 100}, 0.05, (0.23, 0.50, 0.46)),
    ("ddrm", {}, 0.05, (0.44, 0.85, 1.07)),
]


@pytest.mark.parametrize("method, params, sigma_y, expected", CASES)
def test_calibration_inpainting(method, params, sigma_y, expected):
    """Inpainting (18 of 36 pixels observed), correlated prior: the docstrings' numbers."""
    prior = correlated_prior(SHAPE)
    op = selection_operator(SHAPE, 18, seed=1)
    c50, c90, vr = _measure(prior, op, sigma_y, method, params)
    print(
        f"\n[{method} {params} sigma_y={sigma_y}] coverage 50% {c50:.3f}, 90% {c90:.3f}, variance ratio {vr:.3f}"
    )
    e50, e90, evr = expected
    assert abs(c50 - e50) <= COV_TOL and abs(c90 - e90) <= COV_TOL
    assert abs(vr / evr - 1) <= VR_TOL


def test_exact_sampler_is_calibrated():
    """The reference: a prior diagonal in the operator's singular basis, where DDNM noise="ddim",
    eta = 1 at 1000 steps is DDPM ancestral sampling of the exact posterior (tests/solvers/test_ddnm.py):
    nominal coverage and variance ratio 1, up to the small discretisation bias (2-3% less variance).
    This checks the measures themselves."""
    op = MatrixOperator(random_wide_matrix(16, 8, seed=7), (1, 4, 4))
    prior = svd_diagonal_prior(op, seed=5)
    c50, c90, vr = _measure(prior, op, 0.0, "ddnm", {"steps": 1000, "noise": "ddim", "eta": 1.0})
    print(f"\n[exact reference] coverage 50% {c50:.3f}, 90% {c90:.3f}, variance ratio {vr:.3f}")
    assert abs(c50 - 0.5) <= COV_TOL and abs(c90 - 0.9) <= 0.03
    assert 0.9 <= vr <= 1.06


def test_mean_of_samples_beats_one_sample():
    """Averaging K = 8 samples moves toward the posterior mean: the mean's squared error to the
    truth is below a single sample's (exact sampler: (1 + 1/K) / 2 of it; allow up to 0.8)."""
    prior = correlated_prior(SHAPE)
    op = selection_operator(SHAPE, 18, seed=1)
    x, y = make_measurement(op, prior, 0.0, seed=11, batch=64)
    post = solvers.get("ddnm", prior, steps=50).sample(y, op, n=8, generator=torch.Generator().manual_seed(2))
    one = ((post.samples[0] - x) ** 2).sum().item()
    mean = ((post.mean - x) ** 2).sum().item()
    print(f"\n[mean of 8 vs one sample] squared error ratio {mean / one:.3f}")
    assert mean < 0.8 * one
