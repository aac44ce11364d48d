"""diffinv.posterior: K samples per measurement (batched), their summary, and `restore --samples`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffinv import posterior, solvers
from diffinv.cli import main
from diffinv.data.io import load_image

sys.path.insert(0, str(Path(__file__).parent / "solvers"))
from problems import correlated_prior, make_measurement, selection_operator  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1] / "src" / "diffinv" / "assets" / "images"
SHAPE = (1, 6, 6)


@pytest.fixture(scope="module")
def problem():
    prior = correlated_prior(SHAPE)
    op = selection_operator(SHAPE, 18, seed=1)
    _, y = make_measurement(op, prior, 0.0, seed=3, batch=2)
    return prior, op, y


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shapes_summary_and_one_sample_is_the_plain_call(problem):
    prior, op, y = problem
    solver = solvers.get("ddnm", prior, steps=10)
    post = solver.sample(y, op, n=5, generator=gen(1))
    assert post.samples.shape == (5, 2, *SHAPE) and post.n == 5
    assert post.mean.shape == post.std.shape == (2, *SHAPE)
    torch.testing.assert_close(post.mean, post.samples.mean(0))
    torch.testing.assert_close(post.std, post.samples.std(0))
    for q, v in post.quantiles.items():
        torch.testing.assert_close(v, torch.quantile(post.samples, q, dim=0))
    lo, hi = post.interval(0.5)
    torch.testing.assert_close(lo, post.quantiles[0.25])
    torch.testing.assert_close(hi, post.quantiles[0.75])
    # every sample of image b fits y[b] (noiseless DDNM is consistent): rows are image-major
    for k in range(5):
        assert (op.A(post.samples[k]) - y).abs().max() < 1e-6
    assert post.nfe == 10  # one batched call
    one = solver.sample(y, op, n=1, generator=gen(1))
    plain = solver(y, op, generator=gen(1))
    torch.testing.assert_close(one.mean, plain, rtol=0, atol=1e-12)
    assert one.samples.shape == (1, 2, *SHAPE) and (one.std == 0).all()


def test_same_seed_same_samples_and_batch_bounds_calls(problem):
    prior, op, y = problem
    solver = solvers.get("ddnm", prior, steps=10)
    a = solver.sample(y, op, n=4, generator=gen(3))
    b = posterior.sample(solver, y, op, n=4, generator=gen(3))
    torch.testing.assert_close(a.samples, b.samples, rtol=0, atol=0)
    c = solver.sample(y, op, n=4, generator=gen(3), batch=3)  # 8 rows in calls of 3, 3, 2
    assert c.nfe == 30 and c.samples.shape == a.samples.shape
    assert not torch.allclose(c.samples[1:], a.samples[1:])  # the draws are split differently
    # the samples differ from each other (independent noise per row)
    assert (a.samples[0] - a.samples[1]).abs().max() > 1e-3


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_bad_sample_count(problem, bad):
    prior, op, y = problem
    with pytest.raises(ValueError, match="n must be an integer >= 1") as info:
        solvers.get("ddnm", prior, steps=2).sample(y, op, n=bad)
    assert "\n" not in str(info.value)


def test_bad_batch(problem):
    prior, op, y = problem
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        solvers.get("ddnm", prior, steps=2).sample(y, op, n=2, batch=0)


def test_coverage_and_variance_ratio_on_known_gaussians():
    """Samples and targets from the same N(0, 1): coverage ~ level; twice the std: ratio ~ 4."""
    g = gen(5)
    s = torch.randn(4000, 1, 1, 8, 8, generator=g, dtype=torch.float64)
    x = torch.randn(200, 1, 1, 8, 8, generator=g, dtype=torch.float64)
    for level in (0.5, 0.9):
        assert abs(posterior.coverage(s, x, level) - level) < 0.02
    assert abs(posterior.coverage(2 * s, x, 0.9) - 0.9996) < 0.002  # P(|Z| < 2 * 1.645)
    assert abs(posterior.variance_ratio(2 * s, torch.ones(64)) - 4.0) < 0.15
    with pytest.raises(ValueError, match="level"):
        posterior.coverage(s, x, 1.5)


# ---------------------------------------------------------------------- restore --samples
FACE = ASSETS / "face_189080.png"


def test_restore_samples_writes_mean_std_figure_and_samples(tmp_path):
    out = tmp_path / "o"
    assert main(["restore", str(FACE), "--task", "sr4", "--steps", "2", "--samples", "3", "--save-samples",
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
    name = "face_189080_sr4_ddnm"
    rec = json.loads((out / f"{name}.json").read_text())
    assert rec["samples"] == 3 and rec["output"].endswith(f"{name}.png")
    for key in ("psnr", "ssim", "lpips", "consistency"):
        assert math.isfinite(rec["metrics"][key]) and math.isfinite(rec["sample_metrics"][key])
    # the mean of K samples scores at least as well as one sample on average (mean of K: less noise)
    assert rec["metrics"]["psnr"] > rec["sample_metrics"]["psnr"]
    std = np.load(out / f"{name}_std.npy")
    assert std.shape == (3, 64, 64) and (std >= 0).all() and std.max() > 0
    assert abs(rec["std_mean"] - float(std.mean())) < 1e-5
    assert load_image(out / f"{name}_std.png").shape[-2] >= 128  # heatmap + colour bar
    assert (out / f"{name}_uncertainty.png").exists()
    assert [Path(p).name for p in rec["output_samples"]] == [f"{name}_sample{k}.png" for k in range(3)]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["args"]["samples"] == 3 and cfg["args"]["save_samples"] is True


def test_restore_one_sample_unchanged(tmp_path):
    """--samples 1 (the default) writes what a run without it writes: no std, no figure."""
    out = tmp_path / "o"
    assert main(["restore", str(FACE), "--task", "sr4", "--steps", "1", "--samples", "1", "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "face_189080_sr4_ddnm.json",
        "face_189080_sr4_ddnm.png",
    ]


@pytest.mark.parametrize(
    "args, expected",
    [(["--samples", "0"], "--samples must be an integer >= 1"), (["--save-samples"], "--save-samples")],
)
def test_restore_bad_samples(tmp_path, capsys, args, expected):
    out = tmp_path / "o"
    assert main(["restore", str(FACE), "--task", "sr4", "--steps", "1", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err and not out.exists()


def test_restore_samples_ct_and_tiled(tmp_path):
    """CT (shipped CT prior, 64x64 slice) and an image larger than the prior (windows)."""
    out = tmp_path / "ct"
    assert main(["restore", str(ASSETS / "ct_chest_tcia_64.png"), "--task", "ct18", "--steps", "2",
                 "--samples", "2", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    rec = json.loads(next(out.glob("*_ct18_ddnm.json")).read_text())
    assert rec["samples"] == 2 and math.isfinite(rec["metrics"]["psnr"])
    out = tmp_path / "tiled"
    assert main(["restore", str(FACE), "--task", "sr4", "--steps", "1", "--samples", "2", "--resize", "80",
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
    std = np.load(next(out.glob("*_std.npy")))
    assert std.shape == (3, 80, 80) and std.max() > 0


def test_poisson_samples_are_weighted_solves_of_one_scan():
    """Photon noise with K samples: one scan (the single restoration's), and sample k is the weighted
    solve of that scan seeded seed + k (`pipeline.solve_with_variance`), so the samples differ."""
    from diffinv import pipeline
    from diffinv.errors import DiffinvError
    from diffinv.operators.noise import PoissonNoise

    shape = (1, 8, 8)
    prior = correlated_prior(shape)
    x = torch.rand(1, *shape, generator=gen(0), dtype=torch.float64)
    noise = PoissonNoise(1e4)
    solver = solvers.get("dds", prior, steps=5, gamma=10.0)
    r = posterior.degrade_and_sample(x, "ct8", solver, prior, seed=2, n=3, noise=noise)
    op, y, var = pipeline.degrade_noise(x, "ct8", 0.0, 2, noise)
    torch.testing.assert_close(r.y, y, rtol=0, atol=0)  # the same seeded draw of counts
    for k in range(3):
        one = pipeline.solve_with_variance(y, op, solver, var, seed=2 + k)
        torch.testing.assert_close(r.post.samples[k], one.x, rtol=1e-9, atol=1e-9)
    assert float(r.post.std.max()) > 1e-3
    single = pipeline.degrade_and_restore(x, "ct8", solver, prior, seed=2, noise=noise)
    torch.testing.assert_close(r.post.samples[0], single.x_hat, rtol=1e-9, atol=1e-9)
    with pytest.raises(DiffinvError, match="noiseless"):
        posterior.degrade_and_sample(x, "ct8", solver, prior, seed=2, n=2, noise=noise, project=3)


def test_restore_samples_with_poisson_noise(tmp_path):
    out = tmp_path / "poisson"
    assert main(["restore", str(ASSETS / "ct_chest_tcia_64.png"), "--task", "ct18", "--method", "dds",
                 "--steps", "2", "--noise", "poisson", "--photons", "1e4", "--samples", "2",
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
    rec = json.loads(next(out.glob("*_ct18_dds.json")).read_text())
    assert rec["samples"] == 2 and rec["noise"] == "poisson" and math.isfinite(rec["metrics"]["psnr"])
    assert np.load(next(out.glob("*_std.npy"))).max() > 0


def test_poisson_samples_of_an_unweighted_method_use_the_rms_noise():
    """Methods that assume white noise get sqrt(mean(var)), as the single restoration does."""
    from diffinv import pipeline
    from diffinv.operators.noise import PoissonNoise, effective_sigma

    shape = (1, 8, 8)
    prior = correlated_prior(shape)
    x = torch.rand(1, *shape, generator=gen(1), dtype=torch.float64)
    solver = solvers.get("pigdm", prior, steps=5)
    r = posterior.degrade_and_sample(x, "ct8", solver, prior, seed=4, n=4, noise=PoissonNoise(1e4), batch=2)
    op, y, var = pipeline.degrade_noise(x, "ct8", 0.0, 4, PoissonNoise(1e4))
    ref = posterior.sample(solver, y, op, n=4, sigma_y=effective_sigma(var), generator=gen(4), batch=2)
    torch.testing.assert_close(r.post.samples, ref.samples, rtol=1e-9, atol=1e-9)
    assert float(r.post.std.max()) > 1e-3
