"""CT operators at scale (issue 16): seconds per forward, adjoint, FBP and pseudo-inverse, and peak memory.

For each image size (64, 256, 512), geometry (parallel ``ct<views>``, fan beam ``ct<views>-fan``)
and view count (18, 60) a fresh subprocess (so that its peak resident memory is its own) builds
the operator from its spec and times, in float32 on one image:

* build: the sparse matrix (vectorised numpy, in float64; cached in memory per geometry),
* forward ``A x`` and adjoint ``A^T y`` (median of 5 after one warm-up call that makes the
  float32 copy), and their sum,
* FBP (median of 3),
* pseudo-inverse by conjugate gradients on the normal equations to a relative residual
  ``||A^T (y - A x)|| <= 1e-3 ||A^T y||`` (matrix-free, whatever ``pinv_method`` the operator
  picked; its choice is listed), with the iteration count,
* peak resident memory of the process (``ru_maxrss``, includes the ~0.3 GB of torch itself).

Targets: 512 px with 60 views forward + adjoint <= 0.5 s, pinv to 1e-3 <= 30 s, nothing over 2 GiB.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/ct_scale.py            # -> benchmarks/results/ct_scale.md
    OMP_NUM_THREADS=1 python benchmarks/ct_scale.py --quick --out /tmp/ct_scale
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, log, positive_ints, result_path, write_text  # noqa: E402


def _timed(fn, reps: int) -> float:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def measure_one(size: int, spec: str) -> dict:
    """Everything for one operator, in this process."""
    import torch

    from diffinv.data.ellipses import random_phantoms
    from diffinv.operators import from_spec
    from diffinv.operators.cg import cg

    torch.set_num_threads(1)
    t = time.perf_counter()
    op = from_spec(spec, (1, size, size))
    build = time.perf_counter() - t
    x = random_phantoms(1, size=size, generator=torch.Generator().manual_seed(0)).float()
    y = op.A(x)
    op.At(y)
    fwd = _timed(lambda: op.A(x), 5)
    adj = _timed(lambda: op.At(y), 5)
    fbp = _timed(lambda: op.fbp(y), 3)
    iters = []
    t = time.perf_counter()
    cg(lambda p: op.At(op.A(p)), op.At(y), 2000, 1e-3, lambda k, _: iters.append(k))
    pinv = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    return dict(
        size=size,
        spec=spec,
        bins=op.bins,
        nnz=op.nnz,
        pinv_method=op.pinv_method,
        build=build,
        forward=fwd,
        adjoint=adj,
        fbp=fbp,
        pinv=pinv,
        cg_iters=len(iters),
        peak_mib=rss,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", help="image sizes [64,256,512]")
    ap.add_argument("--views", help="view counts [18,60]")
    ap.add_argument("--quick", action="store_true", help="sizes 32,64 and 18 views (smoke run)")
    ap.add_argument("--out", help="output folder [benchmarks/results]")
    ap.add_argument("--one", nargs=2, metavar=("SIZE", "SPEC"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(int(args.one[0]), args.one[1])))
        return 0
    sizes = positive_ints(ap, args.sizes, [32, 64] if args.quick else [64, 256, 512], "sizes")
    views = positive_ints(ap, args.views, [18] if args.quick else [18, 60], "views")
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for size in sizes:
        for v in views:
            for spec in (f"ct{v}", f"ct{v}-fan"):
                log(f"ct_scale: {size} px {spec}")
                run = subprocess.run(
                    [sys.executable, __file__, "--one", str(size), spec],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
    lines = [
        "| size | spec | bins | nnz (M) | pinv_method | build s | forward s | adjoint s | fwd+adj s "
        "| FBP s | CG pinv to 1e-3 s (iters) | peak MiB |",
        "|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['spec']} | {r['bins']} | {r['nnz'] / 1e6:.1f} | {r['pinv_method']} "
            f"| {r['build']:.2f} | {r['forward']:.3f} | {r['adjoint']:.3f} | {r['forward'] + r['adjoint']:.3f} "
            f"| {r['fbp']:.3f} | {r['pinv']:.1f} ({r['cg_iters']}) | {r['peak_mib']:.0f} |"
        )
    big = [r for r in rows if r["size"] == 512 and r["spec"].startswith("ct60")]
    verdict = []
    for r in big:
        fa = r["forward"] + r["adjoint"]
        verdict.append(
            f"- {r['spec']} at 512 px: forward+adjoint {fa:.3f} s (target <= 0.5: "
            f"{'met' if fa <= 0.5 else 'missed'}), CG pinv {r['pinv']:.1f} s (target <= 30: "
            f"{'met' if r['pinv'] <= 30 else 'missed'}), peak {r['peak_mib']:.0f} MiB (target <= 2048: "
            f"{'met' if r['peak_mib'] <= 2048 else 'missed'})"
        )
    text = (
        header("CT operators at scale")
        + "One image, float32, one thread; each row in a fresh process (peak = its max resident set,\n"
        + "torch included). CG: normal equations from 0 until ||A^T(y - Ax)|| <= 1e-3 ||A^T y||.\n"
        + "pinv_method is what `pinv` would use (the Gram closed form only where its side <= 8192).\n\n"
        + "\n".join(lines)
        + "\n\n"
        + ("\n".join(verdict) + "\n" if verdict else "")
    )
    path = write_text(result_path("ct_scale.md", args.out), text)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
