"""The web app's handlers as plain Python: what happens when a file is uploaded or "Restore" is pressed.

:func:`run_job` checks the request (uploads, caps, task / prior / method), takes the device from
the :class:`~diffinv.app.jobs.JobQueue` and calls :func:`diffinv.restore.restore_files` (the
command line's ``restore``: the same PNG, ``.npy``, JSON record and ``config.json``) into the
session's job folder, with the solver's callback driving the progress bar and the cancel button.
It never raises: every outcome is a :class:`JobResult` whose ``status`` is one line (done,
refused input, queue full, cancelled, or an internal error, whose traceback goes to the log).
:mod:`diffinv.app.ui` only maps these to Gradio components.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import inputs, options
from .jobs import JobCancelled, JobQueue, QueueFull, Session, Sessions

Report = Callable[[float | None, str], None]


class JobTimeout(RuntimeError):
    """The job ran past the app's time limit."""


@dataclass
class AppState:
    """What the handlers share: the device, its queue, the sessions and the limits."""

    root: Path
    device: str = "cpu"
    max_waiting: int = 8
    max_seconds: float = 900.0
    idle_seconds: float = 3600.0
    queue: JobQueue = field(init=False)
    sessions: Sessions = field(init=False)
    priors: dict = field(init=False)

    def __post_init__(self):
        self.root = Path(self.root)
        self.queue = JobQueue(self.max_waiting)
        self.sessions = Sessions(self.root / "sessions", self.idle_seconds)
        self.priors = options.shipped_priors()


@dataclass
class JobRequest:
    """The page's settings for one restoration."""

    input_file: str | None = None  # an uploaded file (its path), or
    example: str | None = None  # a key of options.EXAMPLES
    input_name: str | None = None  # the uploaded file's own name, if it differs from the path's
    mode: str = "degrade"  # or "measured"
    task: str = "sr4"
    prior: str | None = None
    method: str = "ddnm"
    steps: int | None = 20  # None or 0: the method's default
    sigma_y: float = 0.0
    samples: int = 1
    seed: int = 0
    window: str | None = None  # CT window preset or "CENTER,WIDTH"; None / "none": no window
    hu_offset: float | None = None
    resize: bool = False
    slice_index: int | None = None
    mask_file: str | None = None
    brush: dict | None = None  # the ImageEditor's value
    project: int | None = 0  # rounds of projection onto {A x = y} and [0, 1] (noiseless); 0: none


@dataclass
class JobResult:
    ok: bool
    status: str
    measurement: str | None = None
    restoration: str | None = None
    uncertainty: str | None = None
    metrics: str = ""
    downloads: list[str] = field(default_factory=list)
    record: dict | None = None


#: how the library's messages name options, and what the page calls them
_UI_WORDS = {
    "--resize": "'resize to the prior's size'",
    "--window": "'CT window'",
    "--hu-offset": "'HU offset'",
    "--measured": "mode 'this is my measurement'",
    "--sigma-y": "'noise'",
    "--samples": "'samples'",
    "--project": "'projection rounds'",
    "--steps": "'steps'",
    "--slice": "'NIfTI slice'",
    "--param": "parameter",
    "--mask": "the mask",
    "--task": "the task",
}


def one_line(exc: BaseException, job_dir: Path | None = None) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    if job_dir is not None:
        msg = msg.replace(f"{job_dir}/", "").replace(str(job_dir), "the job folder")
    for flag, words in _UI_WORDS.items():
        msg = msg.replace(flag, words)
    return msg


def _number(value, name: str, kind=float, lo=None, hi=None, allow_none=False):
    if value is None or (isinstance(value, str) and not value.strip()):
        if allow_none:
            return None
        raise inputs.InputError(f"{name} is required")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise inputs.InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise inputs.InputError(f"{name} must be finite, got {value!r}")
    if kind is int:
        if v != int(v):
            raise inputs.InputError(f"{name} must be a whole number, got {value!r}")
        v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise inputs.InputError(f"{name} must be in [{lo}, {hi}], got {value!r}")
    return v


