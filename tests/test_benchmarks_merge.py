"""benchmarks/merge_tables.py: merging reports on disjoint image sets gives the mean and population
std over the union (checked against the values themselves), first table of a (setting, method) wins."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import merge_tables  # noqa: E402
from common import mean_std  # noqa: E402


def report(rows: dict[str, dict[str, list[float]]], extra: str = "") -> str:
    text = "# r\n\n## PSNR (dB), mean\n\n| setting | a |\n|---|---|\n| sr4 | 1.00 |\n"
    for setting, methods in rows.items():
        text += f"\n### {setting}\n\n| method | steps/iters | PSNR (dB) | SSIM | s/image | NFE |\n|---|---|---|---|---|---|\n"
        for m, v in methods.items():
            mu, sd = mean_std(v)
            text += f"| {m} | 5 | {mu:.3f} ± {sd:.3f} | {mu / 40:.4f} ± {sd / 40:.4f} | 0.1 | 5 |\n"
    return text + extra


def test_merge_matches_the_union(tmp_path):
    a = {"sr4": {"ddnm": [20.0, 22.5, 25.1], "tv": [18.0, 19.0, 18.5]}, "box": {"ddnm": [30.0, 31.0, 29.0]}}
    b = {"sr4": {"ddnm": [24.0, 21.0], "tv": [20.0, 17.0]}, "box": {"ddnm": [28.0, 33.0]}}
    late = "\n## Second run\n\n### sr4\n\n| method | PSNR (dB) |\n|---|---|\n| ddnm | 99.000 ± 0.000 |\n"
    (tmp_path / "a.md").write_text(report(a, late))
    (tmp_path / "b.md").write_text(report(b))
    merged = merge_tables.merge(
        [(merge_tables.read_tables(tmp_path / "a.md"), 3), (merge_tables.read_tables(tmp_path / "b.md"), 2)]
    )
    assert set(merged) == {("sr4", "ddnm"), ("sr4", "tv"), ("box", "ddnm")}
    for (setting, method), v in merged.items():
        union = a[setting][method] + b[setting][method]
        assert v["PSNR (dB)"][0] == pytest.approx(statistics.fmean(union), abs=1e-3)
        assert v["PSNR (dB)"][1] == pytest.approx(statistics.pstdev(union), abs=1e-3)
        assert v["SSIM"][0] == pytest.approx(statistics.fmean(union) / 40, abs=1e-4)


def test_cli_refuses_bad_parts(tmp_path, capsys):
    with pytest.raises(SystemExit):
        merge_tables.main([str(tmp_path / "missing.md") + ":5"])
    assert "no such report" in capsys.readouterr().err
    (tmp_path / "a.md").write_text("# nothing\n")
    with pytest.raises(SystemExit):
        merge_tables.main([str(tmp_path / "a.md") + ":x"])
    assert "expected FILE:N" in capsys.readouterr().err


def test_a_rerun_of_some_methods_replaces_their_figures(tmp_path):
    """``A.md,A2.md:N``: the rerun's (setting, method) replace the first report's, the others stay."""
    first = {"sr4": {"ddnm": [20.0, 22.0], "dps": [10.0, 12.0]}}
    rerun = {"sr4": {"dps": [18.0, 19.0]}}
    other = {"sr4": {"ddnm": [24.0], "dps": [17.0]}}
    for name, rows in (("a", first), ("a2", rerun), ("b", other)):
        (tmp_path / f"{name}.md").write_text(report(rows))
    out = tmp_path / "m.md"
    merge_tables.main(
        [f"{tmp_path / 'a.md'},{tmp_path / 'a2.md'}:2", f"{tmp_path / 'b.md'}:1", "--out", str(out)]
    )
    merged = merge_tables.read_tables(out)
    assert merged[("sr4", "dps")]["PSNR (dB)"][0] == pytest.approx(
        statistics.fmean([18.0, 19.0, 17.0]), abs=1e-3
    )
    assert merged[("sr4", "ddnm")]["PSNR (dB)"][0] == pytest.approx(
        statistics.fmean([20.0, 22.0, 24.0]), abs=1e-3
    )
