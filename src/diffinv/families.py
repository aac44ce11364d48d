"""Operator families: which kind of degradation an operator or a spec string is (no torch needed).

Solvers keep per-family default hyperparameters (``Solver.task_defaults``), because a setting that
suits inpainting (an operator of norm 1) can fail on CT (line integrals, singular values up to ~40):

    >>> family("ct18"), family("sr4-bicubic"), family("colorize+sr4"), family("inpaint-random0.5")
    ('ct', 'sr', 'sr', 'inpaint')
    >>> family("my-dense-matrix") is None
    True

A composition takes the family of its last factor (the one that produces the measurement);
window operators of :mod:`diffinv.tiling` (specs such as ``"sr4 window + known overlap"``) take
the family of the operator they window. Anything else has no family (None): generic defaults.
"""

from __future__ import annotations

import re

#: The families, in the order the documentation lists them.
FAMILIES = ("ct", "inpaint", "sr", "deblur", "colorize", "cs", "denoise")

_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PATTERNS = (
    ("ct", re.compile(rf"ct\d+(?:-fan)?(?:-a{_NUM})?(?:-bins\d+)?")),
    ("inpaint", re.compile(r"inpaint(?:-.*)?")),
    ("sr", re.compile(r"sr\d+(?:-bicubic)?")),
    ("deblur", re.compile(r"deblur(?:-.*)?")),
    ("colorize", re.compile(r"colori[sz]e")),
    ("cs", re.compile(rf"cs{_NUM}(?:-block\d*)?")),
    ("denoise", re.compile(r"denoise")),
)
#: Operator classes without a spec (built directly, or windows of tiled restorations).
_CLASSES = {
    "ParallelBeamCT": "ct",
    "FanBeamCT": "ct",
    "Inpaint": "inpaint",
    "SuperResolution": "sr",
    "BicubicSuperResolution": "sr",
    "SeparableWindow": "sr",
    "Blur": "deblur",
    "ValidBlurWindow": "deblur",
    "Colorize": "colorize",
    "WalshHadamardCS": "cs",
    "BlockRandomCS": "cs",
    "Denoise": "denoise",
}


def family_of_spec(spec: str) -> str | None:
    """The family of a degradation spec (``"ct18"``, ``"colorize+sr4"``, ...), or None."""
    words = str(spec).strip().lower().split()
    if not words:
        return None
    last = words[0].split("+")[-1]  # "a+b window + known overlap" -> "b"
    for name, pattern in _PATTERNS:
        if pattern.fullmatch(last):
            return name
    return None


def family(task) -> str | None:
    """The family of a spec string or an operator object (duck-typed: ``spec``, ``window_op``,
    ``ops``, class name), or None when it has none."""
    if task is None:
        return None
    if isinstance(task, str):
        return family_of_spec(task)
    spec = getattr(task, "spec", None)
    if isinstance(spec, str) and family_of_spec(spec) is not None:
        return family_of_spec(spec)
    inner = getattr(task, "window_op", None)
    if inner is not None:
        return family(inner)
    ops = getattr(task, "ops", None)
    if isinstance(ops, (list, tuple)) and ops:
        return family(ops[-1])
    for cls in type(task).__mro__:
        if cls.__name__ in _CLASSES:
            return _CLASSES[cls.__name__]
    return None
