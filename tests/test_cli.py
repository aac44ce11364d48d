"""The command line: restore (both modes), --config, listings, and every bad-input case.

Runs ``main([...])`` in-process (return code, stderr, files written) on the shipped 64x64 priors
with one or two diffusion steps, and classical methods where the method does not matter.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffinv import restore
from diffinv.cli import main
from diffinv.data.ellipses import shepp_logan
from diffinv.data.io import load_image, save_image
from diffinv.errors import DiffinvError
from diffinv.operators import from_spec

FACE = Path(__file__).resolve().parents[1] / "src" / "diffinv" / "assets" / "images" / "face_189080.png"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Small input files: clean images, observations, masks, sinograms, broken files."""
    d = tmp_path_factory.mktemp("inputs")
    x = load_image(FACE, channels=3)
    gray = from_spec("colorize", (3, 64, 64)).A(x)
    phantom = shepp_logan(64)
    ct30 = from_spec("ct30", (1, 64, 64))
    sino = ct30.A(phantom)[0, 0].numpy()
    files = {
        "face": FACE,
        "small": save_image(torch.nn.functional.avg_pool2d(x, 4), d / "small.png"),
        "gray": save_image(gray, d / "gray.png"),
        "phantom": save_image(phantom, d / "phantom.png"),
        "phantom128": save_image(torch.nn.functional.interpolate(phantom, size=128), d / "phantom128.png"),
        "odd": save_image(x[..., :63, :], d / "odd.png"),
        "sino": d / "sino.npy",
        "sino3d": d / "sino3d.npy",
        "sino_nan": d / "sino_nan.npy",
        "sino_small": d / "sino_small.npy",
        "mask": d / "mask.png",
        "mask_small": d / "mask_small.png",
        "damaged": d / "damaged.png",
        "not_image": d / "not_image.png",
        "text": d / "notes.txt",
    }
    np.save(files["sino"], sino)
    np.save(files["sino3d"], sino[None])
    bad = sino.copy()
    bad[3, 5] = np.nan
    np.save(files["sino_nan"], bad)
    np.save(files["sino_small"], from_spec("ct30", (1, 32, 32)).A(shepp_logan(32))[0, 0].numpy())
    keep = np.full((64, 64), 255, np.uint8)
    keep[20:40, 24:44] = 0
    Image.fromarray(keep).save(files["mask"])
    Image.fromarray(keep[:32, :32]).save(files["mask_small"])
    damaged = x.clone()
    damaged[..., 20:40, 24:44] = 1.0
    save_image(damaged, files["damaged"])
    files["not_image"].write_bytes(b"this is not a png file")
    files["text"].write_text("hello")
    return files


