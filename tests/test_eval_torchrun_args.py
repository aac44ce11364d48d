"""``diffinv eval`` options survive torchrun's own argument parser.

torchrun parses its command line with argparse, abbreviations allowed, *before* handing the rest
to the script: an eval option that is a prefix of one of torchrun's options is taken by torchrun.
``--n`` was (an ambiguous prefix of ``--nproc-per-node``, ``--nnodes``, ``--node-rank``, ...), so
``torchrun ... -m diffinv eval ... --n 20`` died with torchrun's usage error; it is ``--limit`` now.
These tests run torchrun's parser (``torch.distributed.run.get_args_parser``) on the README's
torchrun command lines, extended by every eval option (all that the README shows, and the rest
of ``diffinv eval --help``); no process is launched.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest
from torch.distributed.run import get_args_parser

from diffinv.cli import _subparsers, build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_lines() -> list[str]:
    return [line.strip() for line in README.read_text(encoding="utf-8").splitlines()]


def _torchrun_lines() -> list[str]:
    return [line for line in _readme_lines() if line.startswith("torchrun ")]


def _eval_parser() -> argparse.ArgumentParser:
    return _subparsers(build_parser())["eval"]


def _visible_eval_options() -> dict[str, argparse.Action]:
    """Option string -> action, for the options ``diffinv eval --help`` lists."""
    return {
        opt: action
        for action in _eval_parser()._actions  # argparse has no public list of actions
        if action.help != argparse.SUPPRESS
        for opt in action.option_strings
        if opt.startswith("--") and opt != "--help"
    }


def _eval_args_of(line: str) -> list[str]:
    """The arguments after ``diffinv`` in a torchrun / ``diffinv eval`` command line."""
    words = shlex.split(line)
    return words[words.index("diffinv") + 1 :]


def _readme_eval_options() -> set[str]:
    """Every eval option the README shows: in eval command lines, and as `--x` in the Evaluate section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Evaluate") :]
    section = section[: section.index("\n## ")]
    visible = _visible_eval_options()
    shown = set()
    for line in _readme_lines():
        if line.startswith(("diffinv eval ", "torchrun ")):
            opts = [w for w in _eval_args_of(line) if w.startswith("--")]
            unknown = [o for o in opts if o not in visible]
            assert not unknown, f"README line uses options diffinv eval does not list: {unknown}: {line}"
            shown.update(opts)
    # inline mentions in the prose; torchrun's own options and the hidden --n are mentioned too
    shown.update(o for o in re.findall(r"`(--[a-z][a-z-]*)", section) if o in visible)
    return shown


def _sample_value(action: argparse.Action) -> list[str]:
    if action.nargs == 0:  # a flag
        return []
    return ["2" if action.type is int else "0.1" if action.type is float else "x"]


def test_readme_torchrun_lines_pass_every_eval_option_through():
    lines = _torchrun_lines()
    assert lines, "README.md shows no torchrun command line"
    shown = _readme_eval_options()
    assert {"--data", "--task", "--methods", "--limit", "--out", "--threads"} <= shown
    visible = _visible_eval_options()
    for line in lines:
        argv = shlex.split(line)[1:]
        script_args = _eval_args_of(line)
        assert script_args[0] == "eval"
        present = {w for w in script_args if w.startswith("--")}
        # every other eval option appended: those the README shows (a subset, checked above by
        # _readme_eval_options) and the rest of `diffinv eval --help`, so new options are covered
        assert shown <= set(visible)
        for opt in sorted(set(visible) - present):
            script_args += [opt, *_sample_value(visible[opt])]
        argv = argv[: argv.index("diffinv") + 1] + script_args
        ns = get_args_parser().parse_args(argv)
        assert ns.module and ns.training_script == "diffinv"
        assert ns.training_script_args == script_args  # passed through unchanged
        assert _eval_parser().parse_args(script_args[1:]).out  # and diffinv eval accepts them


def test_n_is_rejected_by_torchrun_hence_limit(capsys):
    line = _torchrun_lines()[0]
    assert "--limit" in line
    with pytest.raises(SystemExit) as exc:
        get_args_parser().parse_args(shlex.split(line.replace("--limit", "--n"))[1:])
    assert exc.value.code == 2
    assert "ambiguous option: --n" in capsys.readouterr().err


def test_n_still_works_outside_torchrun_but_is_hidden():
    ev = _eval_parser()
    assert ev.parse_args(["--limit", "3"]).n == 3
    assert ev.parse_args(["--n", "3"]).n == 3  # the old spelling, same destination
    assert "--limit" in ev.format_help() and "--n " not in ev.format_help()


@pytest.mark.parametrize("flag", ["--limit", "--n"])
def test_limit_uses_the_first_images(flag, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["eval", "--data", "ellipses:3", "--task", "ct18", "--methods", "pinv", "--crop", "32"]
    assert main([*argv, flag, "2", "--out", str(out), "--quiet"]) == 0
    lines = (out / "metrics.csv").read_text().splitlines()
    assert [ln.split(",")[0] for ln in lines[1:]] == ["0000_ellipse", "0001_ellipse"]
    assert main([*argv, "--limit", "0", "--out", str(tmp_path / "o2")]) == 2
    assert "--limit must be >= 1" in capsys.readouterr().err
