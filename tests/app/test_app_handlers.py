"""The web app's handlers without a browser or a server (diffinv.app: options, jobs, inputs, handlers).

Every job runs the real library (restore_files with a shipped prior) at 2 steps: seconds in all.
"""

from __future__ import annotations

import json
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffinv.app import handlers, inputs, options
from diffinv.app.handlers import AppState, JobRequest, run_job
from diffinv.app.jobs import JobCancelled, JobQueue, QueueFull, Sessions

IMAGES = Path(options.IMAGES)
FACE = IMAGES / "face_189080.png"
CT_HU = "CT slice (HU + 1024, 16-bit PNG, 256x256)"


@pytest.fixture
def app(tmp_path):
    return AppState(tmp_path / "root", max_waiting=2)


@pytest.fixture
def session(app):
    return app.sessions.get("test-session")


def _req(**kw) -> JobRequest:
    base = dict(input_file=str(FACE), task="sr4", prior="faces-64", method="ddnm", steps=2)
    return JobRequest(**{**base, **kw})


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height but holds no pixels: a decompression bomb's size, 57 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------------------------ options
def test_methods_and_priors_offered_fit_the_task():
    assert "ddrm" in options.fitting_methods("sr4")
    assert "ddrm" not in options.fitting_methods("ct18")  # no SVD for CT
    assert "ddrm" not in options.fitting_methods("colorize+sr4")  # nor for compositions
    assert {"pinv", "fista-tv", "ddnm", "mcg", "dps"} <= set(options.fitting_methods("ct18"))
    priors = options.shipped_priors()
    assert set(priors) == {"ct-chest-64", "ct-ellipses-64", "faces-64", "natural-64"}
    assert set(options.fitting_priors("ct18", priors)) == {"ct-chest-64", "ct-ellipses-64"}
    assert set(options.fitting_priors("colorize", priors)) == {"faces-64", "natural-64"}
    assert set(options.fitting_priors("sr4", priors)) == set(priors)
    assert options.default_prior_for("ct30", priors) == "ct-ellipses-64"
    assert options.default_prior_for("sr4", priors) == "natural-64"


def test_task_with_a_mask():
    assert options.task_label("sr4", has_mask=False) == "sr4"
    assert options.task_label("inpaint-mask", has_mask=True) is None
    assert options.task_label("inpaint-box", has_mask=True) is None
    with pytest.raises(ValueError, match="needs a mask"):
        options.task_label("inpaint-mask", has_mask=False)
    with pytest.raises(ValueError, match="a mask means inpainting"):
        options.task_label("sr4", has_mask=True)


# ------------------------------------------------------------------------------------ jobs
def test_queue_runs_one_job_at_a_time_and_refuses_beyond_its_bound():
    q = JobQueue(max_waiting=1)
    order, started, release = [], threading.Event(), threading.Event()

    def first():
        with q.slot("cpu"):
            order.append("first")
            started.set()
            release.wait(5)

    def second():
        with q.slot("cpu"):
            order.append("second")

    t1 = threading.Thread(target=first)
    t1.start()
    started.wait(5)
    t2 = threading.Thread(target=second)
    t2.start()
    for _ in range(100):
        if q.waiting("cpu") == 1:
            break
        time.sleep(0.01)
    assert q.waiting("cpu") == 1 and q.busy("cpu")
    with pytest.raises(QueueFull, match="queue full"):
        with q.slot("cpu"):
            pass
    with q.slot("cuda:1"):  # another device has its own slot
        pass
    release.set()
    t1.join(5)
    t2.join(5)
    assert order == ["first", "second"] and not q.busy("cpu") and q.waiting("cpu") == 0


def test_a_waiting_job_can_be_cancelled():
    q = JobQueue(max_waiting=2)
    cancel, seen = threading.Event(), []
    with q.slot("cpu"):
        threading.Timer(0.2, cancel.set).start()
        with pytest.raises(JobCancelled):
            with q.slot("cpu", on_wait=seen.append, cancelled=cancel):
                pass
    assert seen and seen[0] == 1  # one job ahead
    assert q.waiting("cpu") == 0 and not q.busy("cpu")


