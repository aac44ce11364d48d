"""Cost of every method, its overhead over unconditional sampling, and a peer library side by side.

1. Seconds per image and network evaluations (NFE) per image of every registered method at its
   default step count, at batch 1 and batch 16, on each shipped prior, for ``sr4`` (4x average-pool
   super-resolution: an SVD operator, so every method applies; the CT operators' pseudo-inverse is an
   iterative CG solve whose cost would dominate, see benchmarks/ct.py). Diffusion methods are timed
   over ``--timed-steps`` steps and extrapolated linearly to their default steps (seconds per step x
   default steps; 1000-step defaults are unaffordable to run in full on a CPU); classical methods run
   in full. The results file marks every extrapolated number.
2. Overhead ratio against unconditional ``ddim`` at the *same* number of steps, measured in the same
   run: in each of ``--rounds`` rounds every diffusion method is timed back to back with ``ddim``
   (alternating which goes first; method order rotated each round), and the ratio is the median of
   the per-round ratios. Targets: <= 1.10 for ``ddnm``, ``ddnm+`` (with sigma_y = 0.05, its noisy
   path), ``ddrm``; <= 3.0 for ``mcg`` and ``dps`` (they back-propagate through the network);
   <= 1.20 for ``reddiff`` (one NFE and one A / A^T per step); <= 1.30 for ``dds`` (five CG
   iterations per step on sr4) and ``diffpir`` (one damped pseudo-inverse per step). ``daps`` has no target: its "steps"
   are annealing levels of ``ode_steps`` NFE each plus ``langevin_steps`` A / A^T pairs, so equal
   steps are not equal work (its NFE column says how many network calls it makes).
3. Posterior samples (issue 14): ``--posterior-k`` (default 8) samples of one image drawn in one
   batch (``solver.sample``) against restoring K different images in one batch and against K
   sequential single-sample calls, same solver (``--posterior-method``, default ``ddnm``) and steps
   (``--timed-steps``), interleaved over ``--rounds`` rounds, medians. Target: K samples <= 1.10x
   the K-image batch.
4. Peer: deepinv 0.5's ``DDRM`` and ``DPS`` wrapping the same trained network through a small adapter
   (our prior as a deepinv denoiser ``D(x, sigma)``: ``x`` in [0, 1] is a clean image plus Gaussian
   noise of std ``sigma``), the same operator (our SVD exposed as a ``DecomposablePhysics``), the same
   crops and the same number of denoiser steps. Targets: our seconds / theirs <= 1.0 and
   PSNR(ours) - PSNR(theirs) >= -0.2 dB. deepinv needs torchvision, which does not import next to
   the project's CPU torch build, so the peer runs in a subprocess with the Python of a separate
   virtual environment (``--peer-venv``, ``$DIFFINV_PEER_VENV``, default ``/work/venvs/deepinv``),
   which times *both* libraries in the same process (same torch), interleaved. Build it with
   ``--setup-peer`` (about 5.5 GB), which runs::

       python -m venv /work/venvs/deepinv
       /work/venvs/deepinv/bin/pip install torch==2.14.1 torchvision==0.29.1 "deepinv==0.5.*" \\
           diffusers safetensors scipy tqdm pillow

   (our package is imported from ``src/`` by path, so it needs no install there). Without the
   environment, the results file says so and has no peer numbers.

Usage::

    python benchmarks/speed.py                  # full run, ~8-10 min on 2 busy cores (peer included)
    python benchmarks/speed.py --quick --out /tmp/speed   # smoke run (no peer)

Writes ``<out>/speed.md`` and ``<out>/speed.png`` (bar chart of the overhead ratios).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, header, result_path, save_png, write_text  # noqa: E402

from diffinv import metrics as M  # noqa: E402
from diffinv import pipeline, priors, solvers  # noqa: E402
from diffinv.operators import from_spec  # noqa: E402

DEFAULT_THREADS = 1
DATA_DIR = ROOT.parent / "shared" / "data" / "natural" / "dev" / "CBSD68"
ASSET_IMAGES = ROOT / "src" / "diffinv" / "assets" / "images"
TASK = "sr4"
SIGMA_NOISY = 0.05
OVERHEAD_TARGETS = {
    "ddnm": 1.10,
    "ddnm+": 1.10,
    "ddrm": 1.10,
    "mcg": 3.0,
    "dps": 3.0,
    "reddiff": 1.20,
    "dds": 1.30,
    "diffpir": 1.30,
}
PEER_SECONDS_TARGET = 1.0
PEER_PSNR_TARGET = -0.2
DEFAULT_PEER_VENV = Path("/work/venvs/deepinv")
PEER_PACKAGES = [
    "torch==2.14.1",
    "torchvision==0.29.1",
    "deepinv==0.5.*",
    "diffusers",
    "safetensors",
    "scipy",
    "tqdm",
    "pillow",
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- data
def test_images(prior, n: int, seed: int) -> tuple[torch.Tensor, str]:
    """``n`` images of the prior's shape: CBSD68 crops (or bundled images) for RGB, phantoms for CT."""
    C, H, W = prior.image_shape
    g = torch.Generator().manual_seed(seed)
    if C == 1:
        from diffinv.data.ellipses import random_phantoms

        return random_phantoms(n, H, generator=g).float(), f"{n} random ellipse phantoms (seed {seed})"
    from diffinv.data.io import IMAGE_SUFFIXES, load_image

    folder = DATA_DIR if DATA_DIR.is_dir() else ASSET_IMAGES
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    crops = []
    for i in range(n):
        img = load_image(files[i % len(files)], channels=C)[0]
        top = int(torch.randint(img.shape[1] - H + 1, (1,), generator=g))
        left = int(torch.randint(img.shape[2] - W + 1, (1,), generator=g))
        crops.append(img[:, top : top + H, left : left + W])
    rel = os.path.relpath(folder, ROOT)
    return torch.stack(crops), f"{n} seeded {H}x{W} crops of `{rel}`"


