"""Smoke test of benchmarks/tiling.py: its ``--quick`` run writes the results file (provenance
header, finite numbers in every table row, all variants and both tile_batch rows) and its figure.
The numbers themselves are not checked: the machine's load varies and 2 steps restore little."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CBSD68 = ROOT.parent / "shared" / "data" / "natural" / "dev" / "CBSD68"
BUNDLED = ROOT / "src" / "diffinv" / "assets" / "images"  # its portrait (128x192) fits 128x128 crops
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?(?![\w.])|\bnan\b|\binf\b", re.I)


def test_tiling_quick(tmp_path):
    data = CBSD68 if CBSD68.is_dir() else BUNDLED / "portrait_189080_128x192.png"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "tiling.py"),
            "--quick",
            "--out",
            str(tmp_path),
            "--data",
            str(data),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"tiling.py failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    text = (tmp_path / "tiling.md").read_text()
    assert (
        "- command: `python benchmarks/tiling.py" in text and "- git commit:" in text and "- machine:" in text
    )
    rows = [line for line in text.splitlines() if line.startswith("|") and not line.startswith("|---")]
    values = [float(tok) for line in rows for tok in NUMBER.findall(line)]
    assert values and all(math.isfinite(v) for v in values)
    for task in ("sr4", "inpaint-random0.5"):
        for variant in ("before", "larger overlap", "after"):
            assert f"| {task} | {variant} |" in text
    assert "| 1 | " in text and "| 8 | " in text  # one window at a time and batched
    assert (tmp_path / "tiling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
