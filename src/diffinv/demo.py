"""The offline demo (``diffinv demo``): degrade bundled images, restore them, write a figure and a table.

Rows: the 64x64 face crop (``assets/images/face_189080.png``, Berkeley data set; a face the
prior never saw, from another data set) with 4x super-resolution (``sr4``), box inpainting
(``inpaint-box``) and colorization (``colorize``) on the shipped face prior ``faces-64`` (CelebA;
it restores this face closer than ``natural-64`` does, by LPIPS most of all), the 64x64 Shepp-Logan phantom from 30 views (``ct30``) on
``ct-ellipses-64``, and a real chest CT slice (TCIA, a patient no prior saw) from 18 views
(``ct18``) on ``ct-chest-64`` (MCG in its VP form there). Columns: the measurement (the CT sinogram min-max scaled, each view stretched
to a band), the pseudo-inverse baseline (filtered back-projection for CT), DDNM, MCG (the VP form
for the natural tasks, the VE predictor-corrector form for CT, as in the paper) and the ground
truth, with the PSNR under each restoration. Everything is noiseless (``sigma_y = 0``) and seeded.
The colorization pseudo-inverse looks green: the minimum-norm RGB image with a given luma puts
each channel in proportion to its luma weight (0.299, 0.587, 0.114); that is what ``A^+ y`` is.

Step counts (:data:`DEMO_STEPS`) keep the whole demo at about 80 s of CPU time (one torch thread,
the ``diffinv demo`` default; measured on a loaded 2-core machine, where it took 3.5 min of wall
time; unloaded, wall time is about the CPU time). MCG's VE predictor-corrector sampler needs more steps than the VP
samplers (at 50 it had not converged on the shipped CT prior). DDNM and MCG (VE) apply the CT
pseudo-inverse ``op.pinv`` every step: the 64x64 / 30-view operator has a closed-form one
(a one-off Gram eigendecomposition of a few seconds, then milliseconds per call); should the
operator use conjugate gradients instead (larger geometries), the demo caps CG at
:data:`CT_CG_ITERS` iterations -- ~40x cheaper than the default cap, and early-stopped CG is the usual
regularised pseudo-inverse for sparse-view CT.

Outputs in ``out``: ``figure.png``, ``results.md`` (task, method, PSNR, SSIM, LPIPS, consistency, NFE,
seconds), ``results.json``, ``config.json`` (``diffinv demo --config`` repeats the run). They are
written only after every restoration has finished, each atomically.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from . import pipeline, priors
from .config import config_dict, write_json_atomic
from .data.ellipses import shepp_logan
from .data.io import _atomic_write, load_image
from .errors import DiffinvError
from .operators import from_spec
from .viz import comparison_figure

ASSETS = Path(__file__).parent / "assets"
NATURAL_IMAGE = ASSETS / "images" / "face_189080.png"

#: (task spec, which image, what the measurement is called in the figure)
DEMO_TASKS = [
    ("sr4", "natural", "y: 4x down (16x16)"),
    ("inpaint-box", "natural", "y: box removed"),
    ("colorize", "natural", "y: gray"),
    ("ct30", "ct", "y: sinogram 30 views"),
    ("ct18", "ct_real", "y: sinogram 18 views"),
]
PRIOR_FOR = {"natural": "faces-64", "ct": "ct-ellipses-64", "ct_real": "ct-chest-64"}
#: a real chest CT slice (TCIA; soft-tissue window), of a patient no shipped prior was trained on
REAL_CT_IMAGE = ASSETS / "images" / "ct_chest_tcia_64.png"

#: (column label, solver name, extra solver parameters) per image kind.
DEMO_METHODS = {
    "natural": [("pinv", "pinv", {}), ("DDNM", "ddnm", {}), ("MCG", "mcg", {})],
    "ct": [("FBP", "pinv", {}), ("DDNM", "ddnm", {}), ("MCG (VE)", "mcg", {"form": "ve"})],
    "ct_real": [("FBP", "pinv", {}), ("DDNM", "ddnm", {}), ("MCG", "mcg", {})],
}

#: Diffusion steps per (image kind, solver), measured to keep the demo fast on 2 CPU cores.
DEMO_STEPS = {
    ("natural", "ddnm"): 100,
    ("natural", "mcg"): 50,
    ("ct", "ddnm"): 100,
    ("ct", "mcg"): 100,
    ("ct_real", "ddnm"): 50,  # the CT defaults of benchmarks/ct_real.py
    ("ct_real", "mcg"): 25,
}
#: Steps of every diffusion method with ``fast=True`` (a smoke test, not a restoration).
FAST_STEPS = 2
#: CG iterations of the CT pseudo-inverse, if the operator uses CG (see the module docstring).
CT_CG_ITERS = 50


def measurement_view(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Something displayable for a measurement ``y`` of image ``x``.

    Images in [0, 1] are returned as they are (a small SR observation gets enlarged by the figure
    with visible pixels). Other image-shaped data (a CT sinogram, views x bins) are min-max scaled
    and each row repeated so that the result is about square. Anything else is blank.
    """
    if y.dim() != 4 or y.shape[1] not in (1, 3):
        return x.new_zeros(x.shape)
    lo, hi = float(y.min()), float(y.max())
    if lo >= 0 and hi <= 1:
        return y
    y = (y - lo) / max(hi - lo, 1e-12)
    rows, cols = y.shape[-2:]
    repeat = max(1, round(cols / rows))
    return y.repeat_interleave(repeat, dim=-2)


