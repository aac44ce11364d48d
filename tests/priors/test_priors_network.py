"""NetworkPrior: VP eps networks, learned sigma, VE score networks, VP <-> VE, spaces, dtypes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffinv import priors
from diffinv.priors import GaussianPrior, NetworkPrior, VESchedule, VPSchedule


def test_diffusers_vp_eps(tiny_unet):
    net = tiny_unet()
    prior = NetworkPrior(net, VPSchedule.linear(1000))
    assert prior.image_shape == (3, 16, 16) and prior.scale == 0.5 and prior.shift == 0.5
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([3, 999])
    with torch.no_grad():
        ref = net(x, t).sample
    assert torch.equal(prior.eps(x, t), ref)
    assert prior.nfe == 1
    # scalar t, x0 is Tweedie of eps
    ab = prior.schedule.alpha_bar(7).float()
    with torch.no_grad():
        e7 = net(x, torch.tensor([7, 7])).sample
    raw = (x - (1 - ab).sqrt() * e7) / ab.sqrt()
    # x0 is clipped to the model's data range [-1, 1] by default (DDPM's clip_denoised) ...
    assert torch.allclose(prior.x0(x, 7), raw.clamp(-1, 1), atol=1e-6)
    assert prior.nfe == 2
    # ... and exactly Tweedie's formula without it
    prior.clip_x0 = False
    assert torch.allclose(prior.x0(x, 7), raw, atol=1e-6)
    prior.nfe = 2
    prior.reset_nfe()
    assert prior.nfe == 0


def test_learned_sigma_uses_eps_half(tiny_unet):
    net = tiny_unet(out_channels=6)
    prior = NetworkPrior(net, VPSchedule.linear(1000))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = net(x, torch.tensor([5, 5])).sample[:, :3]
    assert torch.equal(prior.eps(x, 5), ref)


def test_dtype_and_device_follow_input(tiny_unet):
    prior = NetworkPrior(tiny_unet(), VPSchedule.linear(1000))
    x = torch.randn(1, 3, 16, 16)
    assert prior.eps(x.double(), 10).dtype == torch.float64
    prior.to(torch.float64)
    assert next(prior.net.parameters()).dtype == torch.float64
    out = prior.x0(x, 10)
    assert out.dtype == torch.float32 and out.device == x.device


def test_prediction_types():
    sched = VPSchedule.linear(100)
    out = torch.randn(2, 1, 2, 2)

    class Const(nn.Module):
        def forward(self, x, t):
            return out

    x = torch.randn(2, 1, 2, 2)
    ab = sched.alpha_bar(40).float()
    p_x0 = NetworkPrior(Const(), sched, (1, 2, 2), prediction="sample", clip_x0=False)
    assert torch.allclose(p_x0.x0(x, 40), out)
    assert torch.allclose(p_x0.eps(x, 40), (x - ab.sqrt() * out) / (1 - ab).sqrt(), atol=1e-6)
    p_v = NetworkPrior(Const(), sched, (1, 2, 2), prediction="v_prediction", clip_x0=False)
    eps, x0 = p_v.eps(x, 40), p_v.x0(x, 40)
    # x_t = sqrt(ab) x0 + sqrt(1-ab) eps and v = sqrt(ab) eps - sqrt(1-ab) x0
    assert torch.allclose(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, x, atol=1e-5)
    assert torch.allclose(ab.sqrt() * eps - (1 - ab).sqrt() * x0, out, atol=1e-5)
    with pytest.raises(ValueError):
        NetworkPrior(Const(), sched, (1, 2, 2), prediction="score")
    with pytest.raises(ValueError):
        NetworkPrior(Const(), VESchedule(0.01, 10, 10), (1, 2, 2), prediction="epsilon")


def test_vp_prior_ve_view_matches_vp_view(tiny_unet):
    prior = NetworkPrior(tiny_unet(), VPSchedule.linear(1000), clip_x0=False)  # exact identities
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    prior.to(torch.float64)
    for t in (0, 250, 999):
        ab = prior.schedule.alpha_bar(t)
        assert torch.allclose(prior.x0_ve(x / ab.sqrt(), t), prior.x0(x, t), atol=1e-10)
        sig2 = (1 - ab) / ab
        # score_ve = (x0 - x)/sigma^2 and score_vp = score_ve / sqrt(ab)
        assert torch.allclose(prior.score_ve(x / ab.sqrt(), t) / ab.sqrt(), prior.score(x, t), atol=1e-8)
        xve = x / ab.sqrt()
        assert torch.allclose(prior.score_ve(xve, t), (prior.x0_ve(xve, t) - xve) / sig2, atol=1e-10)


def test_ve_score_network_conversion(tiny_unet):
    net = tiny_unet(fourier=True)
    ve = VESchedule(0.01, 50.0, 100)
    prior = NetworkPrior(net, ve, data_range=(0, 1), clip_x0=False)  # exact identities
    assert prior.is_ve and prior.scale == 1.0 and prior.shift == 0.0
    assert prior.schedule.T == 100
    assert torch.allclose(prior.schedule.sigmas, ve.sigmas, rtol=1e-9)
    x_vp = torch.randn(2, 3, 16, 16)
    t = torch.tensor([5, 80])
    ab = prior.alpha_bar(t, x_vp)
    sigma = ve.sigmas[t].float().reshape(-1, 1, 1, 1)
    with torch.no_grad():
        score = net(x_vp / ab.sqrt(), ve.sigmas[t].float()).sample
    # eps_vp(x_vp, t) = -sigma_t * score(x_vp / sqrt(abar_t), sigma_t)
    assert torch.allclose(prior.eps(x_vp, t), -sigma * score, atol=1e-6)
    # same x0 through both views at the same level
    x_ve = x_vp / ab.sqrt()
    assert torch.allclose(prior.x0(x_vp, t), prior.x0_ve(x_ve, t), rtol=1e-5, atol=1e-5)
    assert torch.allclose(prior.x0_ve(x_ve, t), x_ve + sigma**2 * score, rtol=1e-5, atol=1e-5)
    assert torch.allclose(prior.score_ve(x_ve, t), score, atol=1e-6)
    # VP score = score_ve / sqrt(abar)
    assert torch.allclose(prior.score(x_vp, t), score / ab.sqrt(), rtol=1e-4, atol=1e-5)
    # the base-class VE view (through the VP state) agrees with the direct one
    from diffinv.priors.base import Prior

    assert torch.allclose(Prior.x0_ve(prior, x_ve, t), prior.x0_ve(x_ve, t), rtol=1e-4, atol=1e-4)


def test_ve_network_is_a_score_for_diffusers_scheduler(tiny_unet):
    # ScoreSdeVeScheduler.step_pred uses the model output as the score: its predictor mean is
    # x + (sigma_k^2 - sigma_{k-1}^2) * output. Our VE view must hand the same number to samplers.
    from diffusers import ScoreSdeVeScheduler

    net = tiny_unet(fourier=True)
    N = 50
    sch = ScoreSdeVeScheduler(num_train_timesteps=N, sigma_min=0.01, sigma_max=50.0)
    sch.set_timesteps(N)
    sch.set_sigmas(N)
    prior = NetworkPrior(net, VESchedule(0.01, 50.0, N), data_range=(0, 1))
    x = torch.randn(1, 3, 16, 16) * 5
    i = 10
    k = int((sch.timesteps[i] * (N - 1)).long())
    sigma = sch.discrete_sigmas[k]
    with torch.no_grad():
        out = net(x, sigma * torch.ones(1)).sample
    res = sch.step_pred(out, sch.timesteps[i], x, generator=torch.Generator().manual_seed(0))
    ours = x + (prior.schedule.sigmas[k] ** 2 - prior.schedule.sigmas[k - 1] ** 2).float() * prior.score_ve(
        x, k
    )
    assert torch.allclose(res.prev_sample_mean, ours, rtol=1e-4, atol=1e-3)


class GaussEpsNet(nn.Module):
    """The exact eps-predictor of x_0 ~ N(mean, cov) under a VP schedule, by Gaussian conditioning."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor, schedule: VPSchedule):
        super().__init__()
        self.mean, self.cov, self.schedule = mean.double(), cov.double(), schedule

    def forward(self, x, t):
        B, n = x.shape[0], self.mean.numel()
        xt = x.reshape(B, n).double()
        out = []
        for b in range(B):
            ab = self.schedule.alpha_bar(int(t[b]))
            s = ab.sqrt()
            K = ab * self.cov + (1 - ab) * torch.eye(n, dtype=torch.float64)
            x0 = self.mean + s * self.cov @ torch.linalg.solve(K, xt[b] - s * self.mean)
            out.append((xt[b] - s * x0) / (1 - ab).sqrt())
        return torch.stack(out).reshape(x.shape).to(x.dtype)