def test_sessions_folders_are_made_on_use_and_removed_on_close(tmp_path):
    sessions = Sessions(tmp_path / "s", idle_seconds=0.0)
    s = sessions.get("../../etc")  # a hostile id cannot leave the root
    assert s.folder.parent == tmp_path / "s"
    job = s.new_job_dir()
    (job / "x.png").write_bytes(b"x")
    with sessions.running(s):
        sessions.close("../../etc")
        assert job.exists() and s.cancel.is_set()  # the running job keeps its folder ...
    assert not s.folder.exists()  # ... until it ends
    other = sessions.get("other")
    other.new_job_dir()
    time.sleep(0.01)
    assert sessions.sweep() == ["other"] and not other.folder.exists()
    assert sessions.open_count() == 0


# ------------------------------------------------------------------------------------ jobs end to end
def test_run_job_restores_and_offers_the_downloads(app, session, tmp_path):
    progress = []
    r = run_job(app, session, _req(), lambda f, text: progress.append((f, text)))
    assert r.ok, r.status
    assert r.status.startswith("done: sr4 with ddnm")
    assert Path(r.measurement).is_file() and Path(r.restoration).is_file() and r.uncertainty is None
    assert "PSNR" in r.metrics and "SSIM" in r.metrics and "LPIPS" in r.metrics and "NFE 2" in r.metrics
    names = {Path(p).name for p in r.downloads}
    assert {"face_189080_sr4_ddnm.png", "face_189080_sr4_ddnm.json", "face_189080_sr4_ddnm.npy"} <= names
    assert {"config.json", "face_189080.png"} <= names
    assert all(Path(p).resolve().is_relative_to(app.root.resolve()) for p in r.downloads)
    fractions = [f for f, _ in progress if f]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("step 2 of about 2" in text for _, text in progress)
    record = json.loads(Path(next(p for p in r.downloads if p.endswith("_ddnm.json"))).read_text())
    assert record == r.record and record["steps"] == 2 and record["model"] == "faces-64"
    x = np.load(next(p for p in r.downloads if p.endswith(".npy")))
    assert x.shape == (3, 64, 64) and x.dtype == np.float32

    # the downloads replay with `diffinv restore --config` (from the folder they were saved to)
    from diffinv.cli import main

    here = tmp_path / "downloads"
    here.mkdir()
    for p in r.downloads:
        (here / Path(p).name).write_bytes(Path(p).read_bytes())
    import os

    cwd = os.getcwd()
    try:
        os.chdir(here)
        assert main(["restore", "--config", "config.json", "--quiet"]) == 0
    finally:
        os.chdir(cwd)
    assert (here / "out/restore/face_189080_sr4_ddnm.png").read_bytes() == (
        here / "face_189080_sr4_ddnm.png"
    ).read_bytes()


def test_samples_give_an_uncertainty_map(app, session):
    r = run_job(app, session, _req(samples=2, steps=2))
    assert r.ok, r.status
    assert Path(r.uncertainty).is_file()
    assert "mean of 2" in r.metrics and "one sample" in r.metrics
    assert any(p.endswith("_std.npy") for p in r.downloads)


def test_measured_mode_has_no_ground_truth(app, session, tmp_path):
    small = tmp_path / "small.png"
    Image.open(FACE).resize((16, 16)).save(small)
    r = run_job(app, session, _req(input_file=str(small), mode="measured", prior="natural-64"))
    assert r.ok, r.status
    assert "PSNR" not in r.metrics and "consistency" in r.metrics
    assert r.record["image_shape"] == [3, 64, 64] and r.record["measured"] is True


def test_painted_mask_inpaints(app, session):
    layer = np.zeros((256, 256, 4), np.uint8)  # painted over the preview, shown 4x larger
    layer[80:160, 40:200] = (255, 0, 0, 255)
    r = run_job(app, session, _req(task="inpaint-mask", brush={"background": None, "layers": [layer]}))
    assert r.ok, r.status
    assert r.record["task"] == "inpaint-mask"
    mask = np.asarray(Image.open(next(p for p in r.downloads if Path(p).name == "mask.png")))
    assert mask.shape == (64, 64) and (mask[20:40, 10:50] == 0).all() and mask[0, 0] == 255


