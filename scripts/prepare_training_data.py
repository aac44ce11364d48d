"""Write the training folders of the shipped priors from ../shared/data (see its README).

    python scripts/prepare_training_data.py --out data

gives ``data/faces64/{train,dev}/*.png`` (CelebA 64x64 crops, split by identity: every identity
divisible by 10 is dev) and ``data/ctchest64/*.png`` (IQ-OTH/NCCD chest CT slices resized to 64x64),
the folders ``diffinv train --data`` was given for ``faces-64`` and ``ct-chest-64``.

``--ct-tv W`` also writes ``data/ctchest-tv/*.png``: the full-size IQ-OTH/NCCD slices denoised by
isotropic TV, argmin_u ||u - a||^2 + 2 W TV(u) (FGP, 200 iterations), the training set of the
``ct-chest-64`` weights continued with ``--augment ct`` from 2026-12-05 on (W = 0.2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from diffinv.data.prepare import prepare_celeba, prepare_filtered, prepare_resized  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def tv_denoiser(weight: float, iters: int = 200):
    """(H, W) array -> argmin_u ||u - a||^2 + 2 weight TV(u), u in [0, 1] (the library's FGP prox)."""
    import torch

    from diffinv.solvers.classical import tv_prox_fgp

    def denoise(a):
        u, _ = tv_prox_fgp(torch.from_numpy(a)[None, None], weight, iters, box=True)
        return u[0, 0].numpy()

    return denoise


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder that receives faces64/ and ctchest64/")
    ap.add_argument("--shared", type=Path, default=SHARED, help=f"the shared data folder [{SHARED}]")
    ap.add_argument(
        "--ct-tv", type=float, default=None, metavar="W", help="also write ctchest-tv/ (TV weight W)"
    )
    ap.add_argument("--only-ct-tv", action="store_true", help="write ctchest-tv/ only")
    args = ap.parse_args(argv)
    if args.only_ct_tv and args.ct_tv is None:
        ap.error("--only-ct-tv needs --ct-tv W")
    if args.ct_tv is not None:
        if not args.ct_tv > 0:
            ap.error(f"--ct-tv must be > 0, got {args.ct_tv}")
        n = prepare_filtered(
            args.shared / "ct" / "train" / "iqothnccd", args.out / "ctchest-tv", tv_denoiser(args.ct_tv)
        )
        print(f"ctchest-tv: {n} slices denoised with TV weight {args.ct_tv:g} in {args.out / 'ctchest-tv'}")
        if args.only_ct_tv:
            return 0
    faces = args.shared / "faces"
    counts = prepare_celeba(faces / "celeba", faces / "celeba_identity.txt", args.out / "faces64")
    print(f"faces64: {counts['train']} train, {counts['dev']} dev images in {args.out / 'faces64'}")
    n = prepare_resized(args.shared / "ct" / "train" / "iqothnccd", args.out / "ctchest64", size=64)
    print(f"ctchest64: {n} slices in {args.out / 'ctchest64'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