# ---------------------------------------------------------------------------------------- timing
# classical methods with a fixed iteration count (no early stop), timed over fewer iterations
ITERATIVE = {"fista-tv": "iters"}
TIMED_ITERS = 20


def method_plan(method: str, timed_steps: int):
    """(default steps/iterations or None, count to time, extrapolation factor to the default)."""
    cls = solvers.get_class(method)
    if cls.needs_prior and "steps" in cls.defaults:
        default, timed = int(cls.defaults["steps"]), timed_steps
    elif method in ITERATIVE:
        default, timed = int(cls.defaults[ITERATIVE[method]]), TIMED_ITERS
    else:
        return None, None, 1.0
    steps = min(default, timed)
    return default, steps, default / steps


def time_once(method: str, prior, op, y, sigma: float, steps: int | None, seed: int) -> tuple[float, int]:
    solver = pipeline.make_solver(method, prior, steps)
    solver(y, op, sigma_y=sigma, generator=torch.Generator().manual_seed(seed))
    return solver.last_seconds, solver.last_nfe


def sigma_for(method: str) -> float:
    # ddnm+ is timed on its noisy path (noise-scaled SVD correction); everything else noiseless.
    return SIGMA_NOISY if method == "ddnm+" else 0.0


def run_cost(prior, x_all, methods, batch: int, timed_steps: int, rounds: int, seed: int) -> dict:
    """Per method: seconds of each round's timed run, NFE, plan, and the paired ddim seconds.

    Every diffusion method is timed back to back with unconditional ``ddim`` at the same step count
    (ddim first in even rounds, second in odd ones), so each overhead ratio compares two runs made
    under the same machine load; the method order rotates from round to round.
    """
    op = from_spec(TASK, tuple(prior.image_shape), seed=seed)
    x = x_all[:batch]
    ys = {s: op.measure(x, s, generator=torch.Generator().manual_seed(seed + 1)) for s in (0.0, SIGMA_NOISY)}
    out = {m: {"sec": [], "ddim": [], "nfe": None, "plan": method_plan(m, timed_steps)} for m in methods}
    time_once("ddim", prior, op, ys[0.0], 0.0, 1, seed)  # warm-up (allocations, lazy inits)
    for r in range(rounds):
        k = r % len(methods)
        for method in methods[k:] + methods[:k]:
            rec = out[method]
            steps = rec["plan"][1]
            paired = steps is not None and method not in ITERATIVE
            order = ("ddim", method) if r % 2 == 0 else (method, "ddim")
            for who in order if paired else (method,):
                sigma = sigma_for(who)
                sec, nfe = time_once(who, prior, op, ys[sigma], sigma, steps, seed)
                if who == method:
                    rec["sec"].append(sec)
                    rec["nfe"] = nfe
                else:
                    rec["ddim"].append(sec)
        log(f"  batch {batch}: round {r + 1}/{rounds} done")
    return out


