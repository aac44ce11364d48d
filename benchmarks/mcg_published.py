"""MCG's published CT setting (form="ve", N = 2000 predictor-corrector steps, reverse-diffusion
predictor, snr 0.16, lambda 1 -> 0.6) on the first ``--n`` held-out test phantoms of
``benchmarks/ct.py``, beside FBP and ct.py's 10-step VE setting.

Usage::

    python benchmarks/mcg_published.py                  # 4 phantoms, 18 then 8 views: ~1 h on 1 core
    python benchmarks/mcg_published.py --quick --out /tmp/mcg   # 1 phantom, 8 views, 20 steps

Writes ``<out>/mcg_published.json`` (per phantom PSNR, seconds, NFE, the solver's parameters);
``benchmarks/results/ct.md`` ("MCG's published CT setting") reports the full run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, result_path, write_text  # noqa: E402
from ct import SOLVER_SEED, TEST_SEED, measure, setting_key  # noqa: E402

from diffinv import metrics as M  # noqa: E402
from diffinv import priors, solvers  # noqa: E402
from diffinv.data.ellipses import random_phantoms  # noqa: E402
from diffinv.operators import from_spec  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4, help="test phantoms (the first n of ct.py's 50)")
    ap.add_argument("--views", default="18,8", help="comma-separated view counts [18,8]")
    ap.add_argument("--steps", type=int, default=2000, help="MCG-VE steps [2000, the paper's]")
    ap.add_argument("--prior", default="ct-ellipses-64")
    ap.add_argument("--out", type=Path, default=None, help="output folder [benchmarks/results]")
    ap.add_argument("--quick", action="store_true", help="1 phantom, 8 views, 20 steps")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.views, args.steps = 1, "8", 20
    torch.set_num_threads(1)
    prior = priors.load(args.prior)
    x = random_phantoms(50, 64, generator=torch.Generator().manual_seed(TEST_SEED))[: args.n]
    runs = [
        ("fbp", "pinv", {"use_fbp": True}),
        (
            "mcg-ve ct.py (10 steps, ancestral, gw 0.2)",
            "mcg",
            {"form": "ve", "steps": 10, "predictor": "ancestral", "grad_weight": 0.2},
        ),
        (
            f"mcg-ve paper ({args.steps} steps)",
            "mcg",
            {"form": "ve", "steps": args.steps, "predictor": "reverse-diffusion"},
        ),
    ]
    result = {
        "command": command_line([sys.argv[0], *(sys.argv[1:] if argv is None else argv)]),
        "n": args.n,
        "runs": [],
    }
    out = result_path("mcg_published.json", args.out)
    for views in (int(v) for v in args.views.split(",")):
        op = from_spec(f"ct{views}", (1, 64, 64))
        y, _ = measure(op, x, 0.0, setting_key(views, 0.0))
        for label, name, params in runs:
            solver = solvers.get(name, None if name == "pinv" else prior, **params)
            start = time.perf_counter()

            def progress(event, label=label, start=start, views=views):
                i = event["step"]
                if i % 100 == 0:
                    print(f"  ct{views} {label}: step {i} ({time.perf_counter() - start:.0f} s)", flush=True)

            extra = {} if name == "pinv" else {"callback": progress}
            x_hat = solver(y, op, generator=torch.Generator().manual_seed(SOLVER_SEED), **extra)
            psnr = M.psnr(x_hat.clamp(0, 1), x).tolist()
            rec = {
                "views": views,
                "label": label,
                "solver": repr(solver),
                "psnr": psnr,
                "psnr_mean": sum(psnr) / len(psnr),
                "seconds": solver.last_seconds,
                "nfe": solver.last_nfe,
            }
            result["runs"].append(rec)
            print(json.dumps(rec), flush=True)
            write_text(out, json.dumps(result, indent=1) + "\n")  # after every run: a partial result survives
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
