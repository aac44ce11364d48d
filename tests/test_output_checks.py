"""Unusable output folders are refused before any heavy work, by every command that writes.

An ``--out`` that is a file, lies under a file, or sits in a read-only folder used to fail with a
traceback after the restoration (70-95 s). Now: one line ``diffinv <command>: error: ...``, exit
code 2, nothing created, and before the prior is loaded (``priors.load`` raises here if called).
The suite runs as root, for whom ``chmod`` does not make a folder read-only, so read-only folders
are simulated by ``os.access`` answering False for them (what it does for a read-only mount).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from diffinv import preflight, priors
from diffinv.cli import main

FACE = Path(__file__).resolve().parents[1] / "src" / "diffinv" / "assets" / "images" / "face_189080.png"

#: argv of each writing command, without --out; each would load a prior (or build a network) first
COMMANDS = {
    "restore": ["restore", str(FACE), "--task", "sr4", "--method", "ddnm", "--steps", "1"],
    "eval": ["eval", "--data", "ellipses:2", "--task", "ct18", "--methods", "pinv,ddnm", "--steps", "1"],
    "demo": ["demo", "--fast"],
    "train": ["train", "--data", "ellipses", "--channels", "1", "--steps", "1", "--batch", "1"],
}


class HeavyWorkStarted(AssertionError):
    pass


@pytest.fixture(autouse=True)
def no_heavy_work(monkeypatch):
    """Fail loudly if a command gets as far as loading a prior or building a network."""
    from diffinv import train

    def refuse(*args, **kwargs):
        raise HeavyWorkStarted("heavy work started before the output folder was checked")

    monkeypatch.setattr(priors, "load", refuse)
    monkeypatch.setattr(train, "make_unet", refuse)


def read_only(monkeypatch, *folders: Path) -> None:
    """Make ``os.access`` answer "not writable" for ``folders`` (as for a read-only mount)."""
    real = os.access
    blocked = {os.path.abspath(f) for f in folders}

    def access(path, mode, *args, **kwargs):
        if os.path.abspath(path) in blocked and mode & os.W_OK:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", ["existing file", "under a file", "read-only parent", "read-only folder"])
def test_unusable_out_is_one_line_exit_2_before_heavy_work(command, case, tmp_path, monkeypatch, capsys):
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    ro = tmp_path / "ro"
    ro.mkdir()
    if case == "existing file":
        out, expected = a_file, "exists and is not a folder"
    elif case == "under a file":
        out, expected = a_file / "sub" / "out", f"{a_file} is a file, not a folder"
    elif case == "read-only parent":
        out, expected = ro / "new" / "out", f"cannot be created: {ro} is not writable"
        read_only(monkeypatch, ro)
    else:
        out, expected = ro, "the folder is not writable"
        read_only(monkeypatch, ro)
    before = tree(tmp_path)
    code, err = run([*COMMANDS[command], "--out", str(out)], capsys)
    assert code == 2
    assert err.startswith(f"diffinv {command}: error: --out {out}") and err.count("\n") == 1, err
    assert expected in err, err
    assert tree(tmp_path) == before and a_file.read_text() == "keep me"  # nothing created or changed
    # (and no prior was loaded, nor a network built: no_heavy_work would have raised)


def test_read_only_file_system_is_named(tmp_path, monkeypatch):
    """``statvfs`` tells a read-only mount (EROFS) from missing permissions."""

    class ReadOnlyMount:
        f_flag = os.ST_RDONLY

    read_only(monkeypatch, tmp_path)
    monkeypatch.setattr(os, "statvfs", lambda path: ReadOnlyMount())
    with pytest.raises(ValueError, match=r"is on a read-only file system$"):
        preflight.check_output_dir(tmp_path / "out")


def test_usable_out_passes_and_is_not_created(tmp_path):
    assert preflight.check_output_dir(tmp_path) == tmp_path  # existing, writable
    deep = tmp_path / "a" / "b" / "c"
    assert preflight.check_output_dir(deep) == deep
    assert not (tmp_path / "a").exists()  # checking creates nothing


def test_broken_symlink_as_out_is_refused(tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "missing-target")
    with pytest.raises(ValueError, match="broken symbolic link"):
        preflight.check_output_dir(link)


@pytest.mark.parametrize("api", ["restore_files", "evaluate", "run_demo", "train"])
def test_library_functions_check_out_before_heavy_work(api, tmp_path):
    from diffinv.demo import run_demo
    from diffinv.evaluate import evaluate
    from diffinv.restore import restore_files
    from diffinv.train import TrainConfig, train

    out = tmp_path / "file.txt"
    out.write_text("x")
    calls = {
        "restore_files": lambda: restore_files(FACE, "sr4", "ddnm", out=out),
        "evaluate": lambda: evaluate("ellipses:2", "ct18", ["ddnm"], out),
        "run_demo": lambda: run_demo(out=str(out), fast=True),
        "train": lambda: train(TrainConfig(data="ellipses", out=str(out), channels=1, steps=1)),
    }
    with pytest.raises(ValueError, match="exists and is not a folder"):
        calls[api]()
    assert out.read_text() == "x"


def test_missing_input_is_reported_before_the_prior(tmp_path, capsys):
    missing, out = str(tmp_path / "nope"), str(tmp_path / "o")
    code, err = run(["restore", missing + ".png", "--task", "sr4", "--out", out], capsys)
    assert code == 2 and "input file not found" in err and err.count("\n") == 1
    code, err = run(["eval", "--data", missing, "--task", "sr4", "--methods", "ddnm", "--out", out], capsys)
    assert code == 2 and "data folder not found" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