def _gauss(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    cov = 0.01 * (A @ A.T / n + 0.2 * torch.eye(n, dtype=torch.float64))
    mean = 0.3 + 0.4 * torch.rand(n, generator=g, dtype=torch.float64)
    return mean, cov


def test_model_space_network_matches_image_space_gaussian():
    # network in [-1, 1] model space: data z0 = 2 x0 - 1 ~ N(2m - 1, 4C)
    mean, cov = _gauss()
    sched = VPSchedule.linear(1000)
    shape = (2, 2, 2)
    net_prior = NetworkPrior(
        GaussEpsNet(2 * mean - 1, 4 * cov, sched), sched, shape, data_range=(-1, 1), clip_x0=False
    )
    g_prior = GaussianPrior(mean.reshape(shape), cov, sched, scale=0.5, shift=0.5)
    z = torch.randn(3, *shape, dtype=torch.float64)
    for t in (0, 100, 500, 999):
        assert torch.allclose(net_prior.x0_image(z, t), g_prior.x0_image(z, t), atol=1e-10)

    # against an image-space GaussianPrior (scale 1, shift 0): corresponding VE states
    # x_img = x0 + (sigma/2) n  <->  z = 2 x_img - 1 = z0 + sigma n, i.e. schedules whose sigmas differ by 2.
    sig = VPSchedule.linear(1000).sigmas
    img_prior = GaussianPrior(mean.reshape(shape), cov, VPSchedule.from_sigmas(sig / 2))
    model_sched = VPSchedule.from_sigmas(sig)
    net_prior2 = NetworkPrior(
        GaussEpsNet(2 * mean - 1, 4 * cov, model_sched), model_sched, shape, clip_x0=False
    )
    x_img = torch.rand(3, *shape, dtype=torch.float64)
    for t in (0, 100, 500, 999):
        a = net_prior2.to_image(net_prior2.x0_ve(2 * x_img - 1, t))
        b = img_prior.x0_ve(x_img, t)
        assert torch.allclose(a, b, atol=1e-8)


def test_network_prior_errors(tiny_unet):
    class NoShape(nn.Module):
        def forward(self, x, t):
            return x

    with pytest.raises(ValueError, match="image_shape"):
        NetworkPrior(NoShape(), VPSchedule.linear(10))
    with pytest.raises(ValueError, match="data_range"):
        NetworkPrior(NoShape(), VPSchedule.linear(10), (1, 2, 2), data_range=(1, 0))
    with pytest.raises(TypeError):
        NetworkPrior(NoShape(), "linear", (1, 2, 2))

    class Wrong(nn.Module):
        def forward(self, x, t):
            return torch.zeros(x.shape[0], 5, *x.shape[2:])

    p = NetworkPrior(Wrong(), VPSchedule.linear(10), (1, 2, 2))
    with pytest.raises(ValueError, match="channels"):
        p.eps(torch.zeros(1, 1, 2, 2), 3)
    assert "VP prediction=epsilon" in repr(priors.NetworkPrior(NoShape(), VPSchedule.linear(10), (1, 2, 2)))


@pytest.mark.parametrize("fourier", [False, True])
def test_x0_is_clipped_to_the_data_range_by_default(tiny_unet, fourier):
    sched = VESchedule(0.01, 50.0, 100) if fourier else VPSchedule.linear(1000)
    lo, hi = (0.0, 1.0) if fourier else (-1.0, 1.0)
    prior = NetworkPrior(tiny_unet(fourier=fourier), sched, data_range=(lo, hi))
    raw = NetworkPrior(prior.net, sched, data_range=(lo, hi), clip_x0=False)
    x = 30 * torch.randn(2, 3, 16, 16)
    for t in (1, prior.schedule.T - 1):
        for view in ("x0", "x0_ve"):
            clipped, unclipped = getattr(prior, view)(x, t), getattr(raw, view)(x, t)
            assert clipped.min() >= lo and clipped.max() <= hi
            assert torch.allclose(clipped, unclipped.clamp(lo, hi))
            assert (unclipped.abs() > hi).any()  # the test would be empty otherwise
    assert torch.equal(prior.eps(x, 10), raw.eps(x, 10))  # eps is never clipped
