"""Write the training folders of the shipped priors from ../shared/data (see its README).

    python scripts/prepare_training_data.py --out data

gives ``data/faces64/{train,dev}/*.png`` (CelebA 64x64 crops, split by identity: every identity
divisible by 10 is dev) and ``data/ctchest64/*.png`` (IQ-OTH/NCCD chest CT slices resized to 64x64),
the folders ``diffinv train --data`` was given for ``faces-64`` and ``ct-chest-64``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from diffinv.data.prepare import prepare_celeba, prepare_resized  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder that receives faces64/ and ctchest64/")
    ap.add_argument("--shared", type=Path, default=SHARED, help=f"the shared data folder [{SHARED}]")
    args = ap.parse_args(argv)
    faces = args.shared / "faces"
    counts = prepare_celeba(faces / "celeba", faces / "celeba_identity.txt", args.out / "faces64")
    print(f"faces64: {counts['train']} train, {counts['dev']} dev images in {args.out / 'faces64'}")
    n = prepare_resized(args.shared / "ct" / "train" / "iqothnccd", args.out / "ctchest64", size=64)
    print(f"ctchest64: {n} slices in {args.out / 'ctchest64'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
