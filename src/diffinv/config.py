"""Run configurations: every command writes ``OUT/config.json``; ``--config FILE`` repeats a run.

A configuration file is the JSON object written by :func:`write_config`::

    {"command": "restore", "diffinv_version": "0.1.0", "args": {"task": "sr4", "steps": 50, ...}}

``args`` holds the command's argparse values by destination name (``sigma_y``, not
``--sigma-y``). Loading one with ``--config`` makes its values the *defaults* of that
command's parser, so flags given explicitly on the command line still win
(``diffinv restore --config out/config.json --seed 3`` repeats the run with another seed).
A bare ``{"task": "sr4", ...}`` object (no ``args`` key) is accepted too, for hand-written files.

Using it from a command (what ``cli.py`` does for ``restore`` and ``demo``; ``eval`` can do the same):

1. in the command's parser block, call ``add_config_argument(parser)``;
2. nothing else at parse time: :func:`diffinv.cli.main` notices ``args.config`` and re-parses with
   :func:`apply_config` (values from the file as defaults, unknown keys refused);
3. once the run's outputs are written, call ``write_config(out_dir, "eval", args)``.

Helpers raise ``ValueError`` with a one-line message naming the file and the problem.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from . import __version__
from .errors import DiffinvError

#: Namespace entries that describe how a run was invoked rather than what it does.
_NOT_SAVED = ("func", "config", "command")


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` (a ``config.json`` of an earlier run) to a command's parser."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="repeat a run: JSON config (e.g. OUT/config.json); flags given here override its values",
    )


def load_config(path: str | os.PathLike, command: str | None = None) -> dict:
    """The settings stored in a config file, as ``{dest: value}``.

    ``command``, when given, must match the file's ``command`` entry (if it has one): a config
    written by ``demo`` cannot silently drive ``restore``.
    """
    p = Path(path)
    if not p.is_file():
        raise DiffinvError(f"config file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DiffinvError(f"cannot read config file {p}: {' '.join(str(e).split())}") from e
    if not isinstance(data, dict):
        raise DiffinvError(f"config file {p} must hold a JSON object, got {type(data).__name__}")
    stored = data.get("command")
    if command is not None and stored is not None and stored != command:
        raise DiffinvError(f"config file {p} is for 'diffinv {stored}', not 'diffinv {command}'")
    settings = data.get("args", data)
    if not isinstance(settings, dict):
        raise DiffinvError(f"config file {p}: 'args' must be a JSON object")
    if "args" not in data:
        settings = {k: v for k, v in settings.items() if k not in ("command", "diffinv_version")}
    return {k: v for k, v in settings.items() if k not in _NOT_SAVED}


def settable_options(parser: argparse.ArgumentParser) -> set[str]:
    """The destination names a config file may set on ``parser`` (help and --config excluded)."""
    return {
        a.dest
        for a in parser._actions  # argparse exposes no public list of a parser's actions
        if a.dest not in (argparse.SUPPRESS, "help", "config")
    }


def apply_config(parser: argparse.ArgumentParser, path: str | os.PathLike, command: str) -> dict:
    """Load ``path`` and install its values as ``parser``'s defaults; returns them.

    Unknown keys are refused (a typo would otherwise be ignored silently). Call ``parse_args``
    again afterwards so that the explicit command-line flags override the file's values.
    """
    settings = load_config(path, command)
    unknown = sorted(set(settings) - settable_options(parser))
    if unknown:
        raise DiffinvError(
            f"config file {path} has setting(s) {', '.join(unknown)} that 'diffinv {command}' does not accept"
        )
    parser.set_defaults(**settings)
    return settings


def _jsonable(value):
    """Namespace values as JSON: paths -> str, tuples -> lists, non-finite floats -> str."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def config_dict(command: str, args: argparse.Namespace | dict) -> dict:
    """The JSON-ready configuration of a run (see the module docstring for the layout)."""
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    saved = {k: _jsonable(v) for k, v in sorted(values.items()) if k not in _NOT_SAVED}
    return {"command": command, "diffinv_version": __version__, "args": saved}


def write_json_atomic(data, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON at ``path`` via a temporary file and a rename."""
    from .data.io import _atomic_write  # here, not at the top: data.io imports torch (slow CLI start)

    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    return _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_config(out_dir: str | os.PathLike, command: str, args: argparse.Namespace | dict) -> Path:
    """Write ``out_dir/config.json`` (atomically) so that ``--config`` can repeat the run."""
    return write_json_atomic(config_dict(command, args), Path(out_dir) / "config.json")