def test_ct_examples(app, session):
    r = run_job(
        app,
        session,
        JobRequest(
            example=CT_HU,
            task="ct18",
            prior="ct-chest-64",
            method="ddnm",
            steps=2,
            window="soft-tissue",
            hu_offset=1024,
            resize=True,
        ),
    )
    assert r.ok, r.status
    assert r.record["resized_from"] == [256, 256] and r.record["window"]["name"] == "soft-tissue"
    hu = np.load(r.record["output_npy"])
    assert hu.shape == (64, 64) and -161 <= hu.min() and hu.max() <= 241  # HU inside the window
    r = run_job(app, session, JobRequest(example="phantom (Shepp-Logan, 64x64)", task="ct30", method="pinv"))
    assert r.ok, r.status
    assert r.record["model"] is None and "PSNR" in r.metrics


def test_projection_rounds_fit_the_measurement_and_are_recorded(app, session):
    """'projection rounds' N: the FBP of the phantom projected onto {A x = y} and [0, 1] fits the
    sinogram far better and scores higher than the plain FBP; noise or too many rounds are refused."""
    phantom = dict(example="phantom (Shepp-Logan, 64x64)", task="ct30", method="pinv")
    plain = run_job(app, session, JobRequest(**phantom))
    projected = run_job(app, session, JobRequest(**phantom, project=300))
    assert plain.ok and projected.ok, (plain.status, projected.status)
    assert projected.record["project"] == 300 and "project" not in plain.record
    fit = {k: r.record["metrics"]["consistency"] for k, r in (("plain", plain), ("proj", projected))}
    assert fit["proj"] < 0.2 * fit["plain"], fit
    assert projected.record["metrics"]["psnr"] > plain.record["metrics"]["psnr"] + 1.0
    noisy = run_job(app, session, JobRequest(**phantom, project=10, sigma_y=0.01))
    assert not noisy.ok and "noiseless" in noisy.status and "\n" not in noisy.status
    many = run_job(app, session, JobRequest(**phantom, project=10**6))
    assert not many.ok and "projection rounds must be in [0, 5000]" in many.status


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "name, content, message",
    [
        ("notes.txt", b"hello", "notes.txt: not a supported file type"),
        ("fake.png", b"this is text, not a PNG", "fake.png is not an image"),
        (
            "huge.png",
            _png_header(20000, 10000),
            "huge.png (200 megapixels) is over the app's 16-megapixel limit",
        ),
        (
            "big.png",
            _png_header(5000, 4000),
            "big.png: 5000x4000 (20 megapixels) is over the app's 16-megapixel",
        ),
        ("empty.png", b"", "the file is empty"),
    ],
)
def test_bad_uploads_are_one_line_refusals(app, session, tmp_path, name, content, message):
    f = tmp_path / name
    f.write_bytes(content)
    r = run_job(app, session, _req(input_file=str(f)))
    assert not r.ok and r.status.startswith("error: ") and message in r.status, r.status
    assert "\n" not in r.status and str(tmp_path) not in r.status
    path, status = handlers.preview(app, session, _req(input_file=str(f)))
    assert path is None and message in status


def test_nan_wrong_mask_size_and_size_caps(app, session, tmp_path, monkeypatch):
    nan = tmp_path / "nan.npy"
    a = np.full((64, 64, 3), 0.5, np.float32)
    a[3, 3, 0] = np.nan
    np.save(nan, a)
    r = run_job(app, session, _req(input_file=str(nan)))
    assert not r.ok and "NaN" in r.status, r.status
    mask = tmp_path / "mask.png"
    Image.new("L", (32, 32), 255).save(mask)
    r = run_job(app, session, _req(task="inpaint-mask", mask_file=str(mask)))
    assert not r.ok and "size 32x32" in r.status and "expected 64x64" in r.status, r.status
    big = tmp_path / "big.png"
    Image.new("RGB", (768, 512)).save(big)
    r = run_job(app, session, _req(input_file=str(big)))
    assert not r.ok and "over the app's 512x512 limit" in r.status, r.status
    monkeypatch.setattr(options, "MAX_UPLOAD_BYTES", 1000)
    r = run_job(app, session, _req())
    assert not r.ok and "MB limit" in r.status, r.status
    r = run_job(app, session, _req(input_file=None, example=None))
    assert not r.ok and "upload an image" in r.status


