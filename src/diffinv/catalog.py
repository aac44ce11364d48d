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

from typing import NamedTuple

__all__ = ["SPECS", "METHODS", "MethodInfo", "method_names", "check_method"]

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
        raise ValueError(f"a method must be a name such as ddnm, got {name!r}")
    if name in method_names():
        return
    from . import solvers

    solvers.get_class(name)
