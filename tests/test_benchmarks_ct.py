"""Smoke test of benchmarks/ct.py: the ``--quick`` run writes ct.md with every method and finite
numbers, and ct.png. The numbers themselves are not checked: the shipped priors are still being
trained and the machine's load varies."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "ct.py"
METHODS = ("fbp", "fista-tv", "score-proj", "ddnm", "mcg-vp", "mcg-ve", "dps")
NUMBER = re.compile(
    r"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?(?![\w.])|\bnan\b|\binf\b", re.IGNORECASE
)


def test_ct_quick(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"ct.py failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    md, png = tmp_path / "ct.md", tmp_path / "ct.png"
    assert md.is_file() and png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert "- command: `python benchmarks/ct.py --quick" in text
    assert "- git commit:" in text and "- machine:" in text and "- date:" in text
    assert "## Tuned hyperparameters" in text and "| 8 views | fista-tv | lam |" in text

    # Every method has a row with finite numbers in both view settings' tables.
    for views in (8, 18):
        section = text.split(f"### {views} views\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
        for method in METHODS:
            rows = [line for line in section.splitlines() if line.startswith(f"| {method} |")]
            assert len(rows) == 1, f"{method} missing at {views} views"
            values = [float(v) for v in NUMBER.findall(rows[0].split("|", 4)[4])]
            # PSNR ± std, SSIM ± std, SL PSNR, SL SSIM, s/slice, NFE
            assert len(values) == 8, rows[0]
            assert all(math.isfinite(v) for v in values), rows[0]
    # The summary table has every method too.
    assert "| setting | " + " | ".join(METHODS) + " |" in text
    # Targets: evaluated at 8 and 18 views against FBP and FISTA-TV, with margins.
    targets = text.split("## Targets", 1)[1]
    assert len(re.findall(r"margin [-+]\d+\.\d+ dB .*\*\*(met|missed)\*\*", targets)) == 4
