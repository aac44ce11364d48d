"""`diffinv eval` / `diffinv.evaluate`: outputs, resuming, refusing mixed runs, bad input, torchrun.

Everything runs on a tiny random-weight diffusers prior (16x16) and 4 small images written here,
so the module needs no shipped weights and no data set.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffinv import cli
from diffinv.data.io import load_image, save_image
from diffinv.evaluate import (
    CSV_COLUMNS,
    TIMING_COLUMNS,
    evaluate,
    load_items,
    psnr_bar_plot,
    summarize,
)

SRC = Path(__file__).resolve().parents[1] / "src"
METHODS = ["pinv", "ddnm"]
RUN = dict(task="sr2", methods=METHODS, steps=2, quiet=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("eval")


@pytest.fixture(scope="module")
def tiny_prior(workdir) -> Path:
    """A random-weight 16x16 RGB DDPM prior as a diffusers folder (unet/ + scheduler/)."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    net = UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    folder = workdir / "tiny-prior"
    net.save_pretrained(folder / "unet", safe_serialization=True)
    scheduler = {
        "_class_name": "DDPMScheduler",
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
    }
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    return folder


@pytest.fixture(scope="module")
def image_dir(workdir) -> Path:
    """Four small RGB images of different sizes (all >= 16 px) plus a non-image file."""
    folder = workdir / "images"
    g = torch.Generator().manual_seed(1)
    for i, (h, w) in enumerate([(20, 24), (24, 20), (16, 16), (30, 22)]):
        save_image(torch.rand(1, 3, h, w, generator=g), folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def reference(workdir, tiny_prior, image_dir) -> tuple[Path, dict]:
    """An uninterrupted single-process run, shared by the comparisons below."""
    out = workdir / "ref"
    summary = evaluate(image_dir, out=out, model=str(tiny_prior), **RUN)
    return out, summary


def _rows(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def _table_without_seconds(out: Path) -> list[str]:
    # results.md columns: method | PSNR | SSIM | LPIPS | consistency | seconds/image | NFE
    lines = (out / "results.md").read_text().splitlines()
    return [
        ("|".join(c for i, c in enumerate(ln.split("|")) if i != 6) if ln.startswith("|") else ln)
        for ln in lines
    ]


# ---------------------------------------------------------------------------- outputs
def test_outputs(reference, image_dir):
    out, summary = reference
    rows = _rows(out)
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [(r["image"], r["method"]) for r in rows] == [
        (f"{i:04d}_img{i}", m) for i in range(4) for m in METHODS
    ]
    assert all(r["nfe"] == ("0" if r["method"] == "pinv" else "2") for r in rows)
    for r in rows:  # sr2's pseudo-inverse and DDNM are exactly consistent with y
        assert float(r["consistency"]) < 1e-5
    assert set(summary) == set(METHODS)
    assert summary["pinv"]["n"] == 4
    assert summary["pinv"]["psnr_mean"] == pytest.approx(sum(float(r["psnr"]) for r in rows[::2]) / 4)
    table = (out / "results.md").read_text()
    assert "| pinv |" in table and "| ddnm |" in table and "±" in table
    for folder in [*METHODS, "measurement", "ground_truth"]:
        pngs = sorted(p.name for p in (out / "images" / folder).iterdir())
        assert pngs == [f"{i:04d}_img{i}.png" for i in range(4)]
        assert load_image(out / "images" / folder / pngs[0]).shape[-1] in (8, 16)  # sr2 y is 8x8
    for name in ("figure.png", "psnr_bars.png"):
        assert load_image(out / name).shape[1] == 3
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["command"] == "eval" and cfg["args"]["methods"] == "pinv,ddnm"
    assert cfg["run"]["crop"] == 16 and cfg["run"]["items"] == [f"{i:04d}_img{i}" for i in range(4)]
    assert not list(out.rglob("*.tmp"))
    # the ground truth is the seeded 16x16 crop of the source image
    crop = load_image(out / "images" / "ground_truth" / "0003_img3.png")
    src = load_image(image_dir / "img3.png")
    hits = [
        (t, l)
        for t in range(30 - 16 + 1)
        for l in range(22 - 16 + 1)
        if torch.equal(src[..., t : t + 16, l : l + 16], crop)
    ]
    assert hits


def test_crops_and_phantoms_are_seeded_per_item(image_dir):
    a = load_items(str(image_dir), None, 12, 3, seed=0)
    b = load_items(str(image_dir), 2, 12, 3, seed=0)
    c = load_items(str(image_dir), None, 12, 3, seed=1)
    assert [it.name for it in b] == [it.name for it in a[:2]]
    assert all(torch.equal(x.x, y.x) for x, y in zip(a, b))
    assert not all(torch.equal(x.x, y.x) for x, y in zip(a, c))  # another seed, other crops
    p3 = load_items("ellipses:3", None, 16, 1, seed=0)
    p5 = load_items("ellipses:5", 2, 16, 1, seed=0)
    assert len(p3) == 3 and p3[0].x.shape == (1, 1, 16, 16)
    assert all(torch.equal(x.x, y.x) for x, y in zip(p3, p5))
    assert not torch.equal(p3[0].x, p3[1].x)


def test_summary_and_bar_plot_handle_missing_and_infinite_values():
    records = [
        {"method": "a", "psnr": 20.0, "ssim": None, "consistency": 0.0, "seconds": 1.0, "nfe": 3},
        {"method": "a", "psnr": 22.0, "ssim": None, "consistency": 0.0, "seconds": 3.0, "nfe": 3},
        {"method": "b", "psnr": float("inf"), "ssim": 1.0, "consistency": 0.0, "seconds": 0.0, "nfe": 0},
    ]
    s = summarize(records, ["a", "b"])
    assert s["a"]["psnr_mean"] == 21.0 and s["a"]["psnr_std"] == 1.0 and s["a"]["ssim_mean"] is None
    assert s["b"]["psnr_mean"] == float("inf")
    img = psnr_bar_plot(s)
    assert img.width >= 320 and img.height > 200


# ---------------------------------------------------------------------------- resuming
def test_interrupted_run_resumes_to_the_same_results(reference, workdir, tiny_prior, image_dir):
    ref_out, ref_summary = reference
    out = workdir / "resumed"
    done: list[tuple[str, str]] = []

    def crash_after_three(record):
        done.append((record["image"], record["method"]))
        if len(done) == 3:
            raise RuntimeError("simulated interruption")

    with pytest.raises(RuntimeError, match="simulated"):
        evaluate(image_dir, out=out, model=str(tiny_prior), item_callback=crash_after_three, **RUN)
    assert len(list((out / "records").rglob("*.json"))) == 3
    assert not (out / "metrics.csv").exists() and not (out / "results.md").exists()
    # a crash between an item's PNG and its record: that item is redone
    (out / "records" / "pinv" / "0001_img1.json").unlink()

    computed: list[tuple[str, str]] = []
    summary = evaluate(
        image_dir, out=out, model=str(tiny_prior), item_callback=lambda r: computed.append(r["image"]), **RUN
    )
    assert len(computed) == 8 - 2
    assert _without_timing(_rows(out)) == _without_timing(_rows(ref_out))
    assert _table_without_seconds(out) == _table_without_seconds(ref_out)
    for key in ("psnr_mean", "ssim_mean", "consistency_mean", "nfe_mean"):
        assert summary["ddnm"][key] == ref_summary["ddnm"][key]
    for m in METHODS:
        for png in (ref_out / "images" / m).iterdir():
            assert (out / "images" / m / png.name).read_bytes() == png.read_bytes()

    # finished: a third run computes nothing and rewrites the same tables
    computed.clear()
    evaluate(image_dir, out=out, model=str(tiny_prior), item_callback=lambda r: computed.append(r), **RUN)
    assert computed == []
    assert _without_timing(_rows(out)) == _without_timing(_rows(ref_out))


def test_different_configuration_is_refused_unless_overwrite(workdir, image_dir):
    out = workdir / "refuse"
    evaluate(image_dir, "sr2", ["pinv"], out, quiet=True, crop=16)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="different configuration.*seed"):
        evaluate(image_dir, "sr2", ["pinv"], out, quiet=True, crop=16, seed=1)
    with pytest.raises(ValueError, match="different configuration.*task"):
        evaluate(image_dir, "sr4", ["pinv"], out, quiet=True, crop=16)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    summary = evaluate(image_dir, "sr4", ["pinv", "cg-tikhonov"], out, quiet=True, crop=16, overwrite=True)
    assert set(summary) == {"pinv", "cg-tikhonov"}
    assert json.loads((out / "config.json").read_text())["run"]["task"] == "sr4"
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "cg-tikhonov",
        "ground_truth",
        "measurement",
        "pinv",
    ]