def _steps_for(kind: str, method: str, steps: int | None, fast: bool) -> int | None:
    """Diffusion steps of one demo method (None for the classical baseline)."""
    if method == "pinv":
        return None
    return FAST_STEPS if fast else steps if steps is not None else DEMO_STEPS[(kind, method)]


def _table(records: list[dict]) -> list[str]:
    def fmt(v, spec):
        return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)

    lines = [
        "| task | method | PSNR (dB) | SSIM | LPIPS | consistency | NFE | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['task']} | {r['method']} | {fmt(r['psnr'], '.2f')} | {fmt(r['ssim'], '.3f')} | {fmt(r.get('lpips'), '.3f')} | "
            f"{fmt(r['consistency'], '.2e')} | {r['nfe']} | {fmt(r['seconds'], '.1f')} |"
        )
    return lines


def run_demo(
    out: str = "out/demo",
    seed: int = 0,
    quiet: bool = False,
    steps: int | None = None,
    fast: bool = False,
    device: str = "cpu",
    threads: int | None = None,
) -> list[dict]:
    """Run every demo task and write ``figure.png``, ``results.md``, ``results.json``, ``config.json``.

    ``steps`` overrides the diffusion step counts of :data:`DEMO_STEPS` for every method;
    ``fast=True`` uses :data:`FAST_STEPS` (a few seconds, for tests). ``threads`` is only recorded
    in ``config.json`` (``diffinv demo --threads`` applies it). Returns one record per
    (task, method): ``task, method, solver, psnr, ssim, consistency, nfe, seconds, steps``.
    """
    from .preflight import check_output_dir

    check_output_dir(out, "out")  # before minutes of restorations: they are written only at the end
    if steps is not None and (int(steps) != steps or steps < 1):
        raise DiffinvError(f"steps must be a positive integer, got {steps!r}")
    dev = torch.device(device)
    started = time.perf_counter()
    images = {
        "natural": load_image(NATURAL_IMAGE, channels=3).to(dev),
        "ct": shepp_logan(64).to(dev),
        "ct_real": load_image(REAL_CT_IMAGE, channels=1).to(dev),
    }
    on = None if dev.type == "cpu" else dev  # (moving a model to the CPU it is on only makes diffusers warn)
    loaded = {kind: priors.load(name, device=on) for kind, name in PRIOR_FOR.items()}
    rows, records = [], []
    total = sum(len(DEMO_METHODS[kind]) for _, kind, _ in DEMO_TASKS)
    done = 0
    for spec, kind, y_label in DEMO_TASKS:
        x = images[kind]
        op = from_spec(spec, tuple(x.shape[1:]), seed=seed)
        if kind.startswith("ct"):
            op.cg_iters = CT_CG_ITERS
        row, y = [], None
        for label, method, params in DEMO_METHODS[kind]:
            done += 1
            n_steps = _steps_for(kind, method, steps, fast)
            if not quiet:
                print(
                    f"[{done}/{total}] {spec} {label}" + (f", {n_steps} steps" if n_steps else ""), flush=True
                )
            r = pipeline.degrade_and_restore(
                x,
                op,
                method,
                loaded[kind],
                sigma_y=0.0,
                seed=seed,
                steps=n_steps,
                progress=not quiet,
                **params,
            )
            y = r.y
            records.append(
                {
                    "task": spec,
                    "method": label,
                    "solver": method,
                    "params": params,
                    "steps": n_steps,
                    "psnr": r.metrics.get("psnr"),
                    "ssim": r.metrics.get("ssim"),
                    "lpips": r.metrics.get("lpips"),
                    "consistency": r.metrics.get("consistency"),
                    "nfe": r.nfe,
                    "seconds": r.seconds,
                }
            )
            row.append((label, r.x_hat, f"{r.metrics['psnr']:.2f} dB"))
        row.insert(0, (y_label, measurement_view(y, x), spec))
        row.append(("ground truth", x, ""))
        rows.append(row)
    seconds = time.perf_counter() - started

    step_note = "; ".join(
        f"{kind}: "
        + ", ".join(f"{label} {_steps_for(kind, m, steps, fast)}" for label, m, _ in methods if m != "pinv")
        for kind, methods in DEMO_METHODS.items()
    )
    title = f"diffinv demo: PSNR under each restoration (diffusion steps, {step_note})"
    fig = comparison_figure(rows, tile=128, title=title)
    table = _table(records)
    settings = {
        "out": str(out),
        "seed": seed,
        "steps": steps,
        "fast": fast,
        "device": device,
        "threads": threads,
        "quiet": quiet,
    }
    out_dir = Path(out)
    _atomic_write(out_dir / "figure.png", lambda f: fig.save(f, format="PNG"))
    _atomic_write(out_dir / "results.md", lambda f: f.write(("\n".join(table) + "\n").encode("utf-8")))
    write_json_atomic(
        {
            "settings": {**settings, "ct_cg_iters": CT_CG_ITERS, "priors": PRIOR_FOR},
            "seconds": seconds,
            "results": records,
        },
        out_dir / "results.json",
    )
    write_json_atomic(config_dict("demo", settings), out_dir / "config.json")
    if not quiet:
        print("\n".join(table))
        print(f"total {seconds:.0f} s; figure: {out_dir / 'figure.png'}")
    return records
