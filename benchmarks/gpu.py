"""GPU throughput of DDNM and MCG next to the bare network's forward throughput (the roofline).

For each method (``ddnm``, ``mcg``), precision (fp32, bf16: the network's weights and activations in
bfloat16, the solver's arithmetic in fp32, as :class:`~diffinv.priors.network.NetworkPrior` casts at
the network call) and batch size (1, 8, 32), the solver restores a batch of ``sr4`` measurements with
``--steps`` steps; images/s = batch / median wall time (CUDA synchronised). The roofline is the bare
network: ``--steps`` x NFE-per-step forward passes of the same batch, dtype and device, with nothing
else, timed the same way; ratio = method images/s / roofline images/s (the fraction of the time the
method spends in network forwards; MCG also back-propagates, so its ratio is lower by design).
``--compile`` wraps the network in ``torch.compile`` for both.

Needs a CUDA device; without one it exits with a message (status 2), except for the CPU smoke run
``--quick --allow-cpu`` that the test suite runs (batch 1, 1 step, fp32 unless ``--dtypes`` says
otherwise: bf16 convolutions are very slow on most CPUs).

Usage::

    python benchmarks/gpu.py                        # full run on a CUDA machine, a few minutes
    python benchmarks/gpu.py --compile              # same with torch.compile
    python benchmarks/gpu.py --quick --allow-cpu --out /tmp/gpu   # CPU smoke run

Writes ``<out>/gpu.md`` and ``<out>/gpu.png``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, header, result_path, save_png, write_text  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TASK = "sr4"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, reps: int) -> float:
    """Median wall time of ``fn()`` over ``reps`` runs (after one untimed warm-up)."""
    fn()
    sync(device)
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def network_seconds(net, batch: int, shape, dtype, device, n: int, reps: int) -> float:
    """Seconds per bare forward pass of ``net`` on a batch (inference mode, median of ``reps``)."""
    g = torch.Generator(device="cpu").manual_seed(batch)
    xin = torch.randn((batch, *shape), generator=g).to(device=device, dtype=dtype)
    tin = torch.full((batch,), 500, dtype=torch.long, device=device)

    def forward():
        with torch.inference_mode():
            for _ in range(n):
                net(xin, tin)

    return timed(forward, device, reps) / n


def solver_seconds(solver, y, op, device, reps: int) -> float:
    """Median wall time of a solve of ``y`` (after one untimed warm-up)."""
    gen = torch.Generator(device=device).manual_seed(0)
    return timed(lambda: solver(y, op, generator=gen), device, reps)


def bench(args, device: torch.device) -> list[dict]:
    from diffinv import pipeline, priors
    from diffinv.operators import from_spec

    rows = []
    for dname in args.dtypes:
        prior = priors.load(args.prior, device=device, dtype=DTYPES[dname])
        if args.compile:
            prior.net = torch.compile(prior.net)
        shape = tuple(prior.image_shape)
        op = from_spec(TASK, shape, seed=0).to(device)
        for batch in args.batches:
            x = torch.rand((batch, *shape), generator=torch.Generator().manual_seed(batch)).to(device)
            y = op.A(x)
            t_fwd = network_seconds(prior.net, batch, shape, DTYPES[dname], device, args.steps, args.reps)
            for method in args.methods:
                solver = pipeline.make_solver(method, prior, args.steps)
                sec = solver_seconds(solver, y, op, device, args.reps)
                per_step = solver.last_nfe / args.steps  # network evaluations per step, counted
                ips = batch / sec
                roof = batch / (t_fwd * per_step * args.steps)
                rows.append(
                    {
                        "method": method,
                        "dtype": dname,
                        "batch": batch,
                        "images_per_s": ips,
                        "roofline_images_per_s": roof,
                        "ratio": ips / roof,
                        "nfe_per_step": per_step,
                        "forward_ms": t_fwd * 1e3,
                    }
                )
                log(
                    f"{method} {dname} batch {batch}: {ips:.2f} img/s, roofline {roof:.2f} img/s, ratio {ips / roof:.2f}"
                )
        if device.type == "cuda":
            del prior, op
            torch.cuda.empty_cache()
    return rows


def report(args, command, rows, device, total) -> str:
    lines = [header("GPU throughput: DDNM and MCG against the network roofline", command)]
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke run, --allow-cpu)"
    lines.append(
        f"- device: {dev}\n- prior: `{args.prior}`; operator `{TASK}`, noiseless; {args.steps} steps per solve; "
        f"{args.reps} timed runs after a warm-up, median; torch.compile: {'yes' if args.compile else 'no'}\n"
        f"- roofline = batch / (forward time x NFE per step x steps): the bare network's forward passes of the same "
        f"batch and dtype (inference mode); ratio = method / roofline\n"
        f"- bf16: network weights and activations in bfloat16, solver arithmetic in fp32\n"
        f"- total wall time: {total:.0f} s\n"
    )
    lines.append("| method | dtype | batch | images/s | roofline images/s | ratio | forward ms | NFE/step |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['dtype']} | {r['batch']} | {r['images_per_s']:.3g} | {r['roofline_images_per_s']:.3g} | "
            f"{r['ratio']:.2f} | {r['forward_ms']:.3g} | {r['nfe_per_step']:g} |"
        )
    return "\n".join(lines) + "\n"


def figure(rows):
    from PIL import Image, ImageDraw

    W, left, bh, pad = 700, 190, 14, 6
    H = 36 + max(1, len(rows)) * (bh + pad)
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    d.text((6, 6), "images/s as a fraction of the network roofline (1.0 = forward passes only)", fill="black")
    scale = W - left - 80
    for i, r in enumerate(rows):
        y = 28 + i * (bh + pad)
        d.text((6, y + 1), f"{r['method']} {r['dtype']} b{r['batch']}", fill="black")
        d.rectangle([left, y, left + scale, y + bh], outline=(180, 180, 180))
        d.rectangle([left, y, left + scale * min(r["ratio"], 1.0), y + bh], fill=(70, 130, 180))
        d.text((left + scale + 6, y + 1), f"{r['ratio']:.2f} ({r['images_per_s']:.3g}/s)", fill="black")
    return img


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,8,32; quick 1)")
    ap.add_argument(
        "--dtypes",
        default=None,
        help="comma-separated subset of fp32,bf16 (default both; quick on CPU: fp32)",
    )
    ap.add_argument("--methods", default="ddnm,mcg", help="comma-separated methods (default ddnm,mcg)")
    ap.add_argument("--steps", type=int, default=None, help="steps per solve (default 50; quick 1)")
    ap.add_argument("--reps", type=int, default=None, help="timed runs per setting (default 3; quick 1)")
    ap.add_argument("--prior", default="natural-64")
    ap.add_argument("--compile", action="store_true", help="torch.compile the network")
    ap.add_argument("--quick", action="store_true", help="tiny run (batch 1; 1 step; 1 rep)")
    ap.add_argument(
        "--allow-cpu", action="store_true", help="with --quick: run on the CPU when there is no GPU"
    )
    ap.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 is faster on a crowded machine)",
    )
    args = ap.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            ap.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    args.batches = [
        int(b) for b in (args.batches or ("1" if args.quick else "1,8,32")).split(",") if b.strip()
    ]
    if args.dtypes is None:
        # bf16 convolutions are very slow on most CPUs: the CPU smoke run sticks to fp32 unless asked
        args.dtypes = "fp32" if (args.quick and not torch.cuda.is_available()) else "fp32,bf16"
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in args.dtypes if d not in DTYPES]
    if bad:
        ap.error(f"unknown dtype(s) {bad}; choose from {', '.join(DTYPES)}")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.steps = args.steps or (1 if args.quick else 50)
    args.reps = args.reps or (1 if args.quick else 3)
    if min(args.batches) < 1 or args.steps < 1 or args.reps < 1:
        ap.error("batch sizes, --steps and --reps must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif args.quick and args.allow_cpu:
        device = torch.device("cpu")
        if args.threads is None:
            torch.set_num_threads(1)  # small ops on a shared CPU stall with several threads
    else:
        print(
            "benchmarks/gpu.py needs a CUDA GPU, and torch.cuda.is_available() is False on this machine "
            f"(torch {torch.__version__}). Nothing was measured. Run it on a CUDA machine; "
            "`--quick --allow-cpu` runs a tiny CPU smoke version instead.",
            file=sys.stderr,
        )
        return 2
    command = command_line([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    t0 = time.perf_counter()
    rows = bench(args, device)
    total = time.perf_counter() - t0
    text = report(args, command, rows, device, total)
    md, png = result_path("gpu.md", args.out), result_path("gpu.png", args.out)
    write_text(md, text)
    save_png(png, figure(rows))
    print(text)
    log(f"wrote {md} and {png} in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
