"""Evaluate restoration methods on a data set: per-image metrics, a summary table and figures.

:func:`evaluate` (and ``diffinv eval``) degrades every image of a folder (or of a seeded set of
ellipse phantoms) with one task, restores it with each method through
:func:`diffinv.pipeline.degrade_and_restore` and writes, under ``out``::

    config.json                      the run's configuration (a rerun must match it)
    records/<method>/<item>.json     one finished (image, method) result each
    images/<method>/<item>.png       restorations (clamped to [0, 1])
    images/measurement/<item>.png    what the methods saw (sinograms min-max scaled, vectors as A^T y)
    images/ground_truth/<item>.png   the crop that was degraded
    metrics.csv                      image, method, psnr, ssim, lpips, consistency, seconds, nfe
    results.md                       mean ± std per method (population std over images)
    figure.png                       a few images x [measurement, methods..., ground truth]
    psnr_bars.png                    mean PSNR per method with std whiskers

``<item>`` is ``<index>_<file stem>`` (``<index>_ellipse`` for phantoms), with a 4-digit index.

Reproducibility: image ``i`` is cropped at a position drawn from a generator seeded by
``(seed, i)``, and its operator, measurement noise and solver randomness are seeded by the same
per-item seed, so every method sees the same ``y`` and an item's result does not depend on which
process computed it, in which order, or how many processes there were -- given the same number of
torch threads per process: the thread count changes how sums are split and so their rounding
(the 6th digit of a PSNR). ``diffinv eval`` runs every process on one thread unless ``--threads``
is given; ``torchrun`` itself starts its processes with ``OMP_NUM_THREADS=1``.

Resuming: every file is written to a temporary name and renamed into place, and an item's record
is written last, so an interrupted run loses only the items in flight; rerunning the same command
skips every item that has a record and produces the same results as an uninterrupted run. A rerun
with a different configuration (task, methods, images, seed, model weights, ...) is refused unless
``overwrite=True``, which deletes the previous results first.

Distributed: under ``torchrun --nproc_per_node K -m diffinv eval ...`` (``WORLD_SIZE > 1`` in the
environment) rank ``r`` restores images ``r, r + K, ...`` (gloo on CPU, nccl with CUDA, device
``cuda:LOCAL_RANK``), every rank writes its own records, and after a barrier rank 0 merges them all
into the tables and figures.

Example
-------
>>> summary = evaluate("photos/", "sr4", ["pinv", "ddnm"], "out/eval", n=8, steps=50)  # doctest: +SKIP
>>> summary["ddnm"]["psnr_mean"]                                                      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import __version__, pipeline, solvers
from .catalog import default_prior, is_phantom_data, parse_task
from .data.io import load_image, save_image
from .errors import DiffinvError
from .eval_items import (  # noqa: F401  (public names of diffinv.evaluate)
    HELD_OUT_SEED_OFFSET,
    _first_files,
    _generator,
    _Item,
    _parse_ellipses,
    crop_image,
    item_seed,
    list_images,
    load_items,
)
from .eval_output import (  # noqa: F401  (public names of diffinv.evaluate)
    RESULT_FILES,
    _claim_out,
    _image_path,
    _init_distributed,
    _read_record,
    _record_path,
    _together,
    _write_json,
    _write_pil,
    _write_text,
)
from .eval_report import (  # noqa: F401  (public names of diffinv.evaluate)
    CSV_COLUMNS,
    SAMPLE_COLUMNS,
    metrics_csv,
    psnr_bar_plot,
    results_markdown,
    summarize,
)
from .operators import from_spec
from .priors.base import Prior

MEASUREMENT_DIR = "measurement"
GROUND_TRUTH_DIR = "ground_truth"
TIMING_COLUMNS = ("seconds",)
FIGURE_ROWS = 4
DEFAULT_CROP = 64


# ------------------------------------------------------------------------------------ setup
def _is_phantoms(data: str) -> bool:
    return is_phantom_data(data)


def _is_ct_task(task: str) -> bool:
    return parse_task(task).is_ct


def default_model(task: str, data: str) -> str:
    """The shipped prior used when none is named (:func:`diffinv.catalog.default_prior`)."""
    return default_prior(task, data)


def prior_fingerprint(prior: Prior) -> str:
    """A short SHA-256 of the prior's weights, so results of retrained weights are not mixed."""
    h = hashlib.sha256()
    for key, t in sorted(prior.state_dict().items()):
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _resolve_device(device: str | torch.device | None, local_rank: int) -> torch.device:
    """None/"auto": CUDA if present, else CPU; a bare "cuda" means this process's ``cuda:LOCAL_RANK``."""
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DiffinvError(f"bad device {device!r}: {' '.join(str(exc).split())}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DiffinvError(f"device {device!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    return dev


def _check_number(name: str, value, minimum: float, integer: bool) -> None:
    if value is None:
        return
    if integer and (isinstance(value, bool) or int(value) != value):
        raise DiffinvError(f"{name} must be an integer, got {value!r}")
    if not math.isfinite(float(value)) or float(value) < minimum:
        raise DiffinvError(f"{name} must be >= {minimum:g}, got {value!r}")


@dataclass
class _Plan:
    items: list[_Item]
    methods: list[str]
    prior: Prior | None
    config: dict
    device: torch.device
    solvers: dict  # method name -> the solver, built once


def _plan(
    data: str,
    task: str,
    methods: Sequence[str],
    n: int | None,
    crop: int | None,
    sigma_y: float,
    steps: int | None,
    model: str | None,
    seed: int,
    device: torch.device,
    slices: dict | None = None,
    samples: int = 1,
) -> _Plan:
    """Validate every input and load the images and prior; nothing is written here."""
    from . import priors

    data = str(data)
    if not isinstance(task, str) or not task.strip():
        raise DiffinvError("task must be a non-empty degradation spec such as sr4")
    task = task.strip()
    methods = [m.strip() for m in ([methods] if isinstance(methods, str) else methods)]
    methods = [m for part in methods for m in part.split(",") if m]
    if not methods:
        raise DiffinvError("no methods given (e.g. pinv,ddnm)")
    dupes = sorted({m for m in methods if methods.count(m) > 1})
    if dupes:
        raise DiffinvError(f"method(s) listed more than once: {', '.join(dupes)}")
    for m in methods:
        solvers.get_class(m)  # unknown names: ValueError listing the available ones
    _check_number("n", n, 1, True)
    _check_number("crop", crop, 1, True)
    _check_number("steps", steps, 1, True)
    _check_number("sigma_y", sigma_y, 0, False)
    if isinstance(seed, bool) or int(seed) != seed:
        raise DiffinvError(f"seed must be an integer, got {seed!r}")
    if _parse_ellipses(data, n) is None:
        _first_files(data, n)  # a missing or short data folder fails now, not after the prior loads
    needs_prior = any(solvers.get_class(m).needs_prior for m in methods)
    if needs_prior and model is None:
        model = default_model(task, data)
    # (moving a network to the CPU it is on makes diffusers warn about dtypes: only move when needed)
    prior = priors.load(model, device=None if device.type == "cpu" else device) if model is not None else None
    if prior is not None:
        channels, H, W = prior.image_shape
        if H != W:
            raise DiffinvError(f"prior {model!r} has non-square images {H}x{W}; crops are square")
        if crop is None:
            crop = H
        elif crop != H and needs_prior:
            raise DiffinvError(
                f"crop {crop} does not match the {H}x{W} images of prior {model!r} "
                f"(diffusion methods restore images of the prior's size)"
            )
    else:
        channels = 1 if _is_ct_task(task) or _is_phantoms(data) else 3
        crop = DEFAULT_CROP if crop is None else crop
    crop = int(crop)
    if slices and slices.get("window"):
        from .data.medical import parse_window

        parse_window(slices["window"])  # an unknown preset or a bad width fails before the images load
    items = load_items(data, n, crop, channels, int(seed), slices)
    shape = tuple(items[0].x.shape[1:])
    op = from_spec(task, shape, seed=item_seed(seed, 0))  # bad specs / shapes fail here
    built = {m: pipeline.make_solver(m, prior, steps) for m in methods}
    for solver in built.values():  # wrong pairs (e.g. an SVD method on CT) fail now, not after hours
        solver.check_operator(op)
    config = {  # in the order a refused rerun reports differences
        "data": data if _is_phantoms(data) else os.path.abspath(data),
        "task": task,
        "methods": methods,
        "n": len(items),
        "items": [it.name for it in items],
        "crop": crop,
        "channels": channels,
        "sigma_y": float(sigma_y),
        "steps": None if steps is None else int(steps),
        "model": None if model is None else os.path.abspath(model) if os.path.exists(model) else str(model),
        "model_sha256": None if prior is None else prior_fingerprint(prior),
        "seed": int(seed),
        "slices": slices or None,
        "samples": samples,
        "diffinv_version": __version__,
    }
    return _Plan(items, methods, prior, config, device, built)


def measurement_view(y: torch.Tensor, op, like: torch.Tensor) -> torch.Tensor:
    """Something displayable for a measurement: images as they are, other image-shaped data (a
    sinogram) min-max scaled and resampled to the image's size, and flat measurement vectors as
    ``A^T y`` (min-max scaled if outside [0, 1])."""
    v = y if y.dim() == 4 and y.shape[1] in (1, 3) else op.At(y)
    if v.dim() != 4 or v.shape[1] not in (1, 3):
        return like.new_zeros(like.shape)
    lo, hi = float(v.min()), float(v.max())
    if lo < 0 or hi > 1:
        v = (v - lo) / max(hi - lo, 1e-12)
    h, w = v.shape[-2:]
    H, W = like.shape[-2:]
    if h * W != w * H:  # other proportions (a sinogram): shown at the image's size, as in the demo
        v = torch.nn.functional.interpolate(v, size=(H, W), mode="bilinear", align_corners=False)
    return v


# ------------------------------------------------------------------------------------ work
def _run_items(
    plan: _Plan,
    task: str,
    out: Path,
    sigma_y: float,
    steps: int | None,
    seed: int,
    rank: int,
    world: int,
    quiet: bool,
    item_callback: Callable[[dict], None] | None,
    samples: int = 1,
    project: int | None = None,
) -> int:
    """Restore this rank's share of the images with every method; returns how many were computed."""
    from tqdm.auto import tqdm

    mine = plan.items[rank::world]
    bar = tqdm(total=len(mine) * len(plan.methods), disable=quiet or rank != 0, desc="eval")
    computed = 0
    try:
        for item in mine:
            x = item.x.to(plan.device)
            for method in plan.methods:
                rec_path = _record_path(out, method, item)
                png = _image_path(out, method, item.name)
                if png.is_file() and _read_record(rec_path) is not None:
                    bar.update(1)
                    continue
                solver = plan.solvers[method]
                sampled = samples > 1 and solver.needs_prior
                if sampled:  # K samples batched; x_hat is their mean (classical methods: one answer)
                    from . import posterior

                    r = posterior.degrade_and_sample(
                        x,
                        task,
                        solver,
                        plan.prior,
                        sigma_y,
                        item_seed(seed, item.index),
                        n=samples,
                        project=project,
                    )
                else:
                    r = pipeline.degrade_and_restore(
                        x,
                        task,
                        solver,
                        plan.prior,
                        sigma_y=sigma_y,
                        seed=item_seed(seed, item.index),
                        project=project,
                    )
                gt_png = _image_path(out, GROUND_TRUTH_DIR, item.name)
                meas_png = _image_path(out, MEASUREMENT_DIR, item.name)
                if not gt_png.is_file():
                    save_image(item.x, gt_png)
                if not meas_png.is_file():
                    save_image(measurement_view(r.y, r.op, x), meas_png)
                save_image(r.x_hat.clamp(0, 1), png)
                from .config import _jsonable

                record = {
                    "image": item.name,
                    "index": item.index,
                    "source": item.source,
                    "method": method,
                    "psnr": r.metrics.get("psnr"),
                    "ssim": r.metrics.get("ssim"),
                    "lpips": r.metrics.get("lpips"),  # None below 31x31 (AlexNet's smallest input)
                    "consistency": r.metrics.get("consistency"),
                    "seconds": float(r.seconds),
                    "nfe": int(r.nfe),
                    "solver_params": _jsonable(r.params),  # the values used (incl. the task's defaults)
                    **({"project": project} if project else {}),
                }
                if samples > 1:
                    one = r.sample_metrics if sampled else r.metrics
                    record.update({f"{k}_1": one.get(k) for k in ("psnr", "ssim", "lpips")})
                    record["coverage90"] = posterior.coverage(r.post, x, 0.9) if sampled else None
                _write_json(rec_path, record)  # last: its presence means the item is finished
                computed += 1
                bar.update(1)
                if item_callback is not None:
                    item_callback(record)
    finally:
        bar.close()
    return computed


# ------------------------------------------------------------------------------------ merge
def _gather_records(out: Path, plan: _Plan) -> list[dict]:
    records, missing = [], []
    for item in plan.items:
        for method in plan.methods:
            rec = _read_record(_record_path(out, method, item))
            if rec is None:
                missing.append(f"{item.name}/{method}")
            else:
                records.append(rec)
    if missing:
        raise DiffinvError(f"{len(missing)} result(s) missing after the run, e.g. {missing[0]}")
    return records


def _figure(out: Path, plan: _Plan, records: list[dict], rows: int):
    from .viz import comparison_figure

    psnr = {(r["image"], r["method"]): r.get("psnr") for r in records}
    fig_rows = []
    for item in plan.items[:rows]:
        meas = load_image(_image_path(out, MEASUREMENT_DIR, item.name))
        row = [(f"y ({plan.config['task']})", meas, item.name[:20])]  # longer captions overlap
        for method in plan.methods:
            p = psnr.get((item.name, method))
            cap = "" if p is None else f"{p:.2f} dB"
            row.append((method, load_image(_image_path(out, method, item.name)), cap))
        row.append(("ground truth", load_image(_image_path(out, GROUND_TRUTH_DIR, item.name)), ""))
        fig_rows.append(row)
    title = f"diffinv eval: {plan.config['task']}, sigma_y = {plan.config['sigma_y']:g} (PSNR)"
    return comparison_figure(fig_rows, tile=128, title=title)


def _merge(out: Path, plan: _Plan, figure_rows: int) -> dict[str, dict]:
    records = _gather_records(out, plan)
    summary = summarize(records, plan.methods)
    _write_text(out / "metrics.csv", metrics_csv(records, plan.config.get("samples") or 1))
    _write_text(out / "results.md", results_markdown(summary, plan.config))
    if figure_rows > 0:
        _write_pil(out / "figure.png", _figure(out, plan, records, figure_rows))
    _write_pil(out / "psnr_bars.png", psnr_bar_plot(summary, f"{plan.config['task']}: mean PSNR (dB) ± std"))
    return summary


# ------------------------------------------------------------------------------------ entry point
def evaluate(
    data: str | os.PathLike,
    task: str,
    methods: Sequence[str] | str,
    out: str | os.PathLike,
    *,
    n: int | None = None,
    crop: int | None = None,
    sigma_y: float = 0.0,
    steps: int | None = None,
    model: str | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    figure_rows: int = FIGURE_ROWS,
    item_callback: Callable[[dict], None] | None = None,
    window: str | None = None,
    hu_offset: float | None = None,
    resize: bool = False,
    samples: int = 1,
    project: int | None = None,
) -> dict[str, dict]:
    """Evaluate ``methods`` on ``task`` over a data set; write the outputs listed in the module
    docstring under ``out`` and return the per-method summary (see :func:`summarize`).

    Parameters
    ----------
    data: an image folder (its first ``n`` images by name), or ``"ellipses:N"`` for N seeded
        held-out ellipse phantoms.
    task: degradation spec (``operators.from_spec``); methods: solver names (list or "a,b,c").
    crop: side of the square crops (default: the prior's image size, or 64 without a prior).
    sigma_y: measurement noise; steps: solver steps (methods that have them); seed: base seed.
    model: prior name or path (default: ``ct-ellipses-64`` for CT / phantoms, else ``natural-64``;
        only loaded when a method needs it or it is named). device: default CUDA if present.
    overwrite: delete previous results in ``out`` instead of refusing a different configuration.
    figure_rows: images shown in ``figure.png`` (0: no figure).
    item_callback: called with each finished item's record; an exception raised there stops the
        run and the finished items stay recorded (a rerun resumes).
    samples: K > 1 draws K posterior samples per image for the diffusion methods (batched,
        :mod:`diffinv.posterior`): images and metrics are the samples' mean, and the tables add
        one-sample scores and the 90% interval's coverage of the ground truth.
    window, hu_offset, resize: CT slices in HU (DICOM, or 16-bit PNGs storing HU + ``hu_offset``)
        go through the display ``window`` (preset or ``"C,W"``) to [0, 1]; ``resize`` scales each
        whole slice to the crop size instead of cropping it.
    project: noiseless only (``sigma_y`` 0): every method's restoration (each sample) after N rounds
        of projection onto the images y allows, ``{A x = y} ∩ [0, 1]``
        (:func:`diffinv.operators.project_feasible`; never farther from the ground truth).

    Bad input raises a one-line ``ValueError`` before anything is written.
    """
    from .preflight import check_output_dir

    check_output_dir(out, "out")  # an unusable output folder fails before the prior loads
    from .posterior import check_samples

    samples = check_samples(samples, "samples")
    project = pipeline.check_projection(project, sigma_y)
    slices = {"window": window, "hu_offset": hu_offset, "resize": bool(resize)}
    slices = slices if window or hu_offset is not None or resize else None
    rank, world, local_rank, owns_group = _init_distributed()
    finished = False
    try:
        dev = _resolve_device(device, local_rank)
        plan = _together(
            world,
            lambda: _plan(
                str(data), task, methods, n, crop, sigma_y, steps, model, seed, dev, slices, samples
            ),
        )
        out_dir = Path(out)
        cli_args = {  # as `diffinv eval` names them, so that `--config OUT/config.json` repeats the run
            # (local paths absolute: the file then replays from any working directory)
            "data": str(data) if _is_phantoms(str(data)) else os.path.abspath(data),
            "task": plan.config["task"],
            "methods": ",".join(plan.methods),
            "n": n,
            "crop": crop,
            "sigma_y": float(sigma_y),
            "steps": steps,
            "model": os.path.abspath(model) if model is not None and os.path.exists(model) else model,
            "seed": int(seed),
            "device": None if device is None else str(device),
            "out": str(out),
            "window": window,
            "hu_offset": hu_offset,
            "resize": bool(resize),
            "samples": samples,
            **({"project": project} if project else {}),
        }
        plan.config.update({"project": project} if project else {})  # a rerun must project the same way
        _together(world, lambda: _claim_out(out_dir, plan.config, cli_args, overwrite) if rank == 0 else None)
        _together(
            world,
            lambda: _run_items(
                plan,
                plan.config["task"],
                out_dir,
                sigma_y,
                steps,
                seed,
                rank,
                world,
                quiet,
                item_callback,
                samples,
                project,
            ),
        )
        summary = _together(world, lambda: _merge(out_dir, plan, figure_rows) if rank == 0 else None)
        if summary is None:  # other ranks: the merged results are complete on disk now
            summary = summarize(_gather_records(out_dir, plan), plan.methods)
        finished = True
        return summary
    finally:
        if owns_group:
            import torch.distributed as dist

            if finished:  # every rank here: tear gloo down together (a rank that left first
                dist.barrier()  # aborted the other with "terminate called without an active exception")
            dist.destroy_process_group()
