"""``project=N`` in the pipeline, posterior sampling, ``restore --project`` and ``eval --project``:
the restoration projected onto {A x = y} ∩ [0, 1] after the solve (noiseless measurements only)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from diffinv import pipeline, posterior
from diffinv.cli import main
from diffinv.data.ellipses import shepp_logan
from diffinv.errors import DiffinvError
from diffinv.operators.noise import PoissonNoise

sys.path.insert(0, str(Path(__file__).resolve().parent / "solvers"))
from problems import correlated_prior, selection_operator  # noqa: E402

CT_SLICE = (
    Path(__file__).resolve().parents[1] / "src" / "diffinv" / "assets" / "images" / "ct_chest_tcia_64.png"
)


def test_projected_restoration_is_closer_to_the_truth_and_more_consistent():
    x = shepp_logan(32).reshape(1, 1, 32, 32).to(torch.float64).clamp(0, 1)
    plain = pipeline.degrade_and_restore(x, "ct8", "pinv", None)
    proj = pipeline.degrade_and_restore(x, "ct8", "pinv", None, project=200)
    assert proj.x_hat.min() >= 0 and proj.x_hat.max() <= 1
    assert (proj.x_hat - x).norm() < (plain.x_hat.clamp(0, 1) - x).norm()
    assert proj.metrics["psnr"] > plain.metrics["psnr"] + 1  # the box knows the phantom's background
    assert proj.metrics["consistency"] < 0.1
    assert proj.params == plain.params


def test_each_posterior_sample_is_projected_then_summarised():
    """Selection operator: one round reaches {A x = y} ∩ [0, 1] exactly (kept pixels = y, the others
    clamped), so every projected sample fits y and lies in the box, and comes no farther from x."""
    shape = (1, 6, 6)
    prior, op = correlated_prior(shape), selection_operator(shape, 18, seed=1)
    x = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    plain = posterior.degrade_and_sample(x, op, "ddim", prior, seed=3, n=3, steps=5)
    proj = posterior.degrade_and_sample(x, op, "ddim", prior, seed=3, n=3, steps=5, project=2)
    s, s0 = proj.post.samples, plain.post.samples
    assert s.min() >= 0 and s.max() <= 1
    for k in range(3):
        assert (op.A(s[k]) - op.A(x)).abs().max() < 1e-10
        assert ((s[k] - x).flatten(1).norm(dim=1) <= (s0[k] - x).flatten(1).norm(dim=1) + 1e-12).all()
    torch.testing.assert_close(proj.x_hat, s.mean(0))
    torch.testing.assert_close(proj.post.std, s.std(0))
    assert proj.metrics["psnr"] >= plain.metrics["psnr"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"project": 5, "sigma_y": 0.01}, "project needs a noiseless measurement"),
        ({"project": 5, "noise": PoissonNoise(1e4)}, "project needs a noiseless measurement"),
        ({"project": -1}, "project must be a positive integer"),
        ({"project": 2.5}, "project must be a positive integer"),
        ({"project": True}, "project must be a positive integer"),
        ({"project": float("nan")}, "project must be a positive integer"),
    ],
)
def test_bad_projections_are_refused(kwargs, message):
    x = torch.rand(1, 1, 16, 16)
    with pytest.raises(DiffinvError, match=message):
        pipeline.degrade_and_restore(x, "ct8", "pinv", None, **kwargs)


def test_restore_and_eval_record_the_projection_and_refuse_noise(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["restore", str(CT_SLICE), "--task", "ct8", "--method", "pinv", "--quiet"]
    assert main([*args, "--project", "30", "--out", str(out)]) == 0
    rec = json.loads((out / "ct_chest_tcia_64_ct8_pinv.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert rec["project"] == 30 and config["args"]["project"] == 30
    assert main([*args, "--project", "30", "--sigma-y", "0.01", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "project needs a noiseless measurement" in err and "\n" not in err
    assert not (tmp_path / "bad").exists()

    ev = tmp_path / "e"
    eval_args = [
        "eval",
        "--data",
        "ellipses:1",
        "--task",
        "ct8",
        "--methods",
        "pinv",
        "--out",
        str(ev),
        "--quiet",
    ]
    assert main([*eval_args, "--project", "20"]) == 0
    assert "projected onto {A x = y} ∩ [0, 1] (20 rounds)" in (ev / "results.md").read_text()
    assert main(eval_args) == 2  # the same folder without the projection: another configuration
    assert "project: 20 there, None now" in capsys.readouterr().err
