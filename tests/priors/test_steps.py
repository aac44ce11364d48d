"""The step layer (diffinv.priors.steps): the grid rule and the identities between the steps."""

from __future__ import annotations

import math

import pytest
import torch

from diffinv.priors import VPSchedule
from diffinv.priors import steps as S

F64 = torch.float64


def test_grid_rule():
    # step counts that divide T: uniform skip, the same under both spacings (DDIM / DDNM code)
    for n in (1, 4, 20, 100, 1000):
        t = S.grid_times(1000, n)
        assert torch.equal(t, S.grid_times(1000, n, "skip"))
        assert t[0] == 1000 - 1000 // n and t[-1] == 0 and (t[:-1] - t[1:] == 1000 // n).all()
    # others: today's rule starts at T - 1 (rounded linspace), "skip" at (S - 1) * (T // S)
    assert S.grid_times(1000, 3).tolist() == [999, 500, 0]
    assert S.grid_times(1000, 3, "skip").tolist() == [666, 333, 0]
    assert S.grid_times(1000, 99)[0] == 999 and S.grid_times(1000, 99, "skip")[0] == 980
    assert torch.equal(VPSchedule.linear(1000).timesteps(7), S.grid_times(1000, 7))
    for bad in (0, 1001):
        with pytest.raises(ValueError, match="num_steps"):
            S.grid_times(1000, bad)
    with pytest.raises(ValueError, match="spacing"):
        S.grid_times(1000, 10, "trailing")
    # VE grids: training levels up to T, continuous times beyond
    assert torch.equal(S.ve_times(1000, 10), S.grid_times(1000, 10))
    ve = S.ve_times(1000, 1500)
    assert ve.dtype == F64 and ve[0] == 999 and ve[-1] == 0 and len(ve) == 1500
    with pytest.raises(ValueError, match="VE sampler"):
        S.ve_times(1000, S.MAX_VE_STEPS + 1)


def test_time_grid():
    sched = VPSchedule.linear(1000)
    grid = S.TimeGrid(sched, 4)
    assert grid.times == [750, 500, 250, 0] and len(grid) == 4
    assert (
        grid.alpha_bars[:-1] == [float(sched.alpha_bar(t)) for t in grid.times] and grid.alpha_bars[-1] == 1.0
    )
    assert grid.sigmas[-1] == 0.0
    for a, s in zip(grid.alpha_bars, grid.sigmas):
        assert math.isclose(s, math.sqrt((1 - a) / a), rel_tol=1e-14)
    steps = list(grid)
    assert [s.i for s in steps] == [0, 1, 2, 3] and [s.last for s in steps] == [False] * 3 + [True]
    assert steps[1].ab_prev == steps[2].ab_t and steps[3].ab_prev == 1.0 and steps[3].sigma_prev == 0.0
    with pytest.raises(IndexError):
        grid[4]
    cont = S.TimeGrid(sched, 2000, continuous=True)
    assert isinstance(cont.times[0], int) and isinstance(cont.times[1], float)
    assert all(b < a for a, b in zip(cont.sigmas, cont.sigmas[1:]))


@pytest.mark.parametrize("variance", S.VARIANCES)
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_coefficients_keep_the_marginal_variance(variance, eta):
    ab_t, ab_prev = 0.3, 0.6
    sigma, c = S.ddim_coefficients(ab_t, ab_prev, eta, variance)
    assert math.isclose(sigma**2 + c**2, 1 - ab_prev, rel_tol=1e-12)
    assert S.ddim_coefficients(ab_t, 1.0, eta, variance) == (0.0, 0.0)  # last step: x0 itself
    with pytest.raises(ValueError, match="variance"):
        S.ddim_coefficients(ab_t, ab_prev, eta, "ddpm")


def test_ddim_with_eta_one_is_the_ddpm_step():
    """DDIM (eta = 1) on the eps consistent with x0 and the eps-form DDPM step have the same mean
    and the same noise: both are the posterior q(x_prev | x_t, x0) of a respaced DDPM."""
    g = torch.Generator().manual_seed(0)
    x_t, eps, z = (torch.randn(3, 1, 4, 4, generator=g, dtype=F64) for _ in range(3))
    ab_t, ab_prev = 0.2, 0.7
    x0 = S.x0_from_eps(x_t, eps, ab_t)
    torch.testing.assert_close(S.eps_from_x0(x_t, x0, ab_t), eps, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        S.ddim_step_from_x0(x_t, x0, ab_t, ab_prev, 1.0, z), S.ddpm_step(x_t, eps, ab_t, ab_prev, z)
    )


def test_forward_jump_and_ve_steps():
    g = torch.Generator().manual_seed(1)
    x, z = (torch.randn(20000, generator=g, dtype=F64) for _ in range(2))
    back = S.forward_jump(x, 0.8, 0.2, z)  # q(x_back | x_t): mean sqrt(0.25) x, variance 0.75
    torch.testing.assert_close(back - 0.5 * x, math.sqrt(0.75) * z)
    score = -x / 4.0
    xr, mr = S.reverse_diffusion_step(x, score, 2.0, 1.0, z)
    xa, ma = S.ancestral_step(x, score, 2.0, 1.0, z)
    assert torch.equal(mr, ma)
    torch.testing.assert_close(xr - mr, math.sqrt(3.0) * z)
    torch.testing.assert_close(xa - ma, math.sqrt(0.75) * z)
    S.check_predictor("ancestral")
    with pytest.raises(ValueError, match="predictor"):
        S.check_predictor("euler")


def test_langevin_norms():
    """Per-sample norms make a batch behave as independent runs; the batch norm averages them (the
    score-SDE code). For a batch of one the two agree."""
    g = torch.Generator().manual_seed(2)
    x, score, z = (torch.randn(2, 1, 4, 4, generator=g, dtype=F64) for _ in range(3))
    score[1] *= 10.0
    per = S.langevin_step(x, score, 0.16, z)
    for i in range(2):
        one = S.langevin_step(x[i : i + 1], score[i : i + 1], 0.16, z[i : i + 1])
        torch.testing.assert_close(per[i : i + 1], one)
        torch.testing.assert_close(
            one, S.langevin_step(x[i : i + 1], score[i : i + 1], 0.16, z[i : i + 1], "batch")
        )
    assert not torch.allclose(per, S.langevin_step(x, score, 0.16, z, norm="batch"))
    zero = S.langevin_step(x, torch.zeros_like(x), 0.16, z)  # no score: no step (per sample)
    assert torch.equal(zero, x)
    with pytest.raises(ValueError, match="norm"):
        S.langevin_step(x, score, 0.16, z, norm="mean")
