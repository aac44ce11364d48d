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

Then, per view count at 256 px (parallel beam), DDNM and DDS with a random-weight ADM network
(``--adm-config``, default ``imagenet256-uncond``, the 552M-parameter network of the DDNM paper,
with one input channel): seconds per step measured over ``--solver-steps`` steps (2) after one
warm-up network call, the seconds of one network call alone, and the projected seconds per slice
at the step counts the CT benchmarks use (DDNM 50, DDS 25). ``--no-solvers`` skips this part.

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


#: Step counts of the CT benchmarks (library CT defaults), for the projected seconds per slice.
PROJECTED_STEPS = {"ddnm": 50, "dds": 25}


def measure_solvers(size: int, spec: str, config: str, steps: int) -> dict:
    """DDNM / DDS seconds per step with a random-weight ADM network, in this process."""
    import torch

    from diffinv import solvers
    from diffinv.data.ellipses import random_phantoms
    from diffinv.operators import from_spec
    from diffinv.priors import ADM_CONFIGS, NetworkPrior, VPSchedule, adm_from_config

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = dict(ADM_CONFIGS[config]) if config in ADM_CONFIGS else json.loads(config)
    cfg.update(in_channels=1, image_size=size)
    net = adm_from_config(cfg).eval().requires_grad_(False)
    prior = NetworkPrior(net, VPSchedule.linear(1000), image_shape=(1, size, size), prediction="epsilon")
    op = from_spec(spec, (1, size, size))
    x = random_phantoms(1, size=size, generator=torch.Generator().manual_seed(0)).float()
    y = op.A(x)
    op.pinv(y)  # the one-off pseudo-inverse factors (Gram or CG set-up), outside the timings
    t_in = torch.full((1,), 500, dtype=torch.long)
    with torch.no_grad():
        net(x * 2 - 1, t_in)  # warm-up
        net_s = _timed(lambda: net(x * 2 - 1, t_in), 1)
    out = dict(size=size, spec=spec, config=config, params_m=sum(p.numel() for p in net.parameters()) / 1e6)
    out["network_s"] = net_s
    for method in PROJECTED_STEPS:
        solver = solvers.get(method, prior, steps=steps)
        t = time.perf_counter()
        solver(y, op, generator=torch.Generator().manual_seed(0))
        out[f"{method}_step_s"] = (time.perf_counter() - t) / steps
    out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def solver_lines(rows: list[dict], steps: int) -> list[str]:
    from diffinv.solvers import get_class

    # the library's CT step counts (Solver.task_defaults["ct"]), what a user's restore runs
    n_ddnm, n_dds = (get_class(m).resolve_params("ct")["steps"] for m in ("ddnm", "dds"))
    lines = [
        f"\n## DDNM and DDS at {rows[0]['size']} px with a random-weight ADM network\n",
        f"`{rows[0]['config'] if rows[0]['config'][:1] != '{' else 'a small ADM (--quick)'}` with one input channel ({rows[0]['params_m']:.0f}M parameters), float32, one "
        f"thread; seconds per step measured over {steps} steps; projected s/slice = steps x s/step at the "
        f"library's CT step counts (DDNM {n_ddnm}, DDS {n_dds}).\n",
        f"| spec | network call s | DDNM s/step | DDS s/step | DDNM s/slice ({n_ddnm} steps) | DDS s/slice ({n_dds} steps) "
        "| peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['spec']} | {r['network_s']:.2f} | {r['ddnm_step_s']:.2f} | {r['dds_step_s']:.2f} "
            f"| {n_ddnm * r['ddnm_step_s']:.0f} | {n_dds * r['dds_step_s']:.0f} | {r['peak_mib']:.0f} |"
        )
    return lines


def _subprocess_json(args: list[str], env: dict) -> dict:
    run = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise SystemExit(f"ct_scale: {' '.join(args)} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", help="image sizes [64,256,512]")
    ap.add_argument("--views", help="view counts [18,60]")
    ap.add_argument("--quick", action="store_true", help="sizes 32,64 and 18 views (smoke run)")
    ap.add_argument("--out", help="output folder [benchmarks/results]")
    ap.add_argument("--adm-config", default="imagenet256-uncond", help="ADM network of the solver timings")
    ap.add_argument("--solver-steps", type=int, default=2, help="steps timed per solver [2]")
    ap.add_argument("--solver-size", type=int, default=None, help="image size of the solver timings [256]")
    ap.add_argument("--no-solvers", action="store_true", help="skip the DDNM / DDS timings")
    ap.add_argument("--solvers-only", action="store_true", help="only the DDNM / DDS timings")
    ap.add_argument("--one", nargs=2, metavar=("SIZE", "SPEC"), help=argparse.SUPPRESS)
    ap.add_argument("--solver-one", nargs=3, metavar=("SIZE", "SPEC", "CONFIG"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(int(args.one[0]), args.one[1])))
        return 0
    if args.solver_one:
        size, spec, config = args.solver_one
        print(json.dumps(measure_solvers(int(size), spec, config, args.solver_steps)))
        return 0
    if args.solver_steps < 1:
        ap.error("--solver-steps must be >= 1")
    sizes = positive_ints(ap, args.sizes, [32, 64] if args.quick else [64, 256, 512], "sizes")
    views = positive_ints(ap, args.views, [18] if args.quick else [18, 60], "views")
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for size in [] if args.solvers_only else sizes:
        for v in views:
            for spec in (f"ct{v}", f"ct{v}-fan"):
                log(f"ct_scale: {size} px {spec}")
                rows.append(_subprocess_json(["--one", str(size), spec], env))
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
    solver_rows = []
    if not args.no_solvers:
        # quick: a small ADM of the same family at 32 px, so that the smoke run exercises the code
        size = args.solver_size or (32 if args.quick else 256)
        config = args.adm_config
        if args.quick:
            config = json.dumps(
                {
                    "num_channels": 32,
                    "num_res_blocks": 1,
                    "attention_resolutions": "16",
                    "channel_mult": (1, 2),
                    "num_head_channels": 32,
                    "learn_sigma": True,
                }
            )
        for v in views:
            log(f"ct_scale: solvers at {size} px ct{v}")
            solver_rows.append(
                _subprocess_json(
                    ["--solver-one", str(size), f"ct{v}", config, "--solver-steps", str(args.solver_steps)],
                    env,
                )
            )
    operators = (
        "One image, float32, one thread; each row in a fresh process (peak = its max resident set,\n"
        "torch included). CG: normal equations from 0 until ||A^T(y - Ax)|| <= 1e-3 ||A^T y||.\n"
        "pinv_method is what `pinv` would use (the Gram closed form only where its side <= 8192 and its factors fit in 2 GiB).\n\n"
        + "\n".join(lines)
        + "\n\n"
        + ("\n".join(verdict) + "\n" if verdict else "")
    )
    text = (
        header("CT operators at scale")
        + (operators if rows else "")
        + ("\n".join(solver_lines(solver_rows, args.solver_steps)) + "\n" if solver_rows else "")
    )
    path = write_text(result_path("ct_scale.md", args.out), text)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
