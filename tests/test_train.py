"""Training: loss goes down, the output folder loads as a prior, --resume is bit-exact."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffinv import priors
from diffinv.cli import main
from diffinv.data.ellipses import random_phantoms, shepp_logan
from diffinv.train import TrainConfig, train

TINY = dict(
    size=16,
    batch=8,
    block_out_channels=(16, 32),
    attention_levels=(1,),
    norm_num_groups=4,
    attention_head_dim=8,
    sample_count=4,
    sample_steps=3,
    warmup=1,
    quiet=True,
)


@pytest.fixture
def image_folder(tmp_path):
    """Six smooth colour images (gradients + a disc), enough structure to learn from."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:48] / 40.0
    for i in range(6):
        c = rng.uniform(0.2, 0.8, size=3)
        img = np.stack([c[k] * (0.5 + 0.5 * np.sin(3 * xx + i + k) * yy) for k in range(3)], -1)
        img[((yy - 0.5) ** 2 + (xx - 0.6) ** 2) < 0.05] = rng.uniform(0, 1, 3)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"im{i}.png")
    return folder


def test_training_reduces_loss_and_exports_a_loadable_prior(image_folder, tmp_path):
    out = tmp_path / "run"
    summary = train(TrainConfig(data=str(image_folder), out=str(out), channels=3, steps=60, lr=2e-3, **TINY))
    losses = torch.load(out / "checkpoint.pt", weights_only=True)["losses"]
    assert len(losses) == 60 and summary["images_seen"] == 480
    first, last = losses[:10].mean().item(), losses[-10:].mean().item()
    assert last < 0.7 * first, (first, last)
    for name in ("samples.png", "loss.png", "MODEL_CARD.md", "train_config.json"):
        assert (out / name).is_file()
    card = (out / "MODEL_CARD.md").read_text()
    assert "images seen: 480" in card and "diffinv train" in card
    prior = priors.load(str(out))
    assert prior.image_shape == (3, 16, 16)
    x0 = prior.x0(torch.randn(2, 3, 16, 16), 500)
    assert x0.shape == (2, 3, 16, 16) and torch.isfinite(x0).all()


def test_resume_is_bit_exact(tmp_path):
    cfg = dict(data="ellipses", channels=1, lr=1e-3, **TINY)
    straight = tmp_path / "straight"
    train(TrainConfig(out=str(straight), steps=6, **cfg))
    split = tmp_path / "split"
    train(TrainConfig(out=str(split), steps=3, **cfg))
    train(TrainConfig(out=str(split), steps=6, **cfg), resume=True)
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(split / "checkpoint.pt", weights_only=True)
    assert torch.equal(a["losses"], b["losses"])
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key]), key


def test_train_cli_and_bad_input(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(out), "--steps", "1"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert not out.exists()
    assert main(["train", "--data", "ellipses", "--channels", "3", "--out", str(out), "--steps", "1"]) == 2
    assert "1 channel" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--resume: no checkpoint"):
        train(TrainConfig(data="ellipses", out=str(tmp_path / "r"), channels=1, steps=1, **TINY), resume=True)
    cfg = json.loads(json.dumps(TrainConfig(data="ellipses", out="x").__dict__, default=list))
    assert cfg["T"] == 1000


def test_ellipse_phantoms_are_seeded_and_in_range():
    a = random_phantoms(6, 32, torch.Generator().manual_seed(3))
    b = random_phantoms(6, 32, torch.Generator().manual_seed(3))
    c = random_phantoms(6, 32, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (6, 1, 32, 32) and a.min() >= 0 and a.max() <= 1
    # Every phantom has a body: a sizeable non-zero region, surrounded by empty corners.
    assert ((a > 0.05).float().mean((1, 2, 3)) > 0.2).all()
    assert (a[..., 0, 0] == 0).all()
    sl = shepp_logan(64)
    assert sl.shape == (1, 1, 64, 64) and 0 <= sl.min() and sl.max() <= 1


@pytest.mark.parametrize("name", ["ct-ellipses-64", "natural-64"])
def test_shipped_priors_load_offline(name):
    prior = priors.load(name)
    c = 1 if name.startswith("ct") else 3
    assert prior.image_shape == (c, 64, 64)
    x0 = prior.x0_image(torch.randn(1, c, 64, 64), 300)
    assert x0.shape == (1, c, 64, 64) and torch.isfinite(x0).all()


def _unet_weights(folder) -> dict:
    from safetensors.torch import load_file

    return {
        k: v.float()
        for k, v in load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors")).items()
    }


def test_train_cli_init_from_starts_from_the_given_weights(tmp_path, monkeypatch):
    """``--init-from NAME`` (a shipped prior) and ``--init-from DIR``: training starts from those weights.

    With a vanishing learning rate, one step leaves the weights where they started, so the
    exported model equals the one it was initialised from (a random start would not).
    """
    from diffinv.priors.loading import ASSETS_DIR

    monkeypatch.setattr("diffinv.train.save_samples", lambda *args, **kwargs: None)  # 16 x 50 UNet calls
    argv = ["train", "--data", "ellipses", "--channels", "1", "--size", "64", "--batch", "1", "--steps", "1"]
    argv += ["--lr", "1e-12", "--quiet"]
    shipped = _unet_weights(ASSETS_DIR / "ct-ellipses-64")
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*argv, "--out", str(a), "--init-from", "ct-ellipses-64"]) == 0
    exported = _unet_weights(a)
    assert exported.keys() == shipped.keys()
    for key in shipped:
        assert torch.allclose(exported[key], shipped[key], atol=1e-6), key
    assert json.loads((a / "train_config.json").read_text())["init_from"] == str(
        ASSETS_DIR / "ct-ellipses-64"
    )
    # a folder written by diffinv train works too
    assert main([*argv, "--out", str(b), "--init-from", str(a)]) == 0
    again = _unet_weights(b)
    assert all(torch.allclose(again[k], exported[k], atol=1e-6) for k in exported)


def test_train_cli_init_from_bad_input(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["train", "--data", "ellipses", "--channels", "1", "--out", str(out), "--steps", "1", "--quiet"]
    assert main([*argv, "--init-from", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffinv train: error: --init-from") and "no such folder" in err
    assert "ct-ellipses-64" in err and err.count("\n") == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*argv, "--init-from", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "no diffusion_pytorch_model.safetensors" in err and err.count("\n") == 1
    assert main([*argv, "--init-from", "natural-64"]) == 2  # 3 channels into a 1-channel model
    err = capsys.readouterr().err
    assert "do not fit this architecture" in err and err.count("\n") == 1
    assert not out.exists()
