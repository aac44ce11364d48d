"""The checks of ``diffinv restore`` (and of the web app, the evaluator): devices, tasks, channels,
method parameters, masks and sinogram files, each refused with one line naming the problem.

:func:`check_arguments` needs neither torch nor a prior (milliseconds); the others run once the
prior or the images are loaded.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .catalog import parse_task
from .errors import DiffinvError
from .preflight import check_device as _check_device  # noqa: F401  (its name here before)
from .preflight import check_input_files, check_output_dir, parse_params

if TYPE_CHECKING:  # torch is imported where it is used, so that check_arguments is fast (no torch)
    import torch


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _with_channels(t: torch.Tensor, want: int | None, path: Path, why: str) -> torch.Tensor:
    """``t`` with ``want`` channels: an RGB file whose channels are equal counts as grayscale."""
    import torch

    have = t.shape[1]
    if want is None or have == want:
        return t
    if want == 1 and have == 3:
        if torch.equal(t[:, :1].expand_as(t), t):
            return t[:, :1].contiguous()
        raise DiffinvError(f"{path} is a colour image, but {why}")
    raise DiffinvError(f"{path} is a grayscale image, but {why}")


def _ct_size_from_bins(bins: int, spec: str | None = None) -> int | None:
    """The image size N whose default detector has ``bins`` bins, if any: ``ceil(N sqrt 2)`` for
    parallel beam, one pixel at the centre for ``-fan``; None for a ``-bins<n>`` spec (any N)."""
    if spec is not None and "-bins" in spec:
        return None
    if spec is not None and "-fan" in spec:
        from .operators.ct_geometry import fan_default_bins

        fits = [c for c in range(max(1, bins // 2), bins + 1) if fan_default_bins(c) == bins]
        return fits[0] if fits else None  # (2k, 2k + 1) share a count: the even size
    n = max(1, math.floor(bins / math.sqrt(2.0)))
    for cand in (n - 1, n, n + 1):
        if cand >= 1 and math.ceil(cand * math.sqrt(2.0)) == bins:
            return cand
    return None


def _check_spec(spec: str, seed: int) -> None:
    """Refuse an unknown/malformed task before anything is loaded (built on a stand-in shape)."""
    from .operators import from_spec

    if parse_task(spec).is_ct:
        if len(parse_task(spec).parts) > 1:
            raise DiffinvError(f"task {spec!r}: CT cannot be composed with other degradations")
        return
    k = parse_task(spec).sr_factor
    from_spec(spec, (3, 64 * k, 64 * k), seed=seed)


def _restore_channels(spec: str | None, prior, model: str | None) -> tuple[int | None, str]:
    """Channels of the images to restore (None: any), and why (for error messages)."""
    c = prior.image_shape[0] if prior is not None else None
    if parse_task(spec).is_ct:
        if c not in (None, 1):
            raise DiffinvError(
                f"task {spec} reconstructs 1-channel images, but the prior {model} has {c} channels"
            )
        return 1, f"{spec} reconstructs single-channel (grayscale) images"
    if parse_task(spec).colorize:
        if c not in (None, 3):
            raise DiffinvError(f"colorize needs an RGB (3-channel) prior; {model} has {c} channel(s)")
        return 3, "colorize needs an RGB ground truth to degrade"
    if c is not None:
        kind = "an RGB" if c == 3 else f"a {c}-channel"
        return c, f"the prior {model} is {kind} model (a classical method such as pinv takes any image)"
    return None, ""


def check_arguments(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    task: str | None,
    method: str = "ddnm",
    *,
    steps: int | None = None,
    sigma_y: float = 0.0,
    seed: int = 0,
    out: str | os.PathLike = "out/restore",
    mask: str | os.PathLike | None = None,
    params: Mapping[str, object] | Sequence[str] | None = None,
) -> tuple[list[Path], dict, list[str] | None]:
    """The checks of :func:`restore_files` that need neither torch nor a prior (milliseconds).

    Checks the settings (a ``--config`` file may have supplied any of them, so their types too),
    that every INPUT and the mask are readable files, the ``--param`` syntax, the method name and
    that ``out`` is or can become a writable folder; creates nothing.

    Returns:
        The input paths, the parsed solver parameters and the ``--param`` strings to store in
        ``config.json`` (None when no parameters were given).

    Raises:
        ValueError: (one line) the first problem found.
    """
    from .catalog import check_method

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths = [Path(p) for p in (inputs or [])]
    if not paths:
        raise DiffinvError("no INPUT given (an image, or with --measured an observation / .npy sinogram)")
    if task is None and not mask:
        raise DiffinvError("--task is required (e.g. sr4, inpaint-box, colorize, ct30; see 'diffinv tasks')")
    if mask and task is not None and not task.startswith("inpaint"):
        raise DiffinvError(f"--mask defines an inpainting task; it cannot be combined with --task {task}")
    if not isinstance(sigma_y, (int, float)) or not math.isfinite(sigma_y) or sigma_y < 0:
        raise DiffinvError(f"--sigma-y must be a finite number >= 0, got {sigma_y}")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise DiffinvError(f"--steps must be a positive integer, got {steps}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DiffinvError(f"--seed must be an integer, got {seed!r}")
    if mask:
        check_input_files([mask], "mask file")
    check_input_files(paths, "input file")
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems:
            raise DiffinvError(
                f"inputs {stems[p.stem]} and {p} would write the same output names ({p.stem}_...)"
            )
        stems[p.stem] = p
    if isinstance(params, Mapping):
        param_items = [f"{k}={v}" for k, v in params.items()]
        parsed = {str(k).replace("-", "_"): v for k, v in params.items()}
    else:
        param_items = None if params is None else [str(p) for p in params]
        parsed = parse_params(param_items)
    check_method(method)
    check_output_dir(out)
    return paths, parsed, param_items


def _check_param_values(params: dict, method_cls) -> None:
    """Refuse unknown solver parameters, and values of the wrong kind for numeric / boolean ones.

    Runs before the prior is loaded; the solver's own checks (ranges, ...) run once it is built.
    """
    defaults = method_cls.defaults
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise DiffinvError(
            f"unknown parameter(s) {unknown} for method {method_cls.name!r}; "
            f"accepted: {sorted(defaults) or 'none'}"
        )
    for key, value in params.items():
        default = defaults[key]
        if isinstance(default, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(default, (int, float)):
            ok, want = isinstance(value, numbers.Real) and not isinstance(value, bool), "a number"
        else:  # a string or None default: the solver checks the value
            continue
        if not ok:
            raise DiffinvError(f"--param {key}={value!r}: {key} of method {method_cls.name!r} must be {want}")


def _param_error(exc: BaseException, params: dict, method_cls) -> ValueError:
    """A solver's parameter error, naming the parameter when the solver's message does not.

    (``float("abc")`` inside a solver says only "could not convert string to float: 'abc'".)
    """
    msg = _one_line(exc)
    if any(key in msg for key in params):
        return DiffinvError(msg)
    # suspects: text given for a parameter whose default is not text (None defaults are numbers so far)
    suspects = [
        k for k, v in params.items() if isinstance(v, str) and not isinstance(method_cls.defaults.get(k), str)
    ]
    if not suspects:
        return DiffinvError(msg)
    given = ", ".join(f"{k}={params[k]!r}" for k in suspects)
    return DiffinvError(f"--param {given}: {msg}")


def _check_mask(mask: str | os.PathLike) -> str | None:
    """Read the mask before the prior is loaded; a warning when it keeps no pixel, or every pixel."""
    import torch
    from PIL import Image

    from .operators import Inpaint

    try:
        with Image.open(mask) as im:
            w, h = im.size
    except OSError as e:  # (UnidentifiedImageError is an OSError)
        raise DiffinvError(f"cannot read mask image {os.fspath(mask)!r}: {_one_line(e)}") from None
    kept = float(Inpaint.from_png(mask, (1, h, w)).A(torch.ones(1, 1, h, w)).mean())
    if kept == 0.0:
        return (
            f"mask {os.fspath(mask)} keeps no pixel (all black = missing): "
            "the result does not depend on the input"
        )
    if kept == 1.0:
        return f"mask {os.fspath(mask)} keeps every pixel (all white = keep): there is nothing to inpaint"
    return None


def _check_sinogram_dtype(path: Path) -> None:
    """Refuse integer and boolean ``.npy`` sinograms.

    ``load_image`` scales integer arrays by their dtype's maximum (right for images, wrong for
    line integrals: a uint16 sinogram would silently be divided by 65535).
    """
    if path.suffix.lower() != ".npy":
        return
    import numpy as np

    try:
        dtype = np.load(path, mmap_mode="r", allow_pickle=False).dtype
    except Exception:  # unreadable or not an array: load_image reports it, with its own message
        return
    if not np.issubdtype(dtype, np.floating):
        raise DiffinvError(
            f"{path}: a CT sinogram must hold float line integrals, got {dtype} data "
            "(integer arrays would be divided by their type's maximum); save it as float32 / float64"
        )


def _resize_inputs(raws: list, resize: int | bool, prior, measured: bool) -> tuple[list, list]:
    """Every input resized (antialiased bilinear) to ``resize`` pixels or the prior's size."""
    import torch.nn.functional as F

    if measured:
        raise DiffinvError("--resize applies to clean inputs; an observation keeps its measured size")
    if resize is True:
        if prior is None:
            raise DiffinvError(
                "--resize without a size needs a diffusion prior (give --resize N for classical methods)"
            )
        size = tuple(prior.image_shape[1:])
    else:
        if isinstance(resize, bool) or int(resize) != resize or not 8 <= resize <= 4096:
            raise DiffinvError(f"resize must be a size in [8, 4096] pixels, got {resize!r}")
        size = (int(resize), int(resize))
    out, before = [], []
    for raw in raws:
        before.append(list(raw.shape[-2:]) if tuple(raw.shape[-2:]) != size else None)
        out.append(
            raw
            if before[-1] is None
            else F.interpolate(raw, size=size, mode="bilinear", antialias=True, align_corners=False)
        )
    return out, before


