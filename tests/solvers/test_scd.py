"""SCD (DDS with the network adapted to the measurement): without adaptation it is DDS, with it the
network's estimates fit the data better, each image adapts alone, and the prior is left untouched."""

from __future__ import annotations

import pytest
import torch
from problems import correlated_prior
from torch import nn

from diffinv import solvers
from diffinv.errors import DiffinvError
from diffinv.operators import from_spec
from diffinv.priors import NetworkPrior, VPSchedule

SHAPE = (1, 8, 8)


class TinyEps(nn.Module):
    """A small convolutional eps-network (random weights; time ignored)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, x, t):
        return 0.3 * self.body(x)


def _problem(batch: int = 2):
    prior = NetworkPrior(TinyEps(), VPSchedule.linear(1000), SHAPE)
    op = from_spec("sr2", SHAPE)
    g = torch.Generator().manual_seed(3)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 8), torch.linspace(0, 1, 8), indexing="ij")
    x = torch.stack([0.5 + 0.4 * torch.sin(3 * xx + k) * yy for k in range(batch)])[:, None]
    return prior, op, x, op.A(x) + 0.0 * torch.randn(batch, *op.out_shape, generator=g)


def _solve(prior, op, y, callback=None, **params):
    solver = solvers.get("scd", prior, steps=10, **params)
    out = solver(y, op, generator=torch.Generator().manual_seed(0), callback=callback)
    return out, solver


def test_without_adaptation_it_is_dds():
    prior, op, _, y = _problem(batch=1)  # (SCD solves image by image: its noise is drawn per image)
    scd, _ = _solve(prior, op, y, adapt_iters=0)
    dds = solvers.get("dds", prior, steps=10)(y, op, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(scd, dds, rtol=0, atol=1e-6)


def test_a_measurement_fitted_within_its_noise_does_not_steer():
    """Discrepancy principle: once ||A x0|t - y||^2 / M <= (adapt_stop sigma)^2 no Adam step is
    taken; with a floor above every misfit SCD is DDS (one network call per step more)."""
    prior, op, _, y = _problem(batch=1)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    dds = solvers.get("dds", prior, steps=10)(y, op, sigma_y=0.05, generator=g())
    scd = solvers.get("scd", prior, steps=10, adapt_stop=1e4, adapt_lr=1e-2)
    torch.testing.assert_close(scd(y, op, sigma_y=0.05, generator=g()), dds, rtol=0, atol=1e-6)
    assert scd.last_nfe == 10 * 2  # each step: the misfit check, then the estimate
    steered = solvers.get("scd", prior, steps=10, adapt_stop=0.0, adapt_lr=1e-2)
    assert (steered(y, op, sigma_y=0.05, generator=g()) - dds).abs().max() > 1e-4


def test_adapted_estimates_fit_the_measurement_better():
    """At the states x_t the sampler visits, the adapted network's x0|t has a smaller data misfit
    ||A x0|t - y|| than the trained network's at the same x_t (evaluated after the solve, restored)."""
    prior, op, _, y = _problem(batch=1)
    seen = []
    _solve(
        prior,
        op,
        y,
        lambda info: seen.append((info["t"], info["x_t"].clone(), op.A(info["x0"]).detach())),
        adapt_iters=20,
        adapt_lr=1e-2,
    )
    with torch.no_grad():
        adapted = sum(float((a - y).norm()) for _, _, a in seen)
        trained = sum(float((op.A(prior.x0_image(x_t, t)) - y).norm()) for t, x_t, _ in seen)
    assert adapted < 0.8 * trained, (adapted, trained)


def test_each_image_adapts_alone_and_the_prior_is_restored():
    prior, op, _, y = _problem(batch=2)
    weights = [p.detach().clone() for p in prior.parameters()]
    flags = [p.requires_grad for p in prior.parameters()]
    both, solver = _solve(prior, op, y, adapt_lr=1e-2)
    assert solver.last_nfe == 10 * (3 + 1)  # per image: steps x (K adapted + 1) evaluations
    first, _ = _solve(prior, op, y[:1], adapt_lr=1e-2)
    torch.testing.assert_close(both[:1], first, rtol=0, atol=1e-5)  # image 2 did not steer image 1
    assert all(torch.equal(p, w) for p, w in zip(prior.parameters(), weights))
    assert [p.requires_grad for p in prior.parameters()] == flags


def test_lora_adapter_steers_too():
    prior, op, _, y = _problem(batch=1)
    plain, _ = _solve(prior, op, y, adapt_iters=0)
    lora, _ = _solve(prior, op, y, adapter="lora", lora_rank=2, adapt_lr=1e-2)
    assert torch.isfinite(lora).all() and (lora - plain).abs().max() > 1e-4


@pytest.mark.parametrize(
    "params, message",
    [
        ({"adapter": "half"}, "adapter must be one of"),
        ({"lora_rank": 0}, "lora_rank must be a positive integer"),
        ({"adapt_lr": 0.0}, "adapt_lr"),
        ({"adapt_iters": -1}, "adapt_iters must be an integer >= 0"),
        ({"adapt_every": 0}, "adapt_every must be a positive integer"),
        ({"adapt_stop": -1.0}, "adapt_stop"),
    ],
)
def test_bad_parameters_are_one_line_errors(params, message):
    prior, op, _, y = _problem(batch=1)
    with pytest.raises(DiffinvError, match=message):
        _solve(prior, op, y, **params)


def test_a_prior_without_a_network_is_refused():
    prior = correlated_prior(SHAPE)
    op = from_spec("sr2", SHAPE)
    with pytest.raises(DiffinvError, match="scd adapts the prior's network; GaussianPrior has none"):
        solvers.get("scd", prior, steps=5)(torch.zeros(1, *op.out_shape, dtype=torch.float64), op)
