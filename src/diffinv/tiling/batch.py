"""Running windows together: lockstep threads whose network calls share one batch, one progress bar.

See :mod:`diffinv.tiling` ("Order, batching and progress"). :func:`solve_together` solves the
windows of one wavefront batch, each in its own thread with its own solver copy, generator and
callback; a :class:`_NetworkBatcher` stacks their network evaluations into one call per step.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import torch

from ..operators.base import LinearOperator
from ..priors.base import Prior
from .plan import TileWindow

#: Methods that back-propagate through the network: solved one window at a time, since a batch
#: would keep one autograd graph per window alive at once.
NETWORK_GRADIENT_METHODS = frozenset({"dps", "pigdm", "mcg"})


def can_batch(solver) -> bool:
    """Whether windows of ``solver`` may share network batches (a Solver that needs no network gradient)."""
    from ..solvers.base import Solver  # not at import time: the solvers package imports operators

    return isinstance(solver, Solver) and solver.name not in NETWORK_GRADIENT_METHODS


def steps_hint(solver, op: LinearOperator) -> int:
    """Callback calls per window that a solver will make on ``op``, if its parameters say (else 1)."""
    effective = getattr(solver, "effective_params", None)  # per operator family, where solvers have it
    params = (effective(op) if callable(effective) else getattr(solver, "params", None)) or {}
    for key in ("steps", "iters"):
        if isinstance(params.get(key), int) and params[key] > 0:
            return params[key]
    return 1


class TileProgress:
    """One progress bar and the user's callback over all windows (thread-safe).

    The bar counts solver steps of all windows, ``windows x steps`` in total, so that tqdm's rate
    and ETA cover the whole image; its description names the windows being solved ("window k/N",
    "windows k-l/N" for a batch; k counts in the order they run). The steps per window come from
    the solver's ``steps`` and are corrected after the first batch from the callbacks it made
    (DDNM+'s time travel makes more).
    """

    def __init__(self, windows: int, steps_hint: int, progress: bool, callback, out: torch.Tensor):
        self.windows, self.per_window = windows, max(int(steps_hint), 1)
        self.done, self.calls, self.batch_steps, self.calibrated = 0, 0, 0, False
        self.user_callback, self.out = callback, out
        self.lock = threading.Lock()
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=windows * self.per_window, desc=f"window 1/{windows}", unit="step", leave=False
            )

    def begin(self, size: int) -> None:
        self.batch_steps = 0
        if self.bar is not None:
            k = self.done + 1
            desc = f"window {k}/{self.windows}" if size == 1 else f"windows {k}-{k + size - 1}/{self.windows}"
            self.bar.set_description(desc)

    def window_callback(self, w: TileWindow):
        """The callback handed to the solver for window ``w`` (None when nothing listens)."""
        if self.bar is None and self.user_callback is None:
            return None
        rows, cols = w.slices
        known = w.known.to(self.out.device)

        def window_callback(event: dict) -> None:
            with self.lock:
                self.batch_steps += 1
                if self.bar is not None:
                    self.bar.update(1)
                if self.user_callback is not None:
                    # the whole image so far, with this window's current estimate in place
                    preview = self.out.clone()
                    region = preview[:, :, rows, cols]
                    preview[:, :, rows, cols] = torch.where(known, region, event["x0"].to(preview.dtype))
                    self.user_callback({**event, "step": self.calls, "x0": preview, "window": w.number})
                self.calls += 1

        return window_callback

    def end(self, size: int) -> None:
        self.done += size
        if self.bar is None:
            return
        if not self.calibrated and self.batch_steps > 0:
            self.per_window = max(self.batch_steps // size, 1)
            self.bar.total = self.windows * self.per_window
            self.calibrated = True
        self.bar.n = self.done * self.per_window  # exact after every batch, whatever the solver reported
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class _Request:
    """One network evaluation asked for by one window's thread."""

    worker: int
    kind: str  # "_eps" or "_x0"
    x: torch.Tensor
    t: torch.Tensor
    result: torch.Tensor | None = None
    error: BaseException | None = None
    done: bool = False


class _Cancelled(RuntimeError):
    """Raised in a window's thread when another window of its batch failed."""


class _NetworkBatcher:
    """Stacks the network evaluations of windows solved in lockstep into one call.

    Each window's solver runs in its own thread and asks for ``prior._eps`` / ``prior._x0``
    through a :class:`_BatchedPrior`. A request waits until every window still running has one
    pending; then the last to arrive evaluates them all, one network call per kind of request
    (windows in order, so the stacking is deterministic), and wakes the others. A window that
    finishes stops counting, so solvers that make different numbers of calls cannot deadlock.
    """

    def __init__(self, prior, workers: int):
        self.prior = prior
        self.live = workers
        self.pending: dict[int, _Request] = {}
        self.cond = threading.Condition()
        self.cancelled = False

    def evaluate(self, worker: int, kind: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        req = _Request(worker, kind, x, t)
        with self.cond:
            if self.cancelled:
                raise _Cancelled("another window of this batch failed")
            self.pending[worker] = req
            self._dispatch_if_ready()
            while not req.done:
                self.cond.wait()
        if req.error is not None:
            raise req.error
        return req.result

    def finish(self, worker: int) -> None:
        """Window ``worker``'s solver returned (or failed): stop waiting for it."""
        with self.cond:
            self.live -= 1
            self._dispatch_if_ready()

    def cancel(self) -> None:
        """Make every waiting and future request of this batch raise."""
        with self.cond:
            self.cancelled = True
            for req in self.pending.values():
                req.error, req.done = _Cancelled("another window of this batch failed"), True
            self.pending.clear()
            self.cond.notify_all()

    def _dispatch_if_ready(self) -> None:  # called with the lock held
        if not self.pending or len(self.pending) < self.live:
            return
        reqs = [self.pending.pop(k) for k in sorted(self.pending)]
        groups: dict[tuple, list[_Request]] = {}
        for r in reqs:
            key = (r.kind, r.x.dtype, r.x.device, tuple(r.x.shape[1:]), r.t.dtype)
            groups.setdefault(key, []).append(r)
        # Only gradient-free requests get here (see _BatchedPrior); the thread that dispatches may
        # be outside its solver's no_grad block (finish), so build no graph.
        with torch.no_grad():
            for (kind, *_), group in groups.items():
                try:
                    x = torch.cat([r.x for r in group])
                    t = torch.cat([r.t.to(x.device) for r in group])
                    parts = getattr(self.prior, kind)(x, t).split([r.x.shape[0] for r in group])
                    for r, part in zip(group, parts):
                        r.result = part
                except BaseException as exc:  # every window of the group sees the network's error
                    for r in group:
                        r.error = exc
        for r in reqs:
            r.done = True
        self.cond.notify_all()


class _BatchedPrior(Prior):
    """The prior as seen by one window's thread: network calls go through a :class:`_NetworkBatcher`.

    Same schedule, scaling and clipping as the wrapped prior; other attributes are read from it.
    It counts its own NFE, so that each window's solver reports its own. Calls that need a
    gradient through the network are evaluated directly (one graph per window).
    """

    def __init__(self, inner: Prior, batcher: _NetworkBatcher, worker: int):
        super().__init__(inner.schedule, inner.image_shape, inner.scale, inner.shift)
        self.clip_x0 = inner.clip_x0
        # not a submodule: the network's parameters stay the wrapped prior's alone
        object.__setattr__(self, "_inner", inner)
        self._batcher, self._worker = batcher, worker

    def __getattr__(self, key: str):
        try:
            return super().__getattr__(key)
        except AttributeError:
            inner = self.__dict__.get("_inner")
            if inner is None:  # still in __init__
                raise
            return getattr(inner, key)

    def _call(self, kind: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        if torch.is_grad_enabled() and x.requires_grad:
            return getattr(self._inner, kind)(x, t)
        return self._batcher.evaluate(self._worker, kind, x, t)

    def _eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._call("_eps", x_t, t)

    def _x0(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._call("_x0", x_t, t)


def solve_window(solver, job, sigma_y: float, bar: TileProgress) -> tuple[torch.Tensor, int]:
    """Solve one window ``job = (window, y', generator)``: ``(x_w, nfe)`` (no per-window bar)."""
    w, y_solve, generator = job
    x_w = solver(
        y_solve,
        w.solve_op,
        sigma_y=sigma_y,
        generator=generator,
        progress=False,
        callback=bar.window_callback(w),
    )
    return x_w, solver.last_nfe


def solve_together(solver, jobs, sigma_y: float, bar: TileProgress) -> list[tuple[torch.Tensor, int]]:
    """Solve the windows of one batch in lockstep threads sharing network calls; ``[(x_w, nfe)]``."""
    batcher = _NetworkBatcher(solver.prior, len(jobs))
    results: list = [None] * len(jobs)
    errors: list = [None] * len(jobs)

    def work(i: int) -> None:
        own = copy.copy(solver)  # per-window last_nfe / last_seconds; parameters shared (read only)
        own.prior = _BatchedPrior(solver.prior, batcher, i)
        try:
            results[i] = solve_window(own, jobs[i], sigma_y, bar)
        except BaseException as exc:  # re-raised in the calling thread below
            errors[i] = exc
            batcher.cancel()
        finally:
            batcher.finish(i)

    threads = [
        threading.Thread(target=work, args=(i,), name=f"diffinv-window-{w.number}", daemon=True)
        for i, (w, _, _) in enumerate(jobs)
    ]
    for th in threads:
        th.start()
    try:
        for th in threads:
            while th.is_alive():
                th.join(0.1)  # short waits keep the main thread responsive to Ctrl-C
    except BaseException:
        batcher.cancel()
        raise
    first = next((e for e in errors if e is not None and not isinstance(e, _Cancelled)), None)
    first = first or next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return results
