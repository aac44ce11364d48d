"""Tiled restoration of images larger than the prior (diffinv.tiling, DDNM's mask-shift).

A small exact Gaussian prior on 8 x 8 (or 16 x 16) windows stands in for a network, so every test
runs in well under a second or two on one CPU core.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest
import torch

from diffinv import pipeline, solvers, tiling
from diffinv.operators import Blur, from_spec, gaussian_kernel
from diffinv.operators.base import dense_matrix

sys.path.insert(0, str(Path(__file__).parent / "solvers"))
from problems import correlated_prior  # noqa: E402

F64 = torch.float64
P = 8  # prior (window) size of most tests

# spec -> full image shape; all are exact under tiling
EXACT = {
    "denoise": (1, 20, 20),
    "inpaint-random0.5": (3, 20, 16),
    "colorize": (3, 20, 16),
    "sr2": (1, 20, 20),
    "colorize+sr2": (3, 20, 16),
}


def _prior(C: int, size: int = P):
    return correlated_prior((C, size, size))


def _image(shape, seed: int = 0, batch: int = 1) -> torch.Tensor:
    return torch.rand((batch, *shape), generator=torch.Generator().manual_seed(seed), dtype=F64)


def _rel_residual(op, x, y) -> float:
    return float((op.A(x) - y).norm() / y.norm())


class Recorder:
    """Wraps a solver and records (y, op, x) of every window it solves (not a Solver: sequential)."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def __getattr__(self, key):
        return getattr(self.inner, key)

    def __call__(self, y, op, **kw):
        x = self.inner(y, op, **kw)
        self.calls.append((y, op, x))
        return x


class RecordingDDNM(solvers.get_class("ddnm")):
    """DDNM that records (op, kwargs, x) of every window; copies (one per batched window) share the list."""

    def __init__(self, prior, **params):
        super().__init__(prior, **params)
        self.calls = []

    def __call__(self, y, op, **kw):
        x = super().__call__(y, op, **kw)
        self.calls.append((op, kw, x))  # list.append is atomic: safe from the windows' threads
        return x