def check_settings(req: JobRequest, app: AppState) -> dict:
    """The request's settings checked against the app's limits and the task; restore_files kwargs."""
    if req.mode not in options.MODES:
        raise inputs.InputError(f"unknown mode {req.mode!r}; choose one of {', '.join(options.MODES)}")
    has_mask = bool(req.mask_file) or _painted(req.brush)
    task = options.task_label(req.task, has_mask)
    spec = task or options.MASK_TASK
    methods = options.fitting_methods(spec)
    if req.method not in methods:
        raise inputs.InputError(
            f"method {req.method!r} does not fit task {spec}; choose one of {', '.join(methods)}"
        )
    model = None
    if options.method_needs_prior(req.method):
        priors = options.fitting_priors(spec, app.priors)
        model = req.prior or options.default_prior_for(spec, app.priors)
        if model not in priors:
            raise inputs.InputError(
                f"prior {model!r} does not fit task {spec}; choose one of {', '.join(priors)}"
            )
    steps = _number(req.steps, "steps", int, 0, options.MAX_STEPS, allow_none=True) or None
    window = None if req.window in (None, "", "none") else str(req.window).strip()
    if window is not None:
        from ..data.medical import parse_window

        parse_window(window)  # a bad preset or CENTER,WIDTH: one line now
    hu_offset = _number(req.hu_offset, "HU offset", float, -1e5, 1e5, allow_none=True)
    project = _number(req.project, "projection rounds", int, 0, options.MAX_PROJECT, allow_none=True)
    return dict(
        task=task,
        method=req.method,
        model=model,
        steps=steps,
        sigma_y=_number(req.sigma_y, "noise", float, 0.0, options.MAX_SIGMA),
        samples=_number(req.samples, "samples", int, 1, options.MAX_SAMPLES),
        project=project or None,
        seed=_number(req.seed, "seed", int, 0, 2**31 - 1),
        window=window,
        hu_offset=hu_offset or None,
        slice_index=_number(req.slice_index, "NIfTI slice", int, 0, 100_000, allow_none=True),
        resize=bool(req.resize) and req.mode == "degrade",
        measured=req.mode == "measured",
    )


def _painted(brush) -> bool:
    layers = brush.get("layers") if isinstance(brush, dict) else None
    try:
        import numpy as np

        return any(layer is not None and np.asarray(layer)[..., 3].any() for layer in layers or [])
    except (IndexError, TypeError, ValueError):
        return False


def _restored_size(up: inputs.Upload, kw: dict, app: AppState) -> tuple[int, int]:
    """Height and width of the image the job will restore."""
    from ..catalog import parse_task

    info = parse_task(kw["task"])
    if kw["resize"]:
        size = app.priors.get(kw["model"] or "", {}).get("size", 64)
        return size, size
    if kw["measured"] and info.is_ct:
        n = math.floor(up.width / math.sqrt(2.0))
        return n, n
    k = info.sr_factor if kw["measured"] else 1
    return up.height * k, up.width * k


def _total_steps(kw: dict, size: tuple[int, int], app: AppState) -> int:
    """Solver callbacks the job will make, about: steps x windows (see diffinv.tiling)."""
    from .. import solvers
    from ..families import family

    cls = solvers.get_class(kw["method"])
    key = "steps" if "steps" in cls.defaults else "iters" if "iters" in cls.defaults else None
    if key is None:
        return 1
    explicit = {key: kw["steps"]} if kw["steps"] else {}
    steps = int(cls.resolve_params(family(kw["task"] or options.MASK_TASK), explicit).get(key) or 1)
    p = app.priors.get(kw["model"] or "", {}).get("size")
    if not p or not cls.needs_prior:
        return steps
    overlap = p // 4

    def count(n: int) -> int:
        return 1 if n <= p else math.ceil((n - p) / (p - overlap)) + 1

    return steps * count(size[0]) * count(size[1])


def _callback(total: int, report: Report, cancel: threading.Event, deadline: float):
    state = {"calls": 0, "last": 0.0}

    def callback(event: dict) -> None:
        if cancel.is_set():
            raise JobCancelled("cancelled")
        if time.monotonic() > deadline:
            raise JobTimeout("the job ran past the app's time limit; use fewer steps or samples")
        state["calls"] += 1
        now = time.monotonic()
        if now - state["last"] > 0.1 or state["calls"] >= total:
            state["last"] = now
            report(min(state["calls"] / max(total, 1), 0.99), f"step {state['calls']} of about {total}")

    return callback


def _display(src: Path, dest: Path, min_size: int = 256) -> str:
    """A copy of an image scaled up (nearest neighbour) to at least ``min_size`` pixels high, for the page."""
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        if im.height < min_size:
            scale = math.ceil(min_size / im.height)
            im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
        im.save(dest)
    return str(dest)


