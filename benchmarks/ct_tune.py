"""Tune a CT method's hyperparameters on real slices that ``ct_real.py`` never scores.

Tuning set: one slice per TCIA patient of ``../shared/data/ct/dev/tcia_hu`` (``--n-slices`` of the
8 patients), the slice nearest the middle of the patient's series among those that neither
``ct_real.py --n 16`` nor its default ``--n 24`` picks, so that choices made here are scored there
on unseen slices. Preprocessing, operators and noise are ``ct_real.py``'s (soft-tissue window, 64x64,
``SPEC[@g<sigma>|@p<I0>]`` settings, weighted least squares under Poisson noise).

Rows: FBP, FISTA-TV (weighted under Poisson noise), ``--method`` at the library's defaults (unless
``--no-defaults``), and one row per ``--variant`` (``key=value,key=value`` hyperparameters of the
method), one sample per slice, with per-slice PSNR.

Usage::

    python benchmarks/ct_tune.py --setting ct18@p1e4 --method scd --variant adapt_stop=1 \\
        --variant adapt_stop=1,tv_weight=1e-3 --out /tmp/tune

Writes ``<out>/ct_tune.md``, row by row as each finishes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ct_real  # noqa: E402  (puts src/ on the path)
from common import (  # noqa: E402
    BatchStore,
    command_line,
    evaluate,
    header,
    key_values,
    log,
    mean_std,
    result_path,
    run_identity,
    solver_run,
    write_text,
)

from diffinv import solvers  # noqa: E402
from diffinv.data.medical import parse_window  # noqa: E402
from diffinv.errors import DiffinvError  # noqa: E402
from diffinv.operators import from_spec  # noqa: E402
from diffinv.operators.noise import PoissonNoise  # noqa: E402


def tuning_files(data: Path, n_slices: int) -> list[Path]:
    """One slice per patient (the first ``n_slices`` patients), outside ``ct_real.py``'s picks;
    ``data`` a file: that file."""
    if data.is_file():
        return [data]
    scored = set(ct_real.pick_files(data, 16)) | set(ct_real.pick_files(data, ct_real.DEFAULT_N))
    groups = ct_real.patient_groups(data)
    picked = []
    for group in list(groups.values())[:n_slices]:
        group = sorted(group)
        free = [k for k, f in enumerate(group) if f not in scored]
        if free:
            picked.append(group[min(free, key=lambda k: abs(k - len(group) // 2))])
    if not picked:
        raise SystemExit(f"error: no tuning slices left in {data}")
    return picked


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setting", default="ct8", help="SPEC[@g<sigma>|@p<I0>] as in ct_real.py (default ct8)")
    ap.add_argument("--method", default="scd", help="the diffusion method tuned (default scd)")
    ap.add_argument("--variant", action="append", default=[], help="key=value,... (repeatable)")
    ap.add_argument("--n-slices", type=int, default=8, help="tuning slices, one per patient (default 8)")
    ap.add_argument("--steps", type=int, default=None, help="diffusion steps (default: library)")
    ap.add_argument("--prior", default="ct-chest-64", help="prior (default ct-chest-64)")
    ap.add_argument("--data", type=Path, default=ct_real.DATA_DIR, help="folder of HU+1024 PNG slices")
    ap.add_argument("--seed", type=int, default=0, help="seed of noise and solvers")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results)")
    ap.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep each finished slice of each row in DIR and read it back on a rerun with the same "
        "setting, method, slices, steps, prior and seed (a cut run goes on; new variants may be added)",
    )
    ap.add_argument(
        "--no-defaults",
        action="store_true",
        help="skip the method's row at the library defaults (a --variant is then required)",
    )
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 2 slices, 2 steps, 10 FISTA-TV iterations"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.n_slices, args.steps = min(args.n_slices, 2), args.steps or 2
    if args.n_slices < 1 or (args.steps is not None and args.steps < 1):
        ap.error("--n-slices and --steps must be >= 1")
    if args.no_defaults and not args.variant:
        ap.error("--no-defaults needs at least one --variant")
    spec, kind, level = ct_real.parse_setting(ap, args.setting)
    variants = [key_values(ap, v, "--variant") for v in args.variant]
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    files = tuning_files(args.data, args.n_slices)
    x = ct_real.load_slices(files, parse_window(ct_real.WINDOW))
    prior = ct_real.load_prior(args.prior, ct_real.SHAPE)
    for params in [{}, *variants]:  # an unknown method or parameter fails here, before any work
        try:
            solvers.get(args.method, prior, **{**({"steps": args.steps} if args.steps else {}), **params})
        except DiffinvError as e:
            raise SystemExit(f"error: {e}") from None
    # rows are keyed by their names, so the variants and --no-defaults stay out of the identity
    skip = ("out", "resume", "variant", "no_defaults")
    store = BatchStore(args.resume, run_identity(args, skip)) if args.resume is not None else None
    op = from_spec(spec, ct_real.SHAPE)
    g = torch.Generator().manual_seed(args.seed)
    if kind == "poisson":
        y, noise = PoissonNoise(level).measure(op, x, g)
    else:
        y, noise = op.measure(x, level, generator=g), level
    runs = {
        "fbp": solver_run("pinv", use_fbp=True),
        "fista-tv": solver_run("fista-tv", steps=10 if args.quick else None),
    }
    if not args.no_defaults:  # the defaults' row, already measured elsewhere, can cost an hour (scd)
        runs[f"{args.method} (defaults)"] = solver_run(args.method, prior, args.steps)
    for text, params in zip(args.variant, variants):
        # a variant's own steps=N overrides --steps for its row
        row = dict(params)
        runs[f"{args.method} {text}"] = solver_run(args.method, prior, row.pop("steps", args.steps), **row)
    names = [f.stem for f in files]
    lines = [
        header(
            f"Tuning {args.method} on real CT slices outside ct_real.py's",
            command_line([sys.argv[0], *(sys.argv[1:] if argv is None else argv)]),
        ),
        f"- setting `{args.setting}`, prior `{args.prior}`, steps {args.steps or 'library default'}, seed {args.seed}; "
        f"{len(files)} tuning slices: {', '.join(names)}\n",
        "| row | mean PSNR (dB) | s/slice | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    out = result_path("ct_tune.md", args.out)
    for name, run in runs.items():  # the file grows row by row: a long run keeps what it measured
        r = evaluate({name: run}, x, y, op, noise, args.seed, 1, False, args.setting, store)[name]
        per = " | ".join(f"{p:.2f}" for p in r["psnr"])
        lines.append(f"| {name} | {mean_std(r['psnr'])[0]:.2f} | {r['sec']:.1f} | {per} |")
        write_text(out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    log(f"wrote {out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
