"""GaussianPrior against independent computations: joint-Gaussian conditioning and information form."""

from __future__ import annotations

import pytest
import torch

from diffinv.operators.base import LinearOperator
from diffinv.priors import GaussianPrior, VPSchedule

SHAPE = (1, 2, 3)
N_DIM = 6


def _mean_cov(seed=0, diagonal=False):
    g = torch.Generator().manual_seed(seed)
    mean = 0.2 + 0.6 * torch.rand(N_DIM, generator=g, dtype=torch.float64)
    if diagonal:
        return mean, 0.005 + 0.05 * torch.rand(N_DIM, generator=g, dtype=torch.float64)
    A = torch.randn(N_DIM, N_DIM, generator=g, dtype=torch.float64)
    return mean, 0.02 * (A @ A.T / N_DIM + 0.1 * torch.eye(N_DIM, dtype=torch.float64))


def conditional_mean_joint(m, C, ab, x_t):
    """E[x0 | x_t] from the explicit joint covariance of (x0, x_t) = L (x0, eps):
    L = [[I, 0], [sqrt(ab) I, sqrt(1-ab) I]], Cov(x0, eps) = blockdiag(C, I)."""
    n = m.numel()
    eye = torch.eye(n, dtype=torch.float64)
    zero = torch.zeros(n, n, dtype=torch.float64)
    L = torch.cat([torch.cat([eye, zero], 1), torch.cat([ab**0.5 * eye, (1 - ab) ** 0.5 * eye], 1)], 0)
    S = torch.block_diag(C, eye)
    J = L @ S @ L.T
    mu = L @ torch.cat([m, torch.zeros(n, dtype=torch.float64)])
    J12, J22 = J[:n, n:], J[n:, n:]
    return mu[:n] + (J12 @ torch.linalg.solve(J22, (x_t - mu[n:]).T)).T


@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize("scale_shift", [(1.0, 0.0), (0.5, 0.5)])
def test_x0_is_conditional_mean(diagonal, scale_shift):
    scale, shift = scale_shift
    m, c = _mean_cov(1, diagonal)
    C = torch.diag(c) if diagonal else c
    sched = VPSchedule.linear(1000)
    prior = GaussianPrior(m.reshape(SHAPE), c if diagonal else C, sched, scale=scale, shift=shift)
    assert prior.diagonal == diagonal
    # model space: z0 = (x0 - shift)/scale ~ N((m - shift)/scale, C/scale^2)
    mz, Cz = (m - shift) / scale, C / scale**2
    g = torch.Generator().manual_seed(2)
    for t in (0, 10, 200, 600, 999):
        ab = sched.alpha_bar(t)
        z0 = mz + torch.randn(5, N_DIM, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(Cz).T
        zt = ab.sqrt() * z0 + (1 - ab).sqrt() * torch.randn(5, N_DIM, generator=g, dtype=torch.float64)
        ref = conditional_mean_joint(mz, Cz, ab, zt)
        got = prior.x0(zt.reshape(5, *SHAPE), t).reshape(5, -1)
        assert torch.allclose(got, ref, rtol=1e-8, atol=1e-10), t
        img = prior.x0_image(zt.reshape(5, *SHAPE), t).reshape(5, -1)
        assert torch.allclose(img, scale * ref + shift, rtol=1e-8, atol=1e-10)
        # batched t and float32 input
        tb = torch.full((5,), t)
        got32 = prior.x0(zt.float().reshape(5, *SHAPE), tb)
        assert got32.dtype == torch.float32
        assert torch.allclose(got32.double().reshape(5, -1), ref, rtol=1e-4, atol=1e-4)


def test_eps_and_score_consistent():
    m, C = _mean_cov(3)
    prior = GaussianPrior(m.reshape(SHAPE), C)
    x = torch.randn(4, *SHAPE, dtype=torch.float64)
    for t in (5, 500):
        ab = prior.schedule.alpha_bar(t)
        eps, x0 = prior.eps(x, t), prior.x0(x, t)
        assert torch.allclose(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, x, atol=1e-10)
        # score of N(s m, s^2 C + (1-ab) I): -K^{-1}(x - s m)
        K = ab * C + (1 - ab) * torch.eye(N_DIM, dtype=torch.float64)
        ref = -torch.linalg.solve(K, (x.reshape(4, -1) - ab.sqrt() * m).T).T
        assert torch.allclose(prior.score(x, t).reshape(4, -1), ref, rtol=1e-8, atol=1e-8)


class MatOp(LinearOperator):
    def __init__(self, A, in_shape):
        super().__init__(in_shape, (A.shape[0],))
        self.register_buffer("M", A)

    def _A(self, x):
        return x.reshape(x.shape[0], -1) @ self.M.T.to(x)

    def _At(self, y):
        return (y @ self.M.to(y)).reshape(y.shape[0], *self.in_shape)


@pytest.mark.parametrize("sigma_y", [0.05, 0.3])
def test_posterior_information_form(sigma_y):
    m, C = _mean_cov(4)
    g = torch.Generator().manual_seed(5)
    A = torch.randn(4, N_DIM, generator=g, dtype=torch.float64)
    op = MatOp(A, SHAPE)
    prior = GaussianPrior(m.reshape(SHAPE), C)
    y = torch.randn(3, 4, generator=g, dtype=torch.float64)
    mean, cov = prior.posterior(op, y, sigma_y)
    # information form: P = (C^-1 + A^T A / s^2)^-1, mean = P (C^-1 m + A^T y / s^2)
    Ci = torch.linalg.inv(C)
    P = torch.linalg.inv(Ci + A.T @ A / sigma_y**2)
    ref_mean = (P @ (Ci @ m[:, None] + A.T @ y.T / sigma_y**2)).T
    assert torch.allclose(cov, P, rtol=1e-7, atol=1e-10)
    assert torch.allclose(mean.reshape(3, -1), ref_mean, rtol=1e-7, atol=1e-9)


def test_posterior_noiseless_interpolates():
    m, C = _mean_cov(6)
    A = torch.eye(N_DIM, dtype=torch.float64)[:3]
    prior = GaussianPrior(m.reshape(SHAPE), C)
    y = torch.rand(2, 3, dtype=torch.float64)
    mean, cov = prior.posterior(MatOp(A, SHAPE), y, 0.0)
    assert torch.allclose(mean.reshape(2, -1)[:, :3], y, atol=1e-8)
    assert torch.allclose(cov[:3, :3], torch.zeros(3, 3, dtype=torch.float64), atol=1e-8)
