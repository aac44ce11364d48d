"""Tiled restoration of images larger than the prior (diffinv.tiling, DDNM's mask-shift).

A small exact Gaussian prior on 8 x 8 (or 16 x 16) windows stands in for a network, so every test
runs in well under a second or two on one CPU core.
"""

from __future__ import annotations

import math
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
    """Wraps a solver and records (y, op, x) of every window it solves."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def __getattr__(self, key):
        return getattr(self.inner, key)

    def __call__(self, y, op, **kw):
        x = self.inner(y, op, **kw)
        self.calls.append((y, op, x))
        return x


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


def test_mask_shift_keeps_the_restored_overlap():
    op = from_spec("inpaint-random0.5", (3, 20, 16), seed=2)
    y = op.A(_image(op.in_shape))
    rec = Recorder(solvers.get("ddnm", _prior(3), steps=4))
    x = tiling.solve_tiled(rec, y, op, seed=0)
    windows = tiling.plan_tiles(op, (3, P, P))
    assert len(rec.calls) == len(windows)
    first_value = torch.full_like(x, float("nan"))  # value given by the first window covering a pixel
    for w, (_, _, x_w) in zip(windows, rec.calls):
        r, c = w.slices
        if w.known.any():
            # the solver itself reproduced the earlier restoration on the overlap (exact DDNM)
            assert torch.allclose(x_w[..., w.known], first_value[:, :, r, c][..., w.known], atol=1e-10)
        region = first_value[:, :, r, c]
        first_value[:, :, r, c] = torch.where(torch.isnan(region), x_w, region)
    assert torch.equal(x, first_value)


def test_mask_shift_holds_for_approximate_solvers_too():
    op = from_spec("sr2", (1, 20, 20))
    y = op.A(_image(op.in_shape))
    rec = Recorder(solvers.get("dps", _prior(1), steps=3, zeta=0.1))
    x = tiling.solve_tiled(rec, y, op, seed=0)
    first_value = torch.full_like(x, float("nan"))
    for w, (_, _, x_w) in zip(tiling.plan_tiles(op, (1, P, P)), rec.calls):
        r, c = w.slices
        region = first_value[:, :, r, c]
        first_value[:, :, r, c] = torch.where(torch.isnan(region), x_w, region)
    assert torch.equal(x, first_value)


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
    tiling.solve_tiled(solver, y, op, callback=lambda i, x_t, img: seen.append((i, tuple(img.shape))))
    assert [i for i, _ in seen] == list(range(len(seen)))
    assert len(seen) == 2 * solver.last_windows
    assert all(shape == (1, 1, 12, 12) for _, shape in seen)


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
    base = pipeline.restore_measured(r.y, r.op, "pinv", prior)  # no prior used: whole image at once
    assert base.x_hat.shape == x.shape
