"""Smoke tests of benchmarks/natural.py, speed.py and gpu.py: each ``--quick`` run writes its results
file (with finite numbers in its tables) and its figure. The numbers themselves are not checked: the
shipped priors are still being trained and the machine's load varies."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
CBSD68 = ROOT.parent / "shared" / "data" / "natural" / "dev" / "CBSD68"
BUNDLED = ROOT / "src" / "diffinv" / "assets" / "images"
NUMBER = re.compile(
    r"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?(?![\w.])|\bnan\b|\binf\b", re.IGNORECASE
)


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def table_numbers(text: str) -> list[float]:
    """Every number in the markdown table rows (header and separator rows carry none)."""
    values = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            values += [float(tok) for tok in NUMBER.findall(line)]
    return values


def check_results(path: Path, png: Path) -> str:
    assert path.is_file(), f"{path} was not written"
    text = path.read_text()
    assert "- command: `python benchmarks/" in text and "- git commit:" in text and "- machine:" in text
    values = table_numbers(text)
    assert values, f"no numbers in the tables of {path}"
    bad = [v for v in values if not math.isfinite(v)]
    assert not bad, f"non-finite numbers in {path}: {bad}"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return text


def test_natural_quick(tmp_path):
    data = CBSD68 if CBSD68.is_dir() else BUNDLED
    run("natural.py", "--quick", "--out", str(tmp_path), "--data", str(data))
    text = check_results(tmp_path / "natural.md", tmp_path / "natural.png")
    assert "## Targets" in text and ("met" in text or "missed" in text)
    for method in ("ddnm", "mcg", "ddrm", "dps", "pigdm", "bicubic", "fista-tv"):
        assert f"| {method} |" in text


def test_natural_missing_data(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "natural.py"),
            "--quick",
            "--out",
            str(tmp_path),
            "--data",
            str(tmp_path / "nope"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "not found" in proc.stderr and "CBSD68" in proc.stderr
    assert not (tmp_path / "natural.md").exists()


def test_speed_quick(tmp_path):
    run("speed.py", "--quick", "--out", str(tmp_path))
    text = check_results(tmp_path / "speed.md", tmp_path / "speed.png")
    assert "## Targets" in text and "overhead" in text
    assert "No peer numbers are reported" in text  # --quick never runs the peer


def test_gpu_quick_cpu(tmp_path):
    run("gpu.py", "--quick", "--allow-cpu", "--out", str(tmp_path))
    text = check_results(tmp_path / "gpu.md", tmp_path / "gpu.png")
    assert "| ddnm |" in text and "| mcg |" in text


@pytest.mark.skipif(sys.platform == "win32", reason="posix only")
def test_gpu_without_cuda_exits_clearly(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gpu.py"), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "needs a CUDA GPU" in proc.stderr
    assert not (tmp_path / "gpu.md").exists()
