"""Checks that run before any heavy work: output folders, input files, ``--param`` strings.

Torch-free on purpose (standard library only): the command line calls these before importing
torch or loading a prior, so a typo in ``--out`` or a missing INPUT is reported in well under a
second instead of after minutes of set-up (or, worse, after the restoration itself). The library
functions (:func:`diffinv.restore.restore_files`, :func:`diffinv.evaluate.evaluate`, ...) call
them too. Every check raises a one-line ``ValueError`` and writes nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import DiffinvError

__all__ = ["InputWarning", "check_output_dir", "check_input_files", "parse_params"]


class InputWarning(UserWarning):
    """Legal but suspicious input (e.g. an inpainting mask that keeps no pixel): the run goes on."""


def _not_writable_reason(folder: Path) -> str:
    """Why ``folder`` cannot be written to: a read-only mount, or permissions."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "is on a read-only file system"
    except (AttributeError, OSError):  # no statvfs (Windows), or it failed: fall back to the generic reason
        pass
    return "is not writable"


def check_output_dir(out: str | os.PathLike, option: str = "--out") -> Path:
    """Check that ``out`` is, or can become, a writable folder; create nothing. Returns ``Path(out)``.

    An existing ``out`` must be a writable folder. Otherwise the closest existing ancestor must
    be a writable folder (it is where ``mkdir -p`` would start). ``os.access`` answers False for
    a read-only mount (EROFS) as well as for missing permissions. ``option`` names the setting in
    the messages (``--out``, ``out``).

    Raises:
        ValueError: (one line) ``out`` is a file, lies under a file, or cannot be written.
    """
    p = Path(out)
    if p.is_symlink() and not p.exists():
        raise DiffinvError(f"{option} {p} is a broken symbolic link")
    if p.exists():
        if not p.is_dir():
            raise DiffinvError(f"{option} {p} exists and is not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise DiffinvError(f"{option} {p}: the folder {_not_writable_reason(p)}")
        return p
    ancestor = Path(os.path.abspath(p)).parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DiffinvError(f"{option} {p} cannot be created: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise DiffinvError(f"{option} {p} cannot be created: {ancestor} {_not_writable_reason(ancestor)}")
    return p


def check_input_files(paths: Iterable[str | os.PathLike], what: str = "image file") -> list[Path]:
    """Check that every path is an existing, readable regular file; returns them as ``Path``s.

    Raises:
        ValueError: (one line, naming the first bad path) missing, not a file, or unreadable.
    """
    checked = []
    for item in paths:
        p = Path(item)
        if not p.exists():
            raise DiffinvError(f"{what} not found: {p}")
        if not p.is_file():
            raise DiffinvError(f"not a regular file: {p}")
        if not os.access(p, os.R_OK):
            raise DiffinvError(f"{what} {p} is not readable (permission denied)")
        checked.append(p)
    return checked


def parse_params(items: Sequence[str] | None, option: str = "--param") -> dict:
    """``--param KEY=VALUE`` items -> dict; values parsed as bool / None / int / float / string.

    Dashes in keys become underscores (``grad-weight`` is ``grad_weight``). ``option`` names the
    command-line option in the error messages.

    Raises:
        ValueError: (one line) an item without ``=`` or a key, or a non-finite number.
    """
    params: dict = {}
    for item in items or []:
        key, sep, raw = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise DiffinvError(f"{option} expects KEY=VALUE, got {item!r}")
        raw = raw.strip()
        low = raw.lower()
        if low in ("true", "false"):
            value: object = low == "true"
        elif low in ("none", "null"):
            value = None
        else:
            try:
                value = int(raw)
            except ValueError:
                try:
                    value = float(raw)
                except ValueError:
                    value = raw
            if isinstance(value, float) and not math.isfinite(value):
                raise DiffinvError(f"{option} {key}: value must be finite, got {raw!r}")
        params[key] = value
    return params


def check_device(name: str):
    """``torch.device(name)``, refused with a one-line DiffinvError when unknown or not available
    here (imports torch: call it after the torch-free checks)."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise DiffinvError(f"unknown device {name!r} ({' '.join(str(e).split())})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DiffinvError(f"device {name!r} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DiffinvError(f"device {name!r} requested but MPS is not available")
    return device