def test_settings_that_do_not_fit_are_refused(app, session):
    r = run_job(app, session, _req(task="ct18", method="ddrm"))
    assert not r.ok and "does not fit task ct18" in r.status
    r = run_job(app, session, _req(task="ct18", method="ddnm", prior="faces-64"))
    assert not r.ok and "prior 'faces-64' does not fit task ct18" in r.status
    r = run_job(app, session, _req(samples=100))
    assert not r.ok and "samples must be in [1, 8]" in r.status
    r = run_job(app, session, _req(window="nonsense"))
    assert not r.ok and "unknown window" in r.status
    r = run_job(app, session, _req(task="sr3"))  # 64 is not divisible by 3: the library says so
    assert not r.ok and r.status.startswith("error:") and "divisible" in r.status, r.status


# ------------------------------------------------------------------------------------ failures
def test_a_job_that_raises_leaves_the_app_serving(app, session, monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(handlers, "_restore", boom)
    r = run_job(app, session, _req())
    assert not r.ok and r.status == "internal error: RuntimeError: boom"
    assert "Traceback" in capsys.readouterr().err
    assert not app.queue.busy("cpu") and session.active_jobs == 0
    monkeypatch.undo()
    assert run_job(app, session, _req()).ok


def test_cancel_stops_the_job_and_removes_its_files(app, session):
    def report(fraction, text):
        if text.startswith("step"):
            session.cancel.set()  # the user presses Cancel during the first step

    r = run_job(app, session, _req(steps=50), report)
    assert not r.ok and r.status == "stopped: cancelled"
    assert not list(session.folder.glob("job-*/out/*.png"))  # restore_files removed its outputs
    assert not app.queue.busy("cpu")
    assert run_job(app, session, _req()).ok  # the next job is not cancelled


def test_queue_full_answers_at_once(app, session):
    app.queue = JobQueue(max_waiting=0)
    with app.queue.slot(app.device):  # another job holds the device
        t = time.monotonic()
        r = run_job(app, session, _req())
    assert not r.ok and r.status.startswith("queue full") and time.monotonic() - t < 5


def test_preview_of_an_example_and_session_cleanup(app, session):
    path, status = handlers.preview(
        app, session, JobRequest(example=CT_HU, window="soft-tissue", hu_offset=1024)
    )
    assert Path(path).is_file() and status == "input: ct_chest_tcia_hu1024_256.png, 256x256"
    assert Image.open(path).size == (256, 256)
    path, status = handlers.preview(app, session, _req())
    assert Image.open(path).size == (256, 256) and status == "input: face_189080.png, 64x64"  # shown larger
    assert run_job(app, session, _req()).ok
    app.sessions.close(session.sid)
    assert not session.folder.exists() and not any((app.root / "sessions").iterdir())


def test_previews_fired_at_once_in_one_session_all_succeed(app, session):
    """A browser may fire the example's event twice at once (seen in CI); previews of one session run
    one at a time, each in its own folder, and only the last two folders are kept."""
    label = "face (photo, 64x64)"
    for _ in range(3):
        with ThreadPoolExecutor(6) as pool:
            answers = list(
                pool.map(lambda _: handlers.preview(app, session, JobRequest(example=label)), range(6))
            )
        assert [status for _, status in answers] == ["input: face_189080.png, 64x64"] * 6, answers
    path, _ = handlers.preview(app, session, JobRequest(example=label))
    assert Image.open(path).size == (256, 256)
    assert len(list((session.folder / "preview").iterdir())) == 2


def test_safe_names():
    assert inputs.safe_stem("../../a b?.nii.gz") == "a_b"
    assert inputs.suffix_of("X.NII.GZ") == ".nii.gz"
    assert inputs.safe_stem("???.png") == "input"


def test_serve_help_imports_neither_gradio_nor_torch(tmp_path):
    import subprocess
    import sys

    src = Path(__file__).resolve().parents[2] / "src"
    code = (
        "import sys, diffinv.cli as cli\n"
        "for argv in (['serve', '--help'],):\n"
        "    try: cli.main(argv)\n"
        "    except SystemExit: pass\n"
        "print(cli.main(['serve', '--port', '-1']), cli.main(['serve', '--queue', '-2']))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'gradio', 'numpy')))\n"
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(src)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--queue N" in proc.stdout and proc.stdout.splitlines()[-2:] == ["2 2", "[]"], proc.stdout
    assert "--port must be in [0, 65535], got -1" in proc.stderr


def test_purge_cache_removes_old_files_and_empty_folders_and_keeps_fresh_ones(tmp_path):
    from diffinv.app.server import purge_cache

    outside = tmp_path / "outside"
    (outside / "kept").mkdir(parents=True)
    (outside / "kept" / "z.png").write_bytes(b"z")
    root = tmp_path / "cache"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "x.png").write_bytes(b"x")
    (root / "a" / "y.png").write_bytes(b"y")
    (root / "empty").mkdir()
    (root / "link").symlink_to(outside / "kept", target_is_directory=True)
    assert purge_cache(root, min_age=3600) == 0  # all fresh: files and the link stay, the empty folder goes
    assert sorted(p.name for p in root.rglob("*")) == ["a", "b", "link", "x.png", "y.png"]
    assert purge_cache(root, min_age=-1) == 3  # two files and the link
    assert list(root.iterdir()) == []  # the folders emptied by this pass went in the same pass
    assert (outside / "kept" / "z.png").is_file()  # a link is removed, never followed


def test_purge_cache_skips_a_folder_deleted_between_listing_and_visit(tmp_path, monkeypatch):
    """Deterministic form of the race below: the walk lists two job folders, and when it enters the
    first one the other is deleted (as a job thread does). The old rglob walk raised
    FileNotFoundError here; the purge must skip the vanished folder and clean the rest."""
    import os
    import shutil

    from diffinv.app.server import purge_cache

    root = tmp_path / "cache"
    for job in ("job-a", "job-b"):
        (root / job / "out").mkdir(parents=True)
        (root / job / "out" / "f.png").write_bytes(b"f")
    real_scandir, deleted = os.scandir, []

    def scandir_deleting_the_sibling(path="."):
        here = Path(path) if isinstance(path, (str, os.PathLike)) else None  # rmtree passes fds
        if here is not None and here.parent == root and not deleted:  # entering the first job folder
            sibling = root / ("job-b" if here.name == "job-a" else "job-a")
            shutil.rmtree(sibling)
            deleted.append(sibling)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_deleting_the_sibling)
    removed = purge_cache(root, min_age=-1)
    monkeypatch.undo()
    assert len(deleted) == 1 and not deleted[0].exists()  # the race happened
    assert removed == 1  # the surviving job's file
    assert list(root.iterdir()) == []  # and its emptied folders


