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
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__, pipeline, solvers
from .data.io import IMAGE_SUFFIXES, _atomic_write, load_image, save_image
from .operators import from_spec
from .priors.base import Prior

#: generator seeds of evaluation phantoms start here, far from the (seed * 1_000_003 + step)
#: seeds ``diffinv train`` draws its training phantoms from, so evaluation images are held out.
HELD_OUT_SEED_OFFSET = 7_000_000_000_000
MEASUREMENT_DIR = "measurement"
GROUND_TRUTH_DIR = "ground_truth"
CSV_COLUMNS = ("image", "method", "psnr", "ssim", "lpips", "consistency", "seconds", "nfe")
TIMING_COLUMNS = ("seconds",)
RESULT_FILES = ("metrics.csv", "results.md", "figure.png", "psnr_bars.png")
FIGURE_ROWS = 4
DEFAULT_CROP = 64
_STATS = ("psnr", "ssim", "lpips", "consistency", "seconds", "nfe")
#: with K > 1 posterior samples per image (``samples``): the outputs are the samples' mean, and these
#: columns add what one sample scores on average and how often the 90% per-pixel interval of the K
#: samples covers the ground truth (0.9 for a calibrated sampler, up to the K-sample quantile error).
SAMPLE_COLUMNS = ("psnr_1", "ssim_1", "lpips_1", "coverage90")


@dataclass
class _Item:
    """One evaluation image: its index, output name, source and the crop to degrade (1, C, S, S)."""

    index: int
    name: str
    source: str
    x: torch.Tensor


# ------------------------------------------------------------------------------------ seeds
def item_seed(seed: int, index: int) -> int:
    """The seed of image ``index``'s crop position, operator, measurement noise and solver."""
    return (int(seed) * 1_000_003 + int(index)) % (2**62)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed))


