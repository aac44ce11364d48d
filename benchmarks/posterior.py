"""Posterior samples on real data: what K samples gain over one, and whether their spread is calibrated.

Data (as ``faces.py`` and ``ct_real.py`` load it, with their loaders): ``faces`` = the first ``--n``
faces of the CelebA dev split (identities the ``faces-64`` prior never saw), 64x64, ``sr4`` (4x
average pooling); ``ct`` = ``--n`` TCIA dev slices spread over the patients, soft-tissue window
(centre 40 HU, width 400 HU) to [0, 1], 64x64, ``ct8`` (parallel beam, 8 views) with the
``ct-chest-64`` prior. Both noiseless. With ``--quick`` and the shared data missing, the bundled
stand-ins are used (one 64x64 face, one TCIA slice).

Per setting and method (default DDNM at the library's steps; ``--methods ddnm,ddrm,dps,mcg``, with
``--steps`` for all or per method, e.g. ``ddnm=100,dps=20``), ``solver.sample`` draws K (``--samples``,
default 8) samples per image, batched. Scored on the samples clamped to [0, 1] (the image domain;
clamping is monotone, so a quantile of the clamped samples is the clamped quantile):

- one-sample PSNR (mean over the K samples), PSNR of their mean, and the gain; faces: bicubic too;
- coverage: the fraction of ground-truth pixel values inside the per-pixel central 50% / 90%
  interval of the K samples (``diffinv.posterior.coverage``), also over the pixels strictly inside
  (0, 1) only (window-clipped CT air and bone make ties that every interval covers), and for levels
  10%..90% (calibration curve). Reference: with K samples even an exact sampler covers less than
  the nominal level (the truth falls outside the samples' range with probability 2 / (K + 1)); the
  "exact sampler, K samples" row is that expected coverage (exchangeability, Monte Carlo);
- Spearman rank correlation over the pixel values of one image (every channel of every pixel) of the
  per-pixel std and |mean - truth|, mean over images, and pooled over all images' values.

Targets ("Targets" section, with margins; issue 14): DDNM mean of 8 >= one sample + 1.5 dB PSNR on
faces sr4 and on real CT at 8 views; faces sr4: DDNM mean of 8 >= bicubic + 1.5 dB; Spearman(std,
|error|) >= 0.4 for DDNM on both sets.

Usage::

    python benchmarks/posterior.py --n 16 --samples 8        # DDNM, library steps
    python benchmarks/posterior.py --quick --out /tmp/post    # smoke run: 2 images, 2 samples, 2 steps

Writes ``<out>/posterior.md``, ``<out>/posterior_calibration.png`` (nominal vs empirical coverage)
and ``<out>/posterior_<set>.png`` (measurement / mean / std / |error| / truth for a few images, the
first method); ``--out`` defaults to ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ct_real  # noqa: E402
import faces  # noqa: E402
from common import (  # noqa: E402
    command_line,
    fmt,
    header,
    line_chart,
    load_prior,
    log,
    mean_std,
    now,
    rel_path,
    result_path,
    save_png,
    target_line,
    write_text,
)

from diffinv import metrics as M  # noqa: E402
from diffinv import pipeline, solvers  # noqa: E402
from diffinv.data.medical import parse_window  # noqa: E402
from diffinv.evaluate import measurement_view  # noqa: E402
from diffinv.operators import from_spec  # noqa: E402
from diffinv.posterior import coverage, summarize  # noqa: E402
from diffinv.viz import uncertainty_figure  # noqa: E402

BUNDLED = ROOT / "src" / "diffinv" / "assets" / "images"
SETS = {
    "faces": {"task": "sr4", "label": "faces sr4", "shape": faces.SHAPE},
    "ct": {"task": "ct8", "label": "real CT, 8 views", "shape": ct_real.SHAPE},
}
METHODS = ("ddnm", "ddrm", "dps", "mcg", "pigdm")
LEVELS = tuple(round(0.1 * i, 1) for i in range(1, 10))
TARGET_GAIN_DB = 1.5
TARGET_BICUBIC_DB = 1.5
TARGET_SPEARMAN = 0.4
TARGET_K = 8
DEFAULT_N = 16
DEFAULT_K = 8
DEFAULT_BATCH = 64


# ---------------------------------------------------------------------------------------- data
def _fallback(path: Path, default: Path, bundled: Path, quick: bool, exists) -> Path:
    """``bundled`` in place of the missing default data folder in ``--quick`` runs."""
    if quick and path == default and not exists(path):
        log(f"{rel_path(path)} not found: --quick uses the bundled stand-in {rel_path(bundled)}")
        return bundled
    return path


def load_set(name: str, args) -> tuple[torch.Tensor, list[str], str]:
    """(images (N, C, 64, 64) in [0, 1], names, description of the source) of set ``name``."""
    if name == "faces":
        data = _fallback(
            args.faces_data,
            faces.DATA_DIR,
            BUNDLED / "face_189080.png",
            args.quick,
            lambda p: (p / "celeba_identity.txt").is_file(),
        )
        args.faces_data = data
        return faces.load_faces(data, args.n)
    data = _fallback(
        args.ct_data, ct_real.DATA_DIR, BUNDLED / "ct_chest_tcia_hu1024_256.png", args.quick, Path.is_dir
    )
    args.ct_data = data
    window = parse_window(args.window)
    files = ct_real.pick_files(data, args.n)
    source = (
        f"{len(files)} slices of `{rel_path(data)}`"
        + ("" if data.is_file() else " spread over the patients of its manifest")
        + f"; TCIA (CC BY 3.0/4.0 per collection), credit TCIA; HU = stored - {ct_real.HU_OFFSET}, "
        f"{args.window} window (centre {window.center:g} HU, width {window.width:g} HU) to [0, 1], "
        "256x256 -> 64x64 by 4x4 box averaging (as ct_real.py)"
    )
    return ct_real.load_slices(files, window), [f.stem for f in files], source


def make_operator(name: str, seed: int):
    task = SETS[name]["task"]
    if name == "faces":
        return faces.make_operator(task, seed)
    op = from_spec(task, SETS[name]["shape"])
    op.pinv(torch.zeros(1, *op.out_shape))  # the one-off Gram factorisation, outside the timings
    return op


# ---------------------------------------------------------------------------------------- measures
def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two equally long sets of values (nan when one is constant)."""
    from scipy.stats import spearmanr

    a = a.detach().double().flatten().numpy()
    b = b.detach().double().flatten().numpy()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(spearmanr(a, b).statistic)


