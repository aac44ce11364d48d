"""Why the CT targets are missed: PSNR against the number of steps and against prior training.

Runs on the **validation** phantoms of ``ct.py`` (seed 20_000_003, never the test split), noiseless,
at the target view counts (8 and 18), so its findings may be used to choose ``ct.py``'s steps.

1. Steps: every diffusion method of ``ct.py`` (same solvers and options, e.g. the ancestral VE
   predictor) at each count of ``--steps-grid``, with the hyperparameters in ``SWEEP_PARAMS``
   (ct.py's validation-tuned values at 6 steps; defaults otherwise). FBP and FISTA-TV (lambda 0.05,
   the value ct.py tunes, ``--tv-iters`` iterations) are drawn as reference lines.
2. Prior training: ``--priors`` lists priors as ``STEPS=NAME_OR_PATH`` (training steps of that
   snapshot, then a shipped name or a diffusers folder); ``--train-methods`` run on each with
   ``--train-steps`` steps. The snapshots of continued training are not shipped (4 MB each): the
   results file names the folders used; any ``diffinv train`` output folder works.

Usage::

    python benchmarks/ct_sweep.py                        # steps sweep on the shipped prior
    python benchmarks/ct_sweep.py --priors 514=/path/step-514,1100=/path/step-1100
    python benchmarks/ct_sweep.py --quick --out /tmp/s   # smoke run (a test runs it)

Writes ``<out>/ct_sweep.md`` and ``<out>/ct_sweep.png``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PALETTE,
    command_line,
    header,
    hstack,
    line_chart,
    mean_std,
    positive_ints,
    result_path,
    save_png,
    vstack,
    write_text,
)
from ct import (  # noqa: E402
    DEFAULT_VAL_N,
    DIFFUSION,
    METHODS,
    SHAPE,
    SIZE,
    VAL_SEED,
    log,
    make_operator,
    measure,
    run_method,
    setting_key,
)

from diffinv import metrics as M  # noqa: E402
from diffinv import priors  # noqa: E402
from diffinv.data.ellipses import random_phantoms  # noqa: E402

#: Fixed hyperparameters of the sweep (ct.py's values tuned at 6 steps, 8 and 18 views; mcg-vp: the
#: value ct.py's validation grid picks at 25 steps since MCG's step normalisation was fixed --
#: ct_sweep.md ran with 0.3 in the old normalisation, about 9 in the new one).
SWEEP_PARAMS = {"score-proj": 0.841, "mcg-vp": 3.0, "mcg-ve": 0.05, "dps": 0.3, "fista-tv": 0.05}
DEFAULT_GRID = (5, 10, 25, 50)
#: One colour per method in every panel.
COLORS = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(DIFFUSION)}
DEFAULT_TRAIN_METHODS = ("ddnm", "mcg-vp")
DEFAULT_TRAIN_STEPS = 20


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--n", type=int, default=None, help=f"validation phantoms (default {DEFAULT_VAL_N}; quick 2)"
    )
    ap.add_argument("--views", default=None, help="comma-separated view counts (default 8,18; quick 8)")
    ap.add_argument("--steps-grid", default=None, help="step counts (default 5,10,25,50; quick 2,3)")
    ap.add_argument("--methods", default=None, help="diffusion methods of part 1 (default all)")
    ap.add_argument("--priors", default=None, help="part 2: STEPS=NAME_OR_PATH,... (default: none)")
    ap.add_argument("--train-methods", default=",".join(DEFAULT_TRAIN_METHODS), help="part 2 methods")
    ap.add_argument(
        "--train-steps", type=int, default=None, help=f"part 2 steps (default {DEFAULT_TRAIN_STEPS})"
    )
    ap.add_argument("--prior", default="ct-ellipses-64", help="prior of part 1 (default ct-ellipses-64)")
    ap.add_argument("--tv-iters", type=int, default=100, help="FISTA-TV iterations (default 100)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 phantoms, 8 views, steps 2 and 3")
    args = ap.parse_args(argv)
    q = args.quick
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    torch.set_num_threads(args.threads)

    args.n = args.n if args.n is not None else (2 if q else DEFAULT_VAL_N)
    if args.n < 1:
        ap.error("--n must be >= 1")
    args.views = positive_ints(ap, args.views, (8,) if q else (8, 18), "views")
    args.steps_grid = positive_ints(ap, args.steps_grid, (2, 3) if q else DEFAULT_GRID, "steps-grid")
    args.train_steps = args.train_steps or (2 if q else DEFAULT_TRAIN_STEPS)

    def methods(text, default, name):
        ms = list(default) if text is None else [m.strip() for m in text.split(",") if m.strip()]
        bad = [m for m in ms if m not in DIFFUSION]
        if bad:
            ap.error(f"--{name}: unknown method(s) {bad}; choose from {', '.join(DIFFUSION)}")
        return ms

    args.methods = methods(args.methods, DIFFUSION, "methods")
    args.train_methods = methods(args.train_methods, DEFAULT_TRAIN_METHODS, "train-methods")
    args.prior_list = []
    for item in (args.priors or "").split(","):
        if not item.strip():
            continue
        steps, sep, path = item.partition("=")
        if not sep or not steps.strip().isdigit() or not path.strip():
            ap.error(f"--priors items are STEPS=NAME_OR_PATH, got {item!r}")
        args.prior_list.append((int(steps), path.strip()))
    args.tv_iters = 5 if q else args.tv_iters
    return args


def load_prior(name_or_path: str):
    """The prior at ``name_or_path``; a one-line error (SystemExit) if unreadable or not 64x64 x 1."""
    try:
        prior = priors.load(name_or_path)
    except (priors.CheckpointError, OSError, ValueError) as e:
        raise SystemExit(f"error: prior {name_or_path}: {e}") from None
    if tuple(prior.image_shape) != SHAPE:
        raise SystemExit(f"error: prior {name_or_path} has image shape {prior.image_shape}, need {SHAPE}")
    return prior


def psnr_of(x_hat: torch.Tensor, x: torch.Tensor) -> float:
    return mean_std(M.psnr(x_hat.clamp(0, 1), x).tolist())[0]


def main(argv=None) -> int:
    args = parse_args(argv)
    command = command_line([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    t_start = time.perf_counter()
    x_val = random_phantoms(
        max(args.n, DEFAULT_VAL_N), SIZE, generator=torch.Generator().manual_seed(VAL_SEED)
    )
    x_val = x_val[: args.n]
    # Every prior is loaded and checked before any work, so a bad --priors entry fails at once.
    prior = load_prior(args.prior)
    train_priors = [(t, path, load_prior(path)) for t, path in args.prior_list]
    args.gram_seconds = {}
    ops, ys, refs = {}, {}, {}
    for views in args.views:
        ops[views] = make_operator(views, args)
        ys[views], _ = measure(ops[views], x_val, 0.0, setting_key(views, 0.0) + 500)  # ct.py's tuning data
        refs[views] = {}
        for method in ("fbp", "fista-tv"):
            x_hat, _, _ = run_method(method, ys[views], ops[views], 0.0, None, args, SWEEP_PARAMS.get(method))
            refs[views][method] = psnr_of(x_hat, x_val)

    # Part 1: steps
    steps_res: dict[tuple[int, str, int], tuple[float, float]] = {}
    for views in args.views:
        for method in args.methods:
            for steps in args.steps_grid:
                args.steps = {m: steps for m in DIFFUSION}
                x_hat, sec, nfe = run_method(
                    method, ys[views], ops[views], 0.0, prior, args, SWEEP_PARAMS.get(method)
                )
                steps_res[(views, method, steps)] = (psnr_of(x_hat, x_val), sec / args.n)
                log(
                    f"[{time.perf_counter() - t_start:7.1f}s] {views} views {method:<10} {steps:4d} steps "
                    f"PSNR {steps_res[(views, method, steps)][0]:6.2f}  ({sec:.1f} s)"
                )

    # Part 2: prior training
    train_res: dict[tuple[int, str, int], float] = {}
    args.steps = {m: args.train_steps for m in DIFFUSION}
    for train_steps, _, p in train_priors:
        for views in args.views:
            for method in args.train_methods:
                x_hat, sec, _ = run_method(
                    method, ys[views], ops[views], 0.0, p, args, SWEEP_PARAMS.get(method)
                )
                train_res[(views, method, train_steps)] = psnr_of(x_hat, x_val)
                log(
                    f"[{time.perf_counter() - t_start:7.1f}s] prior @{train_steps} {views} views {method:<8} "
                    f"PSNR {train_res[(views, method, train_steps)]:6.2f}"
                )
    total = time.perf_counter() - t_start

    md, png = result_path("ct_sweep.md", args.out), result_path("ct_sweep.png", args.out)
    write_text(md, report(args, command, refs, steps_res, train_res, total, png.name))
    panels = []
    for views in args.views:
        series = {m: [(s, steps_res[(views, m, s)][0]) for s in args.steps_grid] for m in args.methods}
        hl = {"FISTA-TV": refs[views]["fista-tv"], "FBP": refs[views]["fbp"]}
        row = [
            line_chart(
                series,
                f"{views} views: PSNR vs steps (validation)",
                "steps",
                hlines=hl,
                log_x=True,
                colors=COLORS,
            )
        ]
        if train_res:
            tseries = {
                m: [(t, train_res[(views, m, t)]) for t, _ in args.prior_list] for m in args.train_methods
            }
            row.append(
                line_chart(
                    tseries,
                    f"{views} views: PSNR vs prior training ({args.train_steps} steps)",
                    "training steps (batch 32)",
                    hlines=hl,
                    colors=COLORS,
                )
            )
        panels.append(hstack(row))
    save_png(png, vstack(panels))
    log(f"wrote {md} and {png} in {total:.0f} s")
    return 0


def report(args, command, refs, steps_res, train_res, total, png_name) -> str:
    lines = [header("CT: PSNR against steps and against prior training (validation split)", command)]
    lines.append(
        f"- data: {args.n} validation phantoms of ct.py (seed {VAL_SEED}), noiseless, 64 x 64; "
        f"views {', '.join(map(str, args.views))}\n"
        f"- prior of part 1: `{args.prior}`; hyperparameters: "
        + ", ".join(f"{m} {v:g}" for m, v in SWEEP_PARAMS.items())
        + " (score-proj / fista-tv lambda, MCG gradient weight, DPS zeta)\n"
        '- VE samplers with `predictor="ancestral"`, as in ct.py; solver options: '
        + "; ".join(f"{m}: {METHODS[m][0]} {METHODS[m][1] or ''}".rstrip() for m in args.methods)
        + "\n"
        f"- wall time: {total:.0f} s; s/img = solver wall time / {args.n}\n"
        f"- figure: `{png_name}`\n"
    )
    lines.append("\n## Part 1: PSNR (dB) against steps\n")
    for views in args.views:
        lines.append(
            f"\n### {views} views (FBP {refs[views]['fbp']:.2f} dB, FISTA-TV {refs[views]['fista-tv']:.2f} dB)\n"
        )
        lines.append(
            "| method | "
            + " | ".join(f"{s} steps" for s in args.steps_grid)
            + f" | s/img at {args.steps_grid[-1]} steps |"
        )
        lines.append("|---|" + "---|" * (len(args.steps_grid) + 1))
        for m in args.methods:
            cells = [f"{steps_res[(views, m, s)][0]:.2f}" for s in args.steps_grid]
            sec = steps_res[(views, m, args.steps_grid[-1])][1]
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {sec:.2f} |")
    if train_res:
        lines.append(f"\n## Part 2: PSNR (dB) against prior training ({args.train_steps} steps)\n")
        lines.append("Priors: " + ", ".join(f"{t} steps: `{p}`" for t, p in args.prior_list) + "\n")
        cols = [f"{v} views {m}" for v in args.views for m in args.train_methods]
        lines.append("| training steps | images seen | " + " | ".join(cols) + " |")
        lines.append("|---|---|" + "---|" * len(cols))
        for t, _ in args.prior_list:
            cells = [f"{train_res[(v, m, t)]:.2f}" for v in args.views for m in args.train_methods]
            lines.append(f"| {t} | {32 * t} | " + " | ".join(cells) + " |")
    best = {
        v: max(((steps_res[(v, m, s)][0], m, s) for m in args.methods for s in args.steps_grid), default=None)
        for v in args.views
    }
    lines.append("\n## Best per view count\n")
    for v, b in best.items():
        if b is None or not math.isfinite(b[0]):
            continue
        lines.append(
            f"- {v} views: {b[1]} at {b[2]} steps, {b[0]:.2f} dB; FBP {refs[v]['fbp']:.2f}, "
            f"FISTA-TV {refs[v]['fista-tv']:.2f} (margins {b[0] - refs[v]['fbp']:+.2f} / "
            f"{b[0] - refs[v]['fista-tv']:+.2f} dB)"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
