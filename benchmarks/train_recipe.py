"""Training recipe pilot: images per second of ``diffinv train`` configurations on this CPU.

Issue 12 asks which recipe gets the most out of a CPU-hour. Quality per image seen is measured by
training runs (their model cards, and the GPU pilot of the same UNets recorded in
``benchmarks/results/train_recipe_gpu.json``); this script measures the other factor, images per
second, for each configuration side by side in one run:

- UNet widths: ``small`` (32, 48, 64, 96), about 2.0 M parameters (the shipped priors), and
  ``medium`` (48, 96, 128, 192), about 7.6 M;
- batch 16, 32, 64;
- 1 and 2 torch threads;
- eager and ``torch.compile`` (small UNet, batch 32 only: compiling takes minutes on this CPU).

Each configuration runs ``--warmup`` training steps (not timed: allocation, compilation) and then
``--steps`` timed steps of the real training step (``diffinv.train.denoising_loss`` and
``optimise``: forward, backward, AdamW) on random 64x64 RGB batches. Data loading is excluded (it is
under 1 ms per batch for in-memory crops).

Usage::

    python benchmarks/train_recipe.py            # full pilot (about 10 minutes on 2 cores)
    python benchmarks/train_recipe.py --quick    # smoke run

Writes ``<out>/train_recipe.md`` (``--out`` defaults to ``benchmarks/results``).
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

from common import header, write_text  # noqa: E402

from diffinv.train import TrainConfig, denoising_loss, make_schedule, make_unet, optimise  # noqa: E402

WIDTHS = {"small": (32, 48, 64, 96), "medium": (48, 96, 128, 192)}


def images_per_second(width: str, batch: int, threads: int, compiled: bool, warmup: int, steps: int) -> float:
    torch.set_num_threads(threads)
    cfg = TrainConfig(data="ellipses", out="-", channels=3, block_out_channels=WIDTHS[width])
    torch.manual_seed(0)
    unet = make_unet(cfg)
    step_model = torch.compile(unet) if compiled else unet
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr)
    ab = make_schedule(cfg).alphas_cumprod.float()
    g = torch.Generator().manual_seed(0)

    def one_step() -> None:
        x0 = torch.rand(batch, 3, cfg.size, cfg.size, generator=g) * 2 - 1
        t = torch.randint(0, cfg.T, (batch,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        optimise(unet, opt, denoising_loss(step_model, x0, t, eps, ab, False), cfg.grad_clip)

    for _ in range(warmup):
        one_step()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    return steps * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation happens here)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--quick", action="store_true", help="smoke run: small UNet, batch 8, 1 step")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    t0 = time.time()
    if args.quick:
        grid = [("small", 8, 1, False)]
        args.steps, args.warmup = 1, 1
    else:
        grid = [(w, b, th, False) for w in WIDTHS for b in (16, 32, 64) for th in (1, 2)]
        if not args.no_compile:
            grid += [("small", 32, th, True) for th in (1, 2)]
    rows = []
    for width, batch, threads, compiled in grid:
        try:
            ips = images_per_second(width, batch, threads, compiled, args.warmup, args.steps)
            note = ""
        except Exception as exc:  # torch.compile needs a C++ compiler; say so instead of failing the pilot
            ips, note = float("nan"), f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
        rows.append((width, batch, threads, compiled, ips, note))
        print(
            f"{width:7s} batch {batch:3d} threads {threads} compile {compiled!s:5s} {ips:7.1f} img/s {note}"
        )
    lines = [
        header("Training recipe pilot: CPU images per second"),
        f"- timed: {args.steps} training steps after {args.warmup} untimed ones, random 64x64 RGB batches, "
        "AdamW, fp32; data loading excluded",
        f"- total wall time: {time.time() - t0:.0f} s",
        "",
        "| UNet | parameters | batch | threads | torch.compile | images / s |",
        "|---|---|---|---|---|---|",
    ]
    params = {
        w: sum(
            p.numel()
            for p in make_unet(TrainConfig(data="ellipses", out="-", block_out_channels=c)).parameters()
        )
        for w, c in WIDTHS.items()
    }
    for width, batch, threads, compiled, ips, note in rows:
        lines.append(
            f"| {width} {WIDTHS[width]} | {params[width] / 1e6:.1f} M | {batch} | {threads} | "
            f"{'yes' if compiled else 'no'} | {ips:.1f}{' (' + note + ')' if note else ''} |"
        )
    gpu = ROOT / "benchmarks" / "results" / "train_recipe_gpu.json"
    if gpu.exists():
        lines += ["", "## GPU pilot (quality per image seen)", "", "From `train_recipe_gpu.json`:", ""]
        lines += ["```json", json.dumps(json.loads(gpu.read_text()), indent=1), "```"]
    out = Path(args.out)
    write_text(out / "train_recipe.md", "\n".join(lines) + "\n")
    print(f"wrote {out / 'train_recipe.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