def exact_sampler_coverage(K: int, levels=LEVELS, draws: int = 200_000, seed: int = 0) -> dict:
    """Expected coverage of the K-sample central intervals for an exact sampler: the truth and the
    K samples are exchangeable, so uniform draws give it for every continuous posterior."""
    u = torch.rand(K + 1, draws, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return {lvl: coverage(u[:K], u[K], lvl) for lvl in levels}


def score(samples: torch.Tensor, x: torch.Tensor) -> dict:
    """Per-image PSNRs and Spearman, pooled coverages of the samples (K, B, C, H, W) against x."""
    s = samples.clamp(0, 1).to(x.dtype)
    K, B = s.shape[:2]
    post = summarize(s, quantiles=())
    one = M.psnr(s.flatten(0, 1), x.repeat(K, 1, 1, 1)).reshape(K, B).mean(0)
    mean_psnr = M.psnr(post.mean, x)
    err = (post.mean - x).abs()
    inner = (x > 0) & (x < 1)
    return {
        "one": one.tolist(),
        "mean": mean_psnr.tolist(),
        "gain": (mean_psnr - one).tolist(),
        "coverage": {lvl: coverage(s, x, lvl) for lvl in LEVELS},
        "coverage_inner": {lvl: coverage(s[:, inner], x[inner], lvl) for lvl in (0.5, 0.9)},
        "inner_frac": float(inner.double().mean()),
        "spearman": [spearman(post.std[b], err[b]) for b in range(B)],
        "spearman_pooled": spearman(post.std, err),
        "std": float(post.std.mean()),
        "rmse": float((post.mean - x).pow(2).mean().sqrt()),
        "post_mean": post.mean,
        "post_std": post.std,
    }


# ---------------------------------------------------------------------------------------- options
def parse_steps(ap, text: str | None, methods) -> dict:
    """``--steps 50`` (every method) or ``--steps ddnm=100,dps=20``; missing methods: None (library)."""
    out = dict.fromkeys(methods)
    if text is None:
        return out
    try:
        if "=" not in text:
            return dict.fromkeys(methods, int(text))
        for part in text.split(","):
            if part.strip():
                m, v = part.split("=")
                out[m.strip()] = int(v)
    except ValueError:
        ap.error(f"--steps must be N or METHOD=N,..., got {text!r}")
    if set(out) - set(methods):
        ap.error(f"--steps names methods not in --methods: {', '.join(sorted(set(out) - set(methods)))}")
    if any(v is not None and v < 1 for v in out.values()):
        ap.error("--steps must be >= 1")
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help=f"images per set (default {DEFAULT_N}; quick 2)")
    ap.add_argument(
        "--samples", type=int, default=None, help=f"K, samples per image (default {DEFAULT_K}; quick 2)"
    )
    ap.add_argument("--steps", default=None, help="N for every method, or METHOD=N,... (default: library)")
    ap.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="hyperparameter of every method that has KEY (repeatable), e.g. --param noise=ddim",
    )
    ap.add_argument("--methods", default="ddnm", help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("--sets", default="faces,ct", help="comma-separated subset of faces,ct")
    ap.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH, help=f"rows per solver call (default {DEFAULT_BATCH})"
    )
    ap.add_argument("--faces-prior", default="faces-64", help="face prior (default faces-64)")
    ap.add_argument("--ct-prior", default="ct-chest-64", help="chest CT prior (default ct-chest-64)")
    ap.add_argument("--faces-data", type=Path, default=faces.DATA_DIR, help="CelebA folder, or face image(s)")
    ap.add_argument(
        "--ct-data", type=Path, default=ct_real.DATA_DIR, help="folder of HU+1024 PNG slices, or one file"
    )
    ap.add_argument("--window", default=ct_real.WINDOW, help=f"CT HU window (default {ct_real.WINDOW})")
    ap.add_argument("--figure-images", type=int, default=4, help="images per uncertainty figure")
    ap.add_argument("--seed", type=int, default=0, help="seed of operators and samples")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 images, 2 samples, 2 steps")
    args = ap.parse_args(argv)
    q = args.quick
    args.n = args.n if args.n is not None else (2 if q else DEFAULT_N)
    args.samples = args.samples if args.samples is not None else (2 if q else DEFAULT_K)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.methods or set(args.methods) - set(METHODS):
        ap.error(f"--methods: choose from {', '.join(METHODS)}")
    args.sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    if not args.sets or set(args.sets) - set(SETS):
        ap.error(f"--sets: choose from {', '.join(SETS)}")
    args.step_plan = parse_steps(
        ap, args.steps if args.steps is not None else ("2" if q else None), args.methods
    )
    from diffinv.preflight import parse_params

    try:
        args.params = parse_params(args.param)
    except ValueError as e:
        ap.error(str(e))
    if min(args.n, args.samples, args.batch, args.threads, args.figure_images) < 1:
        ap.error("--n, --samples, --batch, --threads and --figure-images must be >= 1")
    torch.set_num_threads(args.threads)
    return args