def test_purge_cache_survives_folders_deleted_while_it_walks(tmp_path):
    """The server purges while job threads delete their folders; a failed CI run showed that a walk
    over such a tree (pathlib's rglob) raises when a folder vanishes under it. The race window is
    narrow, so this need not catch the old walk (the test above does, deterministically); it checks
    that real concurrent churn raises nothing else."""
    import shutil

    from diffinv.app.server import purge_cache

    stop, errors, rounds = threading.Event(), [], [0]

    def churn():
        while not stop.is_set():
            job = tmp_path / f"job-{rounds[0] % 4}"
            try:
                (job / "out" / "deep").mkdir(parents=True, exist_ok=True)
                (job / "out" / "deep" / "f.png").write_bytes(b"f")
            except OSError:  # the purge removed a folder this had just made, still empty
                pass
            shutil.rmtree(job, ignore_errors=True)
            rounds[0] += 1

    worker = threading.Thread(target=churn)
    worker.start()
    deadline, purges = time.monotonic() + 20, 0
    try:  # purge while the folders change: at least 1000 purges over at least 200 rounds of churn
        while (rounds[0] < 200 or purges < 1000) and time.monotonic() < deadline:
            try:
                purge_cache(tmp_path, min_age=3600)
            except OSError as e:  # pragma: no cover - the failure this test guards against
                errors.append(e)
            purges += 1
    finally:
        stop.set()
        worker.join()
    assert errors == []
    assert rounds[0] >= 200  # the folders really changed all along the purges
