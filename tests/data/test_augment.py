"""Training augmentation: the identity map is PIL's box resize, rotations keep mass, zooms scale it
by s^2, the intensity map has its stated form, streams are seeded, and bad specs are refused."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from diffinv.cli import main
from diffinv.data.augment import Augmentation
from diffinv.data.training import training_stream
from diffinv.errors import DiffinvError


def _blob(side: int = 128, radius: float = 0.25) -> torch.Tensor:
    """A smooth centred disc (1, side, side): mass well inside the frame whatever the rotation."""
    c = (torch.arange(side, dtype=torch.float64) + 0.5) / side - 0.5
    r = (c.view(-1, 1) ** 2 + c.view(1, -1) ** 2).sqrt()
    return torch.sigmoid((radius - r) * 60).unsqueeze(0)


def test_parse_presets_and_keys():
    ct = Augmentation.parse("ct")
    assert ct.rotate_deg == 10 and ct.zoom == 0.1 and ct.gamma == 0.2
    custom = Augmentation.parse("rotate=5, zoom=0.2")
    assert (custom.rotate_deg, custom.zoom, custom.contrast) == (5, 0.2, 0)
    assert "rotate_deg 5" in custom.describe()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("spin=3", "is not KEY=VALUE"),
        ("rotate", "is not KEY=VALUE"),
        ("zoom=big", "is not a number"),
        ("zoom=-0.1", ">= 0"),
        ("zoom=nan", ">= 0"),
        ("zoom=1.5", "zoom < 1"),
        (",", "names no augmentation"),
    ],
)
def test_parse_refuses_bad_specs(spec, message):
    with pytest.raises(DiffinvError, match=message):
        Augmentation.parse(spec)


def test_identity_warp_is_the_box_resize_of_the_centre_square():
    rng = np.random.default_rng(0)
    arr = rng.uniform(0, 1, (96, 128)).astype(np.float32)  # not square: the centre 96x96 is used
    warped = Augmentation(gamma=0.1).warp(torch.from_numpy(arr)[None].double(), 32, torch.Generator())
    box = np.asarray(Image.fromarray(arr[:, 16:112], mode="F").resize((32, 32), Image.BOX))
    np.testing.assert_allclose(warped[0].numpy(), box, atol=1e-5)


def test_rotation_keeps_mass_and_zoom_scales_it_by_s_squared():
    blob = _blob()
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        rotated = Augmentation(rotate_deg=45).warp(blob, 64, g)
        assert rotated.mean().item() == pytest.approx(blob.mean().item(), rel=0.01)
    zoom = Augmentation(zoom=0.3)
    for seed in range(4):
        # the same four draws as warp(): u[1] sets the zoom s = 1 + 0.3 u[1]
        u = torch.rand(4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1
        s = 1 + 0.3 * float(u[1])
        zoomed = zoom.warp(blob, 64, torch.Generator().manual_seed(seed))
        assert zoomed.mean().item() == pytest.approx(s**2 * blob.mean().item(), rel=0.02)


def test_intensity_map_has_its_stated_form():
    x = torch.linspace(
        0.1, 0.9, 50, dtype=torch.float64
    )  # no value is clipped.view(1, 1, 5, 10).repeat(8, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    # contrast only: (y - 0.5) / (x - 0.5) is one number per image, within [1 - c, 1 + c]
    y = Augmentation(contrast=0.2).intensity(x, g)
    ratio = ((y - 0.5) / (x - 0.5)).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-9)
    assert ratio.min() >= 0.8 - 1e-9 and ratio.max() <= 1.2 + 1e-9
    # gamma only: y = x^g with log g within +-log(1.5), monotone, 0 and 1 fixed
    y = Augmentation(gamma=0.5).intensity(x, g)
    exponent = (y.log() / x.log()).flatten(1)
    assert torch.allclose(exponent, exponent[:, :1].expand_as(exponent), atol=1e-9)
    assert exponent.log().abs().max() <= math.log(1.5) + 1e-9
    ends = Augmentation(gamma=0.5).intensity(torch.tensor([0.0, 1.0]).view(1, 1, 1, 2), g)
    assert ends.flatten().tolist() == [0.0, 1.0]


def test_augmented_stream_is_seeded_and_in_range(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (80, 80), dtype=np.uint8)).save(tmp_path / f"s{i}.png")
    stream = training_stream(str(tmp_path), 32, 1, augment="ct")
    a = stream.batch(5, torch.Generator().manual_seed(2))
    b = stream.batch(5, torch.Generator().manual_seed(2))
    c = stream.batch(5, torch.Generator().manual_seed(3))
    assert a.shape == (5, 1, 32, 32) and a.min() >= 0 and a.max() <= 1
    assert torch.allclose(a, b) and not torch.allclose(a, c)
    with pytest.raises(DiffinvError, match="ellipse"):
        training_stream("ellipses", 32, 1, augment="ct")


def test_train_cli_refuses_a_bad_augment_and_writes_nothing(tmp_path, capsys):
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "run"
    args = ["train", "--data", str(tmp_path), "--channels", "1", "--out", str(out), "--steps", "1"]
    assert main([*args, "--augment", "spin=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "augment" in err and len(err.splitlines()) == 1
    assert not out.exists()
