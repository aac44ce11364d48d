"""``diffinv serve``: start the web app and clean up after it.

Everything the app writes lives under one temporary root (``$TMPDIR/diffinv-serve-*``): Gradio's
upload and result cache (``GRADIO_TEMP_DIR``) and one folder per session. A session's folder goes
when its browser tab closes (Gradio's unload event) or after an hour idle; when the last open
session closes and no job runs, Gradio's cache is emptied too; the whole root goes when the
server stops (Ctrl+C or SIGTERM).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import options
from .handlers import AppState


def purge_cache(folder: Path, min_age: float = 2.0) -> int:
    """Delete the files under ``folder`` older than ``min_age`` seconds, and empty folders; count."""
    removed, now = 0, time.time()
    if not folder.is_dir():
        return 0
    # Bottom-up os.walk, not rglob: job threads delete folders while this runs, and rglob raises on a
    # folder that vanished mid-walk where os.walk skips it.
    for top, dirs, names in os.walk(folder, topdown=False):
        links = [d for d in dirs if Path(top, d).is_symlink()]  # a link to a folder goes like a file
        for name in names + links:
            p = Path(top, name)
            try:
                if now - p.lstat().st_ctime > min_age:
                    p.unlink()
                    removed += 1
            except OSError:
                continue
        for name in set(dirs) - set(links):
            try:
                if not any(Path(top, name).iterdir()):
                    Path(top, name).rmdir()
            except OSError:
                continue
    return removed


def make_app(
    root: str | Path,
    device: str = "cpu",
    max_waiting: int = 8,
    max_seconds: float = 900.0,
    idle_seconds: float = 3600.0,
):
    """``(AppState, Blocks)`` with Gradio's cache under ``root/gradio`` (set before Gradio is imported)."""
    root = Path(root)
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from .ui import build_ui

    app = AppState(root, device, max_waiting, max_seconds, idle_seconds)

    def soon() -> None:  # (Gradio may still be copying a last result into its cache)
        timer = threading.Timer(2.5, purge_when_idle, (app,))
        timer.daemon = True
        timer.start()

    app.sessions.on_all_closed = soon
    return app, build_ui(app)


def purge_when_idle(app: AppState) -> int:
    """Empty Gradio's cache when no session is open and no job runs; files deleted."""
    if app.sessions.open_count() or app.sessions.busy():
        return 0
    return purge_cache(app.root / "gradio")


def launch(demo, app: AppState, host: str, port: int, quiet: bool = False):
    """Start serving (in the background); returns Gradio's ``(app, local_url, share_url)``."""
    demo.queue(max_size=4 * (app.max_waiting + 2), default_concurrency_limit=1)
    return demo.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=True,
        share=False,
        inbrowser=False,
        show_error=False,
        quiet=quiet,
        ssr_mode=False,
        max_file_size=options.MAX_UPLOAD_BYTES,
        allowed_paths=[str(app.root)],
        footer_links=[],
    )


def serve(
    host: str = "127.0.0.1",
    port: int = 7860,
    device: str = "cpu",
    max_waiting: int = 8,
    threads: int | None = None,
    sweep_every: float = 60.0,
) -> int:
    """Run the app until interrupted (Ctrl+C, SIGTERM); delete its temporary files on the way out."""
    root = Path(tempfile.mkdtemp(prefix="diffinv-serve-"))
    demo = None
    previous = signal.getsignal(signal.SIGTERM)

    def stop(signum, frame):
        raise KeyboardInterrupt

    try:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, stop)
        import torch

        from .. import pipeline, posterior  # noqa: F401  (warm: the first job does not pay for imports)

        if threads is not None:
            torch.set_num_threads(threads)
        app, demo = make_app(root, device, max_waiting)
        launch(demo, app, host, port, quiet=True)
        print(
            f"diffinv serve: http://{host}:{port} (device {device}, one job at a time, up to "
            f"{max_waiting} waiting; temporary files in {root}); Ctrl+C stops",
            flush=True,
        )
        while True:
            time.sleep(sweep_every)
            app.sessions.sweep()
            purge_when_idle(app)
    except KeyboardInterrupt:
        print("diffinv serve: stopped", file=sys.stderr, flush=True)
        return 0
    finally:
        if demo is not None:
            try:
                demo.close()
            except Exception:  # closing a half-started server: nothing more to do
                pass
        shutil.rmtree(root, ignore_errors=True)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
