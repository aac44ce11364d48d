"""Tests for the parallel-beam CT operator (adjoint, pseudo-inverse, agreement with skimage)."""

import math
import time

import numpy as np
import pytest
import torch

from diffinv.operators.ct import FILTERS, ParallelBeamCT

skimage = pytest.importorskip("skimage")
from skimage.data import shepp_logan_phantom  # noqa: E402
from skimage.transform import iradon, radon, resize  # noqa: E402


@pytest.fixture(scope="module")
def phantom64() -> np.ndarray:
    return resize(shepp_logan_phantom(), (64, 64), anti_aliasing=True)


@pytest.fixture(scope="module")
def op64() -> ParallelBeamCT:
    t = time.perf_counter()
    op = ParallelBeamCT(64, 180)
    op.build_seconds = time.perf_counter() - t
    return op


THETA180 = np.linspace(0, 180, 180, endpoint=False)


@pytest.fixture(scope="module")
def sino64(phantom64) -> np.ndarray:
    """skimage's sinogram (bins, views) of the 64 px phantom over 180 views; 91 bins, like ours."""
    return radon(phantom64, THETA180, circle=False)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-7, atol: float = 1e-7) -> None:
    # (torch.testing.assert_close costs ~2 s of lazy imports on its first call.)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    a, b = a.detach(), b.detach()
    err = float((a - b).abs().max())
    assert torch.allclose(a, b, rtol=rtol, atol=atol), f"max abs diff {err:.3g}"


def _psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    return float(10 * np.log10(data_range**2 / np.mean((a - b) ** 2)))


def _match_bins(sino: np.ndarray, bins: int) -> np.ndarray:
    """Crop/zero-pad skimage's (bins_sk, views) sinogram to ``bins`` around the centre bin (bins // 2)."""
    bsk = sino.shape[0]
    out = np.zeros((bins, sino.shape[1]))
    for k in range(bins):
        j = k - bins // 2 + bsk // 2
        if 0 <= j < bsk:
            out[k] = sino[j]
    return out


# ----------------------------------------------------------------------------- construction / shapes
def test_shapes_defaults_and_angles():
    op = ParallelBeamCT(16, 10)
    assert op.in_shape == (1, 16, 16)
    assert op.bins == math.ceil(16 * math.sqrt(2)) == 23
    assert op.out_shape == (1, 10, 23)
    np.testing.assert_allclose(op.angles.numpy(), np.linspace(0, 180, 10, endpoint=False))
    assert not op.rows_orthonormal_scaled and not op.has_svd
    op2 = ParallelBeamCT(16, 3, bins=30, angles=torch.tensor([0.0, 33.0, 150.0]))
    assert op2.out_shape == (1, 3, 30)
    np.testing.assert_allclose(op2.angles.numpy(), [0.0, 33.0, 150.0])


def test_build_and_apply_are_fast(op64):
    build = op64.build_seconds
    x = torch.rand(1, 1, 64, 64)
    op64.A(x)  # first call makes the float32 copy
    t = time.perf_counter()
    for _ in range(10):
        op64.At(op64.A(x))
    apply = (time.perf_counter() - t) / 10
    # Typically ~0.3 s and ~1 ms; generous bounds for a loaded shared machine.
    assert build < 5.0
    assert apply < 0.1