def metrics_markdown(record: dict) -> str:
    """The record's scores and cost as a Markdown table."""

    def fmt(key: str, v) -> str:
        try:
            v = float(v)
        except (TypeError, ValueError):
            return str(v)
        return f"{v:.2e}" if key == "consistency" else f"{v:.2f} dB" if key == "psnr" else f"{v:.3f}"

    names = [("psnr", "PSNR"), ("ssim", "SSIM"), ("lpips", "LPIPS"), ("consistency", "consistency")]
    rows = [
        (
            "restoration" if record.get("samples", 1) == 1 else f"mean of {record['samples']}",
            record["metrics"],
        )
    ]
    if record.get("sample_metrics"):
        rows.append(("one sample (average)", record["sample_metrics"]))
    cols = [(k, label) for k, label in names if k in record["metrics"]]
    lines = ["| | " + " | ".join(label for _, label in cols) + " |", "|---|" + "---|" * len(cols)]
    for label, m in rows:
        lines.append(f"| {label} | " + " | ".join(fmt(k, m.get(k, "")) for k, _ in cols) + " |")
    truth = (
        "scored against the clean input"
        if "psnr" in record["metrics"]
        else "no ground truth: consistency only"
    )
    lines.append("")
    lines.append(
        f"NFE {record['nfe']}, {record['seconds']:.1f} s ({record['method']}"
        + (f", prior {record['model']}" if record.get("model") else "")
        + f", {record['task']}; {truth})"
    )
    return "\n".join(lines)


def _portable_config(out: Path, dest_dir: Path, input_name: str, mask_name: str | None) -> Path:
    """``config.json`` with the input (and mask) by file name, for ``diffinv restore --config`` in
    the folder where the downloaded files are."""
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    args = cfg.get("args", cfg)
    args["inputs"] = [input_name]
    if args.get("mask"):
        args["mask"] = mask_name
    args["out"] = "out/restore"
    dest_dir.mkdir(exist_ok=True)
    dest = dest_dir / "config.json"
    dest.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    return dest


def _outputs(record: dict, restoration, job: Path, up: inputs.Upload, mask: Path | None) -> JobResult:
    """Display images, metrics and the downloads of a finished job."""
    import numpy as np

    from .. import viz
    from ..data.io import save_npy_atomic
    from ..evaluate import measurement_view

    png = Path(record["output"])
    show = job / "show"
    show.mkdir(exist_ok=True)
    r = restoration
    like = r.x_true if r.x_true is not None else r.x_hat
    view = measurement_view(r.y.detach().cpu(), r.op, like.detach().cpu())
    viz.to_pil(view).save(show / "measurement.png")
    result = JobResult(
        ok=True,
        status=f"done: {record['task']} with {record['method']} in {record['seconds']:.1f} s",
        measurement=_display(show / "measurement.png", show / "measurement_view.png"),
        restoration=_display(png, show / "restoration_view.png"),
        metrics=metrics_markdown(record),
        record=record,
    )
    if record.get("output_std_png"):
        result.uncertainty = _display(Path(record["output_std_png"]), show / "std_view.png")
    downloads = [png, png.with_suffix(".json")]
    npy = Path(record.get("output_npy") or png.with_suffix(".npy"))
    if not npy.exists():  # photos: the restoration as float32 (C, H, W) in [0, 1], unclamped
        save_npy_atomic(r.x_hat[0].detach().cpu().numpy().astype(np.float32), npy)
    downloads += [npy, *(Path(record[k]) for k in ("output_std_npy", "output_figure") if record.get(k))]
    downloads.append(_portable_config(png.parent, job / "replay", up.path.name, mask.name if mask else None))
    downloads.append(up.path)
    if mask is not None:
        downloads.append(mask)
    result.downloads = [str(p) for p in downloads if Path(p).is_file()]
    return result


def prepare_input(req: JobRequest, folder: Path) -> inputs.Upload:
    """The request's input (upload or example), checked and copied into ``folder``."""
    if req.input_file:
        return inputs.take_upload(req.input_file, req.input_name, folder)
    if req.example and req.example != options.NO_EXAMPLE:
        return inputs.example_file(req.example, folder)
    raise inputs.InputError("upload an image (or a CT slice / sinogram), or pick an example")