# ---------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    command = command_line([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    t_start = time.perf_counter()
    K = args.samples
    results, sources, skipped, figures = {}, {}, [], {}
    for set_name in args.sets:
        shape = SETS[set_name]["shape"]
        x, names, source = load_set(set_name, args)
        prior_arg = args.faces_prior if set_name == "faces" else args.ct_prior
        prior = load_prior(prior_arg, shape, f"--{set_name}-prior")
        sources[set_name] = (source, prior_arg, len(names))
        op = make_operator(set_name, args.seed)
        y = op.measure(x, 0.0)
        res = results[set_name] = {}
        if set_name == "faces":
            res["bicubic"] = M.psnr(faces.bicubic(y, op, 0.0, args.seed)[0], x).tolist()
        log(f"{SETS[set_name]['label']}: {len(names)} images, K = {K}, methods {', '.join(args.methods)}")
        for i, method in enumerate(args.methods):
            cls_defaults = solvers.get_class(method).defaults
            extra = {k: v for k, v in args.params.items() if k in cls_defaults}
            solver = pipeline.make_solver(method, prior, args.step_plan[method], **extra)
            if solver.requires_svd and not op.has_svd:
                skipped.append(f"{method} on {SETS[set_name]['label']} (needs an SVD operator)")
                continue
            gen = torch.Generator().manual_seed(args.seed * 1_000_003 + 100 * i)
            post = solver.sample(y, op, n=K, generator=gen, batch=args.batch)
            r = score(post.samples, x)
            r.update(steps=solver.params.get("steps"), sec=post.seconds / len(names), nfe=post.nfe)
            res[method] = r
            log(
                f"[{now()[11:19]}] {SETS[set_name]['label']:<18} {method:<6} one {mean_std(r['one'])[0]:.2f} "
                f"mean-of-{K} {mean_std(r['mean'])[0]:.2f} dB, cov50 {r['coverage'][0.5]:.3f} "
                f"cov90 {r['coverage'][0.9]:.3f}, Spearman {mean_std(r['spearman'])[0]:.3f}, "
                f"{r['sec']:.1f} s/image"
            )
            if set_name not in figures:
                k = min(args.figure_images, len(names))
                title = (
                    f"posterior.py: {SETS[set_name]['label']}, {method}, K = {K}: "
                    "measurement / mean / std / |error| / truth"
                )
                figures[set_name] = uncertainty_figure(
                    measurement_view(y[:k], op, x[:k]),
                    r["post_mean"][:k],
                    r["post_std"][:k],
                    x[:k],
                    title=title,
                )
            r.pop("post_mean"), r.pop("post_std")
    total = time.perf_counter() - t_start

    out_md = result_path("posterior.md", args.out)
    out_cal = result_path("posterior_calibration.png", args.out)
    exact = exact_sampler_coverage(K, seed=args.seed)
    pngs = {s: result_path(f"posterior_{s}.png", args.out) for s in figures}
    text = report(args, command, sources, results, exact, skipped, total, out_cal.name, pngs)
    write_text(out_md, text)
    save_png(out_cal, calibration_figure(results, exact, K))
    for s, fig in figures.items():
        save_png(pngs[s], fig)
    print(text)
    log(f"wrote {out_md}, {out_cal} and {len(pngs)} uncertainty figure(s) in {total:.0f} s")
    return 0


