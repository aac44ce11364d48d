"""Unconditional samplers reproduce a Gaussian prior's moments; determinism; callbacks.

Statistical basis (N i.i.d. samples of a Gaussian with covariance S):
  * standard error of a sample mean entry:       sqrt(S_ii / N)
  * standard error of a sample covariance entry: sqrt((S_ii S_jj + S_ij^2) / (N - 1))
    (for a variance: S_ii sqrt(2 / (N - 1))).
Tolerances are 5 standard errors (a 5-sigma deviation has probability < 1e-6 per entry; the seeds
are fixed anyway) plus the sampler's *discretisation bias*. For a Gaussian prior every DDPM/DDIM
step is affine in x plus independent Gaussian noise and the denoiser is diagonal in the
eigenbasis of the covariance, so the exact output mean/covariance of the sampler (including its
bias from finitely many steps, the final Tweedie step and the N(0, I) start) is computed below by
a scalar recursion per eigen-direction (written from the papers' equations). We check both
  (a) Monte Carlo moments == the sampler's exact output moments (within 5 SE), and
  (b) Monte Carlo moments == the prior's moments within 5 SE + |exact bias|, with the bias itself
      small (the step counts are chosen so that it is at most a few percent of the variance).
"""

from __future__ import annotations

import pytest
import torch

from diffinv.priors import GaussianPrior, VESchedule, ddim_sample, ddpm_sample, ve_pc_sample
from diffinv.priors.base import Prior

N = 4000
SHAPE = (2, 2, 2)


@pytest.fixture(scope="module")
def gauss():
    g = torch.Generator().manual_seed(0)
    n = 8
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    cov = 0.015 * (A @ A.T / n + 0.5 * torch.eye(n, dtype=torch.float64))  # model-space eigs 0.03..0.26
    mean = 0.3 + 0.4 * torch.rand(n, generator=g, dtype=torch.float64)
    prior = GaussianPrior(mean.reshape(SHAPE), cov, scale=0.5, shift=0.5)  # model space [-1, 1]
    return prior, mean, cov


def exact_output_moments(prior: GaussianPrior, sampler: str, steps: int | None, eta: float = 0.0):
    """Exact image-space mean and covariance of the DDPM / DDIM output for a GaussianPrior."""
    sch = prior.schedule
    lam, Q = torch.linalg.eigh(prior.cov / prior.scale**2)  # model-space covariance
    m = Q.T @ ((prior.mean.reshape(-1) - prior.shift) / prior.scale)  # eigen-coordinates
    ts = list(range(sch.T - 1, -1, -1)) if steps is None else [int(t) for t in sch.timesteps(steps)]
    mu = torch.zeros_like(m)
    v = torch.ones_like(m)
    for i, t in enumerate(ts):
        ab = sch.alpha_bar(t)
        abp = sch.alpha_bar(ts[i + 1]) if i + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)
        last = i + 1 == len(ts)
        s = ab.sqrt()
        gain = s * lam / (ab * lam + 1 - ab)  # x0hat = gain x + (1 - gain s) m
        a0, b0 = gain, (1 - gain * s) * m
        ae, be = (1 - s * a0) / (1 - ab).sqrt(), -s * b0 / (1 - ab).sqrt()  # eps = (x - s x0hat)/sqrt(1-ab)
        if sampler == "ddpm":  # Ho et al. eq. 11 with respaced beta and posterior variance beta~
            beta = 1 - ab / abp
            a = (1 - beta / (1 - ab).sqrt() * ae) / (1 - beta).sqrt()
            b = -beta / (1 - ab).sqrt() * be / (1 - beta).sqrt()
            noise = 0.0 if last else (1 - abp) / (1 - ab) * beta
        else:  # DDIM eq. 12 with sigma_t(eta) of eq. 16; the output is the last x0hat
            if last:
                a, b, noise = a0, b0, 0.0
            else:
                sig2 = eta**2 * (1 - abp) / (1 - ab) * (1 - ab / abp)
                c = (1 - abp - sig2).clamp_min(0).sqrt()
                a, b, noise = abp.sqrt() * a0 + c * ae, abp.sqrt() * b0 + c * be, sig2
        mu, v = a * mu + b, a * a * v + noise
    mean_img = prior.scale * (Q @ mu) + prior.shift
    cov_img = prior.scale**2 * (Q * v) @ Q.T
    return mean_img, cov_img


def _moments(x):
    x = x.reshape(x.shape[0], -1).double()
    return x.mean(0), torch.cov(x.T)


def _se(cov, n):
    d = cov.diag()
    return (d / n).sqrt(), ((d[:, None] * d[None, :] + cov**2) / (n - 1)).sqrt()


def _check(x, mean, cov, exact_mean, exact_cov, max_rel_bias):
    m_hat, c_hat = _moments(x)
    se_m, se_c = _se(exact_cov, x.shape[0])
    # (a) the sampler's own exact output distribution
    assert ((m_hat - exact_mean).abs() <= 5 * se_m).all(), (m_hat - exact_mean) / se_m
    assert ((c_hat - exact_cov).abs() <= 5 * se_c).all(), (c_hat - exact_cov) / se_c
    # (b) the prior, with the discretisation bias added to the tolerance; the bias is small
    bias_m, bias_c = (exact_mean - mean).abs(), (exact_cov - cov).abs()
    assert ((m_hat - mean).abs() <= 5 * se_m + bias_m).all()
    assert ((c_hat - cov).abs() <= 5 * se_c + bias_c).all()
    assert bias_c.max() <= max_rel_bias * cov.diag().max()
    assert (bias_c.diag() <= max_rel_bias * cov.diag()).all()


