"""Smoke tests of benchmarks/faces.py and ct_real.py: each ``--quick`` run writes its results file
(every method, finite numbers, targets with margins, data credits) and its figure. Without the
shared data or the face / chest priors they run on the bundled stand-ins (a 64x64 face, one TCIA
chest slice) and shipped priors; the numbers themselves are not checked."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffinv import priors

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
BUNDLED = ROOT / "src" / "diffinv" / "assets" / "images"
SHARED = ROOT.parent / "shared" / "data"
FACES = (
    SHARED / "faces" if (SHARED / "faces" / "celeba_identity.txt").is_file() else BUNDLED / "face_189080.png"
)
TCIA = SHARED / "ct" / "dev" / "tcia_hu"
TCIA = TCIA if TCIA.is_dir() else BUNDLED / "ct_chest_tcia_hu1024_256.png"
SHIPPED = priors.shipped_priors()
FACE_PRIOR = "faces-64" if "faces-64" in SHIPPED else "natural-64"
CHEST_PRIOR = "ct-chest-64" if "ct-chest-64" in SHIPPED else "ct-ellipses-64"
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?(?![\w./])|\bnan\b|\binf\b", re.I)
TARGET = re.compile(r"margin [-+]\d+\.\d+( dB)? \(need .*\): \*\*(met|missed)\*\*")


def run(script: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert (proc.returncode == 0) == ok, f"{script}: rc {proc.returncode}\n{proc.stderr[-4000:]}"
    return proc


def section(text: str, title: str) -> str:
    return text.split(f"### {title}\n", 1)[1].split("\n#", 1)[0]


def check_rows(text: str, title: str, methods) -> None:
    """Each method has one row under ``### title`` and only finite numbers in it."""
    for m in methods:
        rows = [line for line in section(text, title).splitlines() if line.startswith(f"| {m} |")]
        assert len(rows) == 1, f"{m} missing under {title}"
        values = [float(v) for v in NUMBER.findall(rows[0].split("|", 2)[2])]
        assert len(values) >= 6 and all(math.isfinite(v) for v in values), rows[0]


def check_files(md: Path, png: Path, script: str) -> str:
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert f"- command: `python benchmarks/{script} --quick" in text
    assert "- git commit:" in text and "- machine:" in text and "- date:" in text
    return text


def test_faces_quick(tmp_path):
    run("faces.py", "--quick", "--out", str(tmp_path), "--data", str(FACES), "--prior", FACE_PRIOR)
    text = check_files(tmp_path / "faces.md", tmp_path / "faces.png", "faces.py")
    diffusion = ["ddnm", "ddnm+", "ddrm", "pigdm", "dps", "mcg", "dds", "diffpir", "daps", "reddiff"]
    methods = diffusion + ["fista-tv", "pinv"]
    for title in (
        "sr4",
        "sr8",
        "inpaint-box",
        "inpaint-random0.5",
        "colorize",
        "deblur-gauss",
        "sr4 σ_y=0.05",
    ):
        check_rows(text, title, methods + (["bicubic"] if title.startswith("sr") else []))
    assert "rows 20-33 x cols 12-51 and rows 38-49 x cols 20-43" in text  # the eyes / mouth boxes
    if FACES.is_dir() or FACE_PRIOR == "faces-64":  # CelebA data, or the prior trained on it
        assert "non-commercial research only" in text
    targets = text.split("## Targets", 1)[1]
    assert len(TARGET.findall(targets)) == 2 + len(diffusion)  # sr4 PSNR + LPIPS, inpaint-box per method


def test_ct_real_quick(tmp_path):
    run("ct_real.py", "--quick", "--out", str(tmp_path), "--data", str(TCIA), "--prior", CHEST_PRIOR)
    text = check_files(tmp_path / "ct_real.md", tmp_path / "ct_real.png", "ct_real.py")
    methods = ["fbp", "fista-tv"] + [
        f"{m}/{p}" for p in ("chest", "ellipses") for m in ("ddnm", "mcg", "score-proj")
    ]
    for views in (8, 18):
        check_rows(text, f"{views} views", methods)
    assert "soft-tissue window (centre 40 HU, width 400 HU)" in text and "credit TCIA" in text
    targets = text.split("## Targets", 1)[1]
    assert len(TARGET.findall(targets)) == 2 * 3  # per view count: vs FISTA-TV, vs FBP, chest vs ellipses


