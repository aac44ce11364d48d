"""Pack the faces-64 / ct-chest-64 training data small enough to travel to a lent GPU (< 64 MiB).

CelebA training identities are cut losslessly with ``jpegtran -crop 80x80+0+16`` (on the 16-pixel
MCU grid, no re-encoding; ``crop_faces.py`` takes the exact box (12, 28, 76, 92) back out of it);
the chest slices are the 64x64 PNGs of ``scripts/prepare_training_data.py``.

    python scripts/gpu/pack_data.py --shared ../shared/data --chest data/ctchest64 --out gpu
"""

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from diffinv.data.prepare import celeba_split  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--chest", type=Path, default=Path("data/ctchest64"))
    ap.add_argument("--out", type=Path, default=Path("gpu"))
    args = ap.parse_args()
    if shutil.which("jpegtran") is None:
        sys.exit("jpegtran not found: apt-get install libjpeg-turbo-progs")
    faces = args.shared / "faces"
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "faces_jpg"
        folder.mkdir()
        for name in celeba_split(faces / "celeba_identity.txt")["train"]:
            with open(folder / name, "wb") as f:
                subprocess.run(
                    ["jpegtran", "-copy", "none", "-crop", "80x80+0+16", str(faces / "celeba" / name)],
                    stdout=f,
                    check=True,
                )
        with tarfile.open(args.out / "faces_jpg.tar", "w") as tar:
            tar.add(folder, arcname="faces_jpg")
    with tarfile.open(args.out / "chest64.tar", "w") as tar:
        tar.add(args.chest, arcname="ctchest64")
    print(f"wrote {args.out / 'faces_jpg.tar'} and {args.out / 'chest64.tar'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