def _prepare_mask(req: JobRequest, kw: dict, up: inputs.Upload, job: Path, app: AppState) -> Path | None:
    if req.mask_file:
        mask = inputs.take_upload(req.mask_file, Path(req.mask_file).name, job, what="mask")
        if mask.suffix not in inputs.IMAGE_SUFFIXES:
            raise inputs.InputError("mask: must be an image (white = keep, black = missing)")
        path = mask.path.rename(job / f"mask{mask.suffix}")
        if kw["resize"] and (mask.height, mask.width) == (up.height, up.width):
            h, w = _restored_size(up, kw, app)
            path = inputs.resize_mask(path, h, w, job / "mask_resized.png")
        return path
    # (the painted layer has the preview's size: the input's; a clean input may be resized)
    h, w = _restored_size(up, kw, app) if kw["resize"] else (up.height, up.width)
    return inputs.brush_mask(req.brush, h, w, job / "mask.png")


def run_job(app: AppState, session: Session, req: JobRequest, report: Report | None = None) -> JobResult:
    """One restoration for ``session``: never raises; the outcome's ``status`` is one line."""
    report = report or (lambda fraction, text: None)
    job = None
    try:
        with app.sessions.running(session):
            job = session.new_job_dir()
            kw = check_settings(req, app)
            up = prepare_input(req, job)
            size = _restored_size(up, kw, app)
            if size[0] * size[1] > options.MAX_RESTORE_PIXELS:
                side = int(math.sqrt(options.MAX_RESTORE_PIXELS))
                raise inputs.InputError(
                    f"{up.name}: restoring {size[1]}x{size[0]} pixels is over the app's {side}x{side} limit; "
                    "tick 'resize to the prior's size', or crop it (the command line has no limit)"
                )
            mask = _prepare_mask(req, kw, up, job, app)
            total = _total_steps(kw, size, app)
            report(0.0, "waiting for the device")
            results: list = []
            with app.queue.slot(
                app.device,
                on_wait=lambda ahead: report(0.0, f"queued: {ahead} job(s) ahead"),
                cancelled=session.cancel,
            ):
                deadline = time.monotonic() + app.max_seconds
                callback = _callback(total, report, session.cancel, deadline)
                report(0.0, "loading the prior")
                _restore(up, kw, mask, job, app, callback, results)
            report(1.0, "writing the results")
            record, restoration = results[0]
            out = _outputs(record, restoration, job, up, mask)
            if session.closed:
                raise JobCancelled("the session was closed")
            return out
    except QueueFull as e:
        return JobResult(False, one_line(e))
    except (JobCancelled, JobTimeout) as e:
        return JobResult(False, f"stopped: {one_line(e)}")
    except (ValueError, FileNotFoundError) as e:  # the library's and our one-line refusals
        return JobResult(False, f"error: {one_line(e, job)}")
    except Exception as e:  # a bug or a failure deep inside: log it, keep serving
        print(f"diffinv serve: job failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        return JobResult(False, f"internal error: {type(e).__name__}: {one_line(e, job)}")


def _restore(up, kw, mask, job: Path, app: AppState, callback, results: list) -> None:
    from ..restore import restore_files

    restore_files(
        [up.path],
        kw["task"],
        kw["method"],
        model=kw["model"],
        steps=kw["steps"],
        sigma_y=kw["sigma_y"],
        seed=kw["seed"],
        out=job / "out",
        measured=kw["measured"],
        mask=mask,
        device=app.device,
        progress=False,
        extra_config={"threads": None, "quiet": False},
        warn=lambda message: None,
        window=kw["window"],
        hu_offset=kw["hu_offset"],
        slice_index=kw["slice_index"],
        resize=True if kw["resize"] else None,
        samples=kw["samples"],
        project=kw["project"],
        callback=callback,
        on_result=lambda record, r: results.append((record, r)),
    )


def preview(app: AppState, session: Session, req: JobRequest) -> tuple[str | None, str]:
    """Show an uploaded file or example: ``(preview PNG, one-line status)``; never raises."""
    try:
        with session.previewing() as folder:
            up = prepare_input(req, folder)
            window = None if req.window in (None, "", "none") else req.window
            hu = _number(req.hu_offset, "HU offset", float, -1e5, 1e5, allow_none=True) or None
            raw = inputs.write_preview(up, folder / "preview_raw.png", hu, window)
            path = _display(raw, folder / "preview.png")  # (painted masks are scaled back to the input)
        return path, f"input: {up.name}, {up.width}x{up.height}"
    except (ValueError, FileNotFoundError) as e:
        return None, f"error: {one_line(e, session.folder)}"
    except Exception as e:
        print(f"diffinv serve: preview failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        return None, f"internal error: {type(e).__name__}: {one_line(e)}"