def test_mass_conservation_and_AtA_ones():
    N = 20
    op = ParallelBeamCT(N, 12)
    yy, xx = np.mgrid[:N, :N] - N // 2
    disc = torch.from_numpy(((yy**2 + xx**2) <= (N // 2 - 1) ** 2).astype(np.float64))[None, None]
    x = disc * torch.rand(1, 1, N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = op.A(x)
    # Every pixel deposits its whole (unit-area) footprint on the detector: each view sums to the mass.
    _close(y.sum(-1), x.sum().expand(1, 1, 12), rtol=1e-9, atol=0)
    ones = torch.ones(1, 1, N, N, dtype=torch.float64)
    _close(op.AtA_ones(ones), op.At(op.A(ones)))
    assert (op.AtA_ones(ones) > 0).all()


# ----------------------------------------------------------------------------- adjoint / pinv
@pytest.mark.parametrize(
    "size, views, bins, angles",
    [(16, 30, None, None), (17, 7, 31, None), (20, 5, None, [0.0, 10.0, 45.0, 91.5, 170.0])],
)
def test_adjoint(size, views, bins, angles):
    op = ParallelBeamCT(size, views, bins=bins, angles=angles)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, *op.in_shape, dtype=torch.float64, generator=g)
    y = torch.randn(3, *op.out_shape, dtype=torch.float64, generator=g)
    Ax = op.A(x)
    lhs = (Ax * y).sum()
    rhs = (x * op.At(y)).sum()
    assert abs(lhs - rhs) <= 1e-6 * Ax.norm() * y.norm()
    # The adjoint is the exact transpose of the stored matrix.
    M = op.matrix().to_dense()
    _close(Ax.reshape(3, -1), x.reshape(3, -1) @ M.T)


def test_float32_batch_and_autograd():
    op = ParallelBeamCT(16, 9)
    x64 = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    y64 = op.A(x64)
    x = x64.float().requires_grad_(True)
    y = op.A(x)
    assert y.dtype == torch.float32 and y.shape == (2, 1, 9, 23)
    _close(y.double(), y64, rtol=1e-5, atol=1e-5)
    _close(op.A(x[1:]).detach(), y[1:].detach(), rtol=1e-6, atol=1e-6)  # batch rows are independent
    (y * y.detach()).sum().backward()  # grad of 0.5||Ax||^2-like term: A^T A x
    _close(x.grad, op.At(y.detach()), rtol=1e-5, atol=1e-5)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _check_moore_penrose(op, tol):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, *op.in_shape, dtype=torch.float64, generator=g)
    y = torch.randn(2, *op.out_shape, dtype=torch.float64, generator=g)
    rel = _rel
    Ax = op.A(x)
    PAx = op.pinv(Ax)
    Py = op.pinv(y)
    APy = op.A(Py)
    assert rel(op.A(PAx), Ax) <= tol  # A A+ A = A
    assert rel(op.pinv(APy), Py) <= tol  # A+ A A+ = A+
    # (A A+) and (A+ A) are symmetric.
    s1, s2 = (APy[0] * y[1]).sum(), (y[0] * APy[1]).sum()
    assert abs(s1 - s2) <= tol * APy[0].norm() * y[1].norm()
    s1, s2 = (PAx[0] * x[1]).sum(), (x[0] * PAx[1]).sum()
    assert abs(s1 - s2) <= tol * PAx[0].norm() * x[1].norm()
    # The residual of the least-squares solution is orthogonal to range(A).
    assert float(op.At(y - APy).norm() / op.At(y).norm()) <= tol


@pytest.mark.parametrize("size, views", [(16, 30), (20, 45), (16, 8)])
def test_moore_penrose_cg(size, views):
    # (16, 30), (20, 45): over-determined; (16, 8): under-determined (184 < 256 measurements).
    # Default CG cap (2000 iterations, early stop at cg_tol).
    op = ParallelBeamCT(size, views, pinv_method="cg")
    assert op.pinv_method == "cg"
    _check_moore_penrose(op, 1e-3)


@pytest.mark.parametrize(
    "size, views, bins, angles",
    [
        (16, 30, None, None),  # over-determined
        (20, 45, None, None),
        (16, 8, None, None),  # under-determined
        (24, 24, None, None),  # cond(A) ~1.4e4: 2000 CG iterations do not converge here
        (17, 7, 31, None),  # odd size, wide detector (all-zero rows)
        (20, 5, None, [0.0, 10.0, 45.0, 91.5, 170.0]),
    ],
)
def test_moore_penrose_gram(size, views, bins, angles):
    # The closed form is the default at these sizes. Measured errors: 1e-13 .. 3e-7.
    op = ParallelBeamCT(size, views, bins=bins, angles=angles)
    assert op.pinv_method == "gram" and "pinv_method='gram'" in repr(op)
    _check_moore_penrose(op, 1e-6)


def test_gram_pinv_matches_cg_and_dense():
    op = ParallelBeamCT(16, 30)
    y = torch.randn(3, *op.out_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    x_gram = op.pinv(y)
    # CG converges here (cond(A) ~700): agreement to the CG accuracy.
    assert _rel(ParallelBeamCT(16, 30, pinv_method="cg").pinv(y), x_gram) <= 1e-6
    # ... and the dense pseudo-inverse (well conditioned here, so no threshold issue).
    M = op.matrix().to_dense()
    ref = (torch.linalg.pinv(M) @ y.reshape(3, -1).T).T.reshape(x_gram.shape)
    assert _rel(x_gram, ref) <= 1e-8
    # float32 input: float32 factors, close to float64.
    x32 = op.pinv(y.float())
    assert x32.dtype == torch.float32
    assert _rel(x32.double(), x_gram) <= 1e-4


def test_partial_svd():
    op = ParallelBeamCT(16, 8)  # under-determined: 184 measurements, some all-zero detector bins
    U, s, V = op.partial_svd()
    r = s.numel()
    assert U.shape == (8 * op.bins, r) and V.shape == (256, r)
    assert 100 < r <= 184 and bool((s[:-1] >= s[1:]).all()) and float(s[-1]) > 0
    assert float(s[-1] ** 2) > op.gram_rcond * float(s[0] ** 2)
    eye = torch.eye(r, dtype=torch.float64)
    assert float((U.T @ U - eye).abs().max()) < 1e-6
    assert float((V.T @ V - eye).abs().max()) < 1e-6
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    Ax = ((x.reshape(2, -1) @ V) * s @ U.T).reshape(2, *op.out_shape)
    assert _rel(Ax, op.A(x)) <= 1e-6
    # Cached: the same tensors on the next call; available even when pinv uses CG.
    assert op.partial_svd()[0] is U
    assert ParallelBeamCT(16, 8, pinv_method="cg").partial_svd()[1].numel() == r


def test_damped_pinv():
    op = ParallelBeamCT(16, 8)
    r = torch.randn(2, *op.out_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    M = op.matrix().to_dense()
    gamma = 0.3
    ref = M.T @ torch.linalg.solve(M @ M.T + gamma * torch.eye(M.shape[0], dtype=M.dtype), r.reshape(2, -1).T)
    ref = ref.T.reshape(2, *op.in_shape)
    # Exact up to the directions dropped by gram_rcond (s^2 <= 1e-12 max s^2, weight s / gamma).
    assert _rel(op.damped_pinv(r, gamma), ref) <= 1e-5
    assert _rel(ParallelBeamCT(16, 8, pinv_method="cg").damped_pinv(r, gamma), ref) <= 1e-6
    _close(op.damped_pinv(r, 0.0), op.pinv(r))
    assert float(op.damped_pinv(r, float("inf")).abs().max()) == 0.0
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        op.damped_pinv(r, -1.0)


def test_pinv_method_selection(monkeypatch):
    assert ParallelBeamCT(16, 4).pinv_method == "gram"
    assert ParallelBeamCT(16, 4, pinv_method="cg").pinv_method == "cg"
    monkeypatch.setattr(ParallelBeamCT, "gram_limit", 50)
    op = ParallelBeamCT(16, 4)  # Gram side min(4 * 23, 256) > 50
    assert op.pinv_method == "cg"
    assert ParallelBeamCT(16, 4, pinv_method="gram").pinv_method == "gram"
    with pytest.raises(ValueError, match="pinv_method must be one of auto, gram, cg"):
        ParallelBeamCT(16, 4, pinv_method="svd")
    with pytest.raises(ValueError, match=r"gram_rcond must be in \[0, 1\)"):
        ParallelBeamCT(16, 4, gram_rcond=2.0)


def test_gram_rcond_drops_small_singular_values():
    op = ParallelBeamCT(16, 8, gram_rcond=1e-4)
    s = op.partial_svd()[1]
    assert float(s[-1] ** 2) > 1e-4 * float(s[0] ** 2)
    assert s.numel() < ParallelBeamCT(16, 8).partial_svd()[1].numel()
    # The thresholded pseudo-inverse still satisfies A^+ A A^+ = A^+.
    p = op.pinv(torch.rand(1, *op.out_shape, dtype=torch.float64))
    assert _rel(op.pinv(op.A(p)), p) <= 1e-8


def test_gram_disk_cache_and_copies(tmp_path):
    import copy
    import pickle

    from diffinv.operators import ct as ct_module

    op = ParallelBeamCT(12, 5, cache_dir=tmp_path)
    y = torch.randn(2, *op.out_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x = op.pinv(y)
    files = list((tmp_path / "ct").glob("gram-*.npz"))
    assert len(files) == 1 and not list((tmp_path / "ct").glob("*.tmp*"))
    # A fresh process is simulated by clearing the in-memory cache: the file is read back.
    ct_module._SVD_MEMORY.clear()
    op2 = ParallelBeamCT(12, 5, cache_dir=tmp_path)
    _close(op2.pinv(y), x, rtol=1e-12, atol=1e-12)
    # A corrupt file is ignored (recomputed and rewritten).
    files[0].write_bytes(b"not an npz")
    ct_module._SVD_MEMORY.clear()
    _close(ParallelBeamCT(12, 5, cache_dir=tmp_path).pinv(y), x, rtol=1e-10, atol=1e-10)
    # Copies and pickles drop the derived data and recompute it on use.
    for clone in (copy.deepcopy(op), pickle.loads(pickle.dumps(op))):
        assert clone._svd64 is None
        _close(clone.pinv(y), x, rtol=1e-10, atol=1e-10)


def test_AtA_ones_cached():
    op = ParallelBeamCT(16, 6)
    like = torch.zeros(1, dtype=torch.float32)
    d = op.AtA_ones(like)
    assert d is op.AtA_ones(like) and d.shape == (1, 1, 16, 16) and d.dtype == torch.float32
    ref = op.At(op.A(torch.ones(1, 1, 16, 16, dtype=torch.float64)))
    _close(op.AtA_ones(ref), ref)
    _close(op.AtA_ones(like), ref.float(), rtol=1e-6, atol=1e-6)


def test_gram_pinv_is_fast_at_64px():
    # 64 px / 8 views: Gram side 648 (one-off ~0.1-3 s on a busy 2-core machine), then each call
    # is two dense products (~ms) instead of up to 2000 CG iterations.
    op = ParallelBeamCT(64, 8)
    y = torch.rand(4, *op.out_shape)
    t = time.perf_counter()
    op.pinv(y[:1])
    oneoff = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(5):
        x = op.pinv(y)
    per_call = (time.perf_counter() - t) / 5
    assert x.shape == (4, 1, 64, 64) and torch.isfinite(x).all()
    assert oneoff < 20.0 and per_call < 0.1


# ----------------------------------------------------------------------------- agreement with skimage
def test_forward_matches_skimage_radon(op64, phantom64, sino64):
    ref = _match_bins(sino64, op64.bins).T  # (views, bins)
    ours = op64.A(torch.from_numpy(phantom64)[None, None])[0, 0].numpy()
    corr = np.corrcoef(ours.ravel(), ref.ravel())[0, 1]
    scale = float((ours * ref).sum() / (ref * ref).sum())
    max_abs = np.abs(ours - ref).max()
    # Measured: corr 0.99999, scale 1.0000, max |diff| 0.16 on a peak of 16.3 (skimage samples the
    # rotated image bilinearly; we integrate pixel footprints over bins).
    assert corr >= 0.9999
    assert abs(scale - 1) < 0.005
    assert max_abs < 0.02 * ref.max()


def test_fbp_matches_skimage_iradon(op64, phantom64, sino64):
    sino = sino64  # (bins, views), same bins as ours for N = 64
    assert sino.shape[0] == op64.bins
    ref = iradon(sino, THETA180, filter_name="ramp", circle=False)
    ours = op64.fbp(torch.from_numpy(sino.T.copy())[None, None])[0, 0].numpy()
    dr = phantom64.max() - phantom64.min()
    # Whole 64 x 64 image. Measured: 54.7 dB.
    assert _psnr(ours, ref, dr) >= 45


@pytest.mark.parametrize("filt", FILTERS[1:])
def test_fbp_filters_match_skimage(op64, phantom64, sino64, filt):
    sino = sino64
    ref = iradon(sino, THETA180, filter_name=filt, circle=False)
    ours = op64.fbp(torch.from_numpy(sino.T.copy())[None, None], filter=filt)[0, 0].numpy()
    # Measured: 60.7 (shepp-logan), 63.0 (cosine), 64.3 (hamming), 64.6 (hann) dB.
    assert _psnr(ours, ref, phantom64.max() - phantom64.min()) >= 45


def test_fbp_reconstructs_phantom(op64, phantom64):
    x = torch.from_numpy(phantom64)[None, None].float()
    rec = op64.fbp(op64.A(x))
    assert rec.dtype == torch.float32 and rec.shape == x.shape
    dr = phantom64.max() - phantom64.min()
    # Whole image. Measured: 28.2 dB with 180 views (skimage radon + iradon: 28.2 dB too).
    assert _psnr(rec[0, 0].double().numpy(), phantom64, dr) >= 27


@pytest.mark.parametrize("size", [128, pytest.param(256, marks=pytest.mark.slow)])
def test_large_operator(size):
    op = ParallelBeamCT(size, 60)  # 256: ~2 s build, 9.1 M non-zeros
    bins = math.ceil(size * math.sqrt(2))
    assert op.out_shape == (1, 60, bins)
    assert op.nnz < 2.5 * size * size * 60
    x = torch.rand(2, 1, size, size)
    y = op.A(x)
    assert y.shape == (2, 1, 60, bins)
    assert op.At(y).shape == (2, 1, size, size)
    _close(y.sum(-1).mean(-1), x.sum((-1, -2)), rtol=1e-3, atol=0)


# ----------------------------------------------------------------------------- errors
def test_errors():
    op = ParallelBeamCT(16, 4)
    with pytest.raises(ValueError, match=r"expected \(B, 1, 16, 16\)"):
        op.A(torch.rand(1, 1, 16, 20))  # non-square
    with pytest.raises(ValueError, match=r"expected \(B, 1, 16, 16\)"):
        op.A(torch.rand(1, 3, 16, 16))  # multi-channel
    with pytest.raises(ValueError, match=r"expected \(B, 1, 4, 23\)"):
        op.At(torch.rand(1, 1, 23, 4))  # transposed (skimage layout) sinogram
    with pytest.raises(ValueError, match="at least 1 view"):
        ParallelBeamCT(16, 0)
    with pytest.raises(ValueError, match=r"detector too small: bins=22 < ceil\(size\*sqrt\(2\)\)=23"):
        ParallelBeamCT(16, 4, bins=22)
    with pytest.raises(ValueError, match="size must be >= 1"):
        ParallelBeamCT(0, 4)
    with pytest.raises(ValueError, match="must be an integer"):
        ParallelBeamCT(16.5, 4)
    with pytest.raises(ValueError, match="1-D sequence of views=4"):
        ParallelBeamCT(16, 4, angles=[0.0, 45.0])
    with pytest.raises(ValueError, match="finite"):
        ParallelBeamCT(16, 2, angles=[0.0, float("nan")])
    with pytest.raises(ValueError, match="unknown FBP filter 'shepp'"):
        op.fbp(torch.rand(1, 1, 4, 23), filter="shepp")
