"""Build degradation operators from short spec strings such as ``"sr4"`` or ``"colorize+sr4"``."""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable

from ..catalog import SPECS
from ..errors import DiffinvError
from ._common import check_image_shape
from .base import LinearOperator

_NUM = r"(\d+(?:\.\d*)?|\.\d+)"

#: (form, one-line description), in the order shown to users. The table lives in the torch-free
#: :mod:`diffinv.catalog` so that ``diffinv tasks`` answers without importing torch.
_SPECS: list[tuple[str, str]] = SPECS


def available_specs() -> list[tuple[str, str]]:
    """The accepted spec forms as ``(form, one-line description)`` pairs."""
    return list(_SPECS)


def _valid_forms() -> str:
    return ", ".join(form for form, _ in _SPECS)


def _malformed(spec: str, reason: str = "unknown or malformed degradation spec") -> ValueError:
    return DiffinvError(f"{reason}: {spec!r}; valid forms: {_valid_forms()}")


def _default_block(H: int, W: int, limit: int = 32) -> int:
    """32 when it divides H and W, else the largest common divisor of H and W that is <= 32."""
    for b in range(min(limit, H, W), 0, -1):
        if H % b == 0 and W % b == 0:
            return b
    return 1


#: inclusive ranges of the integer parameters of the spec forms (an SR factor of 1 is the identity,
#: a CT scan needs at least one view); values outside are refused before anything is built.
_INT_RANGES = {"sr": ("factor k", 2, 64), "ct": ("number of views", 1, 10_000)}


def _int_in_range(spec: str, family: str, text: str) -> int:
    name, lo, hi = _INT_RANGES[family]
    value = int(text)
    if not lo <= value <= hi:
        raise DiffinvError(f"degradation spec {spec!r}: {name} must be in [{lo}, {hi}], got {value}")
    return value


def _build_one(spec: str, shape: tuple[int, int, int], seed: int) -> LinearOperator:
    from . import colorize, cs, deblur, denoise, inpaint, superres

    C, H, W = shape
    builders: list[tuple[str, Callable[[re.Match], LinearOperator]]] = [
        ("denoise", lambda m: denoise.Denoise(shape)),
        ("inpaint-box", lambda m: inpaint.Inpaint(inpaint.box_mask(H, W), channels=C)),
        (
            rf"inpaint-random{_NUM}",
            lambda m: inpaint.Inpaint(inpaint.random_mask(H, W, float(m[1]), seed), channels=C),
        ),
        ("inpaint-strokes", lambda m: inpaint.Inpaint(inpaint.stroke_mask(H, W, seed), channels=C)),
        ("colorize", lambda m: colorize.Colorize(shape)),
        (r"sr(\d+)", lambda m: superres.SuperResolution(shape, _int_in_range(spec, "sr", m[1]))),
        (
            r"sr(\d+)-bicubic",
            lambda m: superres.BicubicSuperResolution(shape, _int_in_range(spec, "sr", m[1])),
        ),
        ("deblur-gauss", lambda m: deblur.Blur(shape, deblur.gaussian_kernel())),
        ("deblur-uniform", lambda m: deblur.Blur(shape, deblur.uniform_kernel())),
        ("deblur-aniso", lambda m: deblur.Blur(shape, deblur.anisotropic_kernel())),
        ("deblur-motion", lambda m: deblur.Blur(shape, deblur.motion_kernel(generator=seed))),
        (rf"cs{_NUM}", lambda m: cs.WalshHadamardCS(shape, float(m[1]), generator=seed)),
        (
            rf"cs{_NUM}-block(\d*)",
            lambda m: cs.BlockRandomCS(
                shape, float(m[1]), block=int(m[2]) if m[2] else _default_block(H, W), generator=seed
            ),
        ),
        (
            rf"ct(\d+)(-fan)?(?:-a{_NUM})?(?:-bins(\d+))?",
            lambda m: _build_ct(spec, shape, _int_in_range(spec, "ct", m[1]), bool(m[2]), m[3], m[4]),
        ),
    ]
    for pattern, build in builders:
        match = re.fullmatch(pattern, spec)
        if match is not None:
            op = build(match)
            op.spec = spec
            return op
    raise _malformed(spec)


def _build_ct(
    spec: str, shape: tuple[int, int, int], views: int, fan: bool, degrees: str | None, bins: str | None
) -> LinearOperator:
    """``ct<views>[-fan][-a<degrees>][-bins<n>]`` (suffixes in this order): parallel beam over 180
    degrees by default, ``-fan`` equiangular fan beam over 360, ``-a`` the angular range (limited
    angle), ``-bins`` the detector count."""
    C, H, W = shape
    if C != 1 or H != W:
        raise DiffinvError(f"CT specs need a single-channel square image shape (1, N, N), got {shape}")
    kwargs = {}
    if degrees is not None:
        rng = float(degrees)
        if not 0.0 < rng <= 360.0:
            raise DiffinvError(
                f"degradation spec {spec!r}: angular range must be in (0, 360] degrees, got {rng:g}"
            )
        kwargs["angular_range"] = rng
    n_bins = None if bins is None else int(bins)
    if fan:
        from .ct_fan import FanBeamCT

        return FanBeamCT(size=H, views=views, bins=n_bins, **kwargs)
    from .ct import ParallelBeamCT

    return ParallelBeamCT(size=H, views=views, bins=n_bins, **kwargs)


def from_spec(spec: str, shape: tuple[int, int, int], seed: int = 0) -> LinearOperator:
    """Build the operator described by ``spec`` for images of ``shape = (C, H, W)``.

    ``spec`` is one of the forms listed by :func:`available_specs`, or several joined by ``+``:
    the factors are applied left to right, each built on the previous factor's ``out_shape``
    (which must be an image shape ``(C, H, W)``) and combined into a ``ComposedOperator``. Random
    parts (masks, motion kernels, CS sampling patterns) are seeded by ``seed``. The result has
    ``op.spec == spec``. Unknown or malformed specs raise ``ValueError`` listing the valid forms.

    Example
    -------
    >>> op = from_spec("colorize+sr4", (3, 64, 64))
    >>> op.out_shape
    (1, 16, 16)
    """
    if not isinstance(spec, str):
        raise DiffinvError(f"spec must be a string, got {type(spec).__name__}; valid forms: {_valid_forms()}")
    shape = check_image_shape(shape)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise DiffinvError(f"seed must be an int, got {seed!r}")
    seed = int(seed)
    spec = spec.strip()
    parts = [p.strip() for p in spec.split("+")]
    if not spec or any(not p for p in parts):
        raise _malformed(spec)
    ops: list[LinearOperator] = []
    current = shape
    for i, part in enumerate(parts):
        if i > 0:
            prev = ops[-1].out_shape
            if len(prev) != 3:
                raise DiffinvError(
                    f"in spec {spec!r}, {parts[i - 1]!r} produces measurements of shape {prev}, "
                    f"not an image (C, H, W), so {part!r} cannot follow it"
                )
            current = prev
        ops.append(_build_one(part, current, seed))
    if len(ops) == 1:
        return ops[0]
    from .compose import ComposedOperator

    op = ComposedOperator(ops)
    op.spec = "+".join(parts)
    return op
