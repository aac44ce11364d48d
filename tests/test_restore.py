"""The Python API behind ``diffinv restore``: :func:`diffinv.restore.restore_files`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from diffinv.cli import main
from diffinv.data.io import load_image, save_image
from diffinv.restore import restore_files

FACE = Path(__file__).resolve().parents[1] / "src" / "diffinv" / "assets" / "images" / "face_189080.png"


def test_restore_files_returns_the_records_it_writes(tmp_path):
    out = tmp_path / "out"
    seen = []
    records = restore_files(FACE, "sr4", "ddnm", steps=1, out=out, progress=False, on_record=seen.append)
    assert len(records) == 1 and seen == records
    rec = records[0]
    assert rec["input"] == str(FACE) and rec["task"] == "sr4" and rec["method"] == "ddnm"
    assert rec["model"] == "natural-64" and rec["nfe"] == 1 and rec["device"] == "cpu"
    assert math.isfinite(rec["metrics"]["psnr"]) and rec["metrics"]["consistency"] < 1e-4
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "face_189080_sr4_ddnm.json",
        "face_189080_sr4_ddnm.png",
    ]
    assert json.loads((out / "face_189080_sr4_ddnm.json").read_text()) == rec
    assert load_image(rec["output"]).shape == (1, 3, 64, 64)


def test_restore_files_params_mapping_and_config_repeat(tmp_path):
    """Hyperparameters as a dict; the config.json it writes repeats the run via the CLI."""
    first = tmp_path / "first"
    (rec,) = restore_files(
        [FACE], "inpaint-box", "cg-tikhonov", params={"lam": 0, "iters": 5}, sigma_y=0.01, seed=3, out=first
    )
    assert rec["solver_params"]["lam"] == 0 and rec["solver_params"]["iters"] == 5 and rec["model"] is None
    cfg = json.loads((first / "config.json").read_text())
    assert cfg["command"] == "restore" and cfg["args"]["param"] == ["lam=0", "iters=5"]
    assert cfg["args"]["seed"] == 3 and cfg["args"]["inputs"] == [str(FACE)]
    again = tmp_path / "again"
    assert main(["restore", "--config", str(first / "config.json"), "--out", str(again), "--quiet"]) == 0
    name = "face_189080_inpaint-box_cg-tikhonov.png"
    assert (again / name).read_bytes() == (first / name).read_bytes()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (dict(inputs=[], task="sr4"), "no INPUT"),
        (dict(task=None), "--task is required"),
        (dict(task="sr4", steps=0), "--steps must be a positive integer"),
        (dict(task="sr4", sigma_y=-1.0), "--sigma-y must be a finite number >= 0"),
        (dict(task="sr4", params=["eta"]), "KEY=VALUE"),
        (dict(task="sr4", params={"zeta": 1}), "zeta"),
        (dict(task="sr4x"), "unknown or malformed"),
        (dict(task="sr4", method="magic"), "unknown method"),
        (dict(task="sr4", device="no-such-device"), "unknown device"),
    ],
)
def test_restore_files_bad_arguments(tmp_path, kwargs, expected):
    kwargs = {"inputs": [FACE], "method": "pinv", **kwargs}
    out = tmp_path / "out"
    with pytest.raises(ValueError) as info:
        restore_files(kwargs.pop("inputs"), kwargs.pop("task"), out=out, progress=False, **kwargs)
    message = str(info.value)
    assert expected in message and "\n" not in message, message
    assert not out.exists()


def test_restore_files_bad_second_input_writes_nothing(tmp_path):
    """Every input is checked before anything is written: a bad one names itself, no files appear."""
    odd = save_image(load_image(FACE)[..., :63, :], tmp_path / "odd.png")
    out = tmp_path / "out"
    with pytest.raises(ValueError) as info:
        restore_files([FACE, odd], "sr4", "pinv", out=out, progress=False)
    message = str(info.value)
    assert message.startswith(f"{odd}: image size 63x64 is not divisible") and "\n" not in message
    assert not out.exists()


def test_restore_files_failure_mid_run_removes_its_outputs(tmp_path, monkeypatch):
    """A failure after the first output was written removes this call's files, not older ones."""
    from diffinv import pipeline

    real, calls = pipeline.degrade_and_restore, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("solver exploded")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "degrade_and_restore", flaky)
    out = tmp_path / "out"
    out.mkdir()
    (out / "older.txt").write_text("kept")
    second = tmp_path / "copy.png"
    second.write_bytes(FACE.read_bytes())
    with pytest.raises(ValueError, match="solver exploded"):
        restore_files([FACE, second], "sr4", "pinv", out=out, progress=False)
    assert len(calls) == 2
    assert sorted(p.name for p in out.iterdir()) == ["older.txt"]
