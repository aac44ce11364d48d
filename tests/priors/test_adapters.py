"""Network adapters for test-time adaptation: LoRA is a low-rank weight update, and the network is
restored exactly however the block ends."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffinv.errors import DiffinvError
from diffinv.priors.adapters import adapted


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.SiLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, dilation=1),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
    ).double()


def _x(seed: int = 1) -> torch.Tensor:
    return torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_lora_conv_is_the_low_rank_weight_update():
    """conv(x; W) + B * conv(x; A) = conv(x; W + sum_r B[:, r] A[r]) for a rank-r pair (A, B)."""
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1).double()
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with adapted(conv, "lora", rank=2) as (a, b):
        with torch.no_grad():
            b.normal_(generator=torch.Generator().manual_seed(1))
        out = conv(x)
        delta = torch.einsum("or,rihw->oihw", b[:, :, 0, 0], a)
        expected = F.conv2d(x, conv.weight + delta, conv.bias, stride=2, padding=1)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


def test_lora_linear_is_the_low_rank_weight_update():
    lin = nn.Linear(6, 4).double()
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with adapted(lin, "lora", rank=3) as (a, b):
        with torch.no_grad():
            b.normal_(generator=torch.Generator().manual_seed(1))
        out = lin(x)
        expected = F.linear(x, lin.weight + b @ a, lin.bias)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


def test_lora_starts_at_the_trained_network_and_leaves_it_as_it_was():
    net, x = _net(), _x()
    before = net(x).detach()
    weights = [p.detach().clone() for p in net.parameters()]
    with adapted(net, "lora", rank=2) as params:
        assert len(params) == 2 * 3  # two convolutions and a linear layer
        assert all(not p.requires_grad for p in net.parameters())  # only the adapters train
        torch.testing.assert_close(net(x), before, rtol=1e-12, atol=1e-12)  # B = 0
        opt = torch.optim.SGD(params, lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            net(x).square().sum().backward()
            opt.step()
        assert (net(x) - before).abs().max() > 1e-3  # the adapters moved the output
    torch.testing.assert_close(net(x), before, rtol=1e-12, atol=1e-12)  # hooks removed
    assert all(torch.equal(p, w) for p, w in zip(net.parameters(), weights))
    assert all(p.requires_grad for p in net.parameters())


def test_full_adaptation_is_undone_even_after_an_error():
    net, x = _net(), _x()
    net[0].weight.requires_grad_(False)  # a frozen flag is restored too
    weights = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(RuntimeError, match="stop"), adapted(net, "full") as params:
        assert all(p.requires_grad for p in params)
        opt = torch.optim.Adam(params, lr=1e-2)
        net(x).square().sum().backward()
        opt.step()
        assert not torch.equal(net[2].weight, weights[2])
        raise RuntimeError("stop")
    assert all(torch.equal(p, w) for p, w in zip(net.parameters(), weights))
    assert not net[0].weight.requires_grad and net[2].weight.requires_grad


@pytest.mark.parametrize(
    "mode, rank, message",
    [("half", 4, "adapter must be one of full, lora"), ("lora", 0, "lora_rank must be a positive integer")],
)
def test_bad_adapter_settings(mode, rank, message):
    with pytest.raises(DiffinvError, match=message), adapted(_net(), mode, rank):
        pass


def test_lora_needs_a_layer_to_adapt():
    with pytest.raises(DiffinvError, match="no Conv2d / Linear layer"), adapted(nn.LayerNorm(4), "lora"):
        pass
