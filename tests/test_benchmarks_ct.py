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


def test_ct_steps_option():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import pytest
    from ct import DIFFUSION, parse_steps

    base = dict.fromkeys(DIFFUSION, 6)
    assert parse_steps(None, base) == base
    assert parse_steps("20", base) == dict.fromkeys(DIFFUSION, 20)
    assert parse_steps("20,dps=50", base) == {**dict.fromkeys(DIFFUSION, 20), "dps": 50}
    assert parse_steps("mcg-ve=3", base) == {**base, "mcg-ve": 3}
    for bad, msg in (("fbp=3", "unknown method"), ("ddnm=x", "expected N"), ("0", ">= 1")):
        with pytest.raises(ValueError, match=msg):
            parse_steps(bad, base)


def test_ct_sweep_quick(tmp_path):
    script = ROOT / "benchmarks" / "ct_sweep.py"
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "--quick",
            "--out",
            str(tmp_path),
            "--priors",
            "1=ct-ellipses-64,2=ct-ellipses-64",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"ct_sweep.py failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    md, png = tmp_path / "ct_sweep.md", tmp_path / "ct_sweep.png"
    assert md.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert "- command: `python benchmarks/ct_sweep.py --quick" in text
    part1 = text.split("## Part 1", 1)[1].split("## Part 2", 1)[0]
    for method in METHODS[2:]:
        row = next(line for line in part1.splitlines() if line.startswith(f"| {method} |"))
        values = [float(v) for v in NUMBER.findall(row.split("|", 2)[2])]
        assert len(values) == 3 and all(math.isfinite(v) for v in values), row  # 2 steps, 3 steps, s/img
    part2 = text.split("## Part 2", 1)[1].split("## Best", 1)[0]
    rows = [line for line in part2.splitlines() if re.match(r"\| [12] \|", line)]
    assert len(rows) == 2
    # the same weights under two labels give the same numbers (seeded runs)
    assert rows[0].split("|")[3:] == rows[1].split("|")[3:]
    assert "FISTA-TV" in text and "FBP" in text


def test_ct_sweep_bad_prior_fails_at_once(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "ct_sweep.py"),
            "--quick",
            "--out",
            str(out),
            "--priors",
            "1=/no/such/prior",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert (
        proc.stderr.strip().splitlines()[-1]
        == "error: prior /no/such/prior: no such file or directory: /no/such/prior"
    )
    assert not out.exists()


def test_mcg_published_quick(tmp_path):
    """benchmarks/mcg_published.py --quick: FBP and both MCG-VE settings, finite PSNR, a JSON file."""
    import json

    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "mcg_published.py"), "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads((tmp_path / "mcg_published.json").read_text())["runs"]
    assert [r["label"].split(" (")[0] for r in runs] == ["fbp", "mcg-ve ct.py", "mcg-ve paper"]
    assert all(len(r["psnr"]) == 1 and 0 < r["psnr_mean"] < 100 for r in runs)


def test_ct_scale_quick(tmp_path):
    """ct_scale.py --quick: one row per size x geometry with finite timings, CG iterations, the
    pinv choice, and the solver table with a small ADM network."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ct_scale.py"), "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"ct_scale.py failed:\n{proc.stderr[-4000:]}"
    text = (tmp_path / "ct_scale.md").read_text()
    assert "- git commit:" in text
    rows = [line for line in text.splitlines() if re.match(r"\| (32|64) \| ct18(-fan)? \|", line)]
    assert len(rows) == 4, text
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[4] in ("gram", "cg")
        iters = int(re.search(r"\((\d+)\)", cells[10]).group(1))
        assert iters >= 1
        assert all(math.isfinite(float(c)) for c in cells[5:10] + [cells[11]])
    solver = [
        line for line in text.split("## DDNM and DDS", 1)[1].splitlines() if line.startswith("| ct18 |")
    ]
    assert len(solver) == 1 and all(math.isfinite(float(c)) for c in solver[0].strip("|").split("|")[1:])


def test_ct_geometry_option():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import pytest
    from ct import parse_args

    assert parse_args(["--quick", "--geometry=-fan-a120"]).geometry == "-fan-a120"
    assert parse_args(["--quick"]).geometry == ""
    with pytest.raises(SystemExit):
        parse_args(["--quick", "--geometry=-bogus"])


def test_ct_poisson_noise_levels():
    """``--sigmas p<I0>``: a Poisson setting whose measurement carries its per-bin variance (about
    1 / counts, so larger at lower dose); bad levels are refused."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import pytest
    import torch
    from ct import Photons, measure, noisy, parse_args, setting_key, setting_label

    from diffinv.operators import from_spec

    levels = parse_args(["--quick", "--sigmas", "0,0.01,p1e4,p1e5"]).sigmas
    assert levels == [0.0, 0.01, 1e4, 1e5] and [isinstance(s, Photons) for s in levels] == [0, 0, 1, 1]
    assert [noisy(s) for s in levels] == [False, True, True, True]
    assert len({setting_key(8, s) for s in levels}) == 4
    assert setting_label(18, levels[2]) == "18 views, Poisson I0=1e4"
    assert setting_label(8, Photons(2.5e4)) == "8 views, Poisson I0=2.5e4"  # exact, not rounded to 2e4
    for bad in ("p0", "px", "-0.1", "nan"):
        with pytest.raises(SystemExit):
            parse_args(["--quick", "--sigmas", bad])
    op = from_spec("ct8", (1, 64, 64))
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    y, var = measure(op, x, levels[2], setting_key(8, levels[2]))
    y5, var5 = measure(op, x, levels[3], setting_key(8, levels[3]))
    assert torch.is_tensor(var) and var.shape == y.shape and bool((var > 0).all())
    assert 5 < float(var.mean() / var5.mean()) < 20  # ten times the photons: about a tenth the variance
    y0, sigma = measure(op, x, 0.0, setting_key(8, 0.0))
    assert sigma == 0.0 and torch.allclose(y0, op.A(x))