# ------------------------------------------------------------------------------------ data
def _parse_ellipses(data: str, n: int | None) -> int | None:
    """The number of phantoms if ``data`` names phantoms ("ellipses:N", or "ellipses" with n)."""
    if data == "ellipses":
        if n is None:
            raise ValueError("data 'ellipses' needs a count: use ellipses:N (or give n)")
        return n
    match = re.fullmatch(r"ellipses:(\d+)", data)
    if match is None:
        if data.startswith("ellipses:"):
            raise ValueError(f"malformed data {data!r}: use ellipses:N with a positive integer N")
        return None
    count = int(match.group(1))
    if count < 1:
        raise ValueError(f"data {data!r} asks for no phantoms: use ellipses:N with N >= 1")
    return count


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files (png, jpg, tif, bmp) directly in ``folder``, sorted by name (hidden ones skipped)."""
    p = Path(folder)
    if not p.exists():
        raise ValueError(f"data folder not found: {p}")
    if not p.is_dir():
        raise ValueError(f"data must be an image folder or ellipses:N; {p} is not a folder")
    files = sorted(
        f
        for f in p.iterdir()
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES + (".dcm",)
    )
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in data folder {p}")
    return files


def _first_files(data: str, n: int | None) -> list[Path]:
    """The first ``n`` image files of the folder ``data`` (all when ``n`` is None)."""
    files = list_images(data)
    if n is not None and n > len(files):
        raise ValueError(f"asked for the first {n} images but {data} holds only {len(files)}")
    return files[: len(files) if n is None else n]


def _safe_stem(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"


def crop_image(x: torch.Tensor, crop: int, seed: int, index: int, source: str = "image") -> torch.Tensor:
    """A ``crop`` x ``crop`` window of ``x`` (1, C, H, W) at a position seeded by (seed, index)."""
    H, W = x.shape[-2:]
    if H < crop or W < crop:
        raise ValueError(f"{source} is {H}x{W}, smaller than the {crop}x{crop} crop; use a smaller crop")
    g = _generator(item_seed(seed, index) + 1)
    top = int(torch.randint(0, H - crop + 1, (1,), generator=g))
    left = int(torch.randint(0, W - crop + 1, (1,), generator=g))
    return x[..., top : top + crop, left : left + crop].clamp(0, 1).contiguous()


def load_items(
    data: str, n: int | None, crop: int, channels: int, seed: int, slices: dict | None = None
) -> list[_Item]:
    """The evaluation images: the first ``n`` files of a folder (sorted) cropped, or phantoms.

    ``slices`` (``{"window": ..., "hu_offset": ..., "resize": bool}``) reads CT slices in HU
    through a window (:func:`diffinv.data.medical.load_slice`; DICOM always goes this way) and,
    with ``resize``, scales each whole slice to ``crop`` x ``crop`` instead of cropping it.
    """
    count = _parse_ellipses(str(data), n)
    if count is not None:
        from .data.ellipses import random_phantoms

        if channels != 1:
            raise ValueError(f"ellipse phantoms are grayscale, but the model expects {channels} channels")
        if n is not None and n > count:
            raise ValueError(f"asked for the first {n} images but {data} has only {count}")
        items = []
        for i in range(count if n is None else n):
            g = _generator(HELD_OUT_SEED_OFFSET + item_seed(seed, i))
            x = random_phantoms(1, size=crop, generator=g)
            items.append(_Item(i, f"{i:04d}_ellipse", f"ellipses:{count}", x))
        return items
    files = _first_files(data, n)
    slices = slices or {}
    items = []
    for i, f in enumerate(files):
        if f.suffix.lower() == ".dcm" or slices.get("window") or slices.get("hu_offset") is not None:
            from .data.medical import load_slice

            x, _ = load_slice(f, slices.get("window"), slices.get("hu_offset"))
            x = x.expand(-1, channels, -1, -1).contiguous()
        else:
            x = load_image(f, channels=channels)
        if slices.get("resize"):
            x = torch.nn.functional.interpolate(
                x, size=(crop, crop), mode="bilinear", antialias=True, align_corners=False
            ).clamp(0, 1)
        else:
            x = crop_image(x, crop, seed, i, str(f))
        items.append(_Item(i, f"{i:04d}_{_safe_stem(f.stem)}", f.name, x))
    return items


# ------------------------------------------------------------------------------------ setup
def _is_phantoms(data: str) -> bool:
    return data == "ellipses" or data.startswith("ellipses:")


def _is_ct_task(task: str) -> bool:
    return any(re.fullmatch(r"ct\d+", part.strip()) for part in task.split("+"))


def default_model(task: str, data: str) -> str:
    """The shipped prior used when none is named: the CT one for CT tasks or phantoms."""
    return "ct-ellipses-64" if _is_ct_task(task) or _is_phantoms(str(data)) else "natural-64"


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
        raise ValueError(f"bad device {device!r}: {' '.join(str(exc).split())}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    return dev


def _check_number(name: str, value, minimum: float, integer: bool) -> None:
    if value is None:
        return
    if integer and (isinstance(value, bool) or int(value) != value):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not math.isfinite(float(value)) or float(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value!r}")


@dataclass
class _Plan:
    items: list[_Item]
    methods: list[str]
    prior: Prior | None
    config: dict
    device: torch.device


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
        raise ValueError("task must be a non-empty degradation spec such as sr4")
    task = task.strip()
    methods = [m.strip() for m in ([methods] if isinstance(methods, str) else methods)]
    methods = [m for part in methods for m in part.split(",") if m]
    if not methods:
        raise ValueError("no methods given (e.g. pinv,ddnm)")
    dupes = sorted({m for m in methods if methods.count(m) > 1})
    if dupes:
        raise ValueError(f"method(s) listed more than once: {', '.join(dupes)}")
    for m in methods:
        solvers.get_class(m)  # unknown names: ValueError listing the available ones
    _check_number("n", n, 1, True)
    _check_number("crop", crop, 1, True)
    _check_number("steps", steps, 1, True)
    _check_number("sigma_y", sigma_y, 0, False)
    if isinstance(seed, bool) or int(seed) != seed:
        raise ValueError(f"seed must be an integer, got {seed!r}")
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
            raise ValueError(f"prior {model!r} has non-square images {H}x{W}; crops are square")
        if crop is None:
            crop = H
        elif crop != H and needs_prior:
            raise ValueError(
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
    for m in methods:  # wrong pairs (e.g. an SVD method on CT) fail now, not after hours
        solver = pipeline.make_solver(m, prior, steps)
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
    return _Plan(items, methods, prior, config, device)


# ------------------------------------------------------------------------------------ output dir
def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _write_json(path: Path, obj) -> None:
    _write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _write_pil(path: Path, img) -> None:
    _atomic_write(path, lambda f: img.save(f, format="PNG"))


def _claim_out(out: Path, run: dict, args: dict, overwrite: bool) -> None:
    """Record the run in ``out/config.json`` (or check it against the one there); refuse to mix runs.

    The file has the layout of :mod:`diffinv.config` (``command``, ``args``: what ``--config``
    reads back) plus ``run``, the resolved configuration (image list, model weights hash, ...)
    that a resumed run must match.
    """
    from .config import config_dict, write_json_atomic

    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {out} exists and is not a folder")
    cfg_path = out / "config.json"
    if overwrite:
        for sub in ("records", "images"):
            shutil.rmtree(out / sub, ignore_errors=True)
        for name in (*RESULT_FILES, "config.json"):
            (out / name).unlink(missing_ok=True)
    elif cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text()).get("run")
        except (OSError, ValueError, AttributeError) as exc:
            raise ValueError(f"cannot read {cfg_path} ({exc}); pass --overwrite to start afresh") from None
        if not isinstance(old, dict):
            raise ValueError(
                f"{cfg_path} is not from 'diffinv eval'; choose another --out or pass --overwrite"
            )
        if old == run:
            return
        diffs = [k for k in [*run, *(k for k in old if k not in run)] if old.get(k) != run.get(k)]
        shown = [k if k == "items" else f"{k}: {old.get(k)!r} there, {run.get(k)!r} now" for k in diffs[:3]]
        raise ValueError(
            f"{out} holds results of a different configuration ({'; '.join(shown)}); "
            "rerun with the same options, choose another --out, or pass --overwrite"
        )
    elif (out / "records").exists():
        raise ValueError(f"{out} has records/ but no config.json; pass --overwrite to start afresh")
    write_json_atomic({**config_dict("eval", args), "run": run}, cfg_path)


def _record_path(out: Path, method: str, item: _Item) -> Path:
    return out / "records" / method / f"{item.name}.json"


def _image_path(out: Path, folder: str, name: str) -> Path:
    return out / "images" / folder / f"{name}.png"


def _read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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


# ------------------------------------------------------------------------------------ distributed
def _init_distributed() -> tuple[int, int, int, bool]:
    """(rank, world size, local rank, whether we created the process group)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0, False
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local_rank, False
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank, True


