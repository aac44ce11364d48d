"""Input handling of ``restore`` / ``eval``: replayable configs, integer sinograms, odd masks,
bad ``--param`` values, and ``eval``'s thread count (results independent of torchrun's K)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffinv import priors
from diffinv.cli import main
from diffinv.data.ellipses import shepp_logan
from diffinv.operators import from_spec
from diffinv.preflight import InputWarning
from diffinv.restore import restore_files

FACE = Path(__file__).resolve().parents[1] / "src" / "diffinv" / "assets" / "images" / "face_189080.png"


def run(argv: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def no_prior(monkeypatch):
    """Fail if a prior is loaded: the error under test must come before."""

    def refuse(*args, **kwargs):
        raise AssertionError("the prior was loaded before the input was checked")

    monkeypatch.setattr(priors, "load", refuse)


def _mask(path: Path, value: int) -> Path:
    Image.fromarray(np.full((64, 64), value, np.uint8)).save(path)
    return path


# ----------------------------------------------------------------------------- --config from any cwd
def test_restore_config_replays_from_another_working_directory(tmp_path, monkeypatch, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    shutil.copy(FACE, first / "face.png")
    keep = np.full((64, 64), 255, np.uint8)
    keep[20:40, 24:44] = 0
    Image.fromarray(keep).save(first / "keep.png")
    monkeypatch.chdir(first)
    code, _, err = run(
        ["restore", "face.png", "--mask", "keep.png", "--method", "pinv", "--out", "out"], capsys
    )
    assert code == 0, err
    args = json.loads((first / "out" / "config.json").read_text())["args"]
    assert args["inputs"] == [str(first / "face.png")] and args["mask"] == str(first / "keep.png")
    monkeypatch.chdir(second)  # where neither face.png nor keep.png exists
    code, _, err = run(["restore", "--config", first / "out" / "config.json"], capsys)
    assert code == 0, err
    name = "face_inpaint-mask_pinv.png"
    assert (second / "out" / name).read_bytes() == (first / "out" / name).read_bytes()


def test_eval_config_replays_from_another_working_directory(tmp_path, monkeypatch, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "photos").mkdir(parents=True)
    second.mkdir()
    shutil.copy(FACE, first / "photos" / "face.png")
    monkeypatch.chdir(first)
    argv = ["eval", "--data", "photos", "--task", "sr2", "--methods", "pinv", "--crop", "32", "--quiet"]
    assert run([*argv, "--out", "out"], capsys)[0] == 0
    args = json.loads((first / "out" / "config.json").read_text())["args"]
    assert args["data"] == str(first / "photos")
    monkeypatch.chdir(second)
    code, _, err = run(
        ["eval", "--config", first / "out" / "config.json", "--out", "again", "--quiet"], capsys
    )
    assert code == 0, err

    # every column but the wall-clock seconds (a timing, different on each run)
    def table(path):
        rows = list(csv.DictReader(path.open()))
        return [{k: v for k, v in r.items() if "sec" not in k} for r in rows]

    assert table(second / "again" / "metrics.csv") == table(first / "out" / "metrics.csv")


# ----------------------------------------------------------------------------- integer sinograms
@pytest.mark.parametrize("dtype", ["uint16", "uint8", "int32", "bool"])
def test_integer_sinogram_is_refused(dtype, tmp_path, capsys, no_prior):
    sino = from_spec("ct30", (1, 64, 64)).A(shepp_logan(64))[0, 0].numpy()
    path = tmp_path / "sino.npy"
    np.save(path, (sino * 1000).astype(dtype))
    out = tmp_path / "out"
    code, _, err = run(
        ["restore", path, "--measured", "--task", "ct30", "--method", "ddnm", "--out", out], capsys
    )
    assert code == 2 and err.count("\n") == 1, err
    assert "must hold float line integrals" in err and dtype in err
    assert not out.exists()


def test_float_sinogram_is_accepted(tmp_path, capsys):
    sino = from_spec("ct30", (1, 64, 64)).A(shepp_logan(64))[0, 0].numpy().astype(np.float32)
    np.save(tmp_path / "sino.npy", sino)
    argv = ["restore", tmp_path / "sino.npy", "--measured", "--task", "ct30", "--method", "pinv"]
    code, _, err = run([*argv, "--out", tmp_path / "out", "--quiet"], capsys)
    assert code == 0 and err == ""


# ----------------------------------------------------------------------------- masks
@pytest.mark.parametrize(
    ("value", "expected"), [(0, "keeps no pixel"), (255, "keeps every pixel"), (None, None)]
)
def test_mask_that_keeps_nothing_or_everything_warns_once(value, expected, tmp_path, capsys):
    if value is None:  # an ordinary mask: no warning
        keep = np.full((64, 64), 255, np.uint8)
        keep[20:40, 24:44] = 0
        Image.fromarray(keep).save(tmp_path / "mask.png")
    else:
        _mask(tmp_path / "mask.png", value)
    out = tmp_path / "out"
    code, _, err = run(
        ["restore", FACE, "--mask", tmp_path / "mask.png", "--method", "pinv", "--out", out], capsys
    )
    assert code == 0  # legal: the run goes on
    if expected is None:
        assert err == ""
    else:
        assert err.count("\n") == 1 and err.startswith("diffinv restore: warning: mask ") and expected in err
    assert (out / "face_189080_inpaint-mask_pinv.png").is_file()


def test_bad_all_black_mask_gives_the_error_alone(tmp_path, capsys):
    """The warning comes once every input passed its checks: an error is still one line."""
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "small.png")
    out = tmp_path / "out"
    code, _, err = run(
        ["restore", FACE, "--mask", tmp_path / "small.png", "--method", "pinv", "--out", out], capsys
    )
    assert (
        code == 2 and err.count("\n") == 1 and err.startswith("diffinv restore: error: ") and "32x32" in err
    )
    assert not out.exists()


def test_mask_warning_from_python_is_an_input_warning(tmp_path):
    mask = _mask(tmp_path / "black.png", 0)
    with pytest.warns(InputWarning, match="keeps no pixel"):
        restore_files(FACE, None, "pinv", mask=mask, out=tmp_path / "out", progress=False)
    seen = []
    restore_files(FACE, None, "pinv", mask=mask, out=tmp_path / "out2", progress=False, warn=seen.append)
    assert len(seen) == 1 and "keeps no pixel" in seen[0]


# ----------------------------------------------------------------------------- --param values
@pytest.mark.parametrize(
    ("method", "param", "expected"),
    [
        ("ddnm", "eta=abc", ["eta", "'abc'", "must be a number"]),
        ("dps", "zeta=fast", ["zeta", "'fast'", "must be a number"]),
        ("pinv", "use_fbp=3", ["use_fbp", "3", "true or false"]),
    ],
)
def test_bad_param_value_names_the_parameter_before_the_prior(
    method, param, expected, tmp_path, capsys, no_prior
):
    out = tmp_path / "out"
    code, _, err = run(
        ["restore", FACE, "--task", "sr4", "--method", method, "--param", param, "--out", out], capsys
    )
    assert code == 2 and err.startswith("diffinv restore: error: ") and err.count("\n") == 1, err
    assert all(word in err for word in expected), err
    assert not out.exists()


def test_bad_param_value_of_a_none_default_names_the_parameter(tmp_path, capsys):
    """ddnm+'s eta defaults to None (chosen from the noise); the solver's own float() failure
    ("could not convert string to float") is reported with the parameter's name."""
    out = tmp_path / "out"
    argv = ["restore", FACE, "--task", "sr4", "--method", "ddnm+", "--param", "eta=abc", "--steps", "1"]
    code, _, err = run([*argv, "--out", out], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "--param eta='abc'" in err
    assert not out.exists()


# ----------------------------------------------------------------------------- eval threads
def test_eval_runs_on_one_thread_unless_told(monkeypatch, tmp_path, capsys):
    """One thread per process, as under torchrun: results then do not depend on the number of
    processes (the thread count changes the rounding of sums). The caller's setting is restored."""
    from diffinv import evaluate as evaluate_module

    seen = []

    def fake_evaluate(*args, **kwargs):
        seen.append(torch.get_num_threads())
        (Path(args[3]) / "results.md").parent.mkdir(parents=True, exist_ok=True)
        (Path(args[3]) / "results.md").write_text("")
        return {}

    monkeypatch.setattr(evaluate_module, "evaluate", fake_evaluate)
    argv = ["eval", "--data", "ellipses:2", "--task", "ct18", "--methods", "pinv", "--out", tmp_path / "o"]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert run(argv, capsys)[0] == 0
        assert run([*argv, "--threads", "3"], capsys)[0] == 0
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 3] and after == 2
