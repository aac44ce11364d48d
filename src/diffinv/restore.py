"""Restore image files: the library behind ``diffinv restore``.

:func:`restore_files` takes image files (or, with ``measured=True``, observations: a low-resolution
photo for ``srK``, a gray photo for ``colorize``, a damaged photo with a ``mask``, a ``.npy``
sinogram for ``ctN``), restores each with one method and writes, per INPUT,
``OUT/<stem>_<task>_<method>.png`` and a ``.json`` record, plus ``OUT/config.json`` (so that
``diffinv restore --config OUT/config.json`` repeats the run). It returns the records.

Every input is loaded and checked before anything is written; bad input raises ``ValueError``
with a one-line message (they name the options as ``diffinv restore`` spells them: ``--steps`` is
``steps``, ``--sigma-y`` is ``sigma_y``). Should a restoration still fail, the files this call
wrote are removed again (and ``out`` too, if the call created it): nothing is half-written.

Example
-------
>>> from diffinv.restore import restore_files
>>> records = restore_files(["photo.png"], "sr4", "ddnm", steps=20, out="out/sr4")  # doctest: +SKIP
>>> records[0]["metrics"]["psnr"], records[0]["output"]                            # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["restore_files"]

_CT_PART = re.compile(r"ct(\d+)")
_SR_PART = re.compile(r"sr(\d+)(?:-bicubic)?")
_NATURAL_PRIOR, _CT_PRIOR = "natural-64", "ct-ellipses-64"


@dataclass
class _Settings:
    """The arguments of one :func:`restore_files` call, checked."""

    task: str | None
    method: str
    model: str | None  # resolved: None for classical methods
    steps: int | None
    sigma_y: float
    seed: int
    measured: bool
    mask: str | None
    device: str


@dataclass
class _RestoreJob:
    """One INPUT, loaded and checked: the ground truth ``x`` or the observation ``y``, and its operator."""

    path: Path
    label: str  # task name in file names and records: the spec, or "inpaint-mask"
    op: object  # LinearOperator
    task: object  # what the pipeline gets: the spec string, or the operator (masks)
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_device(name) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {name!r} ({_one_line(e)})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} requested but MPS is not available")
    return device


def _parse_params(items: Sequence[str] | None) -> dict:
    """``--param KEY=VALUE`` items -> dict; values parsed as bool / None / int / float / string."""
    params: dict = {}
    for item in items or []:
        key, sep, raw = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--param expects KEY=VALUE, got {item!r}")
        raw = raw.strip()
        low = raw.lower()
        if low in ("true", "false"):
            value = low == "true"
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
                raise ValueError(f"--param {key}: value must be finite, got {raw!r}")
        params[key] = value
    return params


def _spec_parts(spec: str) -> list[str]:
    return [p.strip() for p in spec.split("+")]


def _is_ct(spec: str | None) -> bool:
    return spec is not None and any(_CT_PART.fullmatch(p) for p in _spec_parts(spec))


def _sr_factor(spec: str | None) -> int:
    """Product of the super-resolution factors in a spec (1 if none)."""
    k = 1
    for part in _spec_parts(spec) if spec else []:
        m = _SR_PART.fullmatch(part)
        if m:
            k *= int(m[1])
    return k


def _with_channels(t: torch.Tensor, want: int | None, path: Path, why: str) -> torch.Tensor:
    """``t`` with ``want`` channels: an RGB file whose channels are equal counts as grayscale."""
    have = t.shape[1]
    if want is None or have == want:
        return t
    if want == 1 and have == 3:
        if torch.equal(t[:, :1].expand_as(t), t):
            return t[:, :1].contiguous()
        raise ValueError(f"{path} is a colour image, but {why}")
    raise ValueError(f"{path} is a grayscale image, but {why}")


def _ct_size_from_bins(bins: int) -> int | None:
    """The image size N whose default detector has ``bins = ceil(N sqrt 2)`` bins, if any."""
    n = max(1, math.floor(bins / math.sqrt(2.0)))
    for cand in (n - 1, n, n + 1):
        if cand >= 1 and math.ceil(cand * math.sqrt(2.0)) == bins:
            return cand
    return None


def _check_spec(spec: str, seed: int) -> None:
    """Refuse an unknown/malformed task before anything is loaded (built on a stand-in shape)."""
    from .operators import from_spec

    if _is_ct(spec):
        if len(_spec_parts(spec)) > 1:
            raise ValueError(f"task {spec!r}: CT cannot be composed with other degradations")
        return
    k = _sr_factor(spec)
    from_spec(spec, (3, 64 * k, 64 * k), seed=seed)


def _restore_channels(spec: str | None, prior, model: str | None) -> tuple[int | None, str]:
    """Channels of the images to restore (None: any), and why (for error messages)."""
    c = prior.image_shape[0] if prior is not None else None
    if _is_ct(spec):
        if c not in (None, 1):
            raise ValueError(
                f"task {spec} reconstructs 1-channel images, but the prior {model} has {c} channels"
            )
        return 1, f"{spec} reconstructs single-channel (grayscale) images"
    if spec and "colorize" in _spec_parts(spec):
        if c not in (None, 3):
            raise ValueError(f"colorize needs an RGB (3-channel) prior; {model} has {c} channel(s)")
        return 3, "colorize needs an RGB ground truth to degrade"
    if c is not None:
        kind = "an RGB" if c == 3 else f"a {c}-channel"
        return c, f"the prior {model} is {kind} model (a classical method such as pinv takes any image)"
    return None, ""


def _prepare_clean(path: Path, s: _Settings, prior, channels, why) -> _RestoreJob:
    """Default mode: INPUT is the ground truth; build the operator that degrades it."""
    from .data.io import load_image
    from .operators import Inpaint, from_spec

    x = _with_channels(load_image(path), channels, path, why)
    C, H, W = x.shape[1:]
    if _is_ct(s.task) and prior is not None and (H, W) != tuple(prior.image_shape[1:]):
        ph, pw = prior.image_shape[1:]
        raise ValueError(
            f"{path} is {H}x{W}, but the prior {s.model} reconstructs CT images of size {ph}x{pw} only "
            f"(resize the image, or use a classical method such as pinv / fista-tv)"
        )
    k = _sr_factor(s.task)
    if k > 1 and (H % k or W % k):
        raise ValueError(
            f"{path}: image size {H}x{W} is not divisible by the super-resolution factor {k} of "
            f"{s.task}; crop it to {H - H % k}x{W - W % k} (diffinv does not pad)"
        )
    if s.mask:
        op = Inpaint.from_png(s.mask, (C, H, W))
        return _RestoreJob(path, "inpaint-mask", op, op, x=x)
    op = from_spec(s.task, (C, H, W), seed=s.seed)
    return _RestoreJob(path, s.task, op, s.task, x=x)


def _prepare_measured(path: Path, s: _Settings, prior, channels, why) -> _RestoreJob:
    """``measured``: INPUT is the observation y; infer the image shape and build the operator."""
    from .data.io import load_image
    from .operators import Inpaint, from_spec

    y = load_image(path)
    spec = s.task
    if _is_ct(spec):
        if y.shape[1] != 1:
            raise ValueError(
                f"{path}: a {spec} sinogram must be an array of shape (views, bins) or (1, views, bins), "
                f"got {y.shape[1]} channels"
            )
        bins = y.shape[-1]
        if prior is not None:
            n = prior.image_shape[-1]
            want = math.ceil(n * math.sqrt(2.0))
            if bins != want:
                raise ValueError(
                    f"{path}: sinogram has {bins} detector bins, but the prior {s.model} reconstructs "
                    f"{n}x{n} images, whose {spec} sinograms have {want} bins"
                )
        else:
            n = _ct_size_from_bins(bins)
            if n is None:
                raise ValueError(f"{path}: {bins} detector bins is not ceil(N*sqrt(2)) for any image size N")
        shape = (1, n, n)
    else:
        colorize = bool(spec) and "colorize" in _spec_parts(spec)
        if colorize:
            y = _with_channels(y, 1, path, "colorize --measured expects the grayscale observation")
        elif channels is not None and y.shape[1] != channels:
            y = _with_channels(y, channels, path, why)
        k = _sr_factor(spec)
        c = channels if channels is not None else (3 if colorize else y.shape[1])
        shape = (c, y.shape[-2] * k, y.shape[-1] * k)
    if s.mask:
        op = Inpaint.from_png(s.mask, shape)
        label = "inpaint-mask"
    else:
        op = from_spec(spec, shape, seed=s.seed)
        label = spec
    if tuple(op.out_shape) != tuple(y.shape[1:]):
        raise ValueError(
            f"{path}: observation of shape {tuple(y.shape[1:])} does not fit {label} on images of shape "
            f"{shape}, which measures {tuple(op.out_shape)}"
        )
    if isinstance(op, Inpaint):
        y = op.A(y)  # the missing pixels of a damaged photo carry no information: zero them
    return _RestoreJob(path, label, op, op, y=y)


def _record(job: _RestoreJob, s: _Settings, solver_params: dict, r, png: Path) -> dict:
    from . import __version__
    from .config import _jsonable

    return {
        "input": str(job.path),
        "output": str(png),
        "task": job.label,
        "spec": None if s.mask else s.task,
        "mask": str(s.mask) if s.mask else None,
        "measured": s.measured,
        "method": s.method,
        "model": s.model,
        "steps": s.steps,
        "sigma_y": s.sigma_y,
        "seed": s.seed,
        "device": s.device,
        "solver_params": _jsonable(solver_params),
        "image_shape": list(job.op.in_shape),
        "measurement_shape": list(job.op.out_shape),
        "nfe": r.nfe,
        "seconds": r.seconds,
        "metrics": {k: (v if math.isfinite(v) else str(v)) for k, v in r.metrics.items()},
        "diffinv_version": __version__,
    }


def restore_files(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    task: str | None,
    method: str = "ddnm",
    *,
    model: str | None = None,
    steps: int | None = None,
    sigma_y: float = 0.0,
    seed: int = 0,
    out: str | os.PathLike = "out/restore",
    measured: bool = False,
    mask: str | os.PathLike | None = None,
    params: Mapping[str, object] | Sequence[str] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    on_record: Callable[[dict], None] | None = None,
    extra_config: Mapping[str, object] | None = None,
) -> list[dict]:
    """Restore image files with one method; write the results under ``out``; return the records.

    Args:
        inputs: one file or several (.png/.jpg/.tif/.npy). By default each is a clean image: it is
            degraded with ``task`` (plus ``sigma_y`` noise), restored and scored against itself
            (PSNR, SSIM, consistency). With ``measured=True`` each is the observation y instead.
            Their stems must differ (they name the outputs).
        task: degradation spec (``sr4``, ``inpaint-box``, ``colorize``, ``ct30``, ``a+b``, ...; see
            :func:`diffinv.operators.available_specs`); may be None (or an ``inpaint*`` spec) when
            ``mask`` is given.
        method: solver name (:func:`diffinv.solvers.available`).
        model: prior name or path, anything :func:`diffinv.priors.load` takes; default
            ``ct-ellipses-64`` for CT tasks, else ``natural-64``. Ignored (recorded as None) for
            classical methods, which need no prior.
        steps: solver steps / iterations (default: the method's).
        sigma_y: measurement noise std in [0, 1] image units (default mode only adds it; it is
            also the noise level the solver assumes).
        seed: seeds masks, noise and the solver; the same seed gives byte-identical PNGs.
        out: output folder.
        measured: ``inputs`` are observations y (a low-res photo for ``srK``, a gray photo for
            ``colorize``, a damaged photo with ``mask``, a ``.npy`` sinogram for ``ctN``).
        mask: inpainting mask image, white = keep (task ``inpaint-mask``).
        params: solver hyperparameters, a mapping (``{"eta": 0.5}``) or ``"KEY=VALUE"`` strings as
            given to ``--param`` (values parsed as bool / None / int / float / string).
        device: torch device (default CPU).
        progress: show progress bars.
        on_record: called with each record once its files are written (e.g. to print a summary).
        extra_config: further settings stored in ``OUT/config.json`` (the CLI adds ``threads``
            and ``quiet``).

    Returns:
        One dict per input, as written to ``OUT/<stem>_<task>_<method>.json``: input, output,
        task, spec, mask, measured, method, model, steps, sigma_y, seed, device, solver_params,
        image_shape, measurement_shape, nfe, seconds, metrics (non-finite values as strings),
        diffinv_version.

    Raises:
        ValueError: (one line) bad arguments or input files, checked before anything is written;
            or a failure during the run, after this call's outputs were removed again.
    """
    from . import pipeline, priors, solvers
    from .config import write_config, write_json_atomic
    from .data.io import save_image

    # --- arguments (a --config file may have supplied any of them, so check types too)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths = [Path(p) for p in (inputs or [])]
    if not paths:
        raise ValueError("no INPUT given (an image, or with --measured an observation / .npy sinogram)")
    if task is None and not mask:
        raise ValueError("--task is required (e.g. sr4, inpaint-box, colorize, ct30; see 'diffinv tasks')")
    if mask and task is not None and not task.startswith("inpaint"):
        raise ValueError(f"--mask defines an inpainting task; it cannot be combined with --task {task}")
    if not isinstance(sigma_y, (int, float)) or not math.isfinite(sigma_y) or sigma_y < 0:
        raise ValueError(f"--sigma-y must be a finite number >= 0, got {sigma_y}")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"--steps must be a positive integer, got {steps}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"--seed must be an integer, got {seed!r}")
    if mask and not Path(mask).is_file():
        raise ValueError(f"mask file not found: {mask}")
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems:
            raise ValueError(
                f"inputs {stems[p.stem]} and {p} would write the same output names ({p.stem}_...)"
            )
        stems[p.stem] = p
    if isinstance(params, Mapping):
        param_items = [f"{k}={v}" for k, v in params.items()]
        params = {str(k).replace("-", "_"): v for k, v in params.items()}
    else:
        param_items = None if params is None else [str(p) for p in params]
        params = _parse_params(param_items)
    device_name = "cpu" if device is None else str(device)
    dev = _check_device(device_name)
    method_cls = solvers.get_class(method)
    if task is not None:
        _check_spec(task, seed)

    # --- prior (only for diffusion methods), then every input, before anything is written
    prior = None
    if method_cls.needs_prior:
        model = model or (_CT_PRIOR if _is_ct(task) else _NATURAL_PRIOR)
        prior = priors.load(model, device=None if dev.type == "cpu" else dev)
    else:
        model = None
    s = _Settings(task, method, model, steps, sigma_y, seed, bool(measured), mask, device_name)
    solver = pipeline.make_solver(method, prior, steps, **params)  # checks the parameters
    channels, why = _restore_channels(task, prior, model)
    prepare = _prepare_measured if measured else _prepare_clean
    jobs = []
    for path in paths:
        try:
            job = prepare(path, s, prior, channels, why)
        except ValueError as e:
            msg = _one_line(e)
            raise ValueError(msg if str(path) in msg else f"{path}: {msg}") from None
        solver.check_operator(job.op)
        jobs.append(job)

    # --- run; on any failure remove what this run wrote
    out_arg, out = os.fspath(out), Path(out)
    out_existed = out.exists()
    written: list[Path] = []
    records: list[dict] = []
    try:
        for job in jobs:
            common = dict(sigma_y=float(sigma_y), seed=seed, steps=steps, progress=progress)
            if job.x is not None:
                r = pipeline.degrade_and_restore(job.x.to(dev), job.task, method, prior, **common, **params)
            else:
                r = pipeline.restore_measured(job.y.to(dev), job.op, method, prior, **common, **params)
            name = f"{job.path.stem}_{job.label}_{method}"
            png = save_image(r.x_hat.clamp(0, 1), out / f"{name}.png")
            written.append(png)
            record = _record(job, s, solver.params, r, png)
            written.append(write_json_atomic(record, out / f"{name}.json"))
            records.append(record)
            if on_record is not None:
                on_record(record)
        settings = {
            "inputs": [str(p) for p in inputs],
            "task": task,
            "method": method,
            "model": model,
            "steps": steps,
            "sigma_y": sigma_y,
            "seed": seed,
            "out": out_arg,
            "measured": measured,
            "mask": None if mask is None else str(mask),
            "param": param_items,
            "device": device_name,
            **(extra_config or {}),
        }
        written.append(write_config(out, "restore", settings))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        if not out_existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return records