def run(argv: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


# ----------------------------------------------------------------------------------- restore
def test_restore_default_mode_record_and_determinism(tmp_path, capsys):
    out = tmp_path / "a"
    argv = ["restore", FACE, "--task", "sr4", "--method", "ddnm", "--steps", 2, "--quiet", "--threads", 1]
    code, _, err = run([*argv, "--out", out], capsys)
    assert code == 0, err
    png = out / "face_189080_sr4_ddnm.png"
    assert files_in(out) == ["config.json", "face_189080_sr4_ddnm.json", png.name]
    assert load_image(png).shape == (1, 3, 64, 64)
    rec = json.loads((out / "face_189080_sr4_ddnm.json").read_text())
    assert rec["task"] == "sr4" and rec["method"] == "ddnm" and rec["model"] == "natural-64"
    assert rec["steps"] == 2 and rec["nfe"] == 2 and rec["seed"] == 0 and rec["sigma_y"] == 0.0
    assert rec["solver_params"]["steps"] == 2 and rec["measured"] is False
    assert rec["image_shape"] == [3, 64, 64] and rec["measurement_shape"] == [3, 16, 16]
    assert math.isfinite(rec["metrics"]["psnr"]) and math.isfinite(rec["metrics"]["ssim"])
    assert rec["metrics"]["consistency"] < 1e-4  # DDNM is exactly consistent
    assert rec["seconds"] >= 0
    # same seed -> identical bytes; another seed -> another result
    assert main([str(a) for a in [*argv, "--out", tmp_path / "b"]]) == 0
    assert (tmp_path / "b" / png.name).read_bytes() == png.read_bytes()
    assert main([str(a) for a in [*argv, "--out", tmp_path / "c", "--seed", 1]]) == 0
    assert (tmp_path / "c" / png.name).read_bytes() != png.read_bytes()


def test_restore_several_inputs_classical_and_params(tmp_path, inputs, capsys):
    out = tmp_path / "o"
    code, stdout, err = run(
        ["restore", FACE, inputs["gray"], "--task", "inpaint-box", "--method", "cg-tikhonov"]
        + ["--param", "lam=0", "--param", "iters=5", "--out", out],
        capsys,
    )
    assert code == 0, err
    assert "face_189080_inpaint-box_cg-tikhonov.png" in stdout and "PSNR" in stdout
    rec = json.loads((out / "gray_inpaint-box_cg-tikhonov.json").read_text())
    assert rec["solver_params"]["lam"] == 0 and rec["solver_params"]["iters"] == 5
    assert rec["model"] is None and rec["image_shape"] == [1, 64, 64]  # classical: any channels
    assert load_image(out / "face_189080_inpaint-box_cg-tikhonov.png").shape[1] == 3


def test_restore_measured_sr(tmp_path, inputs, capsys):
    code, _, err = run(
        ["restore", inputs["small"], "--measured", "--task", "sr4", "--method", "pinv", "--out", tmp_path],
        capsys,
    )
    assert code == 0, err
    x_hat = load_image(tmp_path / "small_sr4_pinv.png")
    assert x_hat.shape == (1, 3, 64, 64)
    # the pseudo-inverse of average pooling is nearest-neighbour upsampling
    small = load_image(inputs["small"])
    assert torch.allclose(x_hat, small.repeat_interleave(4, -2).repeat_interleave(4, -1), atol=1 / 255)
    rec = json.loads((tmp_path / "small_sr4_pinv.json").read_text())
    assert rec["measured"] is True and "psnr" not in rec["metrics"] and "consistency" in rec["metrics"]
    assert rec["measurement_shape"] == [3, 16, 16]


def test_restore_measured_colorize_with_prior(tmp_path, inputs, capsys):
    code, _, err = run(
        ["restore", inputs["gray"], "--measured", "--task", "colorize", "--method", "ddnm"]
        + ["--steps", 1, "--out", tmp_path, "--quiet", "--threads", 1],
        capsys,
    )
    assert code == 0, err
    assert load_image(tmp_path / "gray_colorize_ddnm.png").shape == (1, 3, 64, 64)
    rec = json.loads((tmp_path / "gray_colorize_ddnm.json").read_text())
    assert rec["model"] == "natural-64" and rec["measurement_shape"] == [1, 64, 64] and rec["nfe"] == 1


def test_restore_measured_inpaint_with_mask(tmp_path, inputs, capsys):
    code, _, err = run(
        ["restore", inputs["damaged"], "--measured", "--mask", inputs["mask"], "--method", "pinv"]
        + ["--out", tmp_path],
        capsys,
    )
    assert code == 0, err
    x_hat = load_image(tmp_path / "damaged_inpaint-mask_pinv.png")
    damaged = load_image(inputs["damaged"])
    assert torch.equal(x_hat[..., 20:40, 24:44], torch.zeros_like(x_hat[..., 20:40, 24:44]))  # hole zeroed
    assert torch.allclose(x_hat[..., :20, :], damaged[..., :20, :])
    rec = json.loads((tmp_path / "damaged_inpaint-mask_pinv.json").read_text())
    assert rec["task"] == "inpaint-mask" and rec["mask"] == str(inputs["mask"])


def test_restore_default_mode_with_mask(tmp_path, inputs, capsys):
    code, _, err = run(
        ["restore", FACE, "--mask", inputs["mask"], "--method", "pinv", "--out", tmp_path], capsys
    )
    assert code == 0, err
    rec = json.loads((tmp_path / "face_189080_inpaint-mask_pinv.json").read_text())
    assert math.isfinite(rec["metrics"]["psnr"])


@pytest.mark.parametrize("which", ["sino", "sino3d"])
def test_restore_measured_ct_sinogram(tmp_path, inputs, capsys, which):
    code, _, err = run(
        ["restore", inputs[which], "--measured", "--task", "ct30", "--method", "pinv", "--out", tmp_path],
        capsys,
    )
    assert code == 0, err
    x_hat = load_image(tmp_path / f"{which}_ct30_pinv.png")
    assert x_hat.shape == (1, 1, 64, 64)
    truth = shepp_logan(64)
    assert float(((x_hat - truth) ** 2).mean()) < 0.01  # FBP of a noiseless sinogram


def test_restore_ct_default_mode(tmp_path, inputs, capsys):
    code, _, err = run(
        ["restore", inputs["phantom"], "--task", "ct30", "--method", "pinv", "--out", tmp_path], capsys
    )
    assert code == 0, err
    rec = json.loads((tmp_path / "phantom_ct30_pinv.json").read_text())
    assert rec["metrics"]["psnr"] > 18 and rec["measurement_shape"] == [1, 30, 91]


def test_restore_ct_poisson_noise(tmp_path, inputs, capsys):
    argv = ["restore", inputs["phantom"], "--task", "ct18-fan", "--method", "fista-tv", "--param", "iters=30"]
    code, _, err = run([*argv, "--noise", "poisson", "--photons", 1e4, "--out", tmp_path], capsys)
    assert code == 0, err
    rec = json.loads((tmp_path / "phantom_ct18-fan_fista-tv.json").read_text())
    assert rec["noise"] == "poisson" and rec["photons"] == 1e4 and rec["measurement_shape"] == [1, 18, 95]
    assert rec["metrics"]["psnr"] > 20
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["args"]["noise"] == "poisson" and cfg["args"]["measured_kind"] == "line-integrals"


def test_restore_noise_help_names_every_weighted_method(capsys):
    """The CLI stays torch-free at parse time, so its --noise help spells the weighted methods out;
    it must name exactly the library's ``WEIGHTED_METHODS``."""
    import re

    from diffinv.cli import build_parser
    from diffinv.operators.noise import WEIGHTED_METHODS

    restore_parser = build_parser()._subparsers._group_actions[0].choices["restore"]
    text = next(a.help for a in restore_parser._actions if "--noise" in a.option_strings)
    listed = re.search(r"\); (.*) then use the per-bin variance", text).group(1)
    assert sorted(m.strip() for m in listed.split(",")) == sorted(WEIGHTED_METHODS)


@pytest.mark.parametrize("kind", ["counts", "line-integrals"])
def test_restore_measured_ct_counts(tmp_path, inputs, capsys, kind):
    from diffinv.operators.noise import PoissonNoise

    op = from_spec("ct30", (1, 64, 64))
    noise = PoissonNoise(1e5)
    counts = noise.counts(op, shepp_logan(64), torch.Generator().manual_seed(0))
    data = counts if kind == "counts" else noise.from_counts(op, counts)[0]
    np.save(tmp_path / "scan.npy", data[0, 0].numpy())
    argv = ["restore", tmp_path / "scan.npy", "--measured", "--task", "ct30", "--method", "fista-tv"]
    argv += ["--param", "iters=30", "--measured-kind", kind, "--noise", "poisson", "--photons", 1e5]
    code, _, err = run([*argv, "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    x_hat = load_image(tmp_path / "out" / "scan_ct30_fista-tv.png")
    assert float(((x_hat - shepp_logan(64)) ** 2).mean()) < 0.01


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--task", "sr2", "--noise", "poisson"], "need a CT task"),
        (["--task", "ct18", "--measured-kind", "counts"], "add --measured"),
        (["--task", "ct18", "--noise", "poisson", "--photons", 0], "photon count I0 must be"),
    ],
)
def test_restore_noise_errors(tmp_path, inputs, capsys, extra, match):
    code, _, err = run(["restore", inputs["phantom"], "--method", "pinv", *extra, "--out", tmp_path], capsys)
    assert code == 2 and match in err, err


# ----------------------------------------------------------------------------------- --config
def test_config_round_trip_and_override(tmp_path, inputs, capsys):
    first = tmp_path / "first"
    argv = ["restore", FACE, "--task", "sr2", "--method", "fista-tv", "--param", "iters=3", "--sigma-y", 0.05]
    argv += ["--threads", 1]
    assert run([*argv, "--seed", 4, "--out", first], capsys)[0] == 0
    cfg = json.loads((first / "config.json").read_text())
    assert cfg["command"] == "restore"
    assert cfg["args"]["task"] == "sr2" and cfg["args"]["seed"] == 4 and cfg["args"]["param"] == ["iters=3"]
    assert cfg["args"]["inputs"] == [str(FACE)]
    # repeat it: identical output
    again = tmp_path / "again"
    assert run(["restore", "--config", first / "config.json", "--out", again], capsys)[0] == 0
    name = "face_189080_sr2_fista-tv.png"
    assert (again / name).read_bytes() == (first / name).read_bytes()
    # explicit flags override the file's values
    other = tmp_path / "other"
    assert run(["restore", "--config", first / "config.json", "--out", other, "--seed", 5], capsys)[0] == 0
    rec = json.loads((other / "face_189080_sr2_fista-tv.json").read_text())
    assert rec["seed"] == 5 and rec["sigma_y"] == 0.05 and rec["solver_params"]["iters"] == 3
    assert json.loads((other / "config.json").read_text())["args"]["seed"] == 5


def test_config_errors(tmp_path, capsys):
    bad_key = tmp_path / "bad_key.json"
    bad_key.write_text(json.dumps({"command": "restore", "args": {"task": "sr4", "stepz": 3}}))
    code, _, err = run(["restore", FACE, "--config", bad_key, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "stepz" in err and err.count("\n") == 1
    other_cmd = tmp_path / "demo.json"
    other_cmd.write_text(json.dumps({"command": "demo", "args": {"seed": 1}}))
    code, _, err = run(["restore", FACE, "--config", other_cmd, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "diffinv demo" in err
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    code, _, err = run(["restore", FACE, "--config", broken, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "cannot read config" in err
    assert files_in(tmp_path / "o") == []


# ----------------------------------------------------------------------------------- listings
def test_models_tasks_methods(capsys):
    code, out, _ = run(["models"], capsys)
    assert code == 0
    assert "natural-64" in out and "ct-ellipses-64" in out and "64x64" in out and "MiB" in out
    assert "diffusers" in out and "ADM" in out and "score-SDE" in out and "hub id" in out
    code, out, _ = run(["tasks"], capsys)
    assert code == 0 and all(word in out for word in ("sr<k>", "inpaint-box", "colorize", "ct<views>"))
    code, out, _ = run(["methods"], capsys)
    assert code == 0
    for name in ("ddnm", "mcg", "pinv", "fista-tv", "dps"):
        assert f"  {name} " in out
    assert "[classical]" in out and "[svd]" in out


# ----------------------------------------------------------------------------------- bad input
BAD = {
    "unreadable image": (["{not_image}", "--task", "sr4", "--method", "pinv"], "cannot read image"),
    "not an image file": (["{text}", "--task", "sr4", "--method", "pinv"], "unsupported file type"),
    "missing file": (["{text}.png", "--task", "sr4", "--method", "pinv"], "not found"),
    "mask size": (["{face}", "--mask", "{mask_small}", "--method", "pinv"], "32x32"),
    "missing mask": (["{face}", "--mask", "{text}.png", "--method", "pinv"], "mask file not found"),
    "mask with other task": (["{face}", "--mask", "{mask}", "--task", "sr4"], "inpainting"),
    "gray for colorize": (["{gray}", "--task", "colorize", "--method", "pinv"], "grayscale"),
    "gray for natural prior": (["{gray}", "--task", "sr4", "--method", "ddnm"], "RGB"),
    "colour for ct": (["{face}", "--task", "ct30", "--method", "pinv"], "colour"),
    "colour for colorize --measured": (
        ["{face}", "--measured", "--task", "colorize"],
        "grayscale observation",
    ),
    "gray observation, rgb prior": (["{gray}", "--measured", "--task", "sr4"], "grayscale"),
    "nan sinogram": (["{sino_nan}", "--measured", "--task", "ct30", "--method", "pinv"], "NaN"),
    "negative sigma": (["{face}", "--task", "sr4", "--sigma-y", "-0.1"], "sigma"),
    "unknown task": (["{face}", "--task", "sr4x", "--method", "pinv"], "unknown or malformed"),
    "unknown method": (["{face}", "--task", "sr4", "--method", "magic"], "unknown method"),
    "unknown model": (["{face}", "--task", "sr4", "--model", "no-such-prior"], "no-such-prior"),
    "ct size vs prior": (["{phantom128}", "--task", "ct30", "--method", "ddnm"], "64x64"),
    "ct sinogram size vs prior": (["{sino_small}", "--measured", "--task", "ct30"], "91 bins"),
    "ct views": (["{sino}", "--measured", "--task", "ct60", "--method", "pinv"], "(1, 60, 91)"),
    "sr not divisible": (["{odd}", "--task", "sr4", "--method", "pinv"], "not divisible"),
    "svd method on ct": (["{phantom}", "--task", "ct30", "--method", "ddrm"], "SVD"),
    "bad param": (["{face}", "--task", "sr4", "--param", "eta"], "KEY=VALUE"),
    "unknown param": (["{face}", "--task", "sr4", "--method", "pinv", "--param", "zeta=1"], "zeta"),
    "bad steps": (["{face}", "--task", "sr4", "--steps", "0"], "--steps"),
    "no input": (["--task", "sr4"], "no INPUT"),
    "no task": (["{face}", "--method", "pinv"], "--task is required"),
    "same stems": (["{face}", "{face}", "--task", "sr4", "--method", "pinv"], "same output names"),
    "parse error": (["{face}", "--task", "sr4", "--steps", "many"], "invalid int value"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_restore_bad_input(case, tmp_path, inputs, capsys):
    argv, expected = BAD[case]
    out = tmp_path / "out"
    argv = [a.format(**{k: str(v) for k, v in inputs.items()}) for a in argv]
    code, stdout, err = run(["restore", *argv, "--out", out], capsys)
    assert code == 2
    assert err.startswith("diffinv restore: error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert files_in(out) == []


@pytest.mark.parametrize("error", [DiffinvError, RuntimeError])
def test_failure_mid_run_leaves_no_files(tmp_path, monkeypatch, capsys, error):
    """Inputs are validated first; should a restoration still fail, earlier outputs are removed.
    A user error (DiffinvError) is one line and exit 2; anything else is a bug and propagates
    (the traceback shows) -- in both cases nothing half-written is left."""
    from diffinv import pipeline

    real = pipeline.degrade_and_restore
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise error("solver exploded")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "degrade_and_restore", flaky)
    second = tmp_path / "copy.png"
    second.write_bytes(FACE.read_bytes())
    out = tmp_path / "out"
    argv = ["restore", FACE, second, "--task", "sr4", "--method", "pinv", "--out", out]
    if error is DiffinvError:
        code, _, err = run(argv, capsys)
        assert code == 2 and "solver exploded" in err
    else:
        with pytest.raises(RuntimeError, match="solver exploded"):
            run(argv, capsys)
    assert not out.exists()


def test_param_parsing():
    parsed = restore._parse_params(
        ["a=1", "b=0.5", "c=true", "d=False", "e=none", "f=ve", "grad-weight=1e-2"]
    )
    assert parsed == {"a": 1, "b": 0.5, "c": True, "d": False, "e": None, "f": "ve", "grad_weight": 0.01}
    assert restore._ct_size_from_bins(91) == 64 and restore._ct_size_from_bins(46) == 32


def test_entry_point_subprocess(tmp_path):
    """The real entry point: ``python -m diffinv restore ...``."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    cmd = [sys.executable, "-m", "diffinv", "restore", str(FACE), "--task", "sr4", "--method", "pinv"]
    done = subprocess.run([*cmd, "--out", str(tmp_path)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "PSNR" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "face_189080_sr4_pinv.json",
        "face_189080_sr4_pinv.png",
    ]


def test_methods_name_lists_the_defaults_per_task_family(capsys):
    from diffinv import solvers

    assert main(["methods", "mcg"]) == 0
    out = capsys.readouterr().out
    cls = solvers.get_class("mcg")
    ve_ct = cls.family_defaults("ct", {"form": "ve"})
    assert "ct (ve) tasks:" in out and all(f"{k}={v!r}" in out for k, v in ve_ct.items())
    assert main(["methods", "no-such-method"]) == 2
    assert "unknown method 'no-such-method'" in capsys.readouterr().err