def test_faces_missing_data(tmp_path):
    proc = run("faces.py", "--quick", "--out", str(tmp_path), "--data", str(tmp_path / "nope"), ok=False)
    assert "not found" in proc.stderr and "celeba" in proc.stderr
    assert not (tmp_path / "faces.md").exists()


def test_ct_real_missing_prior(tmp_path):
    args = ("--quick", "--out", str(tmp_path), "--data", str(BUNDLED / "ct_chest_tcia_hu1024_256.png"))
    proc = run("ct_real.py", *args, "--prior", CHEST_PRIOR, "--prior-wrong", "/no/such/prior", ok=False)
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --prior-wrong /no/such/prior:")
    assert not (tmp_path / "ct_real.md").exists()


def test_face_box_mask():
    from faces import face_box_mask

    mask = face_box_mask()
    assert mask.shape == (1, 64, 64) and int((mask == 0).sum()) == 14 * 40 + 12 * 24
    assert mask[0, 27, 20] == 0 and mask[0, 44, 32] == 0  # an eye, the mouth
    assert mask[0, 36, 32] == 1 and mask[0, 5, 5] == 1  # the nose tip between the boxes, the hair


def slice_folder(tmp_path: Path, counts: dict[str, int]) -> Path:
    """An empty ``slices/`` folder of ``<patient>_<i>.png`` files and its manifest, ``counts[p]`` per patient."""
    folder = tmp_path / "slices"
    folder.mkdir()
    rows = ["file,patient,source_repo"]
    for patient, count in counts.items():
        for i in range(count):
            (folder / f"{patient}_{i:03d}.png").touch()
            rows.append(f"{patient}_{i:03d}.png,{patient},x")
    (tmp_path / "slices_manifest.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_ct_real_slice_selection_and_window(tmp_path):
    from ct_real import load_slices, pick_files

    from diffinv.data.io import load_image
    from diffinv.data.medical import parse_window

    folder = slice_folder(tmp_path, {"a": 9, "b": 2, "c": 6})
    stems = [f.stem for f in pick_files(folder, 9)]
    assert stems == ["a_001", "a_004", "a_007", "b_000", "b_001", "c_001", "c_003", "c_005"]  # b has 2
    assert [f.stem for f in pick_files(folder, 1)] == ["c_003"]

    # The bundled slice, windowed and box-averaged, matches its bundled 8-bit 64x64 rendering.
    x = load_slices([BUNDLED / "ct_chest_tcia_hu1024_256.png"], parse_window("soft-tissue"))
    ref = load_image(BUNDLED / "ct_chest_tcia_64.png", channels=1)
    assert x.shape == (1, 1, 64, 64) and float((x - ref).abs().max()) < 1.5 / 255
    assert torch.all((x >= 0) & (x <= 1))


def test_prior_quality_quick_on_a_named_prior(tmp_path):
    """prior_quality.py --prior NAME: the Tweedie-vs-Wiener table for one prior, finite numbers."""
    run("prior_quality.py", "--quick", "--prior", "ct-ellipses-64", "--out", str(tmp_path))
    text = (tmp_path / "prior_quality.md").read_text()
    assert "## ct-ellipses-64" in text and "## natural-64" not in text
    rows = [line for line in text.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 5
    values = [float(v) for line in rows for v in NUMBER.findall(line)]
    assert values and all(math.isfinite(v) and v >= 0 for v in values)
    assert (tmp_path / "prior_quality_ct-ellipses-64.png").is_file()


def test_ct_real_settings_option():
    """--settings SPEC[@g<sigma>|@p<I0>]: geometries and noise models, checked before any work."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ct_real import label, parse_args

    args = parse_args(["--settings", "ct18-fan,ct18@p1e4,ct8@g0.01,ct8@g0", "--prior-wrong", "none"])
    assert args.settings == [
        ("ct18-fan", "none", 0.0),
        ("ct18", "poisson", 1e4),
        ("ct8", "gauss", 0.01),
        ("ct8", "none", 0.0),
    ]
    assert args.priors == ("chest",)
    assert [label(s) for s in args.settings[:3]] == [
        "ct18-fan",
        "18 views, Poisson I0=1e4",
        "8 views, σ=0.01",
    ]
    for bad in ("ct8@x1", "ct8@p0", "ct8-bogus"):
        with pytest.raises(SystemExit):
            parse_args(["--settings", bad])


def test_solver_run_posterior_mean_of_samples():
    """``samples=K``: the output is the mean of K clamped samples drawn in one call on y repeated
    image-major; a deterministic method's mean of K is its one output (clamped)."""
    from common import solver_run

    from diffinv import pipeline
    from diffinv.operators import from_spec

    prior = priors.load(CHEST_PRIOR)
    op = from_spec("ct8", (1, 64, 64))
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    y = op.A(x)
    mean, _, _, _ = solver_run("dds", prior, 2, samples=3)(y, op, 0.0, 5)
    solver = pipeline.make_solver("dds", prior, 2)
    rows = solver(y.repeat_interleave(3, 0), op, sigma_y=0.0, generator=torch.Generator().manual_seed(5))
    expected = rows.clamp(0, 1).reshape(2, 3, 1, 64, 64).mean(1)
    assert mean.shape == x.shape
    torch.testing.assert_close(mean, expected, rtol=0, atol=1e-5)
    assert (rows[0::3] - rows[1::3]).abs().max() > 1e-3  # the K samples differ: the mean is not one of them
    one, _, _, _ = solver_run("fista-tv", steps=5)(y, op, 0.0, 0)
    mean_tv, _, _, _ = solver_run("fista-tv", steps=5, samples=3)(y, op, 0.0, 0)
    torch.testing.assert_close(mean_tv, one.clamp(0, 1), rtol=0, atol=1e-5)


def test_solver_run_reports_the_steps_used_on_the_operator():
    """With ``steps=None`` the reported steps are those the call used: the operator family's
    defaults (CT: 200 steps each), not the solver's generic ones (50, 100)."""
    from common import solver_run

    from diffinv.operators import from_spec
    from diffinv.solvers import get

    prior = priors.load(CHEST_PRIOR)
    op = from_spec("ct8", (1, 64, 64))
    y = op.A(torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(2)))
    for method in ("dds", "ddnm"):
        ct_steps = get(method, prior).effective_params(op)["steps"]
        assert ct_steps != get(method, prior).params["steps"]  # the family default differs
        *_, used = solver_run(method, prior, None, samples=1)(y, op, 0.0, 0)
        assert used == ct_steps


def test_ct_real_all_noisy_settings_still_write_a_figure(tmp_path):
    """With no noiseless setting the figure shows the first (noisy) one and says so."""
    data = str(BUNDLED / "ct_chest_tcia_hu1024_256.png")
    args = (
        "--quick",
        "--out",
        str(tmp_path),
        "--data",
        data,
        "--prior",
        CHEST_PRIOR,
        "--prior-wrong",
        "none",
    )
    run("ct_real.py", *args, "--settings", "ct8@p1e4", "--methods", "ddnm")
    text = check_files(tmp_path / "ct_real.md", tmp_path / "ct_real.png", "ct_real.py")
    assert "(slices ct_chest_tcia_hu1024_256, 8 views, Poisson I0=1e4)" in text


def test_ct_real_means_only(tmp_path):
    """--samples K --means-only: the posterior-mean rows replace the single-sample rows."""
    args = ("--quick", "--out", str(tmp_path), "--data", str(TCIA), "--prior", CHEST_PRIOR)
    args += ("--prior-wrong", "none")
    run("ct_real.py", *args, "--methods", "ddnm", "--samples", "2", "--means-only", "--views", "8")
    table = section((tmp_path / "ct_real.md").read_text(), "8 views")
    assert "| ddnm-mean2/chest |" in table and "| ddnm/chest |" not in table
    proc = run("ct_real.py", *args, "--methods", "ddnm", "--means-only", ok=False)
    assert "--means-only needs --samples >= 2" in proc.stderr


def test_ct_tune_slices_are_outside_ct_real(tmp_path):
    from ct_real import pick_files
    from ct_tune import tuning_files

    folder = slice_folder(tmp_path, {"a": 30, "b": 3, "c": 20})
    tuning = tuning_files(folder, 8)
    scored = set(pick_files(folder, 16)) | set(pick_files(folder, 24))
    assert not set(tuning) & scored
    assert [f.stem[0] for f in tuning] == ["a", "c"]  # one per patient; all of b's slices are scored
    assert [f.stem for f in tuning_files(folder, 1)] == [tuning[0].stem]


def test_ct_tune_quick(tmp_path):
    args = ("--quick", "--out", str(tmp_path), "--data", str(TCIA), "--prior", CHEST_PRIOR)
    run("ct_tune.py", *args, "--method", "dds", "--variant", "gamma=3")
    text = (tmp_path / "ct_tune.md").read_text()
    assert "- command: `python benchmarks/ct_tune.py --quick" in text
    for name in ("fbp", "fista-tv", "dds (defaults)", "dds gamma=3"):
        row = [line for line in text.splitlines() if line.startswith(f"| {name} |")]
        values = [float(v) for v in NUMBER.findall(row[0].split("|", 2)[2])]
        assert len(values) >= 3 and all(math.isfinite(v) for v in values), row
    bad = ("--quick", "--out", str(tmp_path / "bad"), "--data", str(TCIA), "--prior", CHEST_PRIOR)
    proc = run("ct_tune.py", *bad, "--method", "dds", "--variant", "gama=3", ok=False)
    assert "unknown parameter(s) ['gama']" in proc.stderr and not (tmp_path / "bad").exists()
    proc = run("ct_tune.py", *bad, "--method", "dds", "--no-defaults", ok=False)
    assert "--no-defaults needs at least one --variant" in proc.stderr and not (tmp_path / "bad").exists()
    only = ("--quick", "--out", str(tmp_path / "only"), "--data", str(TCIA), "--prior", CHEST_PRIOR)
    only += ("--method", "dds", "--no-defaults", "--resume", str(tmp_path / "keep"))
    run("ct_tune.py", *only, "--variant", "data_tv=0.1,steps=3")
    rows = [line.split(" |")[0] for line in (tmp_path / "only" / "ct_tune.md").read_text().splitlines()]
    assert "| dds data_tv=0.1,steps=3" in rows and "| dds (defaults)" not in rows and "| fista-tv" in rows
    # --resume: a rerun with one more variant reads the three finished rows back and runs the new one
    proc = run("ct_tune.py", *only, "--variant", "data_tv=0.1,steps=3", "--variant", "gamma=3")
    assert proc.stderr.count("read back from") == 3 and "| dds gamma=3 |" in proc.stdout


def test_ct_real_param_option(tmp_path):
    """--param METHOD:KEY=VALUE reaches the solver and the report; bad ones fail before any work."""
    args = ("--quick", "--out", str(tmp_path), "--data", str(TCIA), "--prior", CHEST_PRIOR)
    args += ("--prior-wrong", "none", "--methods", "dds", "--views", "8")
    run("ct_real.py", *args, "--param", "dds:gamma=10")
    assert "; dds: gamma = 10 (`--param`)" in (tmp_path / "ct_real.md").read_text()
    for bad, message in (
        ("mcg:gamma=1", "METHOD one of --methods"),
        ("dds:gama=1", "unknown parameter(s) ['gama']"),
    ):
        proc = run("ct_real.py", *args, "--param", bad, ok=False)
        assert message in proc.stderr


def test_key_values_parse_as_the_cli_param_and_name_their_option(capsys):
    """``common.key_values`` (``--variant`` / ``--param`` items) parses as the CLI's ``--param``
    and ends a malformed item with one line naming the option."""
    import argparse

    from common import key_values

    ap = argparse.ArgumentParser(prog="bench")
    assert key_values(ap, "gamma=10, data_tv=0.2,stop=true,g=None,name=x", "--variant") == {
        "gamma": 10,
        "data_tv": 0.2,
        "stop": True,
        "g": None,
        "name": "x",
    }
    with pytest.raises(SystemExit):
        key_values(ap, "gamma=10,gama3", "--variant")
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "bench: error: --variant expects KEY=VALUE, got 'gama3'"


def test_ct_real_resume_reads_back_finished_batches_and_refuses_other_arguments(tmp_path):
    """--resume DIR: a rerun reads every finished batch back (same table), a batch that is missing
    (a run cut before it ended) is run again, and other arguments on the same DIR are refused."""
    keep = tmp_path / "keep"
    args = ("--quick", "--data", str(TCIA), "--prior", CHEST_PRIOR, "--prior-wrong", "none")
    args += ("--methods", "ddnm", "--views", "8", "--batch", "1", "--resume", str(keep))

    def table(out):
        return [
            [float(v) for v in NUMBER.findall(line.split("|", 2)[2])]
            for line in section((out / "ct_real.md").read_text(), "8 views").splitlines()
            if line.startswith(("| fbp |", "| fista-tv |", "| ddnm/chest |"))
        ]

    run("ct_real.py", *args, "--out", str(tmp_path / "a"))
    stored = sorted(keep.rglob("batch-*.pt"))
    n_slices = 1 if TCIA.is_file() else 2
    assert len(stored) == 3 * n_slices  # fbp, fista-tv, ddnm: one batch per slice
    proc = run("ct_real.py", *args, "--out", str(tmp_path / "b"))
    assert proc.stderr.count("read back from") == 3
    assert table(tmp_path / "b") == table(tmp_path / "a")  # the stored outputs, not a second computation

    cut = next(p for p in stored if "ddnm" in p.parent.name)
    cut.unlink()
    proc = run("ct_real.py", *args, "--out", str(tmp_path / "c"))
    assert cut.is_file() and proc.stderr.count("read back from") == 2 + (n_slices > 1)
    rows_a, rows_c = table(tmp_path / "a"), table(tmp_path / "c")
    assert all(abs(u - v) <= 0.011 for ra, rc in zip(rows_a, rows_c) for u, v in zip(ra[:1], rc[:1]))

    proc = run("ct_real.py", *args, "--out", str(tmp_path / "d"), "--seed", "1", ok=False)
    assert "holds a run with other arguments (seed); use a new folder" in proc.stderr
    assert not (tmp_path / "d").exists()


def test_ct_real_pool_averages_the_stored_means_of_runs_under_other_seeds(tmp_path, capsys):
    """--pool DIR: the pooled row ``ddnm-mean4`` is the mean of the two runs' stored means of 2
    (seeds 0 and 1), scored against the same slices; pooling a run of the same seed, a run with
    other arguments, a folder that is no store, or without --resume is refused with one line."""
    import ct_real

    from diffinv import metrics

    base = ("--quick", "--data", str(TCIA), "--prior", CHEST_PRIOR, "--prior-wrong", "none", "--views", "8")
    base += ("--methods", "ddnm", "--samples", "2", "--means-only", "--batch", "1")
    keep0, keep1 = tmp_path / "keep0", tmp_path / "keep1"
    run("ct_real.py", *base, "--resume", str(keep1), "--seed", "1", "--out", str(tmp_path / "s1"))
    run("ct_real.py", *base, "--resume", str(keep0), "--pool", str(keep1), "--out", str(tmp_path / "p"))
    rows = section((tmp_path / "p" / "ct_real.md").read_text(), "8 views").splitlines()
    cells = [line.split("|") for line in rows if "±" in line]
    psnr = {c[1].strip(): float(c[3].split("±")[0]) for c in cells}

    files = ct_real.pick_files(TCIA, 2)
    x = ct_real.load_slices(files, ct_real.parse_window(ct_real.WINDOW))
    means = []
    for keep in (keep0, keep1):
        batches = sorted((keep / "8_views" / "ddnm-mean2_chest").glob("batch-*.pt"), key=lambda p: p.name)
        means.append(torch.cat([torch.load(p, weights_only=True)["x"] for p in batches]))
    assert (means[0] - means[1]).abs().max() > 1e-3  # two seeds: two different draws
    expect = [metrics.psnr(m.clamp(0, 1), x).mean().item() for m in (means[0], (means[0] + means[1]) / 2)]
    assert psnr["ddnm-mean2/chest"] == pytest.approx(expect[0], abs=0.006)
    assert psnr["ddnm-mean4/chest"] == pytest.approx(expect[1], abs=0.006)

    # --project N adds a row <row>+proj beside every row, read from the same stores (not part of the
    # run's identity): the pooled mean projected onto {A x = y} and [0, 1], recomputed here, and no
    # row loses PSNR by it (every round comes closer to the true slice, which is in that set)
    from diffinv.operators import from_spec, project_feasible

    run(
        "ct_real.py",
        *base,
        "--resume",
        str(keep0),
        "--pool",
        str(keep1),
        "--project",
        "20",
        "--tv-variant",
        "lam=0.01,iters=5",
        "--out",
        str(tmp_path / "j"),
    )
    # a --tv-variant row (FISTA-TV with other hyperparameters) joins the same store under its own name
    assert (keep0 / "8_views" / "fista-tv_lam_0.01_iters_5").is_dir()
    rows = section((tmp_path / "j" / "ct_real.md").read_text(), "8 views").splitlines()
    projected = {
        c[1].strip(): float(c[3].split("±")[0]) for c in (line.split("|") for line in rows if "±" in line)
    }
    assert math.isfinite(projected["fista-tv lam=0.01,iters=5"])
    assert projected["fista-tv lam=0.01,iters=5+proj"] >= projected["fista-tv lam=0.01,iters=5"] - 0.006
    for name in ("fbp", "fista-tv", "ddnm-mean2/chest", "ddnm-mean4/chest"):
        method, slash, prior = name.partition("/")
        assert projected[name] == pytest.approx(psnr[name], abs=0.006)
        assert projected[f"{method}+proj{slash}{prior}"] >= projected[name] - 0.006, name
    op = from_spec("ct8", (1, 64, 64))
    pooled = ((means[0].clamp(0, 1) + means[1].clamp(0, 1)) / 2).double()
    expect = metrics.psnr(project_feasible(op, pooled, op.A(x.double()), iters=20).float(), x).mean().item()
    assert projected["ddnm-mean4+proj/chest"] == pytest.approx(expect, abs=0.006)

    # refusals, in-process (each ends before any solver runs): a store of other arguments is keep1
    # with its recorded steps changed
    other = tmp_path / "other"
    shutil.copytree(keep1, other)
    record = json.loads((other / "run.json").read_text())
    record["identity"]["steps"] = 1
    (other / "run.json").write_text(json.dumps(record))
    threads = torch.get_num_threads()  # ct_real sets its own thread count
    try:
        for extra, message in (
            (
                ("--resume", str(keep0), "--pool", str(keep0)),
                "the pooled runs must have distinct seeds, got [0, 0]",
            ),
            (("--resume", str(keep0), "--pool", str(other)), "holds a run with other arguments (steps)"),
            (("--resume", str(keep0), "--pool", str(tmp_path / "s1")), "holds no run.json"),
            (("--pool", str(keep1)), "--pool needs --resume"),
            (("--tv-variant", "lamda=1"), "--tv-variant: unknown parameter"),
            (
                ("--project", "5", "--settings", "ct8@g0.01"),
                "--project needs N >= 1 and noiseless settings only",
            ),
            (("--resume", str(tmp_path / "new"), "--pool", str(other)), "holds a run with other arguments"),
        ):
            with pytest.raises(SystemExit) as stop:
                ct_real.main([*base, *extra, "--out", str(tmp_path / "bad")])
            said = str(stop.value.code) if stop.value.code != 2 else capsys.readouterr().err
            assert message in said.strip().splitlines()[-1]
            assert not (tmp_path / "bad").exists()
            assert not (tmp_path / "new").exists()  # a refused --pool opens no new --resume store
    finally:
        torch.set_num_threads(threads)
