"""Restore image files: the library behind ``diffinv restore``.

:func:`restore_files` takes image files (or, with ``measured=True``, observations: a low-resolution
photo for ``srK``, a gray photo for ``colorize``, a damaged photo with a ``mask``, a ``.npy``
sinogram for ``ctN``), restores each with one method and writes, per INPUT,
``OUT/<stem>_<task>_<method>.png`` and a ``.json`` record, plus ``OUT/config.json`` (so that
``diffinv restore --config OUT/config.json`` repeats the run). It returns the records.

Every input is loaded and checked before anything is written; bad input raises ``ValueError``
with a one-line message (they name the options as ``diffinv restore`` spells them: ``--steps`` is
``steps``, ``--sigma-y`` is ``sigma_y``). The cheap checks (the output folder, that every file
exists, the settings: :func:`check_arguments`, torch-free) come before torch, the prior and the
images are loaded. Should a restoration still fail, the files this call wrote are removed again
(and ``out`` too, if the call created it): nothing is half-written. Suspicious but legal input
(a mask that keeps no pixel, or every pixel) is reported through ``warn``.

Example
-------
>>> from diffinv.restore import restore_files
>>> records = restore_files(["photo.png"], "sr4", "ddnm", steps=20, out="out/sr4")  # doctest: +SKIP
>>> records[0]["metrics"]["psnr"], records[0]["output"]                            # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .catalog import default_prior, parse_task
from .errors import DiffinvError
from .preflight import InputWarning, parse_params
from .restore_checks import (  # noqa: F401  (old names of diffinv.restore)
    _check_device,
    _check_mask,
    _check_param_values,
    _check_sinogram_dtype,
    _check_spec,
    _ct_size_from_bins,
    _one_line,
    _param_error,
    _resize_inputs,
    _restore_channels,
    _with_channels,
    check_arguments,
    check_noise,
    measured_variance,
)

if TYPE_CHECKING:  # torch is imported where it is used, so that check_arguments is fast (no torch)
    import torch

__all__ = ["restore_files", "check_arguments"]


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


_parse_params = parse_params  # (kept under its old name: tests and scripts use it)


def _prepare_clean(path: Path, raw: torch.Tensor, s: _Settings, prior, channels, why) -> _RestoreJob:
    """Default mode: INPUT (loaded as ``raw``) is the ground truth; build the operator that degrades it."""
    from .operators import Inpaint, from_spec

    x = _with_channels(raw, channels, path, why)
    C, H, W = x.shape[1:]
    if parse_task(s.task).is_ct and prior is not None and (H, W) != tuple(prior.image_shape[1:]):
        ph, pw = prior.image_shape[1:]
        raise DiffinvError(
            f"{path} is {H}x{W}, but the prior {s.model} reconstructs CT images of size {ph}x{pw} only "
            f"(--resize scales it to {ph}x{pw}; or use a classical method such as pinv / fista-tv)"
        )
    k = parse_task(s.task).sr_factor
    if k > 1 and (H % k or W % k):
        raise DiffinvError(
            f"{path}: image size {H}x{W} is not divisible by the super-resolution factor {k} of "
            f"{s.task}; crop it to {H - H % k}x{W - W % k} (diffinv does not pad)"
        )
    if s.mask:
        op = Inpaint.from_png(s.mask, (C, H, W))
        return _RestoreJob(path, "inpaint-mask", op, op, x=x)
    op = from_spec(s.task, (C, H, W), seed=s.seed)
    return _RestoreJob(path, s.task, op, s.task, x=x)


def _prepare_measured(path: Path, raw: torch.Tensor, s: _Settings, prior, channels, why) -> _RestoreJob:
    """``measured``: INPUT (loaded as ``raw``) is the observation y; infer the image shape, build the operator."""
    from .operators import Inpaint, from_spec

    y = raw
    spec = s.task
    if parse_task(spec).is_ct:
        if y.shape[1] != 1:
            raise DiffinvError(
                f"{path}: a {spec} sinogram must be an array of shape (views, bins) or (1, views, bins), "
                f"got {y.shape[1]} channels"
            )
        bins = y.shape[-1]
        if prior is not None:
            n = prior.image_shape[-1]
            want = from_spec(spec, (1, n, n)).out_shape[-1]
            if bins != want:
                raise DiffinvError(
                    f"{path}: sinogram has {bins} detector bins, but the prior {s.model} reconstructs "
                    f"{n}x{n} images, whose {spec} sinograms have {want} bins"
                )
        else:
            n = _ct_size_from_bins(bins, spec)
            if n is None:
                raise DiffinvError(
                    f"{path}: {bins} detector bins fit no image size N for {spec} (give --model to fix N)"
                )
        shape = (1, n, n)
    else:
        colorize = parse_task(spec).colorize
        if colorize:
            y = _with_channels(y, 1, path, "colorize --measured expects the grayscale observation")
        elif channels is not None and y.shape[1] != channels:
            y = _with_channels(y, channels, path, why)
        k = parse_task(spec).sr_factor
        c = channels if channels is not None else (3 if colorize else y.shape[1])
        shape = (c, y.shape[-2] * k, y.shape[-1] * k)
    if s.mask:
        op = Inpaint.from_png(s.mask, shape)
        label = "inpaint-mask"
    else:
        op = from_spec(spec, shape, seed=s.seed)
        label = spec
    if tuple(op.out_shape) != tuple(y.shape[1:]):
        raise DiffinvError(
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


def _write_samples(r, job: _RestoreJob, out: Path, name: str, save_each: bool, written: list[Path]) -> dict:
    """The files of a K-sample run (std map, std array, figure, samples); their record entries."""
    import numpy as np

    from . import viz
    from .data.io import save_image, save_npy_atomic
    from .evaluate import measurement_view

    post = r.post
    std_map = post.std[0].pow(2).mean(0).sqrt()  # RMS over channels: one map per image
    std_png = out / f"{name}_std.png"
    viz.heatmap(std_map, size=max(128, std_map.shape[-2]), label="posterior std").save(std_png)
    written.append(std_png)
    std_npy = out / f"{name}_std.npy"
    written.append(save_npy_atomic(post.std[0].detach().cpu().numpy().astype(np.float32), std_npy))
    extra = {
        "samples": post.n,
        "sample_metrics": {k: (v if math.isfinite(v) else str(v)) for k, v in r.sample_metrics.items()},
        "std_mean": float(post.std.mean()),
        "output_std_png": str(std_png),
        "output_std_npy": str(std_npy),
    }
    if r.x_true is not None:
        fig = out / f"{name}_uncertainty.png"
        view = measurement_view(r.y, r.op, r.x_true)
        viz.uncertainty_figure(view, post.mean, post.std, r.x_true, title=name).save(fig)
        written.append(fig)
        extra["output_figure"] = str(fig)
    if save_each:
        paths = []
        for k in range(post.n):
            paths.append(save_image(post.samples[k].clamp(0, 1), out / f"{name}_sample{k}.png"))
            written.append(paths[-1])
        extra["output_samples"] = [str(p) for p in paths]
    return extra


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
    warn: Callable[[str], None] | None = None,
    window: str | None = None,
    hu_offset: float | None = None,
    slice_index: int | None = None,
    resize: int | bool | None = None,
    tile_batch: int | None = None,
    samples: int = 1,
    save_samples: bool = False,
    callback: Callable | None = None,
    on_result: Callable[[dict, object], None] | None = None,
    noise: str = "gaussian",
    photons: float = 1e4,
    measured_kind: str = "line-integrals",
    project: int | None = None,
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
            and ``quiet``). Input, mask and local model paths are stored absolute there, so
            that ``--config`` repeats the run from any working directory.
        warn: called with a one-line message about legal but suspicious input (a mask that keeps
            no pixel or every pixel); default: ``warnings.warn(message, InputWarning)``.
        window: CT display window mapping Hounsfield units to [0, 1]: a preset (``lung``,
            ``soft-tissue``, ``bone``, ``brain``) or ``"CENTER,WIDTH"`` (:mod:`diffinv.data.medical`).
            Needed for DICOM and for files read with ``hu_offset``; the restoration is also written
            as ``.npy`` in HU (through the same window) and the window goes into the record.
        hu_offset: 16-bit PNG/TIFF/.npy inputs store HU + ``hu_offset`` (e.g. 1024).
        tile_batch: images larger than the prior are restored in windows; up to this many run
            together through the network (default :data:`diffinv.tiling.DEFAULT_TILE_BATCH`).
        slice_index: the slice of a NIfTI volume (last axis).
        samples: K posterior samples per input (:mod:`diffinv.posterior`, batched through the
            network). With K > 1 the PNG (and CT ``.npy``) is their mean, ``<name>_std.png`` the
            per-pixel standard deviation (RMS over channels) as a heatmap with a colour bar,
            ``<name>_std.npy`` the std (C, H, W) in [0, 1] image units, and with a ground truth
            ``<name>_uncertainty.png`` shows measurement / mean / std / |error| / ground truth.
            The record's ``metrics`` score the mean, ``sample_metrics`` one sample (the average).
        save_samples: with K > 1, also write every sample as ``<name>_sample<k>.png``.
        callback: the solvers' ``callback(event)``, a dict with ``step``, ``t``, ``x_t``, ``x0``
            (:func:`diffinv.priors.steps.report_step`; progress; raising in it stops the
            run, whose files are then removed). on_result: ``on_result(record, restoration)``
            once an input's files are written (the web app shows ``restoration.y``).
        resize: resize every input to the prior's size (``True``) or to ``resize`` x ``resize``
            pixels before restoring (antialiased bilinear); the record says so. Without it a CT
            slice of another size than the prior's is refused.
        project: noiseless measurements only (``sigma_y`` 0, no photon noise): N rounds of
            projection onto the images y allows, ``{A x = y} ∩ [0, 1]``, after the solve (each
            sample with ``samples``; :func:`diffinv.operators.project_feasible`: never farther
            from the true image); the record says so.

    Returns:
        One dict per input, as written to ``OUT/<stem>_<task>_<method>.json``: input, output,
        task, spec, mask, measured, method, model, steps, sigma_y, seed, device, solver_params,
        image_shape, measurement_shape, nfe, seconds, metrics (non-finite values as strings),
        diffinv_version.

    Raises:
        ValueError: (one line) bad arguments or input files, checked before anything is written;
            or a failure during the run, after this call's outputs were removed again.
    """
    # --- the checks that need neither torch nor the prior: a bad --out or a missing file fails fast
    paths, params, param_items = check_arguments(
        inputs, task, method, steps=steps, sigma_y=sigma_y, seed=seed, out=out, mask=mask, params=params
    )
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise DiffinvError(f"--samples must be an integer >= 1, got {samples!r}")
    if save_samples and samples == 1:
        raise DiffinvError("--save-samples keeps each of several samples; give --samples K with K > 1")
    photon_noise = check_noise(task, noise, photons, measured, measured_kind)  # or None
    from . import pipeline, priors, solvers
    from .config import write_config, write_json_atomic

    project = pipeline.check_projection(project, sigma_y, photon_noise is not None)
    from .data.io import load_image, save_image, save_npy_atomic

    if warn is None:

        def warn(message: str) -> None:
            warnings.warn(message, InputWarning, stacklevel=3)

    device_name = "cpu" if device is None else str(device)
    dev = _check_device(device_name)
    method_cls = solvers.get_class(method)
    _check_param_values(params, method_cls)
    if task is not None:
        _check_spec(task, seed)
    mask_warning = _check_mask(mask) if mask else None
    # --- every input, read before the prior is loaded (seconds, where the prior can take minutes)
    from .data import medical

    if tile_batch is not None and (
        isinstance(tile_batch, bool) or int(tile_batch) != tile_batch or tile_batch < 1
    ):
        raise DiffinvError(f"tile_batch must be a positive integer, got {tile_batch!r}")
    win = None if window is None else medical.parse_window(window)
    if slice_index is not None and (
        isinstance(slice_index, bool) or int(slice_index) != slice_index or slice_index < 0
    ):
        raise DiffinvError(f"slice must be an integer >= 0, got {slice_index!r}")
    if hu_offset is not None and not math.isfinite(float(hu_offset)):
        raise DiffinvError(f"hu_offset must be a finite number, got {hu_offset!r}")
    raws, infos = [], []
    for path in paths:
        try:
            if measured and parse_task(task).is_ct:
                _check_sinogram_dtype(path)
            if not measured and (medical.is_medical(path) or win is not None or hu_offset is not None):
                raw, info = medical.load_slice(path, win, hu_offset, slice_index)
            elif slice_index is not None:
                raise DiffinvError("--slice applies to NIfTI volumes (.nii, .nii.gz)")
            else:
                raw, info = load_image(path), None
            raws.append(raw)
            infos.append(info)
        except ValueError as e:
            msg = _one_line(e)
            raise DiffinvError(msg if str(path) in msg else f"{path}: {msg}") from None

    # --- prior (only for diffusion methods), then every input checked against it
    prior = None
    if method_cls.needs_prior:
        model = model or default_prior(task)
        prior = priors.load(model, device=None if dev.type == "cpu" else dev)
    else:
        model = None
    s = _Settings(task, method, model, steps, sigma_y, seed, bool(measured), mask, device_name)
    try:
        solver = pipeline.make_solver(method, prior, steps, **params)  # built once; checks the values
    except (TypeError, ValueError) as e:
        raise _param_error(e, params, method_cls) from None
    channels, why = _restore_channels(task, prior, model)
    prepare = _prepare_measured if measured else _prepare_clean
    resized_from = [None] * len(raws)
    if resize:
        raws, resized_from = _resize_inputs(raws, resize, prior, measured)
    jobs = []
    for path, raw in zip(paths, raws):
        try:
            job = prepare(path, raw, s, prior, channels, why)
        except ValueError as e:
            msg = _one_line(e)
            raise DiffinvError(msg if str(path) in msg else f"{path}: {msg}") from None
        solver.check_operator(job.op)
        jobs.append(job)
    if mask_warning:  # once every input is known to be good: a warning, then no error
        warn(mask_warning)

    # --- run; on any failure remove what this run wrote
    out_arg, out = os.fspath(out), Path(out)
    out_existed = out.exists()
    written: list[Path] = []
    records: list[dict] = []
    try:
        for job in jobs:
            common = dict(sigma_y=float(sigma_y), seed=seed, progress=progress)  # the solver: built once
            if photon_noise is not None:  # CT photon counts: simulated, or y's per-bin variance
                common.update(
                    {"noise": photon_noise} if job.x is not None else
                    {"variance": measured_variance(photon_noise, job, measured_kind)}
                )  # fmt: skip
            if tile_batch is not None:  # images larger than the prior: windows per network batch
                common["tile_batch"] = tile_batch
            if callback is not None:
                common["callback"] = callback
            if project:
                common["project"] = project
            if samples > 1:  # K posterior samples, batched; the outputs are their mean
                from . import posterior

                run = posterior.degrade_and_sample if job.x is not None else posterior.sample_measured
                r = run(
                    (job.x if job.x is not None else job.y).to(dev),
                    job.task if job.x is not None else job.op,
                    solver,
                    prior,
                    n=samples,
                    **common,
                )
            elif job.x is not None:
                r = pipeline.degrade_and_restore(job.x.to(dev), job.task, solver, prior, **common)
            else:
                r = pipeline.restore_measured(job.y.to(dev), job.op, solver, prior, **common)
            name = f"{job.path.stem}_{job.label}_{method}"
            png = save_image(r.x_hat.clamp(0, 1), out / f"{name}.png")
            written.append(png)
            record = _record(job, s, r.params, r, png)  # the values used (incl. the task's defaults)
            if photon_noise is not None:
                record.update(noise=noise, photons=photons, measured_kind=measured_kind)
            if project:
                record["project"] = project
            if samples > 1:
                record.update(_write_samples(r, job, out, name, save_samples, written))
            info = infos[len(records)]
            if info is not None:  # a medical slice: the restoration in the input's units too
                npy = out / f"{name}.npy"
                values = medical.to_input_units(r.x_hat[0, 0].detach().cpu().numpy(), info)
                written.append(save_npy_atomic(values, npy))
                record["input_format"] = {k: v for k, v in info.items() if k != "window"}
                record["window"] = info["window"]
                record["output_npy"] = str(npy)
            if resized_from[len(records)] is not None:
                record["resized_from"] = resized_from[len(records)]
            written.append(write_json_atomic(record, out / f"{name}.json"))
            records.append(record)
            if on_record is not None:
                on_record(record)
            if on_result is not None:
                on_result(record, r)
        settings = {  # paths absolute: a config.json written here replays from any working directory
            "inputs": [os.path.abspath(p) for p in paths],
            "task": task,
            "method": method,
            "model": os.path.abspath(model) if model is not None and os.path.exists(model) else model,
            "steps": steps,
            "sigma_y": sigma_y,
            "seed": seed,
            "out": out_arg,
            "measured": measured,
            "mask": None if mask is None else os.path.abspath(mask),
            "param": param_items,
            "device": device_name,
            "window": window,
            "hu_offset": hu_offset,
            "slice": slice_index,
            "resize": resize,
            "tile_batch": tile_batch,
            "samples": samples,
            "save_samples": save_samples,
            **({"project": project} if project else {}),
            **({"noise": noise, "photons": photons, "measured_kind": measured_kind} if photon_noise else {}),
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
