"""Regenerate the golden outputs, ``tests/data/golden_outputs.npz`` (checked by
``tests/test_golden_outputs.py``; the cases are defined once, in ``tests/golden/cases.py``).

The golden file freezes what every solver computes today, so that a refactoring of the numerical
core can be checked to reproduce each case to 1e-6. Regenerate it ONLY when

* a behaviour change is deliberate (a new time-grid rule, a fixed bug, a changed default): make
  the change in its own commit, regenerate the file in that same commit, and state in the commit
  message what changed and its measured effect (this script prints, per case, the max difference
  from the file it replaces -- paste the summary into the message);
* cases are added (a new solver, operator or parameter branch): only the new keys should appear;
  the script lists changed, added and removed cases, so check that no existing case moved.

Never regenerate to make a refactoring "pass": a refactoring must reproduce the file as it is.

How::

    OMP_NUM_THREADS=1 python tests/golden/make_golden.py            # write tests/data/golden_outputs.npz
    python tests/golden/make_golden.py --output /tmp/g.npz          # write elsewhere (e.g. to compare)
    python tests/golden/make_golden.py --compare /tmp/g.npz         # only compare a fresh run with a file

Run it from a checkout whose ``src/`` has no uncommitted changes: the file records the commit it
was made from (``git rev-parse HEAD``) and refuses a dirty ``src/`` unless ``--allow-dirty``.
Everything runs in float64 on the CPU (about 10 s on one core); results reproduce bit for bit on
one machine and far below 1e-6 across machines.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from golden import cases as golden  # noqa: E402

META_KEY = "__meta__"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def generate(verbose: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """Run every case; ({key: array}, meta). Raises if a case fails or a SKIPPED pair runs."""
    torch.set_num_threads(1)
    arrays: dict[str, np.ndarray] = {}
    nfe: dict[str, int] = {}
    start = time.perf_counter()
    for case in golden.cases():
        t0 = time.perf_counter()
        x, y, n = golden.run(case)
        if not bool(torch.isfinite(x).all()):
            raise RuntimeError(f"golden case {case.name}: the output is not finite")
        arrays[case.name] = x.numpy().astype(np.float64)
        nfe[case.name] = n
        if y is not None:
            y_np = y.numpy().astype(np.float64)
            key = case.measurement_key
            if key in arrays and not np.array_equal(arrays[key], y_np):
                raise RuntimeError(f"{key}: cases sharing a measurement see different y")
            arrays[key] = y_np
        if verbose:
            print(f"  {case.name:52s} {time.perf_counter() - t0:6.2f} s  nfe {n}", flush=True)
    for case, why in golden.skipped_cases():
        try:
            golden.run(case)
        except ValueError:
            continue
        raise RuntimeError(f"{case.name} is listed in SKIPPED ({why}) but the library runs it: add it")
    meta = {
        "commit": _git("rev-parse", "HEAD"),
        "src_dirty": bool(_git("status", "--porcelain", "--", "src")),
        "generated_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()} {platform.processor()}".strip(),
        "cases": len(golden.cases()),
        "atol": golden.ATOL,
        "seconds": round(time.perf_counter() - start, 2),
        "nfe": nfe,
    }
    return arrays, meta


def load(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """({key: array}, meta) of a golden file."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files if k != META_KEY}
        meta = json.loads(str(f[META_KEY])) if META_KEY in f.files else {}
    return arrays, meta


def save(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays, **{META_KEY: np.array(json.dumps(meta, sort_keys=True))})


def compare(new: dict[str, np.ndarray], old: dict[str, np.ndarray], atol: float = golden.ATOL) -> bool:
    """Print the cases that differ, were added or removed; True when all shared ones agree to atol."""
    added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    worst, moved = 0.0, []
    for key in sorted(set(new) & set(old)):
        if new[key].shape != old[key].shape:
            moved.append((key, float("inf")))
            continue
        d = float(np.max(np.abs(new[key] - old[key]))) if new[key].size else 0.0
        worst = max(worst, d)
        if d > atol:
            moved.append((key, d))
    print(f"compared {len(set(new) & set(old))} shared keys: max |difference| {worst:.3e}")
    for key, d in moved:
        print(f"  CHANGED {key}: max |difference| {d:.3e}")
    for key in added:
        print(f"  added   {key}")
    for key in removed:
        print(f"  removed {key}")
    return not moved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=golden.GOLDEN_FILE, help="file to write")
    parser.add_argument("--compare", type=Path, help="only compare a fresh run with this file")
    parser.add_argument("--allow-dirty", action="store_true", help="allow uncommitted changes in src/")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    dirty = _git("status", "--porcelain", "--", "src")
    if dirty and not args.allow_dirty and args.compare is None:
        print(f"src/ has uncommitted changes; commit them first (or --allow-dirty):\n{dirty}")
        return 2
    arrays, meta = generate(verbose=not args.quiet)
    print(f"{meta['cases']} cases in {meta['seconds']} s (commit {meta['commit'][:12] or '?'})")
    target = args.compare or args.output
    if target.exists():
        same = compare(arrays, load(target)[0])
        if args.compare is not None:
            return 0 if same else 1
    save(args.output, arrays, meta)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