def _together(world: int, step: Callable[[], object]):
    """Run ``step`` on every rank; if it fails on any rank, raise on all (no rank left waiting)."""
    if world <= 1:
        return step()
    import torch.distributed as dist

    result, error = None, None
    try:
        result = step()
    except Exception as exc:  # shared with the other ranks, re-raised below
        error = exc
    messages = [None] * world
    dist.all_gather_object(messages, None if error is None else " ".join(str(error).split()))
    if error is not None:
        raise error
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    if failed:
        rank, msg = failed[0]
        raise ValueError(f"rank {rank} failed: {msg}")
    return result


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
                sampled = samples > 1 and solvers.get_class(method).needs_prior
                if sampled:  # K samples batched; x_hat is their mean (classical methods: one answer)
                    from . import posterior

                    r = posterior.degrade_and_sample(
                        x, task, method, plan.prior, sigma_y, item_seed(seed, item.index), steps, n=samples
                    )
                else:
                    r = pipeline.degrade_and_restore(
                        x,
                        task,
                        method,
                        plan.prior,
                        sigma_y=sigma_y,
                        seed=item_seed(seed, item.index),
                        steps=steps,
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
        raise ValueError(f"{len(missing)} result(s) missing after the run, e.g. {missing[0]}")
    return records


def summarize(records: list[dict], methods: Sequence[str]) -> dict[str, dict]:
    """Per method: ``n`` and ``<metric>_mean`` / ``<metric>_std`` (population std) of psnr, ssim, lpips,
    consistency, seconds and nfe over the images (None where a metric is unavailable)."""
    summary = {}
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        entry: dict = {"n": len(rows)}
        for key in _STATS + SAMPLE_COLUMNS:
            vals = [r[key] for r in rows if r.get(key) is not None]
            if vals:
                a = np.asarray(vals, dtype=np.float64)
                entry[f"{key}_mean"] = float(a.mean())
                entry[f"{key}_std"] = float(a.std()) if np.all(np.isfinite(a)) else float("nan")
            else:
                entry[f"{key}_mean"] = entry[f"{key}_std"] = None
        summary[method] = entry
    return summary


def _fmt(value, spec: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


_CSV_FORMATS = {
    "psnr_1": ".6f",
    "ssim_1": ".6f",
    "lpips_1": ".6f",
    "coverage90": ".4f",
    "psnr": ".6f",
    "ssim": ".6f",
    "lpips": ".6f",
    "consistency": ".6e",
    "seconds": ".4f",
    "nfe": "d",
}


def metrics_csv(records: list[dict], samples: int = 1) -> str:
    """The per-image table (one row per image and method) as CSV text; with ``samples`` > 1 the
    metrics score the samples' mean and :data:`SAMPLE_COLUMNS` follow."""
    columns = CSV_COLUMNS + (SAMPLE_COLUMNS if samples > 1 else ())
    lines = [",".join(columns)]
    for r in records:
        cells = [r["image"], r["method"]] + [_fmt(r.get(k), _CSV_FORMATS[k]) for k in columns[2:]]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def _pm(mean, std, spec: str) -> str:
    if mean is None:
        return "n/a"
    if not math.isfinite(mean):
        return str(mean)
    return (
        f"{format(mean, spec)} ± {format(std, spec)}"
        if std is not None and math.isfinite(std)
        else format(mean, spec)
    )


def results_markdown(summary: dict[str, dict], config: dict) -> str:
    """The per-method summary as a Markdown table, with a line describing the run."""
    data = config["data"]
    src = data if _is_phantoms(data) else Path(data).name
    lines = [
        f"# diffinv eval: {config['task']}",
        "",
        f"{config['n']} images from {src}, {config['crop']}x{config['crop']} crops, "
        f"sigma_y = {config['sigma_y']:g}, model {Path(config['model']).name if config['model'] else '(none)'}, "
        f"steps {config['steps'] if config['steps'] is not None else 'default'}, seed {config['seed']}. "
        "Mean ± std over images; LPIPS v0.1 (AlexNet), lower is closer, n/a below 31x31; "
        "consistency = ||A x - y|| / ||y||.",
        "",
        "| method | PSNR (dB) | SSIM | LPIPS | consistency | seconds/image | NFE |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        lines.append(
            f"| {method} | {_pm(s['psnr_mean'], s['psnr_std'], '.2f')} | {_pm(s['ssim_mean'], s['ssim_std'], '.3f')} "
            f"| {_pm(s['lpips_mean'], s['lpips_std'], '.3f')} "
            f"| {_pm(s['consistency_mean'], s['consistency_std'], '.1e')} "
            f"| {_pm(s['seconds_mean'], s['seconds_std'], '.2f')} | {_fmt(s['nfe_mean'], 'g') or 'n/a'} |"
        )
    k = config.get("samples") or 1
    if k > 1:
        lines += [
            "",
            f"With {k} posterior samples per image, the table above scores their mean; one sample "
            "scores on average (and the 90% per-pixel interval of the samples covers the ground truth):",
            "",
            "| method | PSNR, 1 sample | SSIM, 1 sample | LPIPS, 1 sample | 90% coverage |",
            "|---|---|---|---|---|",
        ]
        for method, s in summary.items():
            lines.append(
                f"| {method} | {_pm(s['psnr_1_mean'], s['psnr_1_std'], '.2f')} "
                f"| {_pm(s['ssim_1_mean'], s['ssim_1_std'], '.3f')} "
                f"| {_pm(s['lpips_1_mean'], s['lpips_1_std'], '.3f')} "
                f"| {_pm(s['coverage90_mean'], s['coverage90_std'], '.3f')} |"
            )
    return "\n".join(lines) + "\n"


def psnr_bar_plot(summary: dict[str, dict], title: str = "mean PSNR (dB), whiskers: std"):
    """A PIL bar chart of mean PSNR per method with std whiskers (no plotting library)."""
    from PIL import Image, ImageDraw

    methods = list(summary)
    bar_w, gap, left, top, bottom, plot_h = 44, 28, 44, 30, 40, 200
    width = max(320, left + len(methods) * (bar_w + gap) + gap)
    img = Image.new("RGB", (width, top + plot_h + bottom), "white")
    draw = ImageDraw.Draw(img)
    draw.text((6, 6), title, fill="black")
    finite = [
        (s["psnr_mean"] or 0)
        + (s["psnr_std"] if s["psnr_std"] is not None and math.isfinite(s["psnr_std"]) else 0)
        for s in summary.values()
        if s["psnr_mean"] is not None and math.isfinite(s["psnr_mean"])
    ]
    top_value = max([v for v in finite if v > 0], default=1.0)
    tick = 10 ** math.floor(math.log10(top_value / 4))  # a 1/2/5 x 10^k step giving 4-8 ticks
    tick *= next(m for m in (1, 2, 5, 10) if top_value / (tick * m) <= 8)
    ymax = tick * math.ceil(top_value * 1.05 / tick)
    y0 = top + plot_h

    def ypix(v: float) -> float:
        return y0 - plot_h * min(max(v, 0.0), ymax) / ymax

    draw.line([(left - 4, top), (left - 4, y0)], fill="black")
    draw.line([(left - 4, y0), (width - 6, y0)], fill="black")
    for k in range(round(ymax / tick) + 1):
        v = k * tick
        draw.line([(left - 8, ypix(v)), (left - 4, ypix(v))], fill="black")
        draw.text((4, ypix(v) - 6), f"{v:g}", fill="black")
    palette = [(66, 114, 196), (237, 125, 49), (112, 173, 71), (255, 192, 0), (91, 155, 213), (165, 105, 189)]
    for i, method in enumerate(methods):
        x = left + gap + i * (bar_w + gap)
        cx = x + bar_w // 2
        mean, std = summary[method]["psnr_mean"], summary[method]["psnr_std"]
        label_y = y0
        if mean is not None and math.isfinite(mean):
            draw.rectangle([x, ypix(mean), x + bar_w, y0], fill=palette[i % len(palette)])
            label_y = ypix(mean)
            if std is not None and math.isfinite(std) and std > 0:
                lo, hi = ypix(mean - std), ypix(mean + std)
                draw.line([(cx, lo), (cx, hi)], fill="black")
                draw.line([(cx - 6, lo), (cx + 6, lo)], fill="black")
                draw.line([(cx - 6, hi), (cx + 6, hi)], fill="black")
                label_y = hi
            label = f"{mean:.2f}"
        else:
            label = "n/a" if mean is None else str(mean)
        draw.text((cx - draw.textlength(label) / 2, label_y - 14), label, fill="black")
        name = method[:12]
        draw.text((cx - draw.textlength(name) / 2, y0 + 6), name, fill="black")
    return img


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

    Bad input raises a one-line ``ValueError`` before anything is written.
    """
    from .preflight import check_output_dir

    check_output_dir(out, "out")  # an unusable output folder fails before the prior loads
    from .posterior import check_samples

    samples = check_samples(samples, "samples")
    slices = {"window": window, "hu_offset": hu_offset, "resize": bool(resize)}
    slices = slices if window or hu_offset is not None or resize else None
    rank, world, local_rank, owns_group = _init_distributed()
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
        }
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
            ),
        )
        summary = _together(world, lambda: _merge(out_dir, plan, figure_rows) if rank == 0 else None)
        if summary is None:  # other ranks: the merged results are complete on disk now
            summary = summarize(_gather_records(out_dir, plan), plan.methods)
        return summary
    finally:
        if owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