def summarize(cost: dict, batch: int) -> list[dict]:
    rows = []
    for key, r in cost.items():
        default, steps, factor = r["plan"]
        med = statistics.median(r["sec"])
        row = {
            "method": key,
            "default_steps": default,
            "count_name": ITERATIVE.get(key, "steps"),
            "timed_steps": steps,
            "extrapolated": factor != 1.0,
            "sec_per_image": med * factor / batch,
            "nfe": r["nfe"] * factor,
            "ratio": None,
            "ratios": [],
        }
        if r["ddim"]:
            row["ratios"] = [a / b for a, b in zip(r["sec"], r["ddim"])]
            row["ratio"] = statistics.median(row["ratios"])
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------- posterior samples
POSTERIOR_TARGET = 1.10


def run_posterior_cost(prior, method: str, K: int, steps: int, rounds: int, seed: int) -> dict:
    """Seconds of K samples of one image in one batch (``solver.sample``), of K different images in one
    batch, and of K sequential single-sample calls: same solver and steps, interleaved, per round."""
    op = from_spec(TASK, tuple(prior.image_shape), seed=seed)
    x, _ = test_images(prior, K, seed)
    y = op.measure(x, 0.0)
    solver = pipeline.make_solver(method, prior, steps)
    gen = torch.Generator().manual_seed(seed)

    def samples():
        return solver.sample(y[:1], op, n=K, generator=gen).seconds

    def images():
        solver(y, op, generator=gen)
        return solver.last_seconds

    def sequential():
        total = 0.0
        for _ in range(K):
            solver(y[:1], op, generator=gen)
            total += solver.last_seconds
        return total

    modes = {"samples": samples, "images": images, "sequential": sequential}
    out = {name: [] for name in modes}
    pipeline.make_solver(method, prior, 1)(y, op)  # warm-up at this batch size, not timed
    for r in range(rounds):
        order = list(modes)[r % 3 :] + list(modes)[: r % 3]
        for name in order:
            out[name].append(modes[name]())
    return {
        "method": method,
        "K": K,
        "steps": int(solver.params.get("steps", steps)),
        **{name: statistics.median(v) for name, v in out.items()},
        "ratios": [a / b for a, b in zip(out["samples"], out["images"])],
    }


# ---------------------------------------------------------------------------------------- peer (deepinv)
def peer_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def setup_peer(venv: Path) -> None:
    log(f"building the peer environment in {venv} (about 5.5 GB) ...")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(peer_python(venv)), "-m", "pip", "install", *PEER_PACKAGES], check=True)


