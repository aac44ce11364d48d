"""``diffinv demo``: the whole pipeline on the shipped priors and bundled images, with 2 steps."""

from __future__ import annotations

import json
import math

from PIL import Image

from diffinv import demo
from diffinv.cli import main


def test_demo_fast_writes_figure_and_tables(tmp_path, monkeypatch, capsys):
    # ct4 instead of ct30 / ct18 keeps the one-off CT pseudo-inverse setup negligible; the rest is as shipped.
    tasks = [
        (spec, kind, label) if not kind.startswith("ct") else ("ct4", kind, label)
        for spec, kind, label in demo.DEMO_TASKS
    ]
    monkeypatch.setattr(demo, "DEMO_TASKS", tasks)
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--out", str(out), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "| task | method | PSNR (dB) |" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "figure.png",
        "results.json",
        "results.md",
    ]

    with Image.open(out / "figure.png") as fig:
        assert fig.width > 5 * 128 and fig.height > 5 * 128  # 5 rows x 5 columns of 128-px tiles

    results = json.loads((out / "results.json").read_text())["results"]
    rows = [(r["task"], r["method"]) for r in results]
    expected_methods = {
        "natural": ["pinv", "DDNM", "MCG"],
        "ct": ["FBP", "DDNM", "MCG (VE)"],
        "ct_real": ["FBP", "DDNM", "MCG"],
    }
    assert rows == [(spec, m) for spec, kind, _ in tasks for m in expected_methods[kind]]
    for r in results:
        assert (
            math.isfinite(r["psnr"])
            and math.isfinite(r["ssim"])
            and math.isfinite(r["consistency"])
            and 0 <= r["lpips"] < 2
        )
        assert r["steps"] == (None if r["solver"] == "pinv" else demo.FAST_STEPS)
    mcg_ct = next(r for r in results if r["method"] == "MCG (VE)")
    assert mcg_ct["params"] == {"form": "ve"} and mcg_ct["nfe"] == 2 * demo.FAST_STEPS

    table = (out / "results.md").read_text().splitlines()
    assert table[0] == "| task | method | PSNR (dB) | SSIM | LPIPS | consistency | NFE | seconds |"
    assert len(table) == 2 + len(results)

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["command"] == "demo" and cfg["args"]["seed"] == 3 and cfg["args"]["fast"] is True


def test_demo_config_round_trip(tmp_path, monkeypatch):
    """``demo --config`` repeats a run's settings; explicit flags win."""
    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps({"command": "demo", "args": {"seed": 7, "steps": 5, "fast": False, "out": "x"}})
    )
    seen = {}
    monkeypatch.setattr(demo, "run_demo", lambda **kw: seen.update(kw) or [])
    assert main(["demo", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 0
    assert seen["seed"] == 7 and seen["steps"] == 5 and seen["out"] == str(tmp_path / "o")
    assert main(["demo", "--config", str(cfg), "--seed", "1"]) == 0
    assert seen["seed"] == 1 and seen["out"] == "x"


def test_demo_bad_arguments(tmp_path, capsys):
    assert main(["demo", "--steps", "0", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("diffinv demo: error: --steps")
    assert main(["demo", "--device", "nonsense", "--out", str(tmp_path / "o")]) == 2
    assert "unknown device" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