def _capture_plans(monkeypatch) -> list:
    """Record the window lists that solve_tiled plans."""
    plans, plan = [], tiling.plan_tiles

    def capture(*args, **kwargs):
        plans.append(plan(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(tiling, "plan_tiles", capture)
    return plans


def _check_mask_shift(x, windows, by_window) -> None:
    """Each window kept its known pixels equal to the final (committed) values, and the result
    holds each window's own values on the pixels it committed."""
    for w in windows:
        x_w = by_window[w.number]
        r, c = w.slices
        if w.known.any():  # the solver itself reproduced the earlier restoration (exact DDNM)
            assert torch.allclose(x_w[..., w.known], x[:, :, r, c][..., w.known], atol=1e-10)
        assert torch.equal(x[:, :, r, c][..., w.commit], x_w[..., w.commit])


# ------------------------------------------------------------------------ window operators
def _window_cases():
    for spec, shape in EXACT.items():
        yield spec, from_spec(spec, shape, seed=1), P, [(0, 0), (6, 4), (12, 8)]
    yield "sr2-bicubic", from_spec("sr2-bicubic", (1, 28, 24)), 16, [(0, 0), (6, 4), (12, 8)]
    yield "blur3x3", Blur((2, 20, 20), gaussian_kernel(0.8, size=3)), P, [(0, 0), (5, 12), (12, 3)]


@pytest.mark.parametrize("case", list(_window_cases()), ids=lambda c: c[0])
def test_window_operator_is_the_block_of_the_full_matrix(case):
    _, op, size, offsets = case
    M = dense_matrix(op)
    C, H, W = op.in_shape
    for top, left in offsets:
        A_w, index = tiling.window_operator(op, top, left, size, size)
        inside = torch.zeros(C, H, W, dtype=torch.bool)
        inside[:, top : top + size, left : left + size] = True
        rows = M[index]
        assert torch.allclose(dense_matrix(A_w), rows[:, inside.flatten()], atol=1e-12)
        assert float(rows[:, ~inside.flatten()].abs().max()) < 1e-12  # rows see only the window


def test_window_pseudo_inverses_are_exact():
    for op in (from_spec("sr2-bicubic", (1, 24, 24)), Blur((1, 12, 12), gaussian_kernel(0.8, size=3))):
        A_w, _ = tiling.window_operator(
            op, 4, 0, 8 if isinstance(op, Blur) else 16, 8 if isinstance(op, Blur) else 16
        )
        Mp = torch.linalg.pinv(dense_matrix(A_w))
        m = math.prod(A_w.out_shape)
        got = A_w.pinv(torch.eye(m, dtype=F64).reshape(m, *A_w.out_shape)).reshape(m, -1).T
        assert torch.allclose(got, Mp, atol=1e-7)


# ------------------------------------------------------------------------ known-region operators
def _l_shape(size: int = P) -> torch.Tensor:
    known = torch.zeros(size, size, dtype=torch.bool)
    known[:2] = True
    known[:, :4] = True
    return known


@pytest.mark.parametrize("spec,C", [("denoise", 1), ("inpaint-random0.5", 3), ("colorize", 3), ("sr2", 2)])
def test_known_region_svd_is_an_exact_svd(spec, C):
    op = from_spec(spec, (C, P, P), seed=3)
    kr = tiling.KnownRegionSVDOperator(op, _l_shape(), known_weight=1.7)
    n, m = kr.n, kr.m
    M = dense_matrix(kr)
    V = kr.V(torch.eye(n, dtype=F64)).reshape(n, n).T
    U = kr.U(torch.eye(m, dtype=F64)).reshape(m, m).T
    s = kr.singulars()
    S = torch.zeros(m, n, dtype=F64)
    S[range(s.numel()), range(s.numel())] = s
    assert torch.allclose(U @ S @ V.T, M, atol=1e-12)
    assert torch.allclose(U.T @ U, torch.eye(m, dtype=F64), atol=1e-12)
    assert torch.allclose(V.T @ V, torch.eye(n, dtype=F64), atol=1e-12)
    z = torch.randn(2, m, dtype=F64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(kr.Ut(kr.U(z)), z, atol=1e-12)
    pinv = kr.pinv(torch.eye(m, dtype=F64)).reshape(m, n).T
    assert torch.allclose(pinv, torch.linalg.pinv(M), atol=1e-10)


def test_known_region_pinv_closed_form_and_cg_match_dense():
    cases = [
        (tiling.window_operator(from_spec("colorize+sr2", (3, 8, 8)), 0, 0, 8, 8)[0], True),  # closed form
        (tiling.window_operator(from_spec("sr2-bicubic", (1, 8, 8)), 0, 0, 8, 8)[0], False),  # CG
    ]
    for A_w, block_local in cases:
        size = A_w.in_shape[-1]
        kr = tiling.KnownRegionOperator(A_w, _l_shape(size), known_weight=0.5, block_local=block_local)
        M = dense_matrix(kr)
        m, n = M.shape
        got = kr.pinv(torch.eye(m, dtype=F64)).reshape(m, n).T
        assert torch.allclose(got, torch.linalg.pinv(M), atol=1e-7)
        x = torch.rand(1, *kr.in_shape, dtype=F64)
        y = torch.randn(1, m, dtype=F64)
        assert torch.allclose((kr.A(x) * y).sum(), (x * kr.At(y)).sum())


# ------------------------------------------------------------------------ plans
def test_plan_windows_cover_the_image_and_end_at_the_border():
    op = from_spec("sr2", (1, 20, 28))
    windows = tiling.plan_tiles(op, (1, P, P))
    assert [(w.top, w.left) for w in windows[:5]] == [(0, 0), (0, 6), (0, 12), (0, 18), (0, 20)]
    assert {w.top for w in windows} == {0, 6, 12}
    committed = torch.zeros(20, 28, dtype=torch.int64)
    for w in windows:
        assert (w.height, w.width) == (P, P)
        assert w.top % 2 == 0 and w.left % 2 == 0  # aligned to the SR factor
        r, c = w.slices
        committed[r, c] += w.commit.long()
    assert bool((committed == 1).all())  # every pixel committed by exactly one window
    assert len({w.seed for w in windows}) == len(windows)


def test_overlap_argument_and_minimum():
    op = from_spec("sr2", (1, 20, 20))
    assert [w.left for w in tiling.plan_tiles(op, (1, P, P), overlap=4)[:3]] == [0, 4, 8]
    with pytest.raises(ValueError, match="multiple of 2"):
        tiling.plan_tiles(op, (1, P, P), overlap=3)
    with pytest.raises(ValueError, match=r"overlap must be in \[0, 8\)"):
        tiling.plan_tiles(op, (1, P, P), overlap=8)
    blur = Blur((1, 20, 20), gaussian_kernel(1.0, size=5))
    with pytest.raises(ValueError, match="at least 4"):
        tiling.plan_tiles(blur, (1, P, P), overlap=2)


# ------------------------------------------------------------------------ exact restoration
@pytest.mark.parametrize("spec", list(EXACT))
def test_tiled_ddnm_is_consistent_on_the_whole_image(spec):
    shape = EXACT[spec]
    op = from_spec(spec, shape, seed=1)
    y = op.A(_image(shape, batch=2))
    solver = solvers.get("ddnm", _prior(shape[0]), steps=4)
    x = tiling.solve_tiled(solver, y, op, seed=0)
    assert x.shape == (2, *shape)
    assert _rel_residual(op, x, y) <= 1e-4
    assert solver.last_windows == len(tiling.plan_tiles(op, (shape[0], P, P)))
    assert solver.last_nfe == 4 * solver.last_windows


@pytest.mark.parametrize("tile_batch", [1, 4])
def test_mask_shift_keeps_the_restored_overlap(tile_batch, monkeypatch):
    op = from_spec("inpaint-random0.5", (3, 20, 16), seed=2)
    y = op.A(_image(op.in_shape))
    plans = _capture_plans(monkeypatch)
    rec = RecordingDDNM(_prior(3), steps=4)
    x = tiling.solve_tiled(rec, y, op, seed=0, tile_batch=tile_batch)
    (windows,) = plans
    assert len(rec.calls) == len(windows)
    by_op = {id(w.solve_op): w.number for w in windows}
    by_window = {by_op[id(op_w)]: x_w for op_w, _, x_w in rec.calls}
    assert sorted(by_window) == list(range(len(windows)))
    assert all(not kw["progress"] for _, kw, _ in rec.calls)  # no per-window bars
    _check_mask_shift(x, windows, by_window)
    assert _rel_residual(op, x, y) <= 1e-8


def test_mask_shift_holds_for_approximate_solvers_too():
    op = from_spec("sr2", (1, 20, 20))
    y = op.A(_image(op.in_shape))
    rec = Recorder(solvers.get("dps", _prior(1), steps=3, zeta=0.1))
    x = tiling.solve_tiled(rec, y, op, seed=0)
    windows = tiling.plan_tiles(op, (1, P, P))
    for w, (_, _, x_w) in zip(windows, rec.calls):  # one window at a time, in raster order
        r, c = w.slices
        assert torch.equal(x[:, :, r, c][..., w.commit], x_w[..., w.commit])


def test_commit_margin():
    op = from_spec("sr2", (1, 20, 28))
    # default: half the overlap (2 of 4 pixels, aligned to the factor) on edges inside the image
    w = tiling.plan_tiles(op, (1, P, P), overlap=4)[1]  # second window of the first row, left = 4
    expect = torch.zeros(P, P, dtype=torch.bool)
    expect[:6, :2] = True  # what the first window committed: up to 2 pixels from its inner edges
    assert torch.equal(w.known, expect)
    expect = torch.zeros(P, P, dtype=torch.bool)
    expect[:6, 2:6] = True
    assert torch.equal(w.commit, expect)
    # margin 0: every window commits all its new pixels (the known part is the whole overlap)
    w0 = tiling.plan_tiles(op, (1, P, P), overlap=4, commit_margin=0)[1]
    assert w0.known[:, :4].all() and not w0.known[:, 4:].any()
    with pytest.raises(ValueError, match=r"commit_margin must be a multiple of 2 in \[0, 2\]"):
        tiling.plan_tiles(op, (1, P, P), overlap=4, commit_margin=4)
    with pytest.raises(ValueError, match="commit_margin must be a multiple of 2"):
        tiling.plan_tiles(op, (1, P, P), overlap=4, commit_margin=1)


def test_tiled_restoration_is_deterministic():
    op = from_spec("colorize", (3, 20, 16))
    y = op.A(_image(op.in_shape))
    prior = _prior(3)
    runs = [tiling.solve_tiled(solvers.get("ddnm", prior, steps=3), y, op, seed=s) for s in (5, 5, 6)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])


@pytest.mark.parametrize("method", ["ddnm+", "ddrm", "mcg", "dps", "pigdm", "score-proj"])
def test_other_solvers_run_on_a_tiled_problem(method):
    op = from_spec("sr2", (1, 20, 20))
    sigma_y = 0.05
    y = op.measure(_image(op.in_shape), sigma_y, generator=torch.Generator().manual_seed(1))
    params = {"zeta": 0.1} if method == "dps" else {}
    solver = solvers.get(method, _prior(1), steps=3, **params)
    x = tiling.solve_tiled(solver, y, op, sigma_y=sigma_y, seed=0)
    assert x.shape == (1, 1, 20, 20)
    assert bool(torch.isfinite(x).all())
    assert solver.last_nfe >= 3 * solver.last_windows


def test_callback_sees_the_whole_image():
    op = from_spec("denoise", (1, 12, 12))
    y = op.A(_image(op.in_shape))
    seen = []
    solver = solvers.get("ddnm", _prior(1), steps=2)
    tiling.solve_tiled(solver, y, op, callback=lambda e: seen.append((e["step"], tuple(e["x0"].shape))))
    assert [i for i, _ in seen] == list(range(len(seen)))
    assert len(seen) == 2 * solver.last_windows
    assert all(shape == (1, 1, 12, 12) for _, shape in seen)


# ------------------------------------------------------------------------ batching and progress
def test_schedule_respects_the_dependencies():
    op = from_spec("denoise", (1, 28, 36))
    windows = tiling.plan_tiles(op, (1, P, P))  # 5 x 6 windows, the last of each row/column shifted
    batches = tiling.tile_schedule(windows, 3)
    assert sorted(w.number for b in batches for w in b) == list(range(len(windows)))
    assert all(1 <= len(b) <= 3 for b in batches)
    position = {w.number: i for i, b in enumerate(batches) for w in b}
    for w in windows:
        for v in windows[: w.number]:  # an overlapping earlier window runs in an earlier batch
            if v.overlaps(w):
                assert position[v.number] < position[w.number]
    for b in batches:  # windows of one batch are independent
        assert not any(u.overlaps(v) for i, u in enumerate(b) for v in b[i + 1 :])
    # one batch per wavefront level when batches are unbounded; far fewer than the windows
    levels = {w.level for w in windows}
    assert len(tiling.tile_schedule(windows, 100)) == len(levels) < len(windows)
    assert [len(b) for b in tiling.tile_schedule(windows, 1)] == [1] * len(windows)
    with pytest.raises(ValueError, match="tile_batch must be a positive integer"):
        tiling.tile_schedule(windows, 0)


@pytest.mark.parametrize("spec", ["sr2", "colorize"])
def test_batched_windows_match_one_at_a_time(spec):
    shape = EXACT[spec]
    op = from_spec(spec, shape, seed=1)
    y = op.A(_image(shape, batch=2))
    prior = _prior(shape[0])
    sizes = []
    inner = prior._x0

    def counting_x0(x, t):  # the network calls actually made, by batch size
        sizes.append(x.shape[0])
        return inner(x, t)

    prior._x0 = counting_x0
    runs = {}
    for tile_batch in (1, 4):
        sizes.clear()
        solver = solvers.get("ddnm", prior, steps=3)
        runs[tile_batch] = (tiling.solve_tiled(solver, y, op, seed=3, tile_batch=tile_batch), list(sizes))
        n = len(tiling.plan_tiles(op, (shape[0], P, P)))
        assert solver.last_nfe == 3 * n  # counted per window either way
    (x1, sizes1), (x4, sizes4) = runs[1], runs[4]
    assert set(sizes1) == {2}  # one window (its 2 samples) per call
    assert max(sizes4) > 2 and len(sizes4) < len(sizes1) and sum(sizes4) == sum(sizes1)
    assert torch.allclose(x1, x4, atol=1e-10)  # same plan, same draws: round-off only
    assert _rel_residual(op, x4, y) <= 1e-8


def test_a_failing_window_raises_in_the_caller():
    op = from_spec("denoise", (1, 12, 12))
    prior = _prior(1)
    calls = []
    inner = prior._x0

    def failing_x0(x, t):
        calls.append(x.shape[0])
        if len(calls) == 3:
            raise RuntimeError("network exploded")
        return inner(x, t)

    prior._x0 = failing_x0
    with pytest.raises(RuntimeError, match="network exploded"):
        tiling.solve_tiled(solvers.get("ddnm", prior, steps=4), op.A(_image(op.in_shape)), op, tile_batch=8)


class FakeBar:
    """Stands in for tqdm and records what the tiled solve does with its bars."""

    made: list = []

    def __init__(self, iterable=None, total=None, desc=None, **kwargs):
        self.iterable, self.total, self.n, self.events = iterable, total, 0, [("desc", desc)]
        FakeBar.made.append(self)

    def __iter__(self):
        return iter(self.iterable)

    def update(self, k=1):
        self.n += k
        self.events.append(("update", k))

    def set_description(self, desc):
        self.events.append(("desc", desc))

    def refresh(self):
        self.events.append(("n", self.n, self.total))

    def close(self):
        self.events.append(("close",))


@pytest.mark.parametrize("tile_batch", [1, 8])
def test_one_progress_bar_over_all_windows(tile_batch, monkeypatch):
    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", FakeBar)
    FakeBar.made = []
    op = from_spec("sr2", (1, 20, 20))
    steps = 3
    solver = solvers.get("ddnm", _prior(1), steps=steps)
    tiling.solve_tiled(solver, op.A(_image(op.in_shape)), op, progress=True, tile_batch=tile_batch)
    N = solver.last_windows
    (bar,) = FakeBar.made  # the solvers' own per-window bars are off
    assert bar.total == N * steps and bar.n == N * steps
    assert sum(e[1] for e in bar.events if e[0] == "update") == N * steps  # every step of every window
    assert bar.events[-1] == ("close",)
    # after each batch the count is exactly (windows done) x steps, increasing to the total
    done = [e[1] for e in bar.events if e[0] == "n"]
    assert done == sorted(done) and done[-1] == N * steps and all(d % steps == 0 for d in done)
    batches = tiling.tile_schedule(tiling.plan_tiles(op, (1, P, P)), tile_batch)
    assert len(done) == len(batches)
    # each batch names the windows it runs: consecutive ranges k-l of N covering 1..N in order
    ranges = [[int(v) for v in re.findall(r"\d+", e[1])] for e in bar.events[1:] if e[0] == "desc"]
    assert [r[-1] for r in ranges] == [N] * len(batches)
    firsts = [r[0] for r in ranges]
    lasts = [r[1] if len(r) == 3 else r[0] for r in ranges]
    assert firsts == [1] + [b + 1 for b in lasts[:-1]] and lasts[-1] == N
    assert [b - a + 1 for a, b in zip(firsts, lasts)] == [len(b) for b in batches]


def test_callback_counts_every_step_of_batched_windows():
    op = from_spec("denoise", (1, 20, 20))
    y = op.A(_image(op.in_shape))
    seen = []
    solver = solvers.get("ddnm", _prior(1), steps=2)
    tiling.solve_tiled(
        solver, y, op, tile_batch=8, callback=lambda e: seen.append((e["step"], e["x0"].shape))
    )
    assert [i for i, _ in seen] == list(range(2 * solver.last_windows))
    assert all(shape == (1, 1, 20, 20) for _, shape in seen)


# ------------------------------------------------------------------------ seams
def _smooth_field(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """A stationary random image: white noise blurred by a Gaussian (circular, so no edges)."""
    noise = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return Blur((3, size, size), gaussian_kernel(1.5)).A(noise)


def test_seam_ratio_finds_a_planted_seam():
    x = _smooth_field(4, 64)
    i = torch.arange(64)
    owner = (i[:, None] // 16) * 4 + i[None, :] // 16  # 4 x 4 regions of 16 x 16 pixels
    clean = tiling.seam_ratio(x, owner)
    assert clean.shape == (4,)
    assert float((clean - 1).abs().max()) < 0.15  # a stationary image has no seams
    # each region shifted by its own offset (std half the image's): steps at every border
    offsets = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(9), dtype=F64)
    seamed = x + 0.5 * x.std() * offsets.repeat_interleave(16, -1).repeat_interleave(16, -2)
    ratio = tiling.seam_ratio(seamed, owner)
    assert float(ratio.min()) > 1.5


def test_seam_ratio_aligned_reference_ignores_block_lines():
    # 4x4 blocks visible everywhere (as sr4 leaves them): not a seam once the reference is aligned
    blocks = _smooth_field(2, 16, seed=1).repeat_interleave(4, -1).repeat_interleave(4, -2)
    x = blocks + 0.02 * _smooth_field(2, 64, seed=2)
    owner = torch.zeros(64, 64, dtype=torch.int64)
    owner[:, 32:] = 1
    assert float(tiling.seam_ratio(x, owner).min()) > 2.0
    assert float((tiling.seam_ratio(x, owner, align=4) - 1).abs().max()) < 0.35
    with pytest.raises(ValueError, match="single label"):
        tiling.seam_ratio(x, torch.zeros(64, 64, dtype=torch.int64))


def test_commit_owner_matches_the_commits():
    op = from_spec("sr2", (1, 20, 28))
    windows = tiling.plan_tiles(op, (1, P, P), overlap=4)
    owner = tiling.commit_owner(windows, 20, 28)
    for w in windows:
        r, c = w.slices
        assert torch.equal(owner[r, c] == w.number, w.commit)


# ------------------------------------------------------------------------ approximate families
@pytest.mark.parametrize("which", ["sr2-bicubic", "blur5x5"])
def test_bicubic_and_deblur_windows_are_bounded_and_nearly_consistent(which):
    if which == "sr2-bicubic":
        op = from_spec("sr2-bicubic", (1, 32, 32))
    else:
        op = Blur((1, 32, 32), gaussian_kernel(1.0, size=5))
    x_true = correlated_prior(op.in_shape).sample(1, torch.Generator().manual_seed(0))
    y = op.A(x_true)
    prior = _prior(1, 16)
    x = tiling.solve_tiled(solvers.get("ddnm", prior, steps=4), y, op, seed=0, final_projection=False)
    assert float(x.abs().max()) < 2.0  # no marching-deconvolution blow-up across windows
    r = op.A(x) - y
    if isinstance(op, Blur):  # rows wrapping around the image border belong to no window
        r = r[..., 2:-2, 2:-2]
    assert float(r.norm() / y.norm()) < 3e-2
    # DDNM (a projecting method) ends with a whole-image correction by default: consistent
    x_proj = tiling.solve_tiled(solvers.get("ddnm", prior, steps=4), y, op, seed=0)
    assert _rel_residual(op, x_proj, y) < 1e-4  # deblur: up to its pinv threshold, like untiled
    assert float((x_proj - x).abs().max()) < 0.5
    with pytest.raises(ValueError, match="needs an SVD"):
        tiling.solve_tiled(solvers.get("ddrm", prior, steps=2), y, op)


# ------------------------------------------------------------------------ errors
def test_clear_errors():
    prior = _prior(1)
    ddnm = solvers.get("ddnm", prior, steps=2)
    ct = from_spec("ct8", (1, 12, 12))
    with pytest.raises(ValueError, match="reconstructs 8x8 images; got 12x12"):
        tiling.solve_tiled(ddnm, torch.zeros(1, *ct.out_shape, dtype=F64), ct)
    small = from_spec("denoise", (1, 6, 20))
    with pytest.raises(ValueError, match="restores 8x8 images; got a 6x20 image"):
        tiling.solve_tiled(ddnm, torch.zeros(1, 1, 6, 20, dtype=F64), small)
    sr3 = from_spec("sr3", (1, 24, 24))
    with pytest.raises(ValueError, match="multiples of 3"):
        tiling.solve_tiled(ddnm, torch.zeros(1, *sr3.out_shape, dtype=F64), sr3)
    cs = from_spec("cs0.5", (1, 16, 16))
    with pytest.raises(ValueError, match="cannot restore cs0.5 with windows"):
        tiling.solve_tiled(ddnm, torch.zeros(1, *cs.out_shape, dtype=F64), cs)
    rgb = from_spec("denoise", (3, 16, 16))
    with pytest.raises(ValueError, match="1-channel images; the image has 3"):
        tiling.solve_tiled(ddnm, torch.zeros(1, 3, 16, 16, dtype=F64), rgb)
    big_kernel = Blur((1, 20, 20), gaussian_kernel(1.5))  # 11 x 11 > 8 x 8 windows
    with pytest.raises(ValueError, match="the minimum for Blur is 10"):
        tiling.solve_tiled(ddnm, torch.zeros(1, 1, 20, 20, dtype=F64), big_kernel)
    with pytest.raises(ValueError, match="not divisible by the factor 2"):  # the operator refuses it
        pipeline.degrade_and_restore(_image((1, 21, 20)), "sr2", "ddnm", prior, steps=2)


# ------------------------------------------------------------------------ pipeline hook
def test_pipeline_tiles_automatically():
    prior = _prior(3)
    x = _image((3, 20, 16))
    r = pipeline.degrade_and_restore(x, "colorize", "ddnm", prior, seed=0, steps=3)
    assert r.x_hat.shape == x.shape
    assert r.metrics["consistency"] <= 1e-8
    assert r.nfe == 3 * len(tiling.plan_tiles(r.op, (3, P, P)))
    r2 = pipeline.restore_measured(r.y, r.op, "ddnm", prior, seed=0, steps=3, tile_overlap=4)
    assert r2.x_hat.shape == x.shape
    r3 = pipeline.restore_measured(r.y, r.op, "ddnm", prior, seed=0, steps=3, tile_overlap=4, tile_batch=1)
    assert torch.allclose(r3.x_hat, r2.x_hat, atol=1e-10)
    base = pipeline.restore_measured(r.y, r.op, "pinv", prior)  # no prior used: whole image at once
    assert base.x_hat.shape == x.shape


# ------------------------------------------------------------------------ layering (issue 13)
def test_tiling_knows_no_concrete_operator():
    """Operators restrict themselves to windows; the tiling package imports only the base classes."""
    from diffinv import solvers as solvers_pkg

    for path in Path(tiling.__file__).parent.glob("*.py"):
        modules = re.findall(r"^\s*from \.\.operators\.(\w+) import", path.read_text(), flags=re.M)
        assert set(modules) <= {"base", "cg"}, f"{path.name} imports operators.{modules}"
    consistent = {n for n in solvers_pkg.available() if solvers_pkg.get_class(n).ends_consistent}
    assert {"ddnm", "ddnm+", "ddrm", "mcg", "score-proj"} <= consistent  # the old PROJECTING_METHODS
    assert not consistent & {"ddim", "dps", "pigdm", "pinv", "fista-tv", "cg-tikhonov"}


def test_pipeline_solve_returns_a_result_and_reports_dicts():
    """``pipeline.solve`` takes a built solver and returns a SolveResult; the callback gets a dict
    per step whose ``x0`` is the whole image (tiled) and whose ``window`` names the window."""
    shape = (1, 20, 20)
    op = from_spec("sr2", shape, seed=1)
    y = op.A(_image(shape))
    solver = solvers.get("ddnm", _prior(1), steps=3)
    events = []
    r = pipeline.solve(y, op, solver, seed=0, callback=events.append)
    assert isinstance(r, solvers.SolveResult)
    assert r.windows == len(tiling.plan_tiles(op, (1, P, P))) > 1
    assert r.nfe == 3 * r.windows and r.seconds > 0 and r.params["steps"] == 3
    assert _rel_residual(op, r.x, y) <= 1e-4
    assert len(events) == r.nfe and {"step", "t", "x_t", "x0", "window"} <= set(events[0])
    assert [e["step"] for e in events] == list(range(r.nfe))
    assert events[-1]["x0"].shape == (1, *shape)
    # the same image as the convenience wrapper (which also fills solver.last_*)
    x = tiling.solve_tiled(solver, y, op, seed=0)
    torch.testing.assert_close(x, r.x, rtol=0, atol=1e-6)
    assert solver.last_windows == r.windows and solver.last_nfe == r.nfe
    # untiled: one window; a built solver refuses further parameters
    small = from_spec("sr2", (1, P, P), seed=1)
    r1 = pipeline.solve(small.A(_image((1, P, P))), small, solver)
    assert r1.windows == 1 and r1.nfe == 3
    with pytest.raises(ValueError, match="when building the solver"):
        pipeline.degrade_and_restore(_image((1, P, P)), small, solver, None, steps=5)
