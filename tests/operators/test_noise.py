"""Photon-count (Poisson) CT noise and the whitened operator of weighted least squares."""

import math
import sys
from pathlib import Path

import pytest
import torch

from diffinv.operators import from_spec
from diffinv.operators.noise import (
    WEIGHTED_METHODS,
    PoissonNoise,
    WeightedOperator,
    effective_sigma,
    whitening_weights,
)


def _x(size=16):
    return torch.rand(1, 1, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def test_poisson_statistics_match_the_delta_method():
    op = from_spec("ct6-fan", (1, 16, 16))
    noise = PoissonNoise(photons=1e4, attenuation=4.0)
    assert math.isclose(noise.kappa(op), 0.25)
    x = _x().expand(4000, -1, -1, -1)
    y, var = noise.measure(op, x, torch.Generator().manual_seed(1))
    truth = op.A(x[:1])
    # Unbiased to O(1/I0) and the per-bin variance ~ 1 / (counts kappa^2) (measured within 3%).
    assert float(((y.mean(0) - truth[0]).abs() / var.mean(0).sqrt()).max()) < 0.3
    ratio = y.var(0) / var.mean(0)
    assert 0.85 < float(ratio.mean()) < 1.15


def test_counts_reproducible_and_zero_counts_clamped():
    op = from_spec("ct4", (1, 16, 16))
    noise = PoissonNoise(photons=50.0, attenuation=40.0)  # very absorbing: many zero counts
    c1 = noise.counts(op, _x(), torch.Generator().manual_seed(3))
    c2 = noise.counts(op, _x(), torch.Generator().manual_seed(3))
    assert torch.equal(c1, c2) and bool((c1 == 0).any())
    y, var = noise.from_counts(op, c1)
    assert torch.isfinite(y).all() and torch.isfinite(var).all()
    k = noise.kappa(op)
    assert float(y.max()) == pytest.approx(math.log(50.0) / k)  # zero counts read as one photon
    with pytest.raises(ValueError, match="photon count I0"):
        PoissonNoise(photons=0)
    with pytest.raises(ValueError, match="counts must be finite and >= 0"):
        noise.from_counts(op, -c1 - 1)


def test_weighted_operator_is_exact_and_whitens():
    op = from_spec("ct8-fan", (1, 16, 16))
    y, var = PoissonNoise(1e3).measure(op, _x(), torch.Generator().manual_seed(2))
    w = whitening_weights(var)
    assert float(w.mean()) == pytest.approx(1.0)
    wop = WeightedOperator(op, w)
    assert wop.spec == "ct8-fan"
    g = torch.Generator().manual_seed(4)
    a = torch.randn(2, *op.in_shape, dtype=torch.float64, generator=g)
    b = torch.randn(2, *op.out_shape, dtype=torch.float64, generator=g)
    assert abs(float((wop.A(a) * b).sum() - (a * wop.At(b)).sum())) <= 1e-10 * float(
        wop.A(a).norm() * b.norm()
    )
    assert torch.allclose(wop.initial_estimate(wop.whiten(y)), op.fbp(y))
    assert effective_sigma(var) == pytest.approx(float(var.mean().sqrt()))
    with pytest.raises(ValueError, match="weights must be positive"):
        WeightedOperator(op, w[..., :3])


def test_weighted_fista_tv_at_low_dose():
    from diffinv import pipeline
    from diffinv.data.ellipses import random_phantoms

    x = random_phantoms(1, size=32, generator=torch.Generator().manual_seed(0))
    r = pipeline.degrade_and_restore(x, "ct12", "fista-tv", None, seed=0, noise=PoissonNoise(1e3), iters=40)
    fbp = pipeline.degrade_and_restore(x, "ct12", "pinv", None, seed=0, noise=PoissonNoise(1e3))
    assert r.metrics["psnr"] > fbp.metrics["psnr"] + 2.0


@pytest.mark.parametrize("spec", ["ct8", "ct8-fan"])
def test_weighted_operator_pinv_and_spectrum_match_the_dense_matrix(spec):
    """The closed-form pseudo-inverse of W^(1/2) A agrees with numpy's on the dense matrix, and the
    spectral view gives its singular values (what DDNM+ computes its noise scaling from)."""
    from diffinv.operators.base import dense_matrix

    op = from_spec(spec, (1, 12, 12))
    _, var = PoissonNoise(1e3).measure(op, _x(12).double(), torch.Generator().manual_seed(2))
    wop = WeightedOperator(op, whitening_weights(var))
    M = dense_matrix(wop)  # (m, n) float64
    Mp = torch.linalg.pinv(M, rtol=1e-10)
    y = torch.randn(3, *op.out_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    got = wop.pinv(y).reshape(3, -1)
    want = y.reshape(3, -1) @ Mp.T
    assert torch.allclose(got, want, atol=1e-8 * float(want.abs().max()))
    s, Vt, V = wop.spectral_view(y)
    ref = torch.linalg.svdvals(M)
    assert torch.allclose(s, ref[: s.numel()], rtol=1e-8, atol=1e-10 * float(ref[0]))
    x = torch.randn(2, *op.in_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    # V V^T is a projector; 1e-8: the weighted Gram has condition ~3e4, LAPACK builds differ near 1e-9
    assert torch.allclose(V(Vt(V(Vt(x)))), V(Vt(x)), atol=1e-8)
    gamma = 0.3  # damped: A^T (A A^T + gamma I)^{-1} r
    u = torch.linalg.solve(M @ M.T + gamma * torch.eye(M.shape[0], dtype=M.dtype), y.reshape(3, -1).T)
    assert torch.allclose(wop.damped_pinv(y, gamma).reshape(3, -1), (M.T @ u).T, atol=1e-8)


def test_ddnm_plus_uses_the_weighted_problem_with_poisson_noise(monkeypatch):
    from diffinv import pipeline

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "solvers"))
    from problems import correlated_prior

    assert {"ddnm+", "dds", "fista-tv"} <= set(WEIGHTED_METHODS)
    seen = []
    spectral_view = WeightedOperator.spectral_view

    def spy(self, like):
        seen.append(self.inner.spec)
        return spectral_view(self, like)

    monkeypatch.setattr(WeightedOperator, "spectral_view", spy)
    x = _x(16).float()
    r = pipeline.degrade_and_restore(
        x, "ct8", "ddnm+", correlated_prior((1, 16, 16)), seed=0, noise=PoissonNoise(1e3), steps=2
    )
    assert torch.isfinite(r.x_hat).all() and r.x_hat.shape == x.shape
    assert seen and set(seen) == {"ct8"}  # DDNM+'s noise scaling came from the SVD of W^(1/2) A


def test_dds_data_step_uses_the_whitened_operator_with_poisson_noise(monkeypatch):
    """DDS's data step argmin ||y - A x||^2 + gamma ||x - x0||^2 assumes white noise: under Poisson
    noise it must run on W^(1/2) A (its damped pseudo-inverse), not on A."""
    from diffinv import pipeline

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "solvers"))
    from problems import correlated_prior

    method = "dds"
    assert method in WEIGHTED_METHODS
    seen = []
    damped = WeightedOperator._damped_pinv

    def spy(self, r, gamma):
        seen.append(gamma)
        return damped(self, r, gamma)

    monkeypatch.setattr(WeightedOperator, "_damped_pinv", spy)
    x = _x(16).float()
    r = pipeline.degrade_and_restore(
        x, "ct8", method, correlated_prior((1, 16, 16)), seed=0, noise=PoissonNoise(1e3), steps=3
    )
    assert torch.isfinite(r.x_hat).all() and r.x_hat.shape == x.shape
    assert len(seen) == 3 and all(g > 0 for g in seen)  # one damped (noisy) data step per level


def test_weighted_solve_draws_independent_samples_for_repeated_rows():
    """``solve_with_variance`` solves weighted methods row by row; repeated rows of y (K posterior
    samples of one scan) must get different noise, as they would in one batched call, and a
    deterministic row must not depend on which row it is in."""
    from diffinv import pipeline
    from diffinv.solvers import get

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "solvers"))
    from problems import correlated_prior

    op = from_spec("ct8", (1, 16, 16))
    y, var = PoissonNoise(1e3).measure(op, _x(16).float(), torch.Generator().manual_seed(1))
    y3, var3 = y.repeat(3, 1, 1, 1), var.repeat(3, 1, 1, 1)
    solver = get("ddnm+", correlated_prior((1, 16, 16)), steps=3)
    x = pipeline.solve_with_variance(y3, op, solver, var3, seed=0).x
    assert (x[0] - x[1]).abs().max() > 1e-3 and (x[1] - x[2]).abs().max() > 1e-3
    tv = pipeline.solve_with_variance(y3, op, get("fista-tv", iters=5), var3, seed=0).x
    torch.testing.assert_close(tv[0], tv[2], rtol=0, atol=1e-6)