def peer_status(venv: Path) -> tuple[bool, str]:
    py = peer_python(venv)
    if not py.exists():
        return False, f"no virtual environment at {venv}"
    probe = subprocess.run(
        [
            str(py),
            "-c",
            "import deepinv, torchvision, torch, diffusers; print(deepinv.__version__, torch.__version__)",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if probe.returncode != 0:
        return (
            False,
            f"{py} cannot import deepinv/torchvision/diffusers: {probe.stderr.strip().splitlines()[-1:]}",
        )
    return True, probe.stdout.strip()


def run_peer(venv: Path, args) -> dict:
    """Run this script's ``--peer-worker`` mode with the peer venv's Python; returns its JSON."""
    out = Path(args.out_dir) / ".speed_peer.json"
    cfg = {
        "prior": "natural-64",
        "n": args.peer_n,
        "steps": args.peer_steps,
        "rounds": args.peer_rounds,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "out": str(out),
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [str(peer_python(venv)), str(Path(__file__).resolve()), "--peer-worker", json.dumps(cfg)]
    log("peer: " + " ".join(cmd[:3]) + " ...")
    proc = subprocess.run(cmd, env=env, text=True, capture_output=True)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        return {"error": f"peer worker failed (exit {proc.returncode}): " + " | ".join(tail)}
    data = json.loads(out.read_text())
    out.unlink(missing_ok=True)
    return data


def peer_worker(cfg: dict) -> None:
    """Runs inside the peer venv: our ddrm/dps vs deepinv's DDRM/DPS, same network/operator/images/steps."""
    import deepinv as dinv
    from torch import nn

    torch.manual_seed(cfg["seed"])
    torch.set_num_threads(int(cfg.get("threads", torch.get_num_threads())))
    prior = priors.load(cfg["prior"])
    shape = tuple(prior.image_shape)
    x, data_desc = test_images(prior, cfg["n"], cfg["seed"])
    op = from_spec(TASK, shape, seed=cfg["seed"])
    y = op.measure(x, 0.0)
    steps = int(cfg["steps"])

    class PriorDenoiser(nn.Module):
        """Our prior as a deepinv denoiser: ``D(x, sigma)`` for ``x = x0 + sigma n`` in [0, 1] units.

        The noise level maps to the nearest step t of the prior's discrete schedule (by
        sqrt(1 - abar_t), as deepinv's own DiffUNet does); the VE input is scaled into the VP state
        ``sqrt(abar_t) (model-space x)`` and the Tweedie estimate is returned in [0, 1].
        """

        def __init__(self, prior):
            super().__init__()
            self.prior = prior
            ab = prior.schedule.alpha_bar(torch.arange(prior.schedule.T)).double()
            self.register_buffer("s1m", (1 - ab).sqrt(), persistent=False)
            self.calls = 0

        def forward(self, x, sigma, *args, **kwargs):
            self.calls += 1
            B = x.shape[0]
            s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).flatten()
            s = s.expand(B) if s.numel() == 1 else s[:B]
            sz = s / self.prior.scale  # noise std in model units
            key = sz / (1 + sz**2).sqrt()  # sqrt(1 - abar) of the equivalent VP state
            t = (self.s1m[:, None] - key[None, :]).abs().argmin(0)
            ab = self.prior.alpha_bar(t, x)
            z = self.prior.to_model(x)
            return self.prior.x0_image(ab.sqrt() * z, t)

    den = PriorDenoiser(prior)
    s = op.singulars_full(x).reshape(1, -1)
    k = op.singulars().numel()

    def U_adjoint(yy):
        out = torch.zeros((yy.shape[0], op.n), dtype=yy.dtype)
        out[:, :k] = op.Ut(yy)[:, :k]
        return out

    def U(z):
        out = torch.zeros((z.shape[0], op.m), dtype=z.dtype)
        out[:, :k] = z[:, :k]
        return op.U(out)

    physics = dinv.physics.DecomposablePhysics(
        U=U,
        U_adjoint=U_adjoint,
        V=op.V,
        V_adjoint=op.Vt,
        mask=s,
        noise_model=dinv.physics.GaussianNoise(sigma=0.0),
    )
    # sanity: the physics is our operator
    err = float((physics.A(x) - op.A(x)).abs().max())

    # the same noise levels as our DDRM's grid (VE sigma_t of its timesteps, in [0, 1] image units)
    ts = prior.schedule.timesteps(steps).tolist()
    ab = [float(prior.schedule.alpha_bar(int(t))) for t in ts]
    sigmas = [prior.scale * math.sqrt((1 - a) / a) for a in ab]

    def ours(method):
        solver = pipeline.make_solver(method, prior, steps)
        xh = solver(y, op, sigma_y=0.0, generator=torch.Generator().manual_seed(cfg["seed"]))
        return xh, solver.last_nfe

    def theirs(method):
        den.calls = 0
        if method == "ddrm":
            model = dinv.sampling.DDRM(denoiser=den, sigmas=sigmas, eta=0.85, etab=1.0)
            xh = model(y, physics, seed=cfg["seed"] + 1)
        else:
            model = dinv.sampling.DPS(
                denoiser=den,
                num_steps=steps + 1,
                weight=1.0,
                device="cpu",
                rng=torch.Generator().manual_seed(cfg["seed"] + 1),
            )
            xh = model(y, physics, x_init=tuple(x.shape), seed=cfg["seed"] + 1)
        return xh.float(), den.calls

    # warm-up (first-call allocations and lazy initialisation), not timed
    with torch.no_grad():
        den(x, torch.full((x.shape[0],), 0.1))
    pipeline.make_solver("ddim", prior, 1)(y, op)
    results = {"data": data_desc, "steps": steps, "physics_error": err, "versions": {}}
    results["versions"] = {"deepinv": dinv.__version__, "torch": torch.__version__}
    for method in ("ddrm", "dps"):
        rec = {"ours": {"sec": [], "psnr": [], "nfe": 0}, "theirs": {"sec": [], "psnr": [], "nfe": 0}}
        for r in range(int(cfg["rounds"])):
            order = ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")
            for who in order:
                start = time.perf_counter()
                xh, nfe = (ours if who == "ours" else theirs)(method)
                sec = time.perf_counter() - start
                rec[who]["sec"].append(sec)
                rec[who]["psnr"].append(float(M.psnr(xh.clamp(0, 1), x).mean()))
                rec[who]["nfe"] = nfe
                print(
                    f"peer {method} {who} round {r + 1}: {sec:.1f} s, NFE {nfe}", file=sys.stderr, flush=True
                )
        results[method] = rec
    # Diagnostic (PSNR only, not timed): deepinv's DDRM divides every noise draw by sqrt(2)
    # (``torch.randn_like(...) / np.sqrt(2.0)`` in its forward), which is not in the paper's eq. 7-8
    # and makes its samples less spread, closer to the posterior mean. Our DDRM with that scaling:
    from diffinv.solvers import ddrm as ddrm_module

    paper_randn = ddrm_module.randn
    ddrm_module.randn = lambda *a, **k: paper_randn(*a, **k) / math.sqrt(2.0)
    try:
        xh, _ = ours("ddrm")
    finally:
        ddrm_module.randn = paper_randn
    results["ddrm_noise_div_sqrt2_psnr"] = float(M.psnr(xh.clamp(0, 1), x).mean())
    Path(cfg["out"]).write_text(json.dumps(results))


# ---------------------------------------------------------------------------------------- report
def fmt_ratio(row) -> str:
    if row["ratio"] is None:
        return "–"
    return f"{row['ratio']:.2f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def report(args, command, tables, peer, peer_note, total, post_rows=None) -> str:
    lines = [header("Speed: cost per image, overhead over unconditional DDIM, peer library", command)]
    lines.append(
        f"- operator: `{TASK}` on each prior's image shape (noiseless; `ddnm+` with sigma_y = {SIGMA_NOISY})\n"
        f"- diffusion methods timed over {args.timed_steps} steps (or their default if smaller) and "
        f"extrapolated linearly to their default steps (marked *); `fista-tv` likewise over {TIMED_ITERS} of its "
        f"iterations; the other classical methods run in full\n"
        f"- {args.rounds} interleaved rounds per batch size, order rotated each round; medians\n"
        f"- overhead = method seconds / unconditional `ddim` (eta 0) seconds at the same step count and batch, "
        f"the two timed back to back in each round (alternating which goes first); median over rounds\n"
        f"- total wall time: {total:.0f} s\n"
    )
    target_lines = []
    for prior_name, info in tables.items():
        lines.append(f"\n## {prior_name}\n\ndata: {info['data']}\n")
        for batch, rows in info["batches"].items():
            lines.append(f"\n### batch {batch}\n")
            lines.append(
                "| method | default steps | s/image at default | NFE/image | overhead vs ddim (equal steps) | target |"
            )
            lines.append("|---|---|---|---|---|---|")
            for row in rows:
                star = "*" if row["extrapolated"] else ""
                tgt = OVERHEAD_TARGETS.get(row["method"])
                tcell = "–"
                if tgt is not None and row["ratio"] is not None:
                    ok = row["ratio"] <= tgt
                    tcell = f"<= {tgt:.2f}: {verdict(ok)}"
                    target_lines.append(
                        f"- {prior_name}, batch {batch}, {row['method']}: overhead {row['ratio']:.3f} "
                        f"(target <= {tgt:.2f}, margin {tgt - row['ratio']:+.3f}): {verdict(ok)}"
                    )
                steps = "–" if row["default_steps"] is None else str(row["default_steps"])
                if row["count_name"] != "steps" and row["default_steps"] is not None:
                    steps += f" {row['count_name']}"
                lines.append(
                    f"| {row['method']} | {steps} | {row['sec_per_image']:.4g}{star} | {row['nfe']:.0f}{star if row['nfe'] else ''} | "
                    f"{fmt_ratio(row)} | {tcell} |"
                )
    if post_rows:
        lines.append("\n## Posterior samples: K samples of one image vs K images vs K sequential calls\n")
        lines.append(
            f"`{TASK}`, noiseless, on K seeded test images of each prior; {args.rounds} interleaved rounds "
            "(order rotated), medians of the seconds of the solver calls. K samples = `solver.sample(y[:1], "
            "n=K)` (one batch of K rows); K images = one call on K different images; K sequential = K "
            "single-image calls. Target (issue 14): K samples <= "
            f"{POSTERIOR_TARGET:.2f}x K images (median of the per-round ratios).\n"
        )
        lines.append(
            "| prior | method | steps | K | K samples, batched (s) | K images, one batch (s) | "
            "K sequential calls (s) | samples / images | sequential / samples | target |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for prior_name, row in post_rows.items():
            ratio = statistics.median(row["ratios"])
            ok = ratio <= POSTERIOR_TARGET
            lines.append(
                f"| {prior_name} | {row['method']} | {row['steps']} | {row['K']} | {row['samples']:.3f} | "
                f"{row['images']:.3f} | {row['sequential']:.3f} | {ratio:.3f} | "
                f"{row['sequential'] / row['samples']:.2f} | <= {POSTERIOR_TARGET:.2f}: {verdict(ok)} |"
            )
            target_lines.append(
                f"- {prior_name}, posterior {row['method']} K = {row['K']}: samples / images {ratio:.3f} "
                f"(target <= {POSTERIOR_TARGET:.2f}, margin {POSTERIOR_TARGET - ratio:+.3f}): {verdict(ok)}"
            )
    lines.append("\n## Peer: deepinv\n")
    peer_targets = []
    if peer is None:
        lines.append(f"Not run: {peer_note}. No peer numbers are reported.\n")
        lines.append(
            "Build the environment with `python benchmarks/speed.py --setup-peer` (or by hand: "
            f"`python -m venv {args.peer_venv}` then `{args.peer_venv}/bin/pip install "
            + " ".join(f'"{p}"' if "*" in p else p for p in PEER_PACKAGES)
            + "`), then rerun.\n"
        )
    elif "error" in peer:
        lines.append(f"The peer run failed; no peer numbers are reported. {peer['error']}\n")
    else:
        v = peer["versions"]
        lines.append(
            f"deepinv {v['deepinv']}, torch {v['torch']} (venv `{args.peer_venv}`; both libraries timed in "
            f"that process, interleaved, {args.peer_rounds} rounds, medians). Network: `natural-64` through an "
            f"adapter `D(x, sigma)`; operator `{TASK}` through our SVD as a `DecomposablePhysics` (max |A x| "
            f"mismatch {peer['physics_error']:.1e}); data: {peer['data']}; noiseless; {peer['steps']} steps "
            f"(deepinv DDRM on the noise levels of our DDRM grid; deepinv DPS with num_steps = steps + 1, "
            f"its DDPM solver skipping the last denoiser call).\n"
        )
        lines.append(
            "| method | ours s | deepinv s | ratio ours/deepinv | ours PSNR | deepinv PSNR | ΔPSNR | NFE ours / deepinv |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for method in ("ddrm", "dps"):
            r = peer[method]
            so, st = statistics.median(r["ours"]["sec"]), statistics.median(r["theirs"]["sec"])
            po, pt = statistics.fmean(r["ours"]["psnr"]), statistics.fmean(r["theirs"]["psnr"])
            ratio, dp = so / st, po - pt
            lines.append(
                f"| {method} | {so:.2f} | {st:.2f} | {ratio:.2f} | {po:.2f} | {pt:.2f} | {dp:+.2f} | "
                f"{r['ours']['nfe']} / {r['theirs']['nfe']} |"
            )
            peer_targets.append(
                f"- peer {method}: seconds ratio {ratio:.2f} (target <= {PEER_SECONDS_TARGET:.1f}, margin "
                f"{PEER_SECONDS_TARGET - ratio:+.2f}): {verdict(ratio <= PEER_SECONDS_TARGET)}; ΔPSNR {dp:+.2f} dB "
                f"(target >= {PEER_PSNR_TARGET:+.1f}, margin {dp - PEER_PSNR_TARGET:+.2f}): {verdict(dp >= PEER_PSNR_TARGET)}"
            )
        if peer.get("ddrm_noise_div_sqrt2_psnr") is not None:
            po = statistics.fmean(peer["ddrm"]["ours"]["psnr"])
            pt = statistics.fmean(peer["ddrm"]["theirs"]["psnr"])
            pq = peer["ddrm_noise_div_sqrt2_psnr"]
            lines.append(
                f"\nDDRM PSNR gap, diagnosed: deepinv's `DDRM.forward` divides each of its noise draws by "
                f"sqrt(2) (`torch.randn_like(...) / np.sqrt(2.0)`), which is not in the paper's eq. 7-8 (ours "
                f"follows the paper). The same network and steps with our DDRM's noise divided by sqrt(2) give "
                f"{pq:.2f} dB (ΔPSNR to deepinv {pq - pt:+.2f} dB, to our paper-exact DDRM {pq - po:+.2f} dB).\n"
            )
    lines.append("\n## Targets\n")
    lines.extend(target_lines or ["- no overhead targets measured"])
    lines.extend(peer_targets or ["- peer targets: not measured (see above)"])
    return "\n".join(lines) + "\n"


def figure(tables):
    """Bar chart of the overhead ratios (PIL, no plotting library)."""
    from PIL import Image, ImageDraw

    bars = []
    for prior_name, info in tables.items():
        for batch, rows in info["batches"].items():
            for row in rows:
                if row["ratio"] is not None:
                    bars.append(
                        (
                            f"{prior_name} b{batch} {row['method']}",
                            row["ratio"],
                            OVERHEAD_TARGETS.get(row["method"]),
                        )
                    )
    bars = bars or [("(no diffusion methods timed)", 0.0, None)]
    vmax = max(4.0, max(b[1] for b in bars) * 1.1)
    W, left, bh, pad = 760, 230, 16, 4
    H = 40 + len(bars) * (bh + pad)
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    d.text((6, 6), "overhead vs unconditional ddim at equal steps (| = target)", fill="black")
    scale = (W - left - 60) / vmax
    x1 = left + scale * 1.0
    d.line([x1, 24, x1, H - 4], fill=(150, 150, 150))
    for i, (label, ratio, tgt) in enumerate(bars):
        y = 30 + i * (bh + pad)
        ok = tgt is None or ratio <= tgt
        d.text((6, y + 2), label[:36], fill="black")
        d.rectangle([left, y, left + scale * ratio, y + bh], fill=(70, 130, 180) if ok else (200, 80, 60))
        d.text((left + scale * max(ratio, tgt or 0.0) + 6, y + 2), f"{ratio:.2f}", fill="black")
        if tgt is not None:
            xt = left + scale * tgt
            d.line([xt, y - 1, xt, y + bh + 1], fill="black", width=2)
    return img


# ---------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,16; quick 1)")
    ap.add_argument(
        "--timed-steps",
        type=int,
        default=None,
        help="steps actually run per diffusion method (default 5; quick 1)",
    )
    ap.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 3; quick 1)")
    ap.add_argument(
        "--priors", default=None, help="comma-separated prior names (default: the shipped priors)"
    )
    ap.add_argument(
        "--methods", default=None, help="comma-separated subset of methods (default: all registered)"
    )
    ap.add_argument(
        "--peer-venv", type=Path, default=Path(os.environ.get("DIFFINV_PEER_VENV", DEFAULT_PEER_VENV))
    )
    ap.add_argument("--no-peer", action="store_true", help="skip the deepinv comparison")
    ap.add_argument("--setup-peer", action="store_true", help="build the peer venv first if it is missing")
    ap.add_argument("--peer-n", type=int, default=16, help="crops in the peer comparison (default 16)")
    ap.add_argument(
        "--peer-steps",
        type=int,
        default=20,
        help="steps of both libraries in the peer comparison (default 20)",
    )
    ap.add_argument("--peer-rounds", type=int, default=2, help="interleaved peer rounds (default 2)")
    ap.add_argument(
        "--posterior-k", type=int, default=8, help="samples per image in the posterior row (default 8)"
    )
    ap.add_argument("--posterior-method", default="ddnm", help="method of the posterior row (default ddnm)")
    ap.add_argument("--no-posterior", action="store_true", help="skip the posterior-samples row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"torch CPU threads (default {DEFAULT_THREADS}: on a shared machine, multi-threaded small ops "
        "stall on busy cores; try 2 on an idle one)",
    )
    ap.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: natural-64, batch 1, ddnm/ddrm/dps/pinv, 1 step, 1 round, no peer",
    )
    ap.add_argument("--peer-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            ap.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if args.batches is None:
        args.batches = "1" if args.quick else "1,16"
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if args.timed_steps is None:
        args.timed_steps = 1 if args.quick else 5
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.quick:
        args.no_peer = True
        args.priors = args.priors or "natural-64"
        args.methods = args.methods or "ddnm,ddrm,dps,pinv"
    if min(args.batches) < 1 or args.timed_steps < 1 or args.rounds < 1 or args.posterior_k < 1:
        ap.error("batch sizes, --timed-steps, --rounds and --posterior-k must be >= 1")
    args.out_dir = args.out if args.out is not None else result_path("", None)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.peer_worker is not None:
        peer_worker(json.loads(args.peer_worker))
        return 0
    command = command_line([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    t0 = time.perf_counter()
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    prior_names = args.priors.split(",") if args.priors else priors.shipped_priors()
    methods = args.methods.split(",") if args.methods else [m for m in solvers.available() if m != "ddim"]
    tables, post_rows = {}, {}
    for name in prior_names:
        prior = priors.load(name)
        x_all, desc = test_images(prior, max(args.batches), args.seed)
        info = {"data": desc, "batches": {}}
        for batch in args.batches:
            log(
                f"{name}: batch {batch}, {len(methods)} methods, {args.timed_steps} timed steps, {args.rounds} rounds"
            )
            cost = run_cost(prior, x_all, methods, batch, args.timed_steps, args.rounds, args.seed)
            info["batches"][batch] = summarize(cost, batch)
        tables[name] = info
        if not args.no_posterior:
            log(f"{name}: posterior samples, {args.posterior_method}, K = {args.posterior_k}")
            post_rows[name] = run_posterior_cost(
                prior, args.posterior_method, args.posterior_k, args.timed_steps, args.rounds, args.seed
            )

    peer, peer_note = None, ""
    if args.no_peer:
        peer_note = "skipped (--no-peer or --quick)"
    else:
        ok, note = peer_status(args.peer_venv)
        if not ok and args.setup_peer:
            try:
                setup_peer(args.peer_venv)
                ok, note = peer_status(args.peer_venv)
            except (OSError, subprocess.CalledProcessError) as exc:
                ok, note = False, f"building {args.peer_venv} failed: {exc}"
        if ok:
            log(f"peer environment: {note}")
            peer = run_peer(args.peer_venv, args)
        else:
            peer_note = f"the deepinv environment is not available ({note})"
    total = time.perf_counter() - t0
    text = report(args, command, tables, peer, peer_note, total, post_rows)
    md = result_path("speed.md", args.out)
    png = result_path("speed.png", args.out)
    write_text(md, text)
    save_png(png, figure(tables))
    print(text)
    log(f"wrote {md} and {png} in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
