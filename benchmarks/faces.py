"""Zero-shot face restoration on CelebA identities the face prior never saw.

Data: the first ``--n`` images (by file name) of the CelebA dev split of ``prepare.celeba_split``
(every identity divisible by 10; ``faces-64`` trains on the others), cropped in memory to the
64x64 box ``CELEBA_BOX`` of the 89x109 aligned photos. ``--data`` is the folder holding ``celeba/``
and ``celeba_identity.txt`` (default ``../shared/data/faces``), or an image / folder of 64x64
(or 89x109, then cropped) face images used as they are (the tests' stand-in).

Settings: ``sr4``, ``sr8`` (average pooling), ``inpaint-box`` (two boxes removed, over the eyes and
over the mouth: ``FACE_BOXES``), ``inpaint-random0.5``, ``colorize``, ``deblur-gauss``, all
noiseless, and ``sr4`` with Gaussian measurement noise sigma_y = 0.05.

Methods: DDNM, DDNM+, DDRM, PiGDM, DPS, MCG, DDS, DiffPIR, DAPS, RED-diff with the library's default
hyperparameters (per operator family) unless ``--steps`` sets every step count or ``--param
METHOD.KEY=VALUE`` one hyperparameter of one method; ``--tasks`` runs a subset of the settings; baselines bicubic upsampling of y
(super-resolution only), TV-regularised MFISTA (``fista-tv``) and the pseudo-inverse A^+ y.
Metrics: PSNR, SSIM, LPIPS (AlexNet v0.1) of the clamped output, mean ± std over the faces.

Targets ("Targets" section, with margins): on sr4, DDNM (one sample) >= bicubic + 0.5 dB PSNR and
lower LPIPS; on inpaint-box, every diffusion method's LPIPS below FISTA-TV's.

Usage::

    python benchmarks/faces.py --prior /work/runs/faces-64   # full run: 100 faces, library steps
    python benchmarks/faces.py --quick --out /tmp/faces      # smoke run: 2 faces, 2 steps

Writes ``<out>/faces.md`` and ``<out>/faces.png`` (face ``--figure-index`` in every setting across
methods); ``--out`` defaults to ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    command_line,
    evaluate,
    figure_row,
    header,
    load_prior,
    log,
    mean_std,
    method_table,
    rel_path,
    result_path,
    save_png,
    solver_run,
    summary_table,
    target_line,
    write_text,
)

from diffinv.data.io import IMAGE_SUFFIXES, load_image  # noqa: E402
from diffinv.data.prepare import CELEBA_BOX, celeba_split  # noqa: E402
from diffinv.operators import from_spec  # noqa: E402
from diffinv.operators.inpaint import Inpaint  # noqa: E402
from diffinv.viz import comparison_figure  # noqa: E402

SHAPE = (3, 64, 64)
DATA_DIR = ROOT.parent / "shared" / "data" / "faces"
SETTINGS = [(t, 0.0) for t in ("sr4", "sr8", "inpaint-box", "inpaint-random0.5", "colorize", "deblur-gauss")]
SETTINGS.append(("sr4", 0.05))
DIFFUSION = ("ddnm", "ddnm+", "ddrm", "pigdm", "dps", "mcg", "dds", "diffpir", "daps", "reddiff")
#: (rows, cols) of the boxes removed by ``inpaint-box`` in the 64x64 crop, placed on the mean of the
#: first 100 dev faces: both eyes with brows, and the mouth.
FACE_BOXES = ((slice(20, 34), slice(12, 52)), (slice(38, 50), slice(20, 44)))
TARGET_SR_DB = 0.5
DEFAULT_N = 100
DEFAULT_BATCH = 50


def face_box_mask() -> torch.Tensor:
    mask = torch.ones(1, *SHAPE[1:])
    for rows, cols in FACE_BOXES:
        mask[:, rows, cols] = 0
    return mask


def make_operator(task: str, seed: int):
    return (
        Inpaint(face_box_mask(), channels=3) if task == "inpaint-box" else from_spec(task, SHAPE, seed=seed)
    )


def load_faces(data: Path, n: int, start: int = 0) -> tuple[torch.Tensor, list[str], str]:
    """(faces (N, 3, 64, 64), names, description of the source): ``n`` faces from the ``start``-th."""
    identity = data / "celeba_identity.txt"
    if identity.is_file():
        files = [data / "celeba" / f for f in sorted(celeba_split(identity)["dev"])[start : start + n]]
        which = f"the first {len(files)}" if start == 0 else f"numbers {start + 1} to {start + len(files)}"
        source = (
            f"{which} by file name of the CelebA dev split (identities divisible by 10) of "
            f"`{rel_path(data)}`, the 64x64 box {CELEBA_BOX} of the 89x109 aligned photos. CelebA: Liu, Luo, "
            "Wang, Tang, ICCV 2015, for non-commercial research only"
        )
    elif data.is_file() or data.is_dir():
        files = (
            [data]
            if data.is_file()
            else sorted(p for p in data.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        )
        files = files[start : start + n]
        source = f"stand-in image(s) `{rel_path(data)}`, not the CelebA dev split"
    else:
        raise SystemExit(
            f"error: data folder {data} not found. This benchmark needs the CelebA faces of the shared data "
            "(../shared/data/faces/celeba + celeba_identity.txt next to the project); pass --data DIR or an image."
        )
    if not files:
        raise SystemExit(f"error: no images in {data}")
    faces = []
    for f in files:
        x = load_image(f, channels=3)
        if tuple(x.shape[-2:]) == (109, 89):
            left, top, right, bottom = CELEBA_BOX
            x = x[..., top:bottom, left:right]
        if tuple(x.shape[1:]) != SHAPE:
            raise SystemExit(f"error: {f} is {x.shape[-2]}x{x.shape[-1]}; need 64x64 (or 89x109 CelebA)")
        faces.append(x)
    return torch.cat(faces), [f.stem for f in files], source


def bicubic(y, op, sigma, seed):
    x = F.interpolate(y, size=op.in_shape[-2:], mode="bicubic", align_corners=False, antialias=False)
    return x.clamp(0, 1), 0.0, 0, None


def label(setting, ascii: bool = False) -> str:
    task, sigma = setting
    return task if sigma == 0 else f"{task} {'sigma_y' if ascii else 'σ_y'}={sigma:g}"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help=f"number of dev faces (default {DEFAULT_N}; quick 2)")
    ap.add_argument(
        "--steps", type=int, default=None, help="steps of every diffusion method (default: library)"
    )
    ap.add_argument(
        "--tv-iters", type=int, default=None, help="fista-tv iterations (default: library; quick 10)"
    )
    ap.add_argument("--methods", default=None, help="comma-separated subset of " + ",".join(DIFFUSION))
    ap.add_argument(
        "--tasks",
        default=None,
        help="comma-separated subset of the settings (e.g. sr4,inpaint-box; 'sr4-noisy')",
    )
    ap.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="a hyperparameter of one method, e.g. daps.ode_steps=1 (repeatable; steps here beat --steps)",
    )
    ap.add_argument(
        "--start", type=int, default=0, help="skip this many dev faces (run a later slice of the split)"
    )
    ap.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="faces per solver call")
    ap.add_argument("--prior", default="faces-64", help="prior name or path (default faces-64)")
    ap.add_argument("--data", type=Path, default=DATA_DIR, help="CelebA folder, or face image(s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of operators, noise and solvers")
    ap.add_argument("--figure-index", type=int, default=0, help="face shown in the figure")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 faces, 2 steps, 10 TV iterations")
    args = ap.parse_args(argv)
    q = args.quick
    args.n = args.n if args.n is not None else (2 if q else DEFAULT_N)
    args.steps = args.steps if args.steps is not None else (2 if q else None)
    args.tv_iters = args.tv_iters if args.tv_iters is not None else (10 if q else None)
    args.methods = [m.strip() for m in (args.methods or ",".join(DIFFUSION)).split(",") if m.strip()]
    if not args.methods or set(args.methods) - set(DIFFUSION):
        ap.error(f"--methods: choose from {', '.join(DIFFUSION)}")
    names = {label(st, ascii=True).replace(" sigma_y=0.05", "-noisy"): st for st in SETTINGS}
    args.settings = SETTINGS
    if args.tasks:
        wanted = [t.strip() for t in args.tasks.split(",") if t.strip()]
        if not wanted or set(wanted) - set(names):
            ap.error(f"--tasks: choose from {', '.join(names)}")
        args.settings = [names[t] for t in wanted]
    args.method_params = {}
    for item in args.param:
        key, _, value = item.partition("=")
        method, _, name = key.partition(".")
        if method not in args.methods or not name or not value:
            ap.error(f"--param {item!r}: need METHOD.KEY=VALUE with METHOD one of --methods")
        try:
            value = json.loads(value)
        except ValueError:
            pass
        args.method_params.setdefault(method, {})[name] = value
    if args.start < 0:
        ap.error("--start must be >= 0")
    if min(args.n, args.batch, args.threads, args.steps or 1, args.tv_iters or 1) < 1:
        ap.error("--n, --batch, --threads, --steps and --tv-iters must be >= 1")
    torch.set_num_threads(args.threads)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    command = command_line([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    t_start = time.perf_counter()
    x, names, source = load_faces(args.data, args.n, args.start)
    prior = load_prior(args.prior, SHAPE)
    k = min(max(args.figure_index, 0), len(names) - 1)
    log(f"{len(names)} faces; {len(args.settings)} settings; steps {args.steps or 'library defaults'}")
    runs = {}
    for m in args.methods:
        extra = dict(args.method_params.get(m, {}))
        runs[m] = solver_run(m, prior, extra.pop("steps", args.steps), **extra)
    baselines = {"fista-tv": solver_run("fista-tv", steps=args.tv_iters), "pinv": solver_run("pinv")}
    results, rows = {}, []
    for task, sigma in args.settings:
        i = SETTINGS.index((task, sigma))  # seeds as in a full run
        op = make_operator(task, args.seed)
        y = op.measure(x, sigma, generator=torch.Generator().manual_seed(args.seed * 1_000_003 + i))
        setting_runs = {**runs, **({"bicubic": bicubic} if task.startswith("sr") else {}), **baselines}
        seed = args.seed * 1_000_003 + 100 * i
        results[(task, sigma)] = res = evaluate(
            setting_runs, x, y, op, sigma, seed, args.batch, True, label((task, sigma))
        )
        shown = y[k : k + 1] if task != "inpaint-box" else y[k : k + 1] + (1 - face_box_mask())
        rows.append(
            figure_row(x, res, k, names[k], ("y", shown.clamp(0, 1), label((task, sigma), ascii=True)))
        )
    total = time.perf_counter() - t_start

    out_md, out_png = result_path("faces.md", args.out), result_path("faces.png", args.out)
    text = report(args, command, source, len(names), results, total, out_png.name, k, names[k])
    write_text(out_md, text)
    save_png(
        out_png, comparison_figure(rows, tile=112, title=f"faces.py: face {names[k]} (PSNR of each output)")
    )
    print(text)
    log(f"wrote {out_md} and {out_png} in {total:.0f} s")
    return 0


def report(args, command, source, n, results, total, png_name, k, name) -> str:
    steps = {f"{m} {r['steps']}" for res in results.values() for m, r in res.items() if m in DIFFUSION}
    boxes = " and ".join(f"rows {r.start}-{r.stop - 1} x cols {c.start}-{c.stop - 1}" for r, c in FACE_BOXES)
    lines = [header("Face restoration on unseen CelebA identities", command)]
    lines.append(
        f"- data: {n} faces: {source}\n"
        f"- prior: `{args.prior}`"
        + (" (trained on CelebA: for non-commercial research only)" if "faces-64" in str(args.prior) else "")
        + "\n"
        f"- steps: {args.steps if args.steps else 'the library defaults per operator family'} "
        f"(used: {', '.join(sorted(steps))}); other hyperparameters: library defaults"
        + "".join(f"; {m}: {p}" for m, p in args.method_params.items())
        + "\n"
        f"- inpaint-box: the pixels of two boxes removed, {boxes} (0-based, inclusive) of the 64x64 crop, "
        f"over the eyes and the mouth ({int((1 - face_box_mask()).sum())} of 4096 pixels)\n"
        f"- baselines: bicubic = `F.interpolate(y, mode='bicubic', antialias=False)` clamped (sr only); "
        f"fista-tv = TV-regularised MFISTA, default lambda; pinv = A^+ y\n"
        f"- metrics: PSNR, SSIM, LPIPS (AlexNet, v0.1) of the output clamped to [0, 1], mean ± std over faces; "
        f"s/image = solver wall time / faces; seed {args.seed}\n"
        f"- total wall time: {total:.0f} s\n- figure: `{png_name}` (face {k}, `{name}`, every setting)\n"
    )
    for key, spec, title in (("psnr", ".2f", "PSNR (dB)"), ("lpips", ".3f", "LPIPS (lower is better)")):
        lines += [f"\n## {title}, mean over faces\n", *summary_table(results, key, spec, label)]
    lines.append("\n## Per setting\n")
    for setting, res in results.items():
        lines += [f"\n### {label(setting)}\n", *method_table(res)]

    lines.append("\n## Targets\n")
    lines.append(
        f"sr4 (noiseless): DDNM (one sample) >= bicubic + {TARGET_SR_DB:g} dB PSNR and lower LPIPS; "
        "inpaint-box: every diffusion method's LPIPS below FISTA-TV's.\n"
    )
    sr4, box = results.get(("sr4", 0.0), {}), results.get(("inpaint-box", 0.0))
    if "ddnm" in sr4:
        for key, need, spec, unit, lower in (
            ("psnr", TARGET_SR_DB, ".2f", " dB", False),
            ("lpips", 0, ".3f", "", True),
        ):
            a, b = mean_std(sr4["ddnm"][key])[0], mean_std(sr4["bicubic"][key])[0]
            lines.append(target_line(f"sr4 {key.upper()}", "ddnm", a, "bicubic", b, need, spec, unit, lower))
    else:
        lines.append("- sr4: not run (needs ddnm)")
    if box is None:
        lines.append("- inpaint-box: not run")
        return "\n".join(lines) + "\n"
    tv = mean_std(box["fista-tv"]["lpips"])[0]
    for m in args.methods:
        lines.append(
            target_line(
                "inpaint-box LPIPS", m, mean_std(box[m]["lpips"])[0], "fista-tv", tv, 0, ".3f", "", True
            )
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
