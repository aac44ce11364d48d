"""Jobs and sessions of the web app: one job at a time per device, a bounded queue, per-session folders.

Plain Python (threads, no Gradio), so that the rules can be tested without a server:

- :class:`JobQueue`: a job holds its device exclusively; at most ``max_waiting`` more wait for it
  (first come, first served) and the next is refused at once with :class:`QueueFull`, whose
  message says so. A waiting job can be cancelled.
- :class:`Sessions`: every browser session (Gradio's session hash) gets a folder under the app's
  temporary root, created on first use; uploads are copied there and every job writes only there.
  Closing the session (the browser tab) cancels its job and deletes the folder; sessions idle for
  longer than ``idle_seconds`` are swept the same way.
"""

from __future__ import annotations

import itertools
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import DiffinvError


class QueueFull(RuntimeError):
    """The device is busy and ``max_waiting`` jobs already wait for it."""


class JobCancelled(RuntimeError):
    """The user cancelled the job (or closed the session)."""


class JobQueue:
    """One running job per device, at most ``max_waiting`` waiting, in order of arrival."""

    def __init__(self, max_waiting: int = 8):
        if max_waiting < 0:
            raise DiffinvError(f"max_waiting must be >= 0, got {max_waiting}")
        self.max_waiting = int(max_waiting)
        self._cond = threading.Condition()
        self._busy: set[str] = set()
        self._waiting: dict[str, deque[int]] = {}
        self._tickets = itertools.count()
        self.completed = 0  # jobs that held a device and released it

    def waiting(self, device: str) -> int:
        with self._cond:
            return len(self._waiting.get(device, ()))

    def busy(self, device: str) -> bool:
        with self._cond:
            return device in self._busy

    @contextmanager
    def slot(
        self,
        device: str,
        on_wait: Callable[[int], None] | None = None,
        cancelled: threading.Event | None = None,
    ) -> Iterator[None]:
        """Hold ``device`` for the ``with`` block.

        Waits (calling ``on_wait(jobs_ahead)`` about twice a second) while another job holds it;
        raises :class:`QueueFull` at once when ``max_waiting`` jobs already wait, and
        :class:`JobCancelled` when ``cancelled`` is set while waiting.
        """
        with self._cond:
            queue = self._waiting.setdefault(device, deque())
            if device in self._busy or queue:
                if len(queue) >= self.max_waiting:
                    raise QueueFull(
                        f"queue full: a job is running on {device} and {len(queue)} more are waiting; "
                        "try again in a minute"
                    )
                ticket = next(self._tickets)
                queue.append(ticket)
                try:
                    while device in self._busy or queue[0] != ticket:
                        if cancelled is not None and cancelled.is_set():
                            raise JobCancelled("cancelled while waiting for the device")
                        if on_wait is not None:
                            ahead = queue.index(ticket) + (1 if device in self._busy else 0)
                            self._cond.release()
                            try:
                                on_wait(ahead)
                            finally:
                                self._cond.acquire()
                        self._cond.wait(0.5)
                finally:
                    queue.remove(ticket)
                    self._cond.notify_all()
            self._busy.add(device)
        try:
            yield
        finally:
            with self._cond:
                self._busy.discard(device)
                self.completed += 1
                self._cond.notify_all()


_SESSION_ID = re.compile(r"[^A-Za-z0-9_-]")


