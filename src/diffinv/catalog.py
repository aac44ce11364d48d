"""Torch-free copies of the degradation-spec and solver listings, for a fast command line.

``diffinv tasks``, ``diffinv methods`` and the command line's early checks of ``--method`` /
``--methods`` read these tables instead of importing :mod:`diffinv.operators` and
:mod:`diffinv.solvers`, which import torch (2-5 s before the first line of output). The
authoritative sources stay :func:`diffinv.operators.available_specs` and the solver registry
(:func:`diffinv.solvers.available`, :func:`diffinv.solvers.get_class`); ``tests/test_startup.py``
fails as soon as either differs from the tables here, so a new or renamed spec or solver must be
added here too.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import DiffinvError

__all__ = [
    "SPECS",
    "METHODS",
    "MethodInfo",
    "TaskInfo",
    "method_names",
    "check_method",
    "parse_task",
    "default_prior",
    "is_phantom_data",
    "NATURAL_PRIOR",
    "CT_PRIOR",
]

#: The shipped priors used when none is named: CT tasks and ellipse phantoms, everything else.
CT_PRIOR, NATURAL_PRIOR = "ct-ellipses-64", "natural-64"

_CT_PART = re.compile(r"ct(\d+)(?:-fan)?(?:-a(?:\d+(?:\.\d*)?|\.\d+))?(?:-bins\d+)?")
_SR_PART = re.compile(r"sr(\d+)(?:-bicubic)?")


class TaskInfo(NamedTuple):
    """What the rest of the code needs to know about a degradation spec, parsed once.

    >>> parse_task("colorize+sr4")
    TaskInfo(spec='colorize+sr4', parts=('colorize', 'sr4'), is_ct=False, sr_factor=4, colorize=True)
    """

    spec: str
    parts: tuple[str, ...]  # the composed specs, left to right
    is_ct: bool  # some part is ct<views>[-fan][-a<degrees>][-bins<n>]
    sr_factor: int  # product of the super-resolution factors (1 if none)
    colorize: bool  # some part is colorize: the ground truth is RGB

    @property
    def channels(self) -> int | None:
        """Channels the task fixes for its images (1 for CT, 3 for colorize), else None (any)."""
        return 1 if self.is_ct else 3 if self.colorize else None


def parse_task(spec: str | None) -> TaskInfo:
    """Split ``spec`` on ``+`` and read its CT / super-resolution / colorize parts (no validation:
    :func:`diffinv.operators.from_spec` refuses malformed specs). ``None`` is the empty task."""
    parts = tuple(p.strip() for p in spec.split("+")) if spec else ()
    sr = 1
    for part in parts:
        m = _SR_PART.fullmatch(part)
        if m:
            sr *= int(m[1])
    return TaskInfo(
        spec=spec or "",
        parts=parts,
        is_ct=any(_CT_PART.fullmatch(p) for p in parts),
        sr_factor=sr,
        colorize="colorize" in parts,
    )


def is_phantom_data(data: str | None) -> bool:
    """``data`` names generated ellipse phantoms (``ellipses`` or ``ellipses:N``), not a folder."""
    return data is not None and (str(data) == "ellipses" or str(data).startswith("ellipses:"))


def default_prior(task: str | None, data: str | None = None) -> str:
    """The shipped prior used when none is named: ``ct-ellipses-64`` for CT tasks or ellipse
    phantom data (``ellipses``, ``ellipses:N``), else ``natural-64``."""
    return CT_PRIOR if parse_task(task).is_ct or is_phantom_data(data) else NATURAL_PRIOR


#: (form, one-line description), as :func:`diffinv.operators.available_specs` returns them.
SPECS: list[tuple[str, str]] = [
    ("denoise", "identity (denoising): y = x"),
    ("inpaint-box", "inpainting, a centred H/2 x W/2 box removed"),
    (
        "inpaint-random<p>",
        "inpainting, each pixel dropped with probability p in [0, 1), e.g. inpaint-random0.5",
    ),
    ("inpaint-strokes", "inpainting, random free-form brush strokes (15-40% of the pixels) removed"),
    ("colorize", "grey-level observation of an RGB image (ITU-R BT.601 luma weights)"),
    ("sr<k>", "super-resolution by an integer factor k, k x k average pooling, e.g. sr4"),
    (
        "sr<k>-bicubic",
        "super-resolution by k, antialiased bicubic downsampling (MATLAB imresize), e.g. sr4-bicubic",
    ),
    ("deblur-gauss", "circular Gaussian blur, sigma 1.5 px, 11 x 11"),
    ("deblur-uniform", "circular 9 x 9 box blur"),
    ("deblur-aniso", "circular anisotropic Gaussian blur, sigmas 4 and 1 px"),
    ("deblur-motion", "circular random (seeded) 9 x 9 camera-shake blur"),
    (
        "cs<ratio>",
        "compressed sensing, ratio in (0, 1] of the 2-D Walsh-Hadamard coefficients kept, e.g. cs0.25",
    ),
    (
        "cs<ratio>-block[<b>]",
        "block compressed sensing, random orthogonal measurements of b x b tiles "
        "(default b = 32 or the largest divisor of H and W below it), e.g. cs0.25-block",
    ),
    (
        "ct<views>",
        "sparse-view parallel-beam CT with <views> angles over 180 degrees; image shape (1, N, N), e.g. ct30",
    ),
    (
        "ct<views>[-fan][-a<degrees>][-bins<n>]",
        "CT variants, suffixes in this order: -fan equiangular fan beam over 360 degrees (source 2, "
        "detector 4 image widths from the source), -a limited angular range, -bins detector count, "
        "e.g. ct60-a90, ct30-fan-a120-bins128",
    ),
    ("<spec>+<spec>+...", "composition applied left to right, e.g. colorize+sr4"),
]


class MethodInfo(NamedTuple):
    """One registered solver: its name, whether it needs a prior / an SVD operator, its description."""

    name: str
    needs_prior: bool
    requires_svd: bool
    description: str


#: Every registered solver, sorted by name (the order of :func:`diffinv.solvers.available`).
METHODS: list[MethodInfo] = [
    MethodInfo(
        "cg-tikhonov",
        False,
        False,
        "Tikhonov-regularised least squares, CG on (A^T A + lam I) x = A^T y (lam=0: A^+ y)",
    ),
    MethodInfo(
        "daps",
        True,
        False,
        "DAPS (Zhang et al. 2025): decoupled noise annealing, ODE x0|t + Langevin on p(x0 | x_t, y)",
    ),
    MethodInfo(
        "ddim",
        True,
        False,
        "Unconditional DDIM (Song et al. 2021); ignores y: prior-only baseline at equal steps",
    ),
    MethodInfo(
        "ddnm",
        True,
        False,
        "DDNM (Wang et al. 2022): range-null-space projection of x0|t each step; exact A x = y",
    ),
    MethodInfo(
        "ddnm+",
        True,
        False,
        "DDNM+ (Wang et al. 2022): noise-scaled range correction (per singular value) + time travel",
    ),
    MethodInfo(
        "ddrm",
        True,
        True,
        "DDRM (Kawar et al. 2022): spectral-domain posterior sampling; needs an SVD operator",
    ),
    MethodInfo(
        "dds",
        True,
        False,
        "DDS (Chung et al. 2024): DDIM + a few CG steps on ||y - A x||^2 from x0|t; no network gradient",
    ),
    MethodInfo(
        "diffpir",
        True,
        False,
        "DiffPIR (Zhu et al. 2023): HQS plug-and-play, x0|t + data proximal step rho_t, zeta noise",
    ),
    MethodInfo(
        "dps",
        True,
        False,
        "DPS (Chung et al. 2023): DDPM steps + normalised gradient of ||y - A x0|t|| through the network",
    ),
    MethodInfo(
        "fista-tv",
        False,
        False,
        "TV-regularised least squares by monotone FISTA (Beck & Teboulle 2009), FGP TV prox",
    ),
    MethodInfo(
        "mcg",
        True,
        False,
        "MCG (Chung et al. 2022): reverse step + manifold-constrained gradient + measurement projection",
    ),
    MethodInfo(
        "pigdm",
        True,
        False,
        "PiGDM (Song et al. 2023): DDIM + pseudoinverse guidance (r_t^2 A A^T + sigma_y^2 I)^-1",
    ),
    MethodInfo(
        "pinv",
        False,
        False,
        "Pseudo-inverse A^+ y (filtered back-projection for CT operators when use_fbp)",
    ),
    MethodInfo(
        "reddiff",
        True,
        False,
        "RED-diff (Mardani et al. 2024): Adam on ||y - A mu||^2 + SNR-weighted denoising regulariser",
    ),
    MethodInfo(
        "scd",
        True,
        False,
        "SCD (Barbano et al. 2023) / DDIP: DDS with the network adapted to the measurement at each step",
    ),
    MethodInfo(
        "score-proj",
        True,
        False,
        "score-SDE PC sampling + lambda-weighted measurement mixing (Song et al. 2022, score-CT)",
    ),
]


def method_names() -> list[str]:
    """The solver names, sorted."""
    return [m.name for m in METHODS]


def check_method(name: str) -> None:
    """Refuse an unknown solver name (``ValueError`` listing the available ones).

    Names in :data:`METHODS` are accepted without importing torch; any other name is looked up in
    the solver registry itself, so an out-of-date table costs time, never a wrong refusal.
    """
    if not isinstance(name, str):
        raise DiffinvError(f"a method must be a name such as ddnm, got {name!r}")
    if name in method_names():
        return
    from . import solvers

    solvers.get_class(name)
