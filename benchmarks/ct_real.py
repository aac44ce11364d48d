"""Sparse-view CT of real patient slices with a prior trained on real chest CT, and with the
ellipse-phantom prior (a prior from the wrong domain) to show what the domain costs.

Data: ``--n`` slices of the TCIA dev set ``../shared/data/ct/dev/tcia_hu`` (16-bit PNG holding
HU + 1024, 256x256; ``--data`` to override, a folder or one file), spread over all patients of
``tcia_hu_manifest.csv`` (evenly over the patients, evenly spaced within each patient's slices:
the default 24 gives 3 per patient of 8; a patient gives at most all its slices). Each slice is
windowed to [0, 1] with the soft-tissue window (centre 40 HU, width 400 HU: the training slices of
``ct-chest-64``, published already windowed by their source, resemble it), then downsampled to
64x64 by 4x4 box averaging.

Settings: parallel-beam ``ct<views>`` with 8, 18 and 30 views, noiseless and with Gaussian noise
sigma_y = 0.01 on the sinogram (as in ``ct.py``). ``--settings`` replaces them with a list of
``SPEC[@NOISE]`` items: any CT spec (``ct18-fan`` fan beam, ``ct60-a90`` limited angle, ``-bins<n>``)
and ``NOISE`` = ``g<sigma>`` (Gaussian) or ``p<I0>`` (Poisson photon counts with ``I0`` photons per
bin, ``operators.noise.PoissonNoise``: the methods that can use the per-bin variance solve the
weighted problem, ``operators.noise.WEIGHTED_METHODS``; the others get the RMS noise std).

Methods: FBP, FISTA-TV, and the diffusion methods DDNM (DDNM+ with noise), MCG, score-proj, DDS and
DiffPIR (``--methods``: a subset of them), each
once with ``--prior`` (``chest``, default ``ct-chest-64``) and once with ``--prior-wrong``
(``ellipses``, default ``ct-ellipses-64``). Hyperparameters and step counts are the library's
defaults for CT operators unless ``--steps`` / ``--tv-iters`` set them; ``--tv-variant`` adds
FISTA-TV rows with other hyperparameters (e.g. tuned for noiseless CT with ``ct_tune.py``).
Noiseless settings: ``--project N`` adds beside every row its output after N rounds of projection
onto ``{A x = y} ∩ [0, 1]`` (``diffinv.operators.project_feasible``; rows ``<row>+proj``).

Targets ("Targets" section, with margins): at 8 and 18 views (noiseless), the best diffusion method
with the chest prior >= FISTA-TV + 1 dB and >= FBP + 8 dB mean PSNR; the chest prior beats the
ellipse prior (best method of each) at every view count; Poisson noise at I0 = 1e4 and 18 views:
the best diffusion method >= FISTA-TV (weighted) + 1 dB. ``--prior-wrong none`` skips the
ellipse prior.

Usage::

    python benchmarks/ct_real.py --prior /work/runs/ct-chest-64    # full run
    python benchmarks/ct_real.py --quick --out /tmp/ctr             # smoke run: 2 slices, 8 + 18 views
    python benchmarks/ct_real.py --settings ct18-fan,ct60-a90,ct18@p1e4,ct18@p1e5 --prior-wrong none
    # hours long (SCD, 4 samples): one slice per solver call, each kept in /work/keep; run the same
    # command again after a cut and it goes on from the last finished slice
    python benchmarks/ct_real.py --methods scd --samples 4 --means-only --batch 1 --resume /work/keep
    # the same run under --seed 1 into /work/keep-s1, then a mean of 8 from the two stores (noiseless)
    python benchmarks/ct_real.py --methods scd --samples 4 --means-only --batch 1 --resume /work/keep --pool /work/keep-s1
    # ... and every row projected onto the images the sinogram allows, beside a tuned FISTA-TV
    python benchmarks/ct_real.py --methods scd --samples 4 --means-only --batch 1 --resume /work/keep \
        --pool /work/keep-s1 --project 1000 --tv-variant lam=0.0001,iters=10000

Writes ``<out>/ct_real.md`` and ``<out>/ct_real.png`` (a few slices, noiseless, every method);
``--out`` defaults to ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BatchStore,
    command_line,
    evaluate,
    figure_row,
    header,
    key_values,
    load_prior,
    log,
    mean_std,
    method_table,
    photons_label,
    pool_means,
    positive_ints,
    projected_rows,
    rel_path,
    result_path,
    run_identity,
    save_png,
    solver_run,
    summary_table,
    target_line,
    write_text,
)

from diffinv import solvers  # noqa: E402
from diffinv.data.medical import parse_window, read_slice  # noqa: E402
from diffinv.errors import DiffinvError  # noqa: E402
from diffinv.operators import from_spec  # noqa: E402
from diffinv.operators.noise import WEIGHTED_METHODS, PoissonNoise  # noqa: E402
from diffinv.viz import comparison_figure  # noqa: E402

SIZE = 64
SHAPE = (1, SIZE, SIZE)
DATA_DIR = ROOT.parent / "shared" / "data" / "ct" / "dev" / "tcia_hu"
HU_OFFSET = 1024
WINDOW = "soft-tissue"
VIEWS = (8, 18, 30)
SIGMAS = (0.0, 0.01)
DIFFUSION = ("ddnm", "mcg", "score-proj", "dds", "diffpir", "scd")
PRIORS = ("chest", "ellipses")
TARGET_VIEWS = (8, 18)
TARGET_FBP_DB = 8.0
TARGET_TV_DB = 1.0
POISSON_TARGET_I0 = 1e4
DEFAULT_N = 24


def patient_groups(data: Path) -> dict[str, list[Path]]:
    """The .png slices of the folder ``data`` by patient (its manifest's order; one group "all"
    without a manifest)."""
    if not data.is_dir():
        raise SystemExit(
            f"error: data folder {data} not found. This benchmark needs the TCIA dev slices of the shared data "
            "(../shared/data/ct/dev/tcia_hu next to the project); pass --data DIR or a 16-bit HU+1024 PNG."
        )
    manifest = data.parent / f"{data.name}_manifest.csv"
    groups: dict[str, list[Path]] = {}
    if manifest.is_file():
        with open(manifest, newline="") as f:
            for row in csv.DictReader(f):
                if (data / row["file"]).is_file():
                    groups.setdefault(row["patient"], []).append(data / row["file"])
    return groups or {"all": sorted(p for p in data.iterdir() if p.suffix.lower() == ".png")}


def pick_files(data: Path, n: int) -> list[Path]:
    """``n`` files spread evenly over the manifest's patients, evenly spaced within each patient."""
    if data.is_file():
        return [data]
    groups = patient_groups(data)
    P = len(groups)
    counts = [(i + 1) * n // P - i * n // P for i in range(P)]  # n spread evenly over the P patients
    picked = []
    for k, group in zip(counts, groups.values()):
        k = min(k, len(group))
        picked += [sorted(group)[(2 * j + 1) * len(group) // (2 * k)] for j in range(k)]
    if not picked:
        raise SystemExit(f"error: no .png slices in {data}")
    return picked


def load_slices(files: list[Path], window) -> torch.Tensor:
    """HU slices -> window -> [0, 1] -> 64x64 by box averaging: (N, 1, 64, 64)."""
    out = []
    for f in files:
        hu, _ = read_slice(f, hu_offset=HU_OFFSET)
        u = window.to_unit(torch.from_numpy(hu).float())[None, None]
        if u.shape[-1] != u.shape[-2] or u.shape[-1] % SIZE:
            raise SystemExit(f"error: {f} is {u.shape[-2]}x{u.shape[-1]}; need a square multiple of {SIZE}")
        out.append(F.avg_pool2d(u, u.shape[-1] // SIZE))
    return torch.cat(out)


def label(setting) -> str:
    """``ct18`` -> "18 views"; other specs as they are; noise appended (σ=0.01, I0=1e4)."""
    spec, kind, level = setting
    name = f"{spec[2:]} views" if spec[2:].isdigit() else spec
    return (
        name
        + {"none": "", "gauss": f", σ={level:g}", "poisson": f", Poisson I0={photons_label(level)}"}[kind]
    )


def parse_setting(ap, item: str) -> tuple[str, str, float]:
    """``SPEC[@g<sigma>|@p<I0>]`` -> (spec, "none" | "gauss" | "poisson", level)."""
    spec, _, noise = item.strip().partition("@")
    try:
        from_spec(spec, SHAPE)
        level = float(noise[1:]) if noise else 0.0
    except ValueError as e:
        ap.error(f"--settings {item!r}: {e}")
    if not noise or (noise[0] == "g" and level == 0):
        return spec, "none", 0.0
    if noise[0] not in "gp" or not level > 0:
        ap.error(f"--settings {item!r}: noise must be g<sigma> or p<photons> with a positive number")
    return spec, {"g": "gauss", "p": "poisson"}[noise[0]], level


def views_of(setting) -> int | None:
    """The view count of a plain parallel-beam ``ct<views>`` setting, else None."""
    return int(setting[0][2:]) if setting[0][2:].isdigit() else None


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help=f"slices (default {DEFAULT_N}; quick 2)")
    ap.add_argument("--views", default=None, help="comma-separated view counts (default 8,18,30; quick 8,18)")
    ap.add_argument("--no-noisy", action="store_true", help="skip sigma_y = 0.01 (quick: skipped)")
    ap.add_argument(
        "--steps", type=int, default=None, help="steps of every diffusion method (default: library)"
    )
    ap.add_argument(
        "--tv-iters", type=int, default=None, help="fista-tv iterations (default: library; quick 10)"
    )
    ap.add_argument(
        "--prior", default="ct-chest-64", help="prior from the right domain (default ct-chest-64)"
    )
    ap.add_argument(
        "--prior-wrong", default="ct-ellipses-64", help="prior from the wrong domain ('none': skip it)"
    )
    ap.add_argument(
        "--settings",
        default=None,
        help="comma-separated SPEC[@g<sigma>|@p<I0>] (replaces --views / --no-noisy)",
    )
    ap.add_argument("--window", default=WINDOW, help=f"HU window: preset or C,W (default {WINDOW})")
    ap.add_argument("--data", type=Path, default=DATA_DIR, help="folder of HU+1024 PNG slices, or one file")
    ap.add_argument(
        "--methods", default=",".join(DIFFUSION), help=f"diffusion methods, a subset of {','.join(DIFFUSION)}"
    )
    ap.add_argument(
        "--samples",
        type=int,
        default=1,
        help="K > 1: also the posterior mean of K samples of the --mean-methods (rows <method>-mean<K>)",
    )
    ap.add_argument(
        "--mean-methods", default=None, help="methods of the --samples rows (default: all --methods)"
    )
    ap.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="METHOD:KEY=VALUE,...",
        help="hyperparameters of one diffusion method instead of the library's (repeatable)",
    )
    ap.add_argument(
        "--means-only",
        action="store_true",
        help="with --samples K > 1: skip the single-sample rows of the --mean-methods (K runs, not K + 1)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of noise and solvers")
    ap.add_argument(
        "--batch",
        type=int,
        default=None,
        help="slices per solver call (default: all; solver seeds are per call, so it changes the draws)",
    )
    ap.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep each finished batch in DIR and read it back when the same command runs again "
        "(a run that was cut goes on where it stopped; pair it with a small --batch)",
    )
    ap.add_argument(
        "--pool",
        type=Path,
        action="append",
        default=None,
        metavar="DIR",
        help="with --resume, noiseless settings and --samples K: also report each mean row pooled with "
        "the --resume store DIR of the same run under another --seed (a mean of 2K samples; repeatable)",
    )
    ap.add_argument(
        "--tv-variant",
        action="append",
        default=[],
        metavar="KEY=VALUE,...",
        help="also a row 'fista-tv KEY=VALUE,...' with these FISTA-TV hyperparameters (repeatable; e.g. "
        "lam=0.0002,iters=10000, tuned with ct_tune.py --method fista-tv)",
    )
    ap.add_argument(
        "--project",
        type=int,
        default=0,
        metavar="N",
        help="noiseless settings only: also report every row after N rounds of projection onto "
        "{A x = y} and [0, 1] (diffinv.operators.project_feasible; rows <method>+proj)",
    )
    ap.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 2 slices, 8 + 18 views, noiseless, 2 steps"
    )
    args = ap.parse_args(argv)
    q = args.quick
    args.n = args.n if args.n is not None else (2 if q else DEFAULT_N)
    args.steps = args.steps if args.steps is not None else (2 if q else None)
    args.tv_iters = args.tv_iters if args.tv_iters is not None else (10 if q else None)
    args.views = positive_ints(ap, args.views, (8, 18) if q else VIEWS, "views")
    sigmas = (0.0,) if (q or args.no_noisy) else SIGMAS
    if args.settings:
        args.settings = [parse_setting(ap, item) for item in args.settings.split(",") if item.strip()]
    else:
        args.settings = [(f"ct{v}", "gauss" if s > 0 else "none", s) for s in sigmas for v in args.views]
    args.priors = ("chest",) if args.prior_wrong.lower() == "none" else PRIORS
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.methods or any(m not in DIFFUSION for m in args.methods):
        ap.error(f"--methods must be a subset of {','.join(DIFFUSION)}")
    args.mean_methods = (
        args.methods
        if args.mean_methods is None
        else [m.strip() for m in args.mean_methods.split(",") if m.strip()]
    )
    if any(m not in args.methods for m in args.mean_methods):
        ap.error("--mean-methods must be a subset of --methods")
    args.params = {}
    for text in args.param:
        m, sep, items = text.partition(":")
        m = m.strip()
        if not sep or m not in args.methods:
            ap.error(f"--param needs METHOD:KEY=VALUE with METHOD one of --methods, got {text!r}")
        args.params.setdefault(m, {}).update(key_values(ap, items, "--param"))
    args.tv_variants = {f"fista-tv {t.strip()}": key_values(ap, t, "--tv-variant") for t in args.tv_variant}
    if args.means_only and args.samples < 2:
        ap.error("--means-only needs --samples >= 2")
    if args.pool:
        # another seed draws other noise: pooled means are over one measurement only when noiseless
        if args.resume is None or args.samples < 2 or any(k != "none" for _, k, _ in args.settings):
            ap.error("--pool needs --resume, --samples >= 2 and noiseless settings only")
    if args.project and (args.project < 0 or any(k != "none" for _, k, _ in args.settings)):
        # with noise, {A x = y} does not hold the true image: projecting onto it fits the noise
        ap.error("--project needs N >= 1 and noiseless settings only")
    if min(args.n, args.threads, args.steps or 1, args.tv_iters or 1, args.samples, args.batch or 1) < 1:
        ap.error("--n, --threads, --steps, --tv-iters, --samples and --batch must be >= 1")
    torch.set_num_threads(args.threads)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    command = command_line([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    t_start = time.perf_counter()
    window = parse_window(args.window)
    files = pick_files(args.data, args.n)
    x = load_slices(files, window)
    names = [f.stem for f in files]
    prior = {"chest": load_prior(args.prior, SHAPE)}
    if "ellipses" in args.priors:
        prior["ellipses"] = load_prior(args.prior_wrong, SHAPE, "--prior-wrong")
    for m, params in args.params.items():  # the library's own check of names and values, before any work
        try:
            solvers.get("ddnm+" if m == "ddnm" else m, prior["chest"], **params)
        except DiffinvError as e:
            raise SystemExit(f"error: --param {m}: {e}") from None
    for params in args.tv_variants.values():
        try:
            solvers.get("fista-tv", **params)
        except DiffinvError as e:
            raise SystemExit(f"error: --tv-variant: {e}") from None
    identity = run_identity(args)
    # the pools are checked before the own store is opened: a refused --pool leaves no new run.json
    pools = [BatchStore(d, identity, "--pool", ignore=("seed",), create=False) for d in args.pool or []]
    seeds = [args.seed] + [p.identity["seed"] for p in pools]
    if len(set(seeds)) < len(seeds):
        raise SystemExit(f"error: --pool: the pooled runs must have distinct seeds, got {seeds}")
    store = BatchStore(args.resume, identity) if args.resume is not None else None
    log(
        f"{len(files)} slices; settings {[label(s) for s in args.settings]}; steps {args.steps or 'library defaults'}"
    )
    shown = sorted({0, len(files) // 2, len(files) - 1})
    results, rows, figure_label = {}, [], "noiseless"
    all_noisy = all(k != "none" for _, k, _ in args.settings)
    for k_setting, setting in enumerate(args.settings):
        spec, kind, level = setting
        op = from_spec(spec, SHAPE)
        op.pinv(torch.zeros(1, *op.out_shape))  # the one-off Gram factorisation, outside the timings
        views = views_of(setting)
        seed = args.seed + 1000 * (views if views is not None else 100 + k_setting)
        g = torch.Generator().manual_seed(seed + (int(1e4 * level) if kind == "gauss" else 0))
        if kind == "poisson":
            y, noise = PoissonNoise(level).measure(op, x, g)  # noise: the per-bin variance of y
        else:
            noise = level
            y = op.measure(x, level, generator=g)
        ddnm = "ddnm" if kind == "none" else "ddnm+"
        runs = {
            "fbp": solver_run("pinv", use_fbp=True),
            "fista-tv": solver_run("fista-tv", steps=args.tv_iters),
            **{name: solver_run("fista-tv", **params) for name, params in args.tv_variants.items()},
        }
        for tag in args.priors:
            for m in args.methods:
                method = ddnm if m == "ddnm" else m
                mean_row = args.samples > 1 and m in args.mean_methods
                if not (mean_row and args.means_only):
                    runs[f"{m}/{tag}"] = solver_run(method, prior[tag], args.steps, **args.params.get(m, {}))
                if mean_row:
                    runs[f"{m}-mean{args.samples}/{tag}"] = solver_run(
                        method, prior[tag], args.steps, samples=args.samples, **args.params.get(m, {})
                    )
        res = evaluate(
            runs, x, y, op, noise, args.seed, args.batch or len(files), False, label(setting), store
        )
        if pools:
            res = pool_means(res, x, args.batch or len(files), label(setting), store, pools)
        if args.project:
            res = projected_rows(res, x, y, op, args.project, label(setting))
        results[setting] = res
        # the figure shows the noiseless settings, or the first setting when every one is noisy
        if kind == "none" or (k_setting == 0 and all_noisy):
            figure_label = "noiseless" if kind == "none" else label(setting)
            rows += [figure_row(x, res, k, names[k], truth=f"truth, {label(setting)}") for k in shown]
    total = time.perf_counter() - t_start

    out_md, out_png = result_path("ct_real.md", args.out), result_path("ct_real.png", args.out)
    shown_names = [names[k] for k in shown]
    text = report(args, command, window, names, results, total, out_png.name, shown_names, figure_label)
    write_text(out_md, text)
    title = f"ct_real.py: real TCIA slices, soft-tissue window, {figure_label} (PSNR of each output)"
    save_png(out_png, comparison_figure(rows, tile=128, title=title))
    print(text)
    log(f"wrote {out_md} and {out_png} in {total:.0f} s")
    return 0


def best(res: dict, tag: str, projected: bool | None = None) -> tuple[str, float]:
    """(method, mean PSNR) of the best diffusion method with prior ``tag`` (of the ``+proj`` rows
    only if ``projected``, of the others only if False)."""
    scores = {
        m: mean_std(r["psnr"])[0]
        for m, r in res.items()
        if m.endswith(f"/{tag}") and projected in (None, "+proj/" in m)
    }
    m = max(scores, key=scores.get)
    return m, scores[m]


def report(args, command, window, names, results, total, png_name, shown, figure_label: str) -> str:
    steps = {
        f"{m.split('/')[0]} {r['steps']}" for res in results.values() for m, r in res.items() if "/" in m
    }
    lines = [header("Sparse-view CT of real patient slices (TCIA)", command)]
    lines.append(
        f"- data: {len(names)} slices of `{rel_path(args.data)}`"
        + ("" if args.data.is_file() else " spread over the patients of its manifest")
        + f" ({', '.join(names)}); The Cancer Imaging Archive (TCIA: MIDRC-RICORD-1A, CMB-CRC, ACRIN-FLT-Breast "
        f"and others, CC BY 3.0/4.0 per collection), credit TCIA\n"
        f"- preprocessing: HU = stored - {HU_OFFSET}; {args.window} window (centre {window.center:g} HU, width "
        f"{window.width:g} HU) to [0, 1], the window the `ct-chest-64` training slices (published windowed) "
        f"resemble; 256x256 -> 64x64 by 4x4 box averaging of the windowed image\n"
        f"- priors: chest = `{args.prior}`"
        + (
            f", ellipses = `{args.prior_wrong}` (trained on ellipse phantoms: the wrong domain)"
            if "ellipses" in args.priors
            else " (the ellipse prior skipped)"
        )
        + "\n"
        f"- operators: `ct<views>` (parallel beam, 180 degrees) unless the setting names another spec "
        f"(`-fan`: equiangular fan beam, default distances; `-a<deg>`: limited angular range); Gaussian noise σ on "
        f"the sinogram in [0, 1]-image units; Poisson: `PoissonNoise(I0)` photon counts (default attenuation), "
        f"measured line integrals -log(counts / I0), per-bin variance given to the weighted methods "
        f"({', '.join(WEIGHTED_METHODS)}; the others get the RMS noise std)\n"
        f"- steps: {args.steps if args.steps else 'library defaults for CT'} (used: {', '.join(sorted(steps))}); "
        f"fista-tv and the other hyperparameters: library defaults"
        + (f" except {args.tv_iters} iterations" if args.tv_iters else "")
        + "".join(
            f"; `{name}`: FISTA-TV with these hyperparameters (`--tv-variant`)" for name in args.tv_variants
        )
        + "".join(
            f"; {m}: " + ", ".join(f"{k} = {v}" for k, v in p.items()) + " (`--param`)"
            for m, p in args.params.items()
        )
        + "; ddnm runs ddnm+ with noise\n"
        "- metrics: PSNR / SSIM of the output clamped to [0, 1] against the windowed 64x64 slice, mean ± std "
        "over slices; s/image = solver wall time / slices\n"
        + (
            f"- `<method>-mean{args.samples}`: the Monte-Carlo posterior mean of {args.samples} samples of the "
            f"method per slice (each clamped to [0, 1], then averaged; the MMSE estimate the samples "
            f"approximate); its s/image counts all {args.samples} samples, its NFE one sample's\n"
            if args.samples > 1
            else ""
        )
        + (
            f"- `<method>-mean{args.samples * (1 + len(args.pool))}`: pooled (`--pool`): the average of this run's "
            f"mean of {args.samples} (seed {args.seed}) and the means of {args.samples} of the same run under other "
            f"seeds, read from {', '.join(f'`{rel_path(d)}`' for d in args.pool)}; its s/image adds up all of them\n"
            if args.pool
            else ""
        )
        + (
            f"- `<row>+proj`: the row's clamped outputs after {args.project} rounds of projection onto the images "
            "the noiseless sinogram allows, {A x = y} and [0, 1] (`diffinv.operators.project_feasible`: alternating "
            "projections; every round is at least as close as the row to the true slice and to the exact "
            "posterior mean, both in that set); its s/image adds the projection's\n"
            if args.project
            else ""
        )
        + f"- total wall time: {total:.0f} s\n- figure: `{png_name}` (slices {', '.join(shown)}, {figure_label})\n"
    )
    lines += ["\n## PSNR (dB), mean over slices\n", *summary_table(results, "psnr", ".2f", label)]
    if "ellipses" in args.priors:
        lines += wrong_prior_table(args, results)
    lines += per_patient_table(args, names, results)
    lines.append("\n## Per setting\n")
    for setting, res in results.items():
        lines += [f"\n### {label(setting)}\n", *method_table(res)]
    lines += targets(args, results)
    return "\n".join(lines) + "\n"


def patient_sources(data: Path) -> dict[str, str]:
    """``{patientNN: "patient id, source"}`` from the manifest beside ``data`` (files ``patientNN_k``)."""
    manifest = data.parent / f"{data.name}_manifest.csv"
    if not manifest.is_file():
        return {}
    with open(manifest, newline="") as f:
        return {
            row["file"].split("_")[0]: f"{row['patient'][:24]}, {row.get('source_repo', '').split('+')[-1]}"
            for row in csv.DictReader(f)
        }


def per_patient_table(args, names, results) -> list[str]:
    """Mean PSNR per patient, noiseless settings: where the chest prior helps and where it does not
    (the dev patients include head and abdomen scans that no chest slice resembles)."""
    patient_of = [n.split("_")[0] for n in names]
    patients = sorted(set(patient_of))
    sources = patient_sources(args.data)
    lines = []
    for setting, res in results.items():
        if setting[1] != "none" or len(patients) < 2:
            continue
        methods = list(res)
        lines += [f"\n## PSNR (dB) per patient, {label(setting)}\n"]
        lines.append("| patient (source) | slices | " + " | ".join(methods) + " |")
        lines.append("|---|---|" + "---|" * len(methods))
        for p in patients:
            idx = [i for i, q in enumerate(patient_of) if q == p]
            cells = [f"{sum(res[m]['psnr'][i] for i in idx) / len(idx):.2f}" for m in methods]
            src = f" ({sources[p]})" if sources.get(p) else ""
            lines.append(f"| {p}{src} | {len(idx)} | " + " | ".join(cells) + " |")
    return lines


def wrong_prior_table(args, results) -> list[str]:
    lines = ["\n## What the wrong-domain prior costs: PSNR(chest) - PSNR(ellipses), dB\n"]
    lines.append("| setting | " + " | ".join(args.methods) + " | best vs best |")
    lines.append("|---|" + "---|" * (len(args.methods) + 1))
    for setting, res in results.items():
        d = [
            mean_std(res[f"{m}/chest"]["psnr"])[0] - mean_std(res[f"{m}/ellipses"]["psnr"])[0]
            for m in args.methods
        ]
        gap = best(res, "chest")[1] - best(res, "ellipses")[1]
        lines.append(f"| {label(setting)} | " + " | ".join(f"{v:+.2f}" for v in d) + f" | {gap:+.2f} |")
    return lines


def targets(args, results) -> list[str]:
    lines = ["\n## Targets\n"]
    lines.append(
        f"At {' and '.join(map(str, TARGET_VIEWS))} views (noiseless) the best diffusion method with the chest "
        f"prior >= FISTA-TV + {TARGET_TV_DB:g} dB and >= FBP + {TARGET_FBP_DB:g} dB mean PSNR; the chest prior "
        "beats the ellipse prior (best method of each) at every view count; Poisson noise, I0 = 1e4, 18 views: "
        f"the best diffusion method >= FISTA-TV (weighted) + {TARGET_TV_DB:g} dB. Other settings: for information.\n"
    )
    for setting, res in results.items():
        views, (_, kind, level) = views_of(setting), setting
        poisson_target = kind == "poisson" and level == POISSON_TARGET_I0 and views == 18
        info = "" if kind == "none" or poisson_target else "(for information) "
        m, b = best(res, "chest")
        if views in TARGET_VIEWS:
            for ref, need in (("fista-tv", TARGET_TV_DB), ("fbp", TARGET_FBP_DB)):
                if ref == "fbp" and poisson_target:
                    continue
                vr = mean_std(res[ref]["psnr"])[0]
                lines.append(target_line(f"{info}{label(setting)}", m, b, ref, vr, need))
            for name in args.tv_variants if kind == "none" else ():  # FISTA-TV tuned otherwise
                for ref in (name, f"{name}+proj") if args.project else (name,):
                    vr = mean_std(res[ref]["psnr"])[0]
                    lines.append(
                        target_line(f"(for information) {label(setting)}", m, b, ref, vr, TARGET_TV_DB)
                    )
            if args.project and kind == "none":  # the same comparisons without, and with both projected
                m0, b0 = best(res, "chest", projected=False)
                for ref, need in (("fista-tv", TARGET_TV_DB), ("fbp", TARGET_FBP_DB)):
                    for a, va, r in ((m0, b0, ref), (m, b, f"{ref}+proj")):
                        vr = mean_std(res[r]["psnr"])[0]
                        lines.append(target_line(f"(for information) {label(setting)}", a, va, r, vr, need))
        if "ellipses" not in args.priors:
            continue
        lines.append(
            target_line(f"{info}{label(setting)} chest vs ellipses", m, b, *best(res, "ellipses"), 0)
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