def test_ddpm_reproduces_gaussian(gauss):
    prior, mean, cov = gauss
    x = ddpm_sample(prior, N, torch.Generator().manual_seed(1), steps=500, clamp=False, dtype=torch.float64)
    assert x.shape == (N, *SHAPE)
    em, ec = exact_output_moments(prior, "ddpm", 500)
    _check(x, mean, cov, em, ec, max_rel_bias=0.06)


def test_ddim_reproduces_gaussian(gauss):
    prior, mean, cov = gauss
    x = ddim_sample(prior, N, torch.Generator().manual_seed(2), steps=200, clamp=False, dtype=torch.float64)
    em, ec = exact_output_moments(prior, "ddim", 200)
    _check(x, mean, cov, em, ec, max_rel_bias=0.06)


def test_ddim_eta1_matches_exact_recursion(gauss):
    prior, mean, cov = gauss
    x = ddim_sample(
        prior, N, torch.Generator().manual_seed(3), steps=100, eta=1.0, clamp=False, dtype=torch.float64
    )
    em, ec = exact_output_moments(prior, "ddim", 100, eta=1.0)
    _check(x, mean, cov, em, ec, max_rel_bias=0.3)  # 100 stochastic steps: ~20% known bias


def test_ddim_few_steps_bias_is_real(gauss):
    # with 10 deterministic steps the exact output variance is visibly off (why we use 200 above)
    prior, _, cov = gauss
    _, ec = exact_output_moments(prior, "ddim", 10)
    assert (ec.diag() / cov.diag()).min() < 0.8


def test_ve_pc_reproduces_gaussian_loosely(gauss):
    # Looser: the Langevin corrector with a finite snr adds an O(step) bias of its own and its
    # step size depends on the batch (norm ratio), so no exact recursion; measured with 20000
    # samples the variance is ~3-7% too large at 200 steps. Tolerance: 5 SE + 12% of the variance.
    prior, mean, cov = gauss
    x = ve_pc_sample(prior, N, torch.Generator().manual_seed(4), steps=200, clamp=False, dtype=torch.float64)
    m_hat, c_hat = _moments(x)
    se_m, se_c = _se(cov, N)
    assert ((m_hat - mean).abs() <= 5 * se_m + 0.02 * cov.diag().sqrt()).all()
    tol = 5 * se_c + 0.12 * (cov.diag()[:, None] * cov.diag()[None, :]).sqrt()
    assert ((c_hat - cov).abs() <= tol).all(), (c_hat - cov) / se_c


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ddim_eta", "ve_pc"])
def test_determinism_and_callback(gauss, sampler):
    prior = gauss[0]
    fns = {
        "ddpm": lambda g, **kw: ddpm_sample(prior, 3, g, steps=20, **kw),
        "ddim": lambda g, **kw: ddim_sample(prior, 3, g, steps=10, **kw),
        "ddim_eta": lambda g, **kw: ddim_sample(prior, 3, g, steps=10, eta=0.5, **kw),
        "ve_pc": lambda g, **kw: ve_pc_sample(prior, 3, g, steps=10, **kw),
    }
    f = fns[sampler]
    calls = []
    a = f(
        torch.Generator().manual_seed(7),
        callback=lambda e: calls.append((e["step"], e["x_t"].shape, e["x0"].shape)),
    )
    b = f(torch.Generator().manual_seed(7), progress=True)
    c = f(torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 1
    n_steps = 20 if sampler == "ddpm" else 10
    assert [i for i, _, _ in calls] == list(range(n_steps))
    assert all(s == (3, *SHAPE) and s0 == (3, *SHAPE) for _, s, s0 in calls)


def test_nfe_counts(gauss):
    prior = gauss[0]
    prior.reset_nfe()
    ddim_sample(prior, 2, torch.Generator().manual_seed(0), steps=25)
    assert prior.nfe == 25
    prior.reset_nfe()
    ddpm_sample(prior, 2, torch.Generator().manual_seed(0), steps=10)
    assert prior.nfe == 10
    prior.reset_nfe()
    ve_pc_sample(prior, 2, torch.Generator().manual_seed(0), steps=10, corrector_steps=2)
    assert prior.nfe == 10 * 2 + 9 + 1  # correctors, predictors, final denoise


def test_samplers_run_on_networks(tiny_unet):
    # VP sampler on a VE network and VE sampler on a VP network (shape / finiteness / clamping)
    from diffinv.priors import NetworkPrior, VPSchedule

    ve_prior = NetworkPrior(tiny_unet(fourier=True), VESchedule(0.01, 20.0, 50), data_range=(0, 1))
    vp_prior = NetworkPrior(tiny_unet(), VPSchedule.linear(1000))
    for x in (
        ddim_sample(ve_prior, 2, torch.Generator().manual_seed(0), steps=5),
        ve_pc_sample(vp_prior, 2, torch.Generator().manual_seed(0), steps=5),
    ):
        assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()
        assert x.min() >= 0 and x.max() <= 1


def test_sampler_generator_device_and_errors(gauss):
    prior = gauss[0]
    with pytest.raises(ValueError):
        ddim_sample(prior, 0, torch.Generator())
    with pytest.raises(ValueError):
        ddim_sample(prior, 1, torch.Generator(), eta=-1)
    with pytest.raises(ValueError):
        ve_pc_sample(prior, 1, torch.Generator(), snr=0)

    # a Prior subclass without parameters/buffers still samples on CPU
    class Zero(Prior):
        def _x0(self, x_t, t):
            return torch.zeros_like(x_t)

    from diffinv.priors import VPSchedule

    out = ddim_sample(Zero(VPSchedule.linear(10), (1, 2, 2)), 2, torch.Generator().manual_seed(0), steps=5)
    assert torch.allclose(out, torch.full_like(out, 0.5))
