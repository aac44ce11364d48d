"""DDRM against exact Gaussian answers (GaussianPrior, float64, tiny images). ``-s`` prints numbers."""

from __future__ import annotations

import pytest
import torch
from problems import (
    DenseNoSVD,
    blind_estimate,
    correlated_prior,
    expand,
    make_measurement,
    matrix_test_ops,
    random_wide_matrix,
    real_test_ops,
    sample_mean_error,
)

from diffinv import solvers

S6 = (1, 6, 6)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


SVD_OPS = {
    **matrix_test_ops(S6),
    **{k: v for k, v in real_test_ops().items() if getattr(v, "has_svd", False)},
}


@pytest.mark.parametrize("name", sorted(SVD_OPS))
def test_noiseless_consistency_eta_b_one(name):
    op = SVD_OPS[name]
    prior = correlated_prior(op.in_shape)
    _, y = make_measurement(op, prior, 0.0, seed=1, batch=2)
    x = solvers.get("ddrm", prior, steps=10)(y, op, generator=gen(0))
    res = (op.A(x) - y).flatten(1).norm(dim=1)
    assert (res <= 1e-4 * y.flatten(1).norm(dim=1)).all(), res


@pytest.mark.parametrize("sigma_y", [0.05, 0.1])
@pytest.mark.parametrize("name", sorted(SVD_OPS))
def test_ddrm_beats_blind_estimate_noisy(name, sigma_y):
    op = SVD_OPS[name]
    prior = correlated_prior(op.in_shape)
    _, y = make_measurement(op, prior, sigma_y, seed=10)
    mean, _ = prior.posterior(op, y, sigma_y)
    base = float((blind_estimate(op, y, prior) - mean).norm())
    xs = solvers.get("ddrm", prior)(expand(y, 200), op, sigma_y=sigma_y, generator=gen(4))
    err = sample_mean_error(xs, mean)
    ref = float((prior.mean[None] - mean).norm())
    print(
        f"\n[usefulness sigma_y={sigma_y} {name}] ddrm {err:.4f}  blind baseline {base:.4f}  "
        f"(prior mean {ref:.4f})"
    )
    assert err < base


def test_ddrm_noiseless_beats_blind_estimate():
    op = matrix_test_ops(S6)["wide"]
    prior = correlated_prior(S6)
    _, y = make_measurement(op, prior, 0.0, seed=9)
    mean, _ = prior.posterior(op, y, 0.0)
    base = float((blind_estimate(op, y, prior) - mean).norm())
    err = sample_mean_error(solvers.get("ddrm", prior)(expand(y, 200), op, generator=gen(3)), mean)
    print(f"\n[usefulness noiseless wide] ddrm {err:.4f}  blind baseline {base:.4f}")
    assert err < base


def test_non_svd_operator_is_refused_with_alternatives():
    op = DenseNoSVD(random_wide_matrix(36, 12, seed=3), S6)
    prior = correlated_prior(S6)
    _, y = make_measurement(op, prior, 0.0, seed=2)
    with pytest.raises(ValueError, match="SVD") as info:
        solvers.get("ddrm", prior)(y, op)
    msg = str(info.value)
    assert "ddnm" in msg and "ddnm+" in msg and "ddrm," not in msg


def test_determinism_nfe_and_params():
    op = matrix_test_ops(S6)["select"]
    prior = correlated_prior(S6)
    _, y = make_measurement(op, prior, 0.05, seed=3, batch=2)
    solver = solvers.get("ddrm", prior, steps=15)
    a = solver(y, op, sigma_y=0.05, generator=gen(1))
    b = solver(y, op, sigma_y=0.05, generator=gen(1))
    c = solver(y, op, sigma_y=0.05, generator=gen(2))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert solver.last_nfe == 15
    with pytest.raises(ValueError, match="eta_b"):
        solvers.get("ddrm", prior, eta_b=1.5)
    with pytest.raises(ValueError, match="unknown parameter"):
        solvers.get("ddrm", prior, travel_length=2)


def test_eta_b_zero_noiseless_does_not_project():
    """eta_b = 0, sigma_y = 0: observed coordinates follow the prior's estimate, not y_bar (eq. 8)."""
    op = matrix_test_ops(S6)["select"]
    prior = correlated_prior(S6)
    _, y = make_measurement(op, prior, 0.0, seed=4, batch=2)
    x = solvers.get("ddrm", prior, steps=10, eta_b=0.0)(y, op, generator=gen(5))
    assert torch.isfinite(x).all()
    assert (op.A(x) - y).abs().max() > 1e-3  # not projected