class Session:
    """One browser session: its folder, its running job's cancel flag, when it was last used."""

    def __init__(self, sid: str, folder: Path):
        self.sid, self.folder = sid, folder
        self.cancel = threading.Event()
        self.active_jobs = 0
        self.last_used = time.monotonic()
        self.closed = False
        self._jobs = itertools.count(1)
        self._previews = itertools.count(1)
        self._lock = threading.Lock()
        self._preview_lock = threading.Lock()

    def new_job_dir(self, keep: int = 1) -> Path:
        """A fresh ``job-N`` folder; older job folders beyond the newest ``keep`` are deleted when no
        other job of the session runs (one that waits in the queue still needs its folder)."""
        with self._lock:
            if self.closed:
                raise JobCancelled("the session was closed")
            self.folder.mkdir(parents=True, exist_ok=True)
            n = next(self._jobs)
            old = sorted(
                (p for p in self.folder.glob("job-*") if p.is_dir()), key=lambda p: int(p.name[4:] or 0)
            )
            for p in old[: max(0, len(old) - keep)] if self.active_jobs <= 1 else []:
                shutil.rmtree(p, ignore_errors=True)
            job = self.folder / f"job-{n}"
            job.mkdir()
            return job

    @contextmanager
    def previewing(self) -> Iterator[Path]:
        """A fresh ``preview/N`` folder for one preview, held alone for the ``with`` block.

        Previews of one session run one at a time: a browser may fire the same event twice at once,
        and two previews copying the same file into one folder read each other's half-written copy.
        The folder of the preview before stays until the next one starts, because Gradio copies a
        returned file after the handler has returned; older ones are deleted.
        """
        with self._preview_lock:
            root = self.folder / "preview"
            root.mkdir(parents=True, exist_ok=True)
            n = next(self._previews)
            for old in root.iterdir():
                if old.name != str(n - 1):
                    shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
            path = root / str(n)
            path.mkdir()
            yield path


class Sessions:
    """The sessions of one app, each with a folder under ``root`` (created on first use)."""

    def __init__(self, root: str | Path, idle_seconds: float = 3600.0):
        self.root = Path(root)
        self.idle_seconds = float(idle_seconds)
        self._sessions: dict[str, Session] = {}
        self._closing: set[Session] = set()  # closed, but a job of theirs still runs
        self._lock = threading.Lock()
        self.on_all_closed: Callable[[], None] | None = None

    def get(self, sid: str | None) -> Session:
        """The session ``sid`` (Gradio's session hash; sanitised), opened on first use."""
        key = _SESSION_ID.sub("", str(sid or "anonymous"))[:64] or "anonymous"
        with self._lock:
            s = self._sessions.get(key)
            if s is None or s.closed:
                s = Session(key, self.root / key)
                self._sessions[key] = s
            s.last_used = time.monotonic()
            return s

    def open_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def busy(self) -> bool:
        """Whether a job of any session is still running (or waiting)."""
        with self._lock:
            return bool(self._closing) or any(s.active_jobs for s in self._sessions.values())

    @contextmanager
    def running(self, s: Session) -> Iterator[None]:
        """Count a job of ``s`` for the ``with`` block (its folder outlives a close until it ends)."""
        with s._lock:
            if s.closed:
                raise JobCancelled("the session was closed")
            if s.active_jobs == 0:
                s.cancel.clear()  # a cancel clicked while nothing ran does not stop the next job
            s.active_jobs += 1
        try:
            yield
        finally:
            with s._lock:
                s.active_jobs -= 1
                s.last_used = time.monotonic()
                gone = s.closed and s.active_jobs == 0
                if gone:
                    shutil.rmtree(s.folder, ignore_errors=True)
            if gone:
                with self._lock:
                    self._closing.discard(s)
                self._maybe_all_closed()

    def close(self, sid: str | None) -> None:
        """Cancel the session's job and delete its folder (now, or when its job ends)."""
        key = _SESSION_ID.sub("", str(sid or "anonymous"))[:64] or "anonymous"
        with self._lock:
            s = self._sessions.pop(key, None)
        if s is None:
            return
        with s._lock:
            s.closed = True
            s.cancel.set()
            if s.active_jobs == 0:
                shutil.rmtree(s.folder, ignore_errors=True)
            else:
                with self._lock:
                    self._closing.add(s)
        self._maybe_all_closed()

    def sweep(self) -> list[str]:
        """Close the sessions idle for longer than ``idle_seconds`` (no job running); their ids."""
        now = time.monotonic()
        with self._lock:
            stale = [
                k
                for k, s in self._sessions.items()
                if s.active_jobs == 0 and now - s.last_used > self.idle_seconds
            ]
        for k in stale:
            self.close(k)
        return stale

    def close_all(self) -> None:
        with self._lock:
            keys = list(self._sessions)
        for k in keys:
            self.close(k)

    def _maybe_all_closed(self) -> None:
        if self.on_all_closed is not None and self.open_count() == 0 and not self.busy():
            self.on_all_closed()