def calibration_figure(results: dict, exact: dict, K: int):
    series = {"nominal": [(100 * lvl, 100 * lvl) for lvl in LEVELS]}
    series[f"exact sampler, K={K}"] = [(100 * lvl, 100 * c) for lvl, c in exact.items()]
    for set_name, res in results.items():
        for m, r in res.items():
            if m != "bicubic":
                series[f"{set_name} {m}"] = [(100 * lvl, 100 * c) for lvl, c in r["coverage"].items()]
    return line_chart(
        series,
        f"coverage of the truth by the per-pixel central intervals of K={K} samples",
        "nominal level (%)",
        "empirical coverage (%)",
        size=(620, 400),
    )


def absolute_line(label: str, value: float, need: float) -> str:
    ok = math.isfinite(value) and value >= need
    return (
        f"- {label}: {value:.3f} vs threshold {need:.2f}, margin {value - need:+.3f} "
        f"(need >= {0:+.3f}): **{'met' if ok else 'missed'}**"
    )


def report(args, command, sources, results, exact, skipped, total, cal_name, pngs) -> str:
    K = args.samples
    lines = [header("Posterior sampling: K samples per image, their mean, and calibration", command)]
    for set_name, (source, prior_arg, n) in sources.items():
        lines.append(
            f"- {SETS[set_name]['label']}: {n} images: {source}; prior `{prior_arg}`; operator "
            f"`{SETS[set_name]['task']}`, noiseless"
        )
    steps = sorted(
        {f"{m} {r['steps']}" for res in results.values() for m, r in res.items() if m != "bicubic"}
    )
    lines.append(
        f"- K = {K} samples per image (`solver.sample`, at most {args.batch} rows per solver call), seed "
        f"{args.seed}; steps: {', '.join(steps) or '-'} ("
        + (
            "library defaults per operator family"
            if args.steps is None and not args.quick
            else "set by --steps or --quick"
        )
        + "); other hyperparameters: "
        + (
            ", ".join(f"{k}={v!r}" for k, v in args.params.items()) + " (--param); the rest "
            if args.params
            else ""
        )
        + 'library defaults (DDNM: eta 0.85, `noise="ddnm"`)\n'
        "- every measure uses the samples clamped to [0, 1]; PSNR of one sample = mean over the K "
        "samples; gain = PSNR(mean of K) - PSNR(one sample), per image; all ± are std over images\n"
        "- coverage: fraction of the ground-truth pixel values (every channel) inside the per-pixel "
        "central interval of the K samples (linear-interpolated empirical quantiles), pooled over images; "
        "`(0<x<1)`: only the values strictly inside the window/range, where clipping makes no ties; "
        f"exact sampler: what a sampler of the true posterior covers with K = {K} (truth and samples "
        "exchangeable; 200000 uniform draws)\n"
        "- Spearman: rank correlation of the per-pixel std and |mean - truth| over the values of one "
        "image, mean ± std over images; pooled: over all images' values together\n"
        f"- faces bicubic: `F.interpolate(y, mode='bicubic', antialias=False)` clamped (as faces.py)\n"
        f"- total wall time: {total:.0f} s; figures: `{cal_name}` (calibration curve), "
        + ", ".join(f"`{p.name}`" for p in pngs.values())
        + " (measurement / mean / std / |error| / truth, std and |error| on one colour scale)\n"
    )
    if skipped:
        lines.append("- not run: " + "; ".join(skipped) + "\n")

    lines.append(f"\n## PSNR (dB): one sample vs the mean of K = {K}\n")
    cols = [
        "setting",
        "method",
        "steps",
        "one sample",
        f"mean of {K}",
        "gain",
        "bicubic",
        "s/image (K samples)",
        "NFE (all calls)",
    ]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for set_name, res in results.items():
        bic = fmt(res["bicubic"], ".2f") if "bicubic" in res else "–"
        for m, r in res.items():
            if m == "bicubic":
                continue
            cells = [SETS[set_name]["label"], m, str(r["steps"]), fmt(r["one"], ".2f"), fmt(r["mean"], ".2f")]
            g_m, g_s = mean_std(r["gain"])
            cells += [f"{g_m:+.2f} ± {g_s:.2f}", bic, f"{r['sec']:.2f}", str(r["nfe"])]
            lines.append("| " + " | ".join(cells) + " |")

    lines.append("\n## Calibration on the ground truth\n")
    cols = ["setting", "method", "coverage 50%", "coverage 90%", "coverage 50% (0<x<1)"]
    cols += ["coverage 90% (0<x<1)", "Spearman(std, |error|)", "Spearman pooled", "mean std", "RMSE of mean"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines.append(
        f"| exact sampler, K = {K} | – | {exact[0.5]:.3f} | {exact[0.9]:.3f} | {exact[0.5]:.3f} | "
        f"{exact[0.9]:.3f} | – | – | – | – |"
    )
    for set_name, res in results.items():
        for m, r in res.items():
            if m == "bicubic":
                continue
            c, ci = r["coverage"], r["coverage_inner"]
            cells = [SETS[set_name]["label"], m, f"{c[0.5]:.3f}", f"{c[0.9]:.3f}"]
            cells += [f"{ci[0.5]:.3f}", f"{ci[0.9]:.3f}", fmt(r["spearman"], ".3f")]
            cells += [f"{r['spearman_pooled']:.3f}", f"{r['std']:.4f}", f"{r['rmse']:.4f}"]
            lines.append("| " + " | ".join(cells) + " |")
    inner = {
        SETS[s]["label"]: next(r["inner_frac"] for m, r in res.items() if m != "bicubic")
        for s, res in results.items()
        if len(res) > ("bicubic" in res)
    }
    lines.append(
        "\nGround-truth values strictly inside (0, 1): "
        + ", ".join(f"{label} {100 * frac:.0f}%" for label, frac in inner.items())
        + ".\n"
    )

    lines.append("\n## Calibration curve: empirical coverage at nominal levels\n")
    lines.append("| setting / method | " + " | ".join(f"{100 * lvl:.0f}%" for lvl in LEVELS) + " |")
    lines.append("|---|" + "---|" * len(LEVELS))
    lines.append(f"| exact sampler, K = {K} | " + " | ".join(f"{exact[lvl]:.3f}" for lvl in LEVELS) + " |")
    for set_name, res in results.items():
        for m, r in res.items():
            if m != "bicubic":
                cells = " | ".join(f"{r['coverage'][lvl]:.3f}" for lvl in LEVELS)
                lines.append(f"| {SETS[set_name]['label']} / {m} | {cells} |")

    lines.append("\n## Targets\n")
    lines.append(
        f"DDNM, K = {TARGET_K}: mean of {TARGET_K} >= one sample + {TARGET_GAIN_DB:g} dB PSNR on faces sr4 and real CT "
        f"at 8 views; faces sr4: mean of {TARGET_K} >= bicubic + {TARGET_BICUBIC_DB:g} dB; Spearman(std, |error|) "
        f">= {TARGET_SPEARMAN:g} (mean over images) on both sets."
        + (f" This run drew K = {K}, not {TARGET_K}: the verdicts are for K = {K}." if K != TARGET_K else "")
        + "\n"
    )
    for set_name, res in results.items():
        label = SETS[set_name]["label"]
        if "ddnm" not in res:
            lines.append(f"- {label}: not run (needs ddnm)")
            continue
        r = res["ddnm"]
        one, mean = mean_std(r["one"])[0], mean_std(r["mean"])[0]
        lines.append(
            target_line(f"{label} gain", f"ddnm mean of {K}", mean, "one sample", one, TARGET_GAIN_DB)
        )
        if "bicubic" in res:
            bic = mean_std(res["bicubic"])[0]
            lines.append(
                target_line(
                    f"{label} vs bicubic", f"ddnm mean of {K}", mean, "bicubic", bic, TARGET_BICUBIC_DB
                )
            )
        lines.append(
            absolute_line(
                f"{label} Spearman(std, |error|), ddnm", mean_std(r["spearman"])[0], TARGET_SPEARMAN
            )
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
