"""Shared tiny networks for the prior tests (built here: no downloads)."""

from __future__ import annotations

import pytest
import torch


def _tiny_unet(fourier: bool = False, out_channels: int = 3, seed: int = 0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    kw = dict(time_embedding_type="fourier", flip_sin_to_cos=True) if fourier else {}
    net = UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=out_channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8,
        **kw,
    )
    # randomise the zero-initialised / default parameters so outputs are non-trivial
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


TINY_ADM = dict(
    image_size=16,
    num_channels=16,
    num_res_blocks=1,
    channel_mult=(1, 2),
    attention_resolutions="8",
    num_heads=4,
    num_head_channels=8,
    resblock_updown=True,
    use_scale_shift_norm=True,
    learn_sigma=True,
    class_cond=False,
    dropout=0.0,
    norm_groups=4,
)


def _tiny_adm(seed: int = 0, **overrides):
    from diffinv.priors import adm_from_config

    torch.manual_seed(seed)
    net = adm_from_config({**TINY_ADM, **overrides})
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


@pytest.fixture
def tiny_unet():
    return _tiny_unet


@pytest.fixture
def tiny_adm():
    return _tiny_adm


@pytest.fixture
def tiny_adm_config():
    return dict(TINY_ADM)