def check_noise(task: str | None, noise: str, photons: float, measured: bool, measured_kind: str):
    """Refuse a bad ``--noise`` / ``--photons`` / ``--measured-kind`` (no torch); return the noise
    model (``operators.noise.PoissonNoise``) when photon statistics apply, else None."""
    if noise not in ("gaussian", "poisson"):
        raise DiffinvError(f"--noise must be gaussian or poisson, got {noise!r}")
    if measured_kind not in ("line-integrals", "counts"):
        raise DiffinvError(f"--measured-kind must be line-integrals or counts, got {measured_kind!r}")
    if measured_kind == "counts" and not measured:
        raise DiffinvError("--measured-kind counts describes --measured inputs; add --measured")
    if noise != "poisson" and measured_kind != "counts":
        return None
    if not parse_task(task).is_ct:
        raise DiffinvError(f"Poisson noise and photon counts need a CT task, got {task!r}")
    from .operators.noise import PoissonNoise

    return PoissonNoise(photons)


def measured_variance(noise, job, measured_kind: str):
    """A measured CT job's per-bin variance under photon noise: from counts (converted in place to
    line integrals), or from line integrals through the expected counts ``I0 exp(-kappa y)``."""
    import torch

    if measured_kind == "counts":
        job.y, var = noise.from_counts(job.op, job.y)
        return var
    return noise.from_counts(job.op, torch.round(noise.photons * torch.exp(-noise.kappa(job.op) * job.y)))[1]
