"""The DDNM paper's natural-image tasks with the shipped natural prior, against the other solvers.

Data: ``--n`` fixed 64x64 crops (positions seeded by ``--seed``) of the CBSD68 test images in
``../shared/data/natural/dev/CBSD68`` (relative to the project root; ``--data`` to override). Crop
``i`` comes from image ``i mod 68`` (sorted by name), so 100 crops use every image at least once.

Tasks (the operators of :func:`diffinv.operators.from_spec`, seed ``--seed``): ``sr4``,
``sr4-bicubic``, ``inpaint-box``, ``inpaint-random0.5``, ``colorize``, ``cs0.25``, ``deblur-gauss``,
all noiseless, plus ``sr4`` and ``deblur-gauss`` with Gaussian measurement noise sigma_y = 0.05.

Methods: ``ddnm`` (noiseless) / ``ddnm+`` (noisy), ``mcg``, ``ddrm``, ``dps``, ``pigdm`` with their
default hyperparameters except the step count, and per task the classical baseline a practitioner
would reach for: bicubic upsampling of y for super-resolution (``F.interpolate(mode="bicubic",
antialias=False)``, clamped to [0, 1]), TV-regularised MFISTA (``fista-tv``, default lambda) for
inpainting, deblurring and compressed sensing, and the luma copy (the grey y replicated into three
channels) for colorisation.

Steps: every diffusion method runs ``--steps`` network evaluations (DDNM, DDRM, PiGDM one per
step; MCG and DPS one per step plus a back-propagation through the network). The papers use
100 (DDNM, PiGDM), 20 (DDRM) and 1000 (MCG, DPS) steps; 1000 steps on 100 crops x 9 task settings is
out of reach on a CPU, so all methods share the same reduced count, which handicaps MCG and DPS
most. The results file says which count was used.

All crops of a task go through each solver in batches of ``--batch`` (the solvers are batched);
seconds/image is a batch's wall time divided by its size.

Targets (printed in the "Targets" section with their margins): DDNM beats the classical baseline by
>= 1 dB PSNR on ``sr4`` and ``inpaint-random0.5`` (noiseless), with measurement consistency
||A x - y|| / ||y|| <= 1e-3 (worst crop).

Usage::

    python benchmarks/natural.py                 # full run (defaults below); ~25 min on 2 busy cores
    python benchmarks/natural.py --quick --out /tmp/nat   # smoke run: 4 crops, 2 tasks, 2 steps

Writes ``<out>/natural.md`` and ``<out>/natural.png`` (one crop per task across methods);
``--out`` defaults to ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, fmt, header, mean_std, result_path, save_png, write_text  # noqa: E402

from diffinv import metrics as M  # noqa: E402
from diffinv import pipeline, priors  # noqa: E402
from diffinv.data.io import IMAGE_SUFFIXES, load_image  # noqa: E402
from diffinv.operators import from_spec  # noqa: E402
from diffinv.viz import comparison_figure  # noqa: E402

DEFAULT_THREADS = 1
DATA_DIR = ROOT.parent / "shared" / "data" / "natural" / "dev" / "CBSD68"
TASKS = ("sr4", "sr4-bicubic", "inpaint-box", "inpaint-random0.5", "colorize", "cs0.25", "deblur-gauss")
NOISY = {"sr4": 0.05, "deblur-gauss": 0.05}
DIFFUSION = ("ddnm", "mcg", "ddrm", "dps", "pigdm")
TARGET_TASKS = ("sr4", "inpaint-random0.5")
TARGET_MARGIN_DB = 1.0
TARGET_CONSISTENCY = 1e-3
SHAPE = (3, 64, 64)

# Defaults of the full run, chosen so that it takes about 25 minutes on 2 busy CPU cores (measured:
# 25 crops x 2 steps x all 9 settings took 300 s at load ~5, 1 thread: ~390 s per step for 100 crops
# plus ~400 s of fista-tv). Each extra step adds ~6.5 minutes; meaningful diffusion quality needs
# >= 20 steps (the papers: 20-1000), i.e. a couple of hours for everything; for the two target tasks
# alone use --tasks sr4,inpaint-random0.5 --no-noisy --steps 20 (~30 min).
DEFAULT_N = 100
DEFAULT_STEPS = 3
DEFAULT_BATCH = 50
DEFAULT_TV_ITERS = 100


# ---------------------------------------------------------------------------------------- data
def load_crops(folder: Path, n: int, size: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """``n`` seeded ``size`` x ``size`` RGB crops, crop i from image i mod len(images)."""
    if not folder.is_dir():
        raise SystemExit(
            f"error: data folder {folder} not found. This benchmark needs the CBSD68 test images of "
            "the shared data (../shared/data/natural/dev/CBSD68 next to the project); pass --data DIR "
            "to use another folder of images."
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"error: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    g = torch.Generator().manual_seed(seed)
    crops, names, cache = [], [], {}
    for i in range(n):
        f = files[i % len(files)]
        if f not in cache:
            cache[f] = load_image(f, channels=3)[0]
        img = cache[f]
        H, W = img.shape[-2:]
        if H < size or W < size:
            raise SystemExit(f"error: {f} is {H}x{W}, smaller than the {size}x{size} crops")
        top = int(torch.randint(H - size + 1, (1,), generator=g))
        left = int(torch.randint(W - size + 1, (1,), generator=g))
        crops.append(img[:, top : top + size, left : left + size])
        names.append(f"{f.stem}@{top},{left}")
    return torch.stack(crops).contiguous(), names


# ---------------------------------------------------------------------------------------- methods
def baseline_for(task: str) -> str:
    if task.startswith("sr"):
        return "bicubic"
    if task == "colorize":
        return "luma-copy"
    return "fista-tv"


def methods_for(task: str, sigma: float) -> list[str]:
    diff = ["ddnm+" if (m == "ddnm" and sigma > 0) else m for m in DIFFUSION]
    return diff + [baseline_for(task)]


def bicubic_upsample(y: torch.Tensor, op) -> torch.Tensor:
    return F.interpolate(
        y, size=op.in_shape[-2:], mode="bicubic", align_corners=False, antialias=False
    ).clamp(0, 1)


def luma_copy(y: torch.Tensor, op) -> torch.Tensor:
    return y.expand(-1, op.in_shape[0], -1, -1).clone()


SIMPLE = {"bicubic": bicubic_upsample, "luma-copy": luma_copy}


def run_method(method, y, op, sigma, prior, steps, tv_iters, seed):
    """(x_hat, seconds, nfe) for one batch."""
    if method in SIMPLE:
        start = time.perf_counter()
        x = SIMPLE[method](y, op)
        return x, time.perf_counter() - start, 0
    if method == "fista-tv":
        solver = pipeline.make_solver(method, None, iters=tv_iters)
    else:
        solver = pipeline.make_solver(method, prior, steps)
    x = solver(y, op, sigma_y=sigma, generator=torch.Generator().manual_seed(seed))
    return x, solver.last_seconds, solver.last_nfe


def setting_label(task: str, sigma: float, ascii: bool = False) -> str:
    if sigma == 0:
        return task
    return f"{task} sigma_y={sigma:g}" if ascii else f"{task} σ_y={sigma:g}"


# ---------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--n", type=int, default=None, help=f"number of crops (default {DEFAULT_N}; quick 4)")
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"steps of every diffusion method (default {DEFAULT_STEPS}; quick 2)",
    )
    ap.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH, help=f"crops per solver call (default {DEFAULT_BATCH})"
    )
    ap.add_argument(
        "--tasks",
        default=None,
        help="comma-separated subset of " + ",".join(TASKS) + " (sr4 and deblur-gauss also run noisy)",
    )
    ap.add_argument("--no-noisy", action="store_true", help="skip the sigma_y = 0.05 settings")
    ap.add_argument(
        "--only-noisy", action="store_true", help="run only the sigma_y = 0.05 settings (sr4, deblur-gauss)"
    )
    ap.add_argument(
        "--tv-iters",
        type=int,
        default=None,
        help=f"fista-tv iterations (default {DEFAULT_TV_ITERS}; quick 10)",
    )
    ap.add_argument("--prior", default="natural-64", help="prior name or path (default natural-64)")
    ap.add_argument("--data", type=Path, default=DATA_DIR, help="folder of test images (default CBSD68)")
    ap.add_argument("--seed", type=int, default=0, help="seed of crops, operators, noise and solvers")
    ap.add_argument("--figure-index", type=int, default=0, help="crop shown in the figure")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results)")
    ap.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"torch CPU threads (default {DEFAULT_THREADS}: on a shared machine, multi-threaded small ops "
        "stall on busy cores; try 2 on an idle one)",
    )
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 4 crops, sr4 + inpaint-random0.5, 2 steps"
    )
    args = ap.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            ap.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if args.n is None:
        args.n = 4 if args.quick else DEFAULT_N
    if args.steps is None:
        args.steps = 2 if args.quick else DEFAULT_STEPS
    if args.tv_iters is None:
        args.tv_iters = 10 if args.quick else DEFAULT_TV_ITERS
    if args.tasks is None:
        tasks = list(TARGET_TASKS) if args.quick else list(TASKS)
    else:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        bad = [t for t in tasks if t not in TASKS]
        if bad:
            ap.error(f"unknown task(s) {bad}; choose from {', '.join(TASKS)}")
    if args.quick and args.tasks is None:
        args.no_noisy = True
    for key in ("n", "steps", "batch", "tv_iters"):
        if getattr(args, key) < 1:
            ap.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.no_noisy and args.only_noisy:
        ap.error("--no-noisy and --only-noisy exclude each other")
    if args.only_noisy and not any(t in NOISY for t in tasks):
        ap.error(f"--only-noisy: none of the tasks has a noisy setting ({', '.join(NOISY)})")
    args.settings = []
    for t in tasks:
        if not args.only_noisy:
            args.settings.append((t, 0.0))
        if t in NOISY and not args.no_noisy:
            args.settings.append((t, NOISY[t]))
    args.figure_index = min(max(args.figure_index, 0), args.n - 1)
    return args


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    command = command_line([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    t_start = time.perf_counter()
    x_all, names = load_crops(args.data, args.n, SHAPE[-1], args.seed)
    prior = priors.load(args.prior)
    if tuple(prior.image_shape) != SHAPE:
        raise SystemExit(f"error: prior {args.prior} has image shape {prior.image_shape}, need {SHAPE}")
    log(
        f"{args.n} crops of {args.data}; {len(args.settings)} settings; steps={args.steps}; batch={args.batch}"
    )

    batches = [(s, min(s + args.batch, args.n)) for s in range(0, args.n, args.batch)]
    results: dict[tuple[str, float], dict[str, dict[str, list]]] = {}
    figure_rows = []
    for task, sigma in args.settings:
        op = from_spec(task, SHAPE, seed=args.seed)
        methods = methods_for(task, sigma)
        res = {m: {"psnr": [], "ssim": [], "consistency": [], "sec": [], "nfe": []} for m in methods}
        fig_row = None
        for b, (lo, hi) in enumerate(batches):
            x = x_all[lo:hi]
            y = op.measure(
                x, sigma, generator=torch.Generator().manual_seed(args.seed * 1_000_003 + 7919 + b)
            )
            for method in methods:
                x_hat, sec, nfe = run_method(
                    method, y, op, sigma, prior, args.steps, args.tv_iters, args.seed * 1_000_003 + b
                )
                xc = x_hat.clamp(0, 1)
                r = res[method]
                r["psnr"] += M.psnr(xc, x).tolist()
                r["ssim"] += M.ssim(xc, x).tolist()
                r["consistency"] += M.consistency(op, x_hat, y).tolist()
                r["sec"].append(sec / (hi - lo))
                r["nfe"].append(nfe)
                log(
                    f"[{time.perf_counter() - t_start:7.1f}s] {setting_label(task, sigma):<22} {method:<9} "
                    f"batch {b + 1}/{len(batches)}: PSNR {mean_std(M.psnr(xc, x).tolist())[0]:6.2f}  "
                    f"{sec / (hi - lo):.3f} s/img"
                )
                if lo <= args.figure_index < hi:
                    k = args.figure_index - lo
                    if fig_row is None:
                        yk = y[k : k + 1]
                        if len(op.out_shape) == 3:
                            yvis, ylab = yk.clamp(0, 1), "y"
                        else:
                            yvis, ylab = op.pinv(yk).clamp(0, 1), "A+y"
                        fig_row = [
                            ("truth", x[k : k + 1], names[args.figure_index]),
                            (ylab, yvis, setting_label(task, sigma, ascii=True)),
                        ]
                    fig_row.append(
                        (method, xc[k : k + 1], f"{float(M.psnr(xc[k : k + 1], x[k : k + 1])):.2f} dB")
                    )
        results[(task, sigma)] = res
        figure_rows.append(fig_row)
    total = time.perf_counter() - t_start

    out_md = result_path("natural.md", args.out)
    out_png = result_path("natural.png", args.out)
    text = report(args, command, results, total, out_png.name)
    write_text(out_md, text)
    fig = comparison_figure(
        figure_rows,
        tile=128,
        title=f"natural.py: crop {args.figure_index} ({names[args.figure_index]}), {args.steps} steps",
    )
    save_png(out_png, fig)
    print(text)
    log(f"wrote {out_md} and {out_png} in {total:.0f} s")
    return 0


def report(args, command, results, total, png_name) -> str:
    lines = [header("Natural-image restoration: the DDNM paper's tasks", command)]
    lines.append(
        f"- data: {args.n} fixed 64x64 crops of `{_rel(args.data)}` (CBSD68, Berkeley Segmentation "
        f"Dataset test images; crop i from image i mod 68, positions seeded by --seed {args.seed})\n"
        f"- prior: `{args.prior}` (64x64 DDPM, linear beta schedule, 1000 training steps)\n"
        f"- steps: **{args.steps}** for every diffusion method (the papers use 100 for DDNM/PiGDM, 20 for DDRM, "
        f"1000 for MCG/DPS: a shared reduced count that is affordable on CPU; it handicaps MCG and DPS most)\n"
        f"- batch: {args.batch} crops per solver call; seconds/image = batch wall time / batch size\n"
        f"- baselines: bicubic = `F.interpolate(y, mode='bicubic', antialias=False)` clamped; "
        f"fista-tv = TV-regularised MFISTA, default lambda, {args.tv_iters} iterations; "
        f"luma-copy = grey y replicated into RGB\n"
        f"- metrics: PSNR / SSIM of the clamped output against the crop; consistency = ||A x - y|| / ||y|| "
        f"of the raw output; all mean ± std over crops (seconds and NFE over batches)\n"
        f"- total wall time: {total:.0f} s\n"
        f"- figure: `{png_name}` (crop {args.figure_index} for every task and method)\n"
    )
    lines.append("\n## PSNR (dB), mean over crops\n")
    all_methods = ["ddnm/ddnm+", "mcg", "ddrm", "dps", "pigdm", "baseline"]
    lines.append("| task | " + " | ".join(all_methods) + " | baseline used |")
    lines.append("|---|" + "---|" * (len(all_methods) + 1))
    for (task, sigma), res in results.items():
        cells = []
        for m in all_methods:
            key = {"ddnm/ddnm+": "ddnm+" if sigma > 0 else "ddnm", "baseline": baseline_for(task)}.get(m, m)
            cells.append(f"{mean_std(res[key]['psnr'])[0]:.2f}" if key in res else "–")
        lines.append(f"| {setting_label(task, sigma)} | " + " | ".join(cells) + f" | {baseline_for(task)} |")

    lines.append("\n## Per task\n")
    for (task, sigma), res in results.items():
        lines.append(f"\n### {setting_label(task, sigma)}\n")
        lines.append("| method | PSNR (dB) | SSIM | consistency | s/image | NFE |")
        lines.append("|---|---|---|---|---|---|")
        for m, r in res.items():
            lines.append(
                f"| {m} | {fmt(r['psnr'], '.2f')} | {fmt(r['ssim'], '.3f')} | {fmt(r['consistency'], '.2e')} | "
                f"{fmt(r['sec'], '.3f')} | {fmt(r['nfe'], '.0f')} |"
            )

    lines.append("\n## Targets\n")
    lines.append(
        f"DDNM (noiseless) beats the classical baseline by >= {TARGET_MARGIN_DB:g} dB PSNR on "
        f"{' and '.join(TARGET_TASKS)}, with consistency <= {TARGET_CONSISTENCY:g} (worst crop).\n"
    )
    for task in TARGET_TASKS:
        res = results.get((task, 0.0))
        if res is None:
            lines.append(f"- {task}: not run")
            continue
        base = baseline_for(task)
        d, b = mean_std(res["ddnm"]["psnr"])[0], mean_std(res[base]["psnr"])[0]
        margin = d - b
        ok = margin >= TARGET_MARGIN_DB
        lines.append(
            f"- {task} PSNR: ddnm {d:.2f} dB vs {base} {b:.2f} dB, margin {margin:+.2f} dB "
            f"(need >= +{TARGET_MARGIN_DB:.2f}): **{'met' if ok else 'missed'}**"
        )
        worst = max(res["ddnm"]["consistency"])
        ok = worst <= TARGET_CONSISTENCY
        lines.append(
            f"- {task} consistency: ddnm worst {worst:.2e} (need <= {TARGET_CONSISTENCY:.0e}, "
            f"margin x{TARGET_CONSISTENCY / max(worst, 1e-300):.3g}): **{'met' if ok else 'missed'}**"
        )
    others = [
        f"{task} {max(res['ddnm']['consistency']):.1e}"
        for (task, sigma), res in results.items()
        if sigma == 0 and task not in TARGET_TASKS
    ]
    if others:
        lines.append(
            f"- (for information) ddnm worst consistency on the other noiseless tasks: {', '.join(others)}"
        )
    return "\n".join(lines) + "\n"


def _rel(p: Path) -> str:
    try:
        return "../" + Path(p).resolve().relative_to(ROOT.parent).as_posix()
    except ValueError:
        return str(p)


if __name__ == "__main__":
    sys.exit(main())