def test_ct_on_phantoms_through_the_cli(workdir, capsys):
    out = workdir / "ct"
    argv = ["eval", "--data", "ellipses:2", "--task", "ct18", "--methods", "pinv", "--crop", "32"]
    assert cli.main([*argv, "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    rows = _rows(out)
    assert [r["image"] for r in rows] == ["0000_ellipse", "0001_ellipse"]
    assert float(rows[0]["psnr"]) > 15
    assert load_image(out / "images" / "measurement" / "0000_ellipse.png").shape == (1, 1, 32, 32)
    assert cli.main([*argv, "--out", str(out)]) == 0  # resumed: nothing to do, prints the table
    assert "| pinv |" in capsys.readouterr().out
    # --config OUT/config.json repeats the run (here: resumes it); a changed option is refused
    assert cli.main(["eval", "--config", str(out / "config.json"), "--quiet"]) == 0
    assert cli.main(["eval", "--config", str(out / "config.json"), "--seed", "3", "--quiet"]) == 2
    assert "different configuration (seed: 0 there, 3 now)" in capsys.readouterr().err


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "change, message",
    [
        ({"--data": "{missing}"}, "data folder not found"),
        ({"--data": "{empty}"}, "no images"),
        ({"--data": "{corrupt}"}, "cannot read image file"),
        ({"--data": "ellipses:0"}, "ellipses:N"),
        ({"--task": "sr3x"}, "unknown or malformed degradation spec"),
        ({"--methods": "pinv,nope"}, "unknown method 'nope'"),
        ({"--methods": "pinv,pinv"}, "more than once"),
        ({"--model": "no-such-prior"}, "unknown prior"),
        ({"--crop": "64"}, "smaller than the 64x64 crop"),
        ({"--sigma-y": "-0.1"}, "sigma-y"),
        ({"--limit": "9"}, "holds only 4"),
        ({"--data": None}, "missing required option"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(workdir, image_dir, capsys, change, message):
    (workdir / "empty").mkdir(exist_ok=True)
    corrupt = workdir / "corrupt"
    corrupt.mkdir(exist_ok=True)
    (corrupt / "broken.png").write_bytes(b"not a png at all")
    out = workdir / "bad-out"
    opts = {"--data": str(image_dir), "--task": "sr2", "--methods": "pinv", "--crop": "16"}
    for key, value in change.items():
        opts[key] = (
            value.format(missing=workdir / "nope", empty=workdir / "empty", corrupt=corrupt)
            if value
            else None
        )
    argv = ["eval", "--out", str(out), "--quiet"]
    for key, value in opts.items():
        if value is not None:
            argv += [key, value]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("diffinv eval: error:")
    assert not out.exists()


# ---------------------------------------------------------------------------- torchrun
def test_torchrun_two_processes_match_one(reference, workdir, tiny_prior, image_dir):
    ref_out, _ = reference
    out = workdir / "dist"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [
        "-m",
        "diffinv",
        "eval",
        "--data",
        str(image_dir),
        "--task",
        "sr2",
        "--methods",
        ",".join(METHODS),
    ]
    cmd += ["--steps", "2", "--model", str(tiny_prior), "--device", "cpu", "--out", str(out), "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows, ref_rows = _without_timing(_rows(out)), _without_timing(_rows(ref_out))
    # one torch thread in every process (the reference runs on the suite's one thread), so the
    # results are equal to the last digit, as the README promises on the CPU
    assert rows == ref_rows
    for m in METHODS:
        for png in (ref_out / "images" / m).iterdir():
            assert (out / "images" / m / png.name).read_bytes() == png.read_bytes()
    assert (out / "figure.png").is_file() and (out / "psnr_bars.png").is_file()
    shutil.rmtree(out)


def test_samples_score_the_mean_and_report_one_sample_and_coverage(workdir, capsys):
    """eval --samples K: the table scores the samples' mean, one-sample scores differ from it,
    coverage is a fraction, and classical methods (one answer) have none."""
    out = workdir / "samples"
    argv = ["eval", "--data", "ellipses:2", "--task", "ct18", "--methods", "pinv,ddnm", "--steps", "3"]
    assert cli.main([*argv, "--samples", "4", "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    rows = _rows(out)
    assert set(rows[0]) >= {"psnr_1", "ssim_1", "lpips_1", "coverage90"}
    for r in rows:
        if r["method"] == "ddnm":
            assert 0.0 <= float(r["coverage90"]) <= 1.0
            assert abs(float(r["psnr"]) - float(r["psnr_1"])) > 1e-6  # the mean is not one of the samples
        else:
            assert r["coverage90"] == "" and float(r["psnr_1"]) == pytest.approx(float(r["psnr"]))
    text = (out / "results.md").read_text()
    assert "With 4 posterior samples per image" in text and "| ddnm |" in text
    assert cli.main([*argv, "--samples", "0", "--out", str(workdir / "s0"), "--quiet"]) == 2
    assert "samples must be an integer >= 1" in capsys.readouterr().err
    assert not (workdir / "s0").exists()
