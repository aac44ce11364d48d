"""Smoke test of benchmarks/posterior.py: a ``--quick`` run on the bundled stand-ins (one 64x64
face, one TCIA chest slice) writes its report with the PSNR, coverage and Spearman columns, the
calibration curve and the uncertainty figures; coverages lie in [0, 1]. The numbers themselves are
not checked (2 samples, 2 steps)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

from diffinv import priors

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
BUNDLED = ROOT / "src" / "diffinv" / "assets" / "images"
SHIPPED = priors.shipped_priors()
FACE_PRIOR = "faces-64" if "faces-64" in SHIPPED else "natural-64"
CHEST_PRIOR = "ct-chest-64" if "ct-chest-64" in SHIPPED else "ct-ellipses-64"
TARGET = re.compile(r"margin [-+]\d+\.\d+( dB)? \(need .*\): \*\*(met|missed)\*\*")


def table(text: str, title: str) -> list[list[str]]:
    """The rows (cells) of the first table under ``## title``, header first, separator dropped."""
    body = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in rows]


def test_posterior_quick(tmp_path):
    args = ["--quick", "--out", str(tmp_path), "--methods", "ddnm,ddrm"]
    args += ["--faces-data", str(BUNDLED / "face_189080.png"), "--faces-prior", FACE_PRIOR]
    args += ["--ct-data", str(BUNDLED / "ct_chest_tcia_hu1024_256.png"), "--ct-prior", CHEST_PRIOR]
    proc = subprocess.run(
        [sys.executable, str(BENCH / "posterior.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = (tmp_path / "posterior.md").read_text()
    assert "- command: `python benchmarks/posterior.py --quick" in text and "- git commit:" in text
    for png in ("posterior_calibration.png", "posterior_faces.png", "posterior_ct.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ddrm on real CT, 8 views (needs an SVD operator)" in text  # skipped, and said so

    psnr = table(text, "PSNR (dB)")
    assert psnr[0][:6] == ["setting", "method", "steps", "one sample", "mean of 2", "gain"]
    assert [r[:2] for r in psnr[1:]] == [
        ["faces sr4", "ddnm"],
        ["faces sr4", "ddrm"],
        ["real CT, 8 views", "ddnm"],
    ]
    for row in psnr[1:]:
        assert all(math.isfinite(float(c.split(" ± ")[0])) for c in row[3:6])

    cal = table(text, "Calibration on the ground truth")
    header = cal[0]
    assert header[2:5] == ["coverage 50%", "coverage 90%", "coverage 50% (0<x<1)"]
    assert "Spearman(std, |error|)" in header and "Spearman pooled" in header
    assert len(cal) == 1 + 1 + 3  # header, exact sampler, three runs
    for row in cal[1:]:
        cov = [float(c) for c in row[2:6]]
        assert all(0.0 <= c <= 1.0 for c in cov), row
    for row in cal[2:]:
        rho = float(row[header.index("Spearman pooled")])
        assert math.isnan(rho) or -1.0 <= rho <= 1.0

    curve = table(text, "Calibration curve")
    assert curve[0][1:] == [f"{10 * i}%" for i in range(1, 10)] and len(curve) == 1 + 1 + 3
    for row in curve[1:]:
        values = [float(c) for c in row[1:]]
        assert all(0.0 <= v <= 1.0 for v in values) and values == sorted(values), row  # nested intervals

    targets = text.split("## Targets", 1)[1]
    assert len(TARGET.findall(targets)) == 3 + 2  # faces: gain, bicubic, Spearman; CT: gain, Spearman


def test_exact_sampler_coverage_and_fallback(tmp_path):
    import posterior

    cov = posterior.exact_sampler_coverage(8, levels=(0.5, 0.9, 0.999), draws=100_000)
    assert abs(cov[0.999] - 7 / 9) < 0.01  # the truth inside the range of 8 samples: (K-1)/(K+1)
    assert 0.3 < cov[0.5] < cov[0.9] < cov[0.999]

    missing, bundled = tmp_path / "nope", tmp_path / "stand_in.png"
    assert posterior._fallback(missing, missing, bundled, True, Path.is_dir) == bundled
    assert posterior._fallback(missing, missing, bundled, False, Path.is_dir) == missing  # full runs: error
    assert posterior._fallback(missing, tmp_path / "other", bundled, True, Path.is_dir) == missing
