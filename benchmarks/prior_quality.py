"""Evidence of prior quality: denoising MSE of x0(x_t) on held-out data vs a Wiener baseline.

For each shipped prior, held-out images x0 are noised to x_t at several levels t and denoised with
the prior's Tweedie estimate x0(x_t, t). The baseline is the best *linear* denoiser of a stationary
Gaussian model fitted on the training data (the Wiener filter): colour-decorrelated channels (PCA of
pixel colours), each with its own mean and power spectrum, so E[x0 | x_t] is a per-frequency gain
S(k) s / (s^2 S(k) + 1 - abar_t). A diffusion prior that learned anything beyond second-order
statistics beats it; the ratio MSE_prior / MSE_wiener says by how much.

Data (the script says which it used):
* ct-ellipses-64: training statistics from phantoms of the training stream (seed 0), held-out
  phantoms from a disjoint seed (40_000_003).
* natural-64: training statistics from random 64x64 crops of ../shared/data/natural/train/CBSD432,
  held-out seeded crops of ../shared/data/natural/dev/CBSD68 (Berkeley Segmentation Dataset,
  Martin, Fowlkes, Tal, Malik, ICCV 2001).
* faces-64: CelebA 64x64 crops (box (12, 28, 76, 92)) of the training identities for the
  statistics, of the held-out dev identities for the test (``diffinv.data.prepare.celeba_split``).
  CelebA (Liu et al., ICCV 2015): non-commercial research use only.
* ct-chest-64: the IQ-OTH/NCCD training slices resized to 64x64 for the statistics; the test set
  is the TCIA dev slices (other patients and scanners, HU) in the soft-tissue window (centre 40,
  width 400 HU), 4x4 box-averaged to 64x64.

``--prior NAME=PATH`` (repeatable) evaluates a training snapshot under a shipped prior's data.

Usage::

    python benchmarks/prior_quality.py [--n 64] [--quick] [--update-cards]

Writes benchmarks/results/prior_quality.md and prior_quality_<name>.png (unconditional DDIM samples);
``--update-cards`` also writes the table and the sample grid into the shipped priors' model cards.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from diffinv import priors  # noqa: E402
from diffinv.data.ellipses import random_phantoms  # noqa: E402
from diffinv.priors.sampling import ddim_sample  # noqa: E402
from diffinv.viz import image_grid  # noqa: E402

TRAIN_DIR = ROOT.parent / "shared" / "data" / "natural" / "train" / "CBSD432"
DEV_DIR = ROOT.parent / "shared" / "data" / "natural" / "dev" / "CBSD68"
LEVELS = (25, 100, 250, 500, 750)


def natural_crops(folder: Path, n: int, size: int, seed: int) -> torch.Tensor:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"no images in {folder}: this benchmark needs the shared data folder")
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        with Image.open(files[i % len(files)]) as im:
            arr = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
        top = int(torch.randint(arr.shape[1] - size + 1, (1,), generator=g))
        left = int(torch.randint(arr.shape[2] - size + 1, (1,), generator=g))
        out.append(arr[:, top : top + size, left : left + size])
    return torch.stack(out).double() / 255


class StationaryWiener:
    """Best linear denoiser of a stationary Gaussian fitted to training images (model space)."""

    def __init__(self, train: torch.Tensor):
        z = train.double()
        B, C, H, W = z.shape
        pix = z.permute(0, 2, 3, 1).reshape(-1, C)
        self.mean = pix.mean(0)
        _, self.Q = torch.linalg.eigh(torch.cov(pix.T).reshape(C, C))  # colour PCA
        w = self._decorrelate(z - self.mean.view(1, C, 1, 1))
        self.power = (torch.fft.fft2(w, norm="ortho").abs() ** 2).mean(0)  # (C, H, W)

    def _decorrelate(self, z: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,cd->bdhw", z, self.Q)

    def x0(self, z_t: torch.Tensor, abar: float) -> torch.Tensor:
        s = abar**0.5
        C = z_t.shape[1]
        w_t = self._decorrelate(z_t.double() - s * self.mean.view(1, C, 1, 1))
        gain = self.power * s / (abar * self.power + (1 - abar))
        w0 = torch.fft.ifft2(torch.fft.fft2(w_t, norm="ortho") * gain, norm="ortho").real
        return torch.einsum("bdhw,cd->bchw", w0, self.Q) + self.mean.view(1, C, 1, 1)


SHARED = ROOT.parent / "shared" / "data"


def _files(folder: Path, names=None) -> list[Path]:
    if not folder.is_dir():
        raise SystemExit(f"no folder {folder}: this benchmark needs the shared data folder")
    if names is not None:
        return [folder / f for f in names]
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def face_crops(split: str, n: int) -> torch.Tensor:
    from diffinv.data.prepare import CELEBA_BOX, celeba_split

    names = celeba_split(SHARED / "faces" / "celeba_identity.txt")[split][:n]
    out = []
    for f in _files(SHARED / "faces" / "celeba", names):
        with Image.open(f) as im:
            out.append(
                torch.from_numpy(np.asarray(im.convert("RGB").crop(CELEBA_BOX)).copy()).permute(2, 0, 1)
            )
    return torch.stack(out).double() / 255


def chest_train(n: int, size: int) -> torch.Tensor:
    out = []
    for f in _files(SHARED / "ct" / "train" / "iqothnccd")[:n]:
        with Image.open(f) as im:
            out.append(torch.from_numpy(np.asarray(im.convert("L").resize((size, size), Image.BOX)).copy()))
    return torch.stack(out)[:, None].double() / 255


def chest_dev(n: int, size: int) -> torch.Tensor:
    from diffinv.data.medical import load_slice

    files = _files(SHARED / "ct" / "dev" / "tcia_hu")
    picks = [files[round(i * (len(files) - 1) / max(n - 1, 1))] for i in range(min(n, len(files)))]
    out = [load_slice(f, "soft-tissue", hu_offset=1024)[0].double() for f in picks]
    return torch.nn.functional.avg_pool2d(torch.cat(out), out[0].shape[-1] // size)


def evaluate(name: str, n: int, quick: bool, path: str | None = None) -> dict:
    prior = priors.load(path or name)
    C, H, W = prior.image_shape
    n_train = 64 if quick else 1024
    if name.startswith("faces"):
        train, test = face_crops("train", n_train), face_crops("dev", n)
        source = f"{n_train} CelebA training-identity crops; the first {n} dev-identity crops"
    elif name == "ct-chest-64":
        train, test = chest_train(n_train, H), chest_dev(n, H)
        source = (
            f"{len(train)} IQ-OTH/NCCD training slices (64x64); {len(test)} TCIA dev slices "
            "(soft-tissue window 40/400 HU, 64x64)"
        )
    elif name.startswith("ct"):
        train = torch.cat(
            [random_phantoms(32, H, torch.Generator().manual_seed(s)) for s in range(n_train // 32)]
        )
        test = random_phantoms(n, H, torch.Generator().manual_seed(40_000_003)).double()
        source = f"{n_train} training-stream phantoms (seeds 0..); {n} held-out phantoms (seed 40000003)"
    else:
        train = natural_crops(TRAIN_DIR, n_train, H, seed=1)
        test = natural_crops(DEV_DIR, n, H, seed=2)
        source = f"{n_train} crops of {TRAIN_DIR.relative_to(ROOT.parent)}; {n} crops of {DEV_DIR.relative_to(ROOT.parent)}"
    wiener = StationaryWiener(prior.to_model(train.double()))
    z0 = prior.to_model(test)
    g = torch.Generator().manual_seed(5)
    rows = []
    for t in LEVELS:
        abar = float(prior.schedule.alpha_bar(t))
        z_t = abar**0.5 * z0 + (1 - abar) ** 0.5 * torch.randn(z0.shape, generator=g, dtype=z0.dtype)
        with torch.no_grad():
            est = torch.cat([prior.x0(z_t[i : i + 16].float(), t).double() for i in range(0, n, 16)])
        mse_prior = (prior.to_image(est).clamp(0, 1) - test).pow(2).mean().item()
        mse_wiener = (prior.to_image(wiener.x0(z_t, abar)).clamp(0, 1) - test).pow(2).mean().item()
        sigma_img = prior.scale * ((1 - abar) / abar) ** 0.5  # noise std in [0,1] units, VE view
        rows.append((t, sigma_img, mse_prior, mse_wiener))
    samples = ddim_sample(prior, 16, torch.Generator().manual_seed(0), steps=10 if quick else 50)
    return {"name": name, "rows": rows, "samples": samples, "source": source}


def table(result: dict) -> str:
    lines = [
        "| t | noise std (image units) | MSE x0(x_t), prior | MSE, Wiener baseline | ratio |",
        "|---|---|---|---|---|",
    ]
    for t, sig, mp, mw in result["rows"]:
        lines.append(f"| {t} | {sig:.3f} | {mp:.5f} | {mw:.5f} | {mp / mw:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64, help="held-out images per prior")
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--update-cards", action="store_true", help="write the evidence into the model cards")
    ap.add_argument(
        "--prior",
        action="append",
        default=[],
        metavar="NAME[=PATH]",
        help="evaluate only these (a shipped name, or NAME=PATH for a snapshot with NAME's data)",
    )
    args = ap.parse_args(argv)
    chosen = [p.split("=", 1) if "=" in p else (p, None) for p in args.prior]
    n = 8 if args.quick else args.n
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    header = [
        "# Prior quality: Tweedie denoising MSE vs a Wiener baseline",
        "",
        f"Command: `python benchmarks/prior_quality.py {' '.join(argv if argv is not None else sys.argv[1:])}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
        f"date {time.strftime('%Y-%m-%d %H:%M')}; commit {commit}",
        "",
        "MSE in [0,1] image units (both estimates clamped to [0,1]); ratio < 1: the prior beats the",
        "best linear (stationary Gaussian, colour-PCA) denoiser fitted on the training data.",
    ]
    body = []
    for name, path in chosen or [(name, None) for name in priors.shipped_priors()]:
        start = time.time()
        res = evaluate(name, n, args.quick, path)
        grid = image_grid(res["samples"], nrow=4).resize((4 * 2 * 66, 4 * 2 * 66), Image.NEAREST)
        png = out / f"prior_quality_{name}.png"
        grid.save(png)
        section = f"## {name}\n\nData: {res['source']}.\n\n{table(res)}\n\nUnconditional DDIM samples (50 steps): `{png.name}`\n"
        body.append(section)
        print(section, f"({time.time() - start:.0f} s)")
        if args.update_cards and not args.quick:
            card_dir = ROOT / "src" / "diffinv" / "assets" / "priors" / name
            shutil.copy(png, card_dir / "samples.png")
            card = card_dir / "MODEL_CARD.md"
            text = card.read_text() if card.exists() else f"# {name}\n"
            text = text.split("\n## Evidence of quality")[0].rstrip() + "\n\n## Evidence of quality\n\n"
            text += f"Produced by `python benchmarks/prior_quality.py --update-cards` (commit {commit}).\n"
            text += f"Data: {res['source']}.\n\n{table(res)}\n\n![samples](samples.png)\n"
            card.write_text(text)
    report = out / "prior_quality.md"
    tmp = report.with_suffix(".tmp")
    tmp.write_text("\n".join(header) + "\n\n" + "\n".join(body))
    os.replace(tmp, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
