"""Generic and operator-specific tests of the degradation operators (small shapes, float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import torch
import torch.nn.functional as F

from diffinv.operators import (
    BicubicSuperResolution,
    BlockRandomCS,
    Blur,
    Colorize,
    ComposedOperator,
    Denoise,
    FanBeamCT,
    Inpaint,
    ParallelBeamCT,
    SuperResolution,
    WalshHadamardCS,
    available_specs,
    box_mask,
    from_spec,
    gaussian_kernel,
)
from diffinv.operators.base import dense_matrix

F64 = torch.float64
RGB = (3, 16, 16)
GREY = (1, 16, 16)

SPECS = [
    ("denoise", RGB),
    ("inpaint-box", RGB),
    ("inpaint-random0.5", RGB),
    ("inpaint-random0.1", GREY),
    ("inpaint-strokes", RGB),
    ("colorize", RGB),
    ("sr2", RGB),
    ("sr4", RGB),
    ("sr8", RGB),
    ("sr4-bicubic", RGB),
    ("sr2-bicubic", GREY),
    ("deblur-gauss", RGB),
    ("deblur-uniform", RGB),
    ("deblur-aniso", RGB),
    ("deblur-motion", RGB),
    ("cs0.25", RGB),
    ("cs0.25-block", RGB),
    ("cs0.5-block4", GREY),
    ("ct18", GREY),
    ("ct30", GREY),
    ("ct60", GREY),
    ("ct12-fan", GREY),
    ("ct10-a90", GREY),
    ("ct10-fan-a120-bins30", GREY),
    ("colorize+sr4", RGB),
    ("inpaint-box+colorize+sr4", RGB),
    ("sr2+deblur-gauss", RGB),
]
SPEC_IDS = [s for s, _ in SPECS]

_CACHE: dict = {}


def get_op(spec, shape):
    key = (spec, shape)
    if key not in _CACHE:
        _CACHE[key] = from_spec(spec, shape, seed=0)
    return _CACHE[key]


def rnd(*shape, seed=0, dtype=F64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def mp_tol(spec):
    return 1e-3 if spec.startswith("ct") else 1e-4


# --------------------------------------------------------------------------------- generic
@pytest.mark.parametrize("spec,shape", SPECS, ids=SPEC_IDS)
def test_spec_attributes(spec, shape):
    op = get_op(spec, shape)
    assert op.spec == spec
    assert op.in_shape == shape
    assert op.name == spec


@pytest.mark.parametrize("spec,shape", SPECS, ids=SPEC_IDS)
def test_adjoint(spec, shape):
    op = get_op(spec, shape)
    x, y = rnd(2, *op.in_shape, seed=1), rnd(2, *op.out_shape, seed=2)
    Ax = op.A(x)
    assert Ax.shape == (2, *op.out_shape)
    lhs, rhs = (Ax * y).sum(), (x * op.At(y)).sum()
    assert abs(float(lhs - rhs)) <= 1e-6 * float(Ax.norm() * y.norm())


def _thresholded_A(op, x):
    """``A_thr x = U diag(s * [s > thr max s]) V^T x`` for SVD operators with a pinv threshold."""
    s = op.singulars_like(x)
    k = s.numel()
    s = torch.where(s.abs() > op.pinv_threshold * s.abs().max(), s, torch.zeros_like(s))
    z = torch.zeros(x.shape[0], op.m, dtype=x.dtype)
    z[:, :k] = op.Vt(x)[:, :k] * s
    return op.U(z)


def _effective_A(op, x):
    """``A A^+ A x``: ``A x`` itself, except that SVD factors with a pinv threshold act as ``A_thr``.

    For a chain composite whose leading factors have orthonormal-scaled rows (the only kind whose
    pseudo-inverse is computed factor by factor), ``A A^+ A`` is the chain with the last factor
    thresholded, which this reproduces.
    """
    if isinstance(op, ComposedOperator):
        for f in op.ops:
            x = _effective_A(f, x)
        return x
    if op.has_svd and getattr(op, "pinv_threshold", 0.0) > 0:
        return _thresholded_A(op, x)
    return op.A(x)


def iterative_pinv(op):
    """True for operators whose pseudo-inverse is computed by CG (CT, CG composites)."""
    return isinstance(op, (ParallelBeamCT, FanBeamCT)) or getattr(op, "pinv_method", None) == "cg"


@pytest.mark.parametrize("spec,shape", SPECS, ids=SPEC_IDS)
def test_moore_penrose(spec, shape):
    op = get_op(spec, shape)
    tol = mp_tol(spec)
    x, y = rnd(2, *op.in_shape, seed=3), rnd(2, *op.out_shape, seed=4)
    # A A^+ A = A (for a thresholded pseudo-inverse: A A^+ A = A_thr, the thresholded operator).
    assert rel(op.A(op.pinv(op.A(x))), _effective_A(op, x)) <= tol
    # A^+ A A^+ = A^+ (holds for the thresholded pseudo-inverse too).
    p = op.pinv(y)
    assert rel(op.pinv(op.A(p)), p) <= tol


SVD_SPECS = [(s, sh) for s, sh in SPECS if not s.startswith("ct") and "+" not in s]


@pytest.mark.parametrize("spec,shape", SVD_SPECS, ids=[s for s, _ in SVD_SPECS])
def test_svd(spec, shape):
    op = get_op(spec, shape)
    assert op.has_svd
    n, m = op.n, op.m
    s = op.singulars()
    assert s.dtype == F64 and s.dim() == 1 and s.numel() <= min(n, m) and bool((s >= 0).all())
    x, y = rnd(2, *op.in_shape, seed=5), rnd(2, *op.out_shape, seed=6)
    zn, zm = rnd(2, n, seed=7), rnd(2, m, seed=8)
    # V and U are orthonormal (square) maps.
    vx = op.Vt(x)
    assert vx.shape == (2, n)
    assert rel(op.V(vx), x) <= 1e-10
    assert rel(op.Vt(op.V(zn)), zn) <= 1e-10
    assert abs(float(vx.norm() / x.norm()) - 1) <= 1e-10
    uy = op.Ut(y)
    assert uy.shape == (2, m)
    assert rel(op.U(uy), y) <= 1e-10
    assert rel(op.Ut(op.U(zm)), zm) <= 1e-10
    assert abs(float(uy.norm() / y.norm()) - 1) <= 1e-10
    # U diag(s) V^T x = A x.
    k = s.numel()
    z = torch.zeros(2, m, dtype=F64)
    z[:, :k] = vx[:, :k] * s
    assert rel(op.U(z), op.A(x)) <= 1e-10
    # ... and V diag(s) U^T y = A^T y.
    w = torch.zeros(2, n, dtype=F64)
    w[:, :k] = uy[:, :k] * s
    assert rel(op.V(w), op.At(y)) <= 1e-10


@pytest.mark.parametrize("spec,shape", SPECS, ids=SPEC_IDS)
def test_batch_consistency(spec, shape):
    op = get_op(spec, shape)
    x, y = rnd(3, *op.in_shape, seed=9), rnd(3, *op.out_shape, seed=10)
    maps = [(op.A, x, 1e-12), (op.At, y, 1e-12)]
    # CG pseudo-inverses stop when every sample of the batch has converged: agreement to the CG
    # accuracy only.
    maps.append((op.pinv, y, mp_tol(spec) if iterative_pinv(op) else 1e-12))
    if op.has_svd:
        maps += [(op.Vt, x, 1e-12), (op.Ut, y, 1e-12)]
    for f, t, tol in maps:
        batched = f(t)
        single = torch.cat([f(t[i : i + 1]) for i in range(3)])
        assert rel(batched, single) <= tol, f.__name__


@pytest.mark.parametrize("spec,shape", SPECS, ids=SPEC_IDS)
def test_float32(spec, shape):
    op = get_op(spec, shape)
    x, y = rnd(2, *op.in_shape, seed=9), rnd(2, *op.out_shape, seed=10)
    for f, t in [(op.A, x), (op.At, y)]:
        out32 = f(t.float())
        assert out32.dtype == torch.float32
        assert rel(out32.double(), f(t)) <= 1e-5
    if iterative_pinv(op):  # only the dtype matters here: a few CG iterations suffice
        saved, op.cg_iters = op.cg_iters, 5
        try:
            assert op.pinv(y.float()).dtype == torch.float32
        finally:
            op.cg_iters = saved
    else:
        p32 = op.pinv(y.float())
        assert p32.dtype == torch.float32
        assert rel(p32.double(), op.pinv(y)) <= 1e-4
    if op.has_svd:
        assert op.Vt(x.float()).dtype == torch.float32
        assert op.Ut(y.float()).dtype == torch.float32
        assert op.V(op.Vt(x).float()).dtype == torch.float32
        assert op.U(op.Ut(y).float()).dtype == torch.float32


@pytest.mark.parametrize("spec,shape", SPECS, ids=SPEC_IDS)
def test_input_validation(spec, shape):
    op = get_op(spec, shape)
    C, H, W = op.in_shape
    with pytest.raises(ValueError, match="shape"):
        op.A(torch.zeros(1, C, H + 1, W, dtype=F64))
    with pytest.raises(ValueError, match="shape"):
        op.A(torch.zeros(C, H, W, dtype=F64))  # missing batch dimension
    with pytest.raises(ValueError, match="floating-point"):
        op.A(torch.zeros(1, C, H, W, dtype=torch.int64))
    with pytest.raises(ValueError, match="shape"):
        op.At(torch.zeros(1, *op.out_shape, 2, dtype=F64))
    with pytest.raises(ValueError, match="floating-point"):
        op.pinv(torch.zeros(1, *op.out_shape, dtype=torch.int32))


# --------------------------------------------------------------------------------- spec parsing
@pytest.mark.parametrize(
    "spec,shape,match",
    [
        ("nonsense", RGB, "valid forms"),
        ("sr", RGB, "valid forms"),
        ("cs-1", RGB, "valid forms"),
        ("inpaint-randomx", RGB, "valid forms"),
        ("deblur-", RGB, "valid forms"),
        ("", RGB, "valid forms"),
        ("colorize+", RGB, "valid forms"),
        ("sr4 bicubic", RGB, "valid forms"),
        ("sr3", RGB, "not divisible by the factor 3"),
        ("sr0", RGB, r"factor k must be in \[2, 64\]"),
        ("sr3-bicubic", RGB, "not divisible by the factor 3"),
        ("inpaint-random1.5", RGB, r"probability p must be in \[0, 1\)"),
        ("inpaint-random1", RGB, r"probability p must be in \[0, 1\)"),
        ("cs0", RGB, r"ratio must be in \(0, 1\]"),
        ("cs1.5", RGB, r"ratio must be in \(0, 1\]"),
        ("cs0.25", (3, 12, 16), "powers of two, got H=12"),
        ("cs0.25", (3, 16, 24), "powers of two, got W=24"),
        ("cs0.25-block32", RGB, "not divisible by the block size 32"),
        ("colorize", GREY, "3 channels"),
        ("colorize+colorize", RGB, "3 channels"),
        ("cs0.25+sr2", RGB, "not an image"),
        ("ct18", RGB, r"\(1, N, N\)"),
        ("ct18", (1, 16, 12), r"\(1, N, N\)"),
        ("ct18-fan", RGB, r"\(1, N, N\)"),
        ("ct8-a0", GREY, r"angular range must be in \(0, 360\] degrees, got 0"),
        ("ct8-fan-a361", GREY, r"angular range must be in \(0, 360\] degrees, got 361"),
        ("ct8-bins10", GREY, "detector too small: bins=10"),
        ("ct8-fan-bins1", GREY, "at least 2 detector bins"),
        ("ct8-bins30-fan", GREY, "unknown or malformed"),
    ],
)
def test_spec_errors(spec, shape, match):
    with pytest.raises(ValueError, match=match):
        from_spec(spec, shape)


@pytest.mark.parametrize("shape", [(3, 16), (3, 0, 16), (3, 16.5, 16), (-1, 4, 4), "abc", None])
def test_spec_bad_shape(shape):
    with pytest.raises(ValueError, match=r"3-tuple \(C, H, W\) of positive ints"):
        from_spec("denoise", shape)


def test_available_specs():
    forms = available_specs()
    assert len(forms) >= 14
    assert all(isinstance(f, str) and isinstance(d, str) and d for f, d in forms)
    names = [f for f, _ in forms]
    for form in ["denoise", "colorize", "sr<k>", "ct<views>", "cs<ratio>", "deblur-motion"]:
        assert form in names
    with pytest.raises(ValueError) as info:
        from_spec("bogus", RGB)
    for form in names:
        assert form in str(info.value)


def test_spec_seed_determinism():
    a = from_spec("inpaint-random0.3", RGB, seed=1)
    b = from_spec("inpaint-random0.3", RGB, seed=1)
    c = from_spec("inpaint-random0.3", RGB, seed=2)
    assert torch.equal(a.mask, b.mask) and not torch.equal(a.mask, c.mask)
    a, c = from_spec("cs0.25", RGB, seed=1), from_spec("cs0.25", RGB, seed=2)
    assert not torch.equal(a.kept, c.kept)
    a, b = from_spec("deblur-motion", RGB, seed=3), from_spec("deblur-motion", RGB, seed=3)
    assert torch.equal(a.kernel, b.kernel)


def test_spec_block_default():
    from diffinv.operators.spec import _default_block

    assert _default_block(64, 96) == 32 and _default_block(48, 48) == 24 and _default_block(7, 5) == 1
    assert from_spec("cs0.25-block", (1, 16, 24)).block == 8
    assert from_spec("cs0.25-block4", (1, 16, 24)).block == 4


# --------------------------------------------------------------------------------- denoise / inpaint
def test_denoise_identity():
    op = Denoise(RGB)
    x = rnd(2, *RGB)
    assert torch.equal(op.A(x), x) and torch.equal(op.pinv(x), x) and torch.equal(op.At(x), x)


def test_inpaint_projection_and_channels():
    mask = box_mask(16, 16)
    op = Inpaint(mask, channels=3)
    x = rnd(2, *RGB)
    assert torch.equal(op.A(x), x * mask)
    assert torch.equal(op.At(x), op.A(x)) and torch.equal(op.pinv(x), op.A(x))
    assert op.singulars().numel() == 3 * (256 - 64)
    # Vt lists observed entries first.
    assert torch.equal(op.Vt(x)[:, : op.singulars().numel()], x[:, mask.expand(3, -1, -1).bool()])
    assert Inpaint(mask).in_shape == (1, 16, 16)
    assert Inpaint(mask[0]).in_shape == (1, 16, 16)
    per_channel = torch.stack([mask[0], 1 - mask[0], mask[0]])
    assert Inpaint(per_channel).in_shape == (3, 16, 16)
    with pytest.raises(ValueError, match="channels"):
        Inpaint(per_channel, channels=2)


def test_inpaint_mask_values():
    with pytest.raises(ValueError, match="exactly 0 or 1"):
        Inpaint(torch.full((1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="exactly 0 or 1"):
        Inpaint(torch.tensor([[[0.0, 1.0], [2.0, 1.0]]]))
    with pytest.raises(ValueError, match="shape"):
        Inpaint(torch.ones(2, 2, 2, 2))
    assert Inpaint(torch.ones(1, 4, 4, dtype=torch.bool)).singulars().numel() == 16


def test_inpaint_from_png(tmp_path):
    from PIL import Image

    mask = box_mask(16, 12)[0]
    img = (mask.numpy() * 255).astype(np.uint8)
    img[0, 0] = 140  # >= 0.5 * 255 -> keep
    img[0, 1] = 120  # < 0.5 -> missing
    path = tmp_path / "mask.png"
    Image.fromarray(img).convert("RGB").save(path)
    op = Inpaint.from_png(path, (3, 16, 12))
    expected = mask.clone()
    expected[0, 1] = 0
    assert op.in_shape == (3, 16, 12)
    assert torch.equal(op.mask, expected.expand(3, -1, -1))
    with pytest.raises(ValueError, match=r"size 16x12 \(HxW\), expected 12x16"):
        Inpaint.from_png(path, (3, 12, 16))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read mask image"):
        Inpaint.from_png(bad, (3, 16, 12))
    with pytest.raises(ValueError, match="cannot read mask image"):
        Inpaint.from_png(tmp_path / "missing.png", (3, 16, 12))


# --------------------------------------------------------------------------------- colorize
def test_colorize_weighted_sum():
    x = rnd(2, *RGB)
    op = Colorize(RGB)
    ref = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert op.out_shape == (1, 16, 16)
    assert rel(op.A(x)[:, 0], ref) <= 1e-14
    mean = Colorize(RGB, weights="mean")
    assert rel(mean.A(x)[:, 0], x.mean(1)) <= 1e-14
    custom = Colorize(RGB, weights=(1.0, -2.0, 0.5))
    assert rel(custom.A(x)[:, 0], x[:, 0] - 2 * x[:, 1] + 0.5 * x[:, 2]) <= 1e-14
    assert torch.allclose(custom.singulars(), torch.full((256,), math.sqrt(5.25), dtype=F64))
    # pinv is a right inverse (A A^T = |w|^2 I).
    y = rnd(2, 1, 16, 16)
    assert rel(op.A(op.pinv(y)), y) <= 1e-14


def test_colorize_errors():
    with pytest.raises(ValueError, match="3 channels"):
        Colorize((4, 8, 8))
    with pytest.raises(ValueError, match="weights"):
        Colorize(RGB, weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="weights"):
        Colorize(RGB, weights=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="weights"):
        Colorize(RGB, weights="sepia")


# --------------------------------------------------------------------------------- super-resolution
@pytest.mark.parametrize("k", [1, 2, 4])
def test_sr_matches_avg_pool(k):
    op = SuperResolution((2, 8, 12), k)
    x = rnd(3, 2, 8, 12)
    assert rel(op.A(x), F.avg_pool2d(x, k)) <= 1e-14
    y = rnd(3, *op.out_shape)
    assert rel(op.A(op.pinv(y)), y) <= 1e-14


def test_sr_errors():
    with pytest.raises(ValueError, match="not divisible by the factor 3"):
        SuperResolution((1, 8, 9), 3)
    with pytest.raises(ValueError, match="not divisible by the factor 4"):
        BicubicSuperResolution((1, 8, 6), 4)
    with pytest.raises(ValueError, match="factor must be an integer"):
        SuperResolution((1, 8, 8), 2.5)


def test_bicubic_close_to_pil():
    """Our downsampling reflects the image at the borders (MATLAB ``imresize``), PIL instead clips
    the kernel and renormalises it: the outer two output pixels differ by a few percent of the
    signal, the interior agrees to float32 rounding (PIL computes in float32 for mode "F")."""
    from PIL import Image

    H, W, k = 32, 48, 4
    yy, xx = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    img = (0.5 + 0.3 * np.sin(xx / 5.0) * np.cos(yy / 7.0) + 0.1 * np.cos((xx + yy) / 9.0)).astype(np.float32)
    op = BicubicSuperResolution((1, H, W), k)
    ours = op.A(torch.from_numpy(img.astype(np.float64))[None, None])[0, 0].numpy()
    pil = np.asarray(Image.fromarray(img).resize((W // k, H // k), Image.BICUBIC))
    assert np.abs(ours - pil).max() < 0.05
    assert np.abs(ours - pil)[2:-2, 2:-2].max() < 1e-5
    assert torch.allclose(op.Dh.sum(1), torch.ones(H // k, dtype=F64))


# --------------------------------------------------------------------------------- deblur
def _loop_circular_conv(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """y[i, j] = sum_ab k[a, b] x[i - (a - kh//2), j - (b - kw//2)] (indices mod H, W)."""
    H, W = x.shape
    kh, kw = k.shape
    y = np.zeros_like(x)
    for a in range(kh):
        for b in range(kw):
            y += k[a, b] * np.roll(x, (a - kh // 2, b - kw // 2), axis=(0, 1))
    return y


def test_blur_matches_scipy_convolve():
    g = np.random.default_rng(0)
    k = g.random((3, 5))
    k /= k.sum()
    x = g.standard_normal((2, 10, 12))
    op = Blur((2, 10, 12), k)
    ours = op.A(torch.from_numpy(x)[None])[0].numpy()
    for c in range(2):
        ref = scipy.ndimage.convolve(x[c], k, mode="wrap")
        assert np.abs(ours[c] - ref).max() < 1e-12
        assert np.abs(ours[c] - _loop_circular_conv(x[c], k)).max() < 1e-12


@pytest.mark.parametrize("kshape,shape", [((2, 4), (1, 6, 8)), ((7, 9), (1, 4, 5)), ((1, 1), (1, 3, 3))])
def test_blur_even_and_large_kernels(kshape, shape):
    g = np.random.default_rng(1)
    k = g.random(kshape) + 0.1
    x = g.standard_normal(shape[1:])
    op = Blur(shape, k, normalize=False)
    ours = op.A(torch.from_numpy(x)[None, None])[0, 0].numpy()
    assert np.abs(ours - _loop_circular_conv(x, k)).max() < 1e-12


@pytest.mark.parametrize("shape", [(1, 5, 7), (2, 6, 9), (1, 8, 8), (1, 1, 4), (1, 3, 1)])
def test_blur_svd_odd_and_even_sizes(shape):
    g = np.random.default_rng(2)
    op = Blur(shape, g.random((3, 3)), pinv_threshold=0.0)
    n = op.n
    x, z = rnd(2, *shape, seed=11), rnd(2, n, seed=12)
    assert op.singulars().numel() == n
    assert rel(op.V(op.Vt(x)), x) <= 1e-12 and rel(op.Vt(op.V(z)), z) <= 1e-12
    assert rel(op.U(op.Ut(x)), x) <= 1e-12 and rel(op.Ut(op.U(z)), z) <= 1e-12
    zz = op.Vt(x) * op.singulars()
    assert rel(op.U(zz), op.A(x)) <= 1e-12


def _dense(op):
    n = op.n
    eye = torch.eye(n, dtype=F64).reshape(n, *op.in_shape)
    return op.A(eye).reshape(n, -1).T.numpy()


def test_blur_pinv_threshold_zero_is_moore_penrose():
    # 0.6 delta + 0.4 * (positive kernel): |K(f)| >= 0.2 everywhere, no spectral zeros.
    g = np.random.default_rng(3)
    k = 0.4 * g.random((3, 3)) / 1.0
    k = 0.4 * k / k.sum()
    k[1, 1] += 0.6
    op = Blur((1, 6, 8), k, pinv_threshold=0.0)
    assert float(op.singulars().min()) >= 0.19
    A = _dense(op)
    ref = np.linalg.pinv(A)
    y = rnd(3, 1, 6, 8, seed=13)
    ours = op.pinv(y).reshape(3, -1).numpy()
    assert np.abs(ours - y.reshape(3, -1).numpy() @ ref.T).max() < 1e-10
    x = rnd(3, 1, 6, 8, seed=14)
    assert rel(op.A(op.pinv(op.A(x))), op.A(x)) <= 1e-12
    assert rel(op.pinv(op.A(op.pinv(y))), op.pinv(y)) <= 1e-12


def test_blur_thresholded_pinv_is_pinv_of_thresholded_operator():
    op = Blur((1, 8, 8), gaussian_kernel(1.5), pinv_threshold=1e-2)
    s = op.singulars()
    cut = s <= 1e-2 * s.max()
    assert cut.any() and (~cut).any()
    n = op.n
    eye = torch.eye(n, dtype=F64)
    A_thr = _thresholded_A(op, eye.reshape(n, *op.in_shape)).reshape(n, n).T.numpy()
    ref = np.linalg.pinv(A_thr, rcond=1e-6)
    y = rnd(2, 1, 8, 8, seed=15)
    ours = op.pinv(y).reshape(2, -1).numpy()
    assert np.abs(ours - y.reshape(2, -1).numpy() @ ref.T).max() < 1e-8
    # ... and changing the attribute changes the pseudo-inverse consistently with the SVD path.
    op.pinv_threshold = 1e-6
    from diffinv.operators.base import SVDOperator

    assert rel(op.pinv(y), SVDOperator._pinv(op, y)) <= 1e-10


def test_blur_errors():
    with pytest.raises(ValueError, match="2-D"):
        Blur(GREY, torch.ones(3))
    with pytest.raises(ValueError, match="sums to 0"):
        Blur(GREY, torch.tensor([[1.0, -1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        Blur(GREY, torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="pinv_threshold"):
        Blur(GREY, torch.ones(3, 3), pinv_threshold=-1)


# --------------------------------------------------------------------------------- compressed sensing
def test_wht_matches_dense_hadamard():
    C, H, W = 2, 8, 16
    op = WalshHadamardCS((C, H, W), 0.3, generator=5)
    x = rnd(2, C, H, W)
    Hh = scipy.linalg.hadamard(H) / math.sqrt(H)
    Hw = scipy.linalg.hadamard(W) / math.sqrt(W)
    coef = np.einsum("ih,bchw,jw->bcij", Hh, x.numpy(), Hw).reshape(2, -1)
    M = round(0.3 * C * H * W)
    assert op.out_shape == (M,)
    kept = op.kept.numpy()
    assert len(np.unique(kept)) == M
    assert np.abs(op.A(x).numpy() - coef[:, kept]).max() < 1e-12
    assert np.abs(op.Vt(x).numpy()[:, :M] - coef[:, kept]).max() < 1e-12


def test_wht_errors():
    with pytest.raises(ValueError, match="powers of two, got H=12"):
        WalshHadamardCS((1, 12, 16), 0.5)
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
        WalshHadamardCS((1, 16, 16), 0.0)
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
        WalshHadamardCS((1, 16, 16), -0.25)
    with pytest.raises(ValueError, match="keeps no coefficient"):
        WalshHadamardCS((1, 4, 4), 0.01)


def test_block_cs_matches_dense_tiles():
    C, H, W, b, r = 2, 8, 12, 4, 0.4
    op = BlockRandomCS((C, H, W), r, block=b, generator=7)
    Q = op.Q.numpy()
    assert np.abs(Q @ Q.T - np.eye(b * b)).max() < 1e-12
    mb = round(r * b * b)
    assert op.out_shape == (C * (H // b) * (W // b) * mb,)
    x = rnd(1, C, H, W)[0].numpy()
    ref = [
        Q[:mb] @ x[c, i * b : (i + 1) * b, j * b : (j + 1) * b].reshape(-1)
        for c in range(C)
        for i in range(H // b)
        for j in range(W // b)
    ]
    ours = op.A(torch.from_numpy(x)[None])[0].numpy()
    assert np.abs(ours - np.concatenate(ref)).max() < 1e-12
    # The same seed gives the same matrix.
    assert torch.equal(BlockRandomCS((C, H, W), r, block=b, generator=7).Q, op.Q)
    assert not torch.equal(BlockRandomCS((C, H, W), r, block=b, generator=8).Q, op.Q)


def test_block_cs_errors():
    with pytest.raises(ValueError, match="not divisible by the block size 32"):
        BlockRandomCS((1, 48, 48), 0.25)
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
        BlockRandomCS((1, 8, 8), 0.0, block=4)
    with pytest.raises(ValueError, match="keeps no measurement"):
        BlockRandomCS((1, 8, 8), 0.01, block=4)


@pytest.mark.parametrize(
    "spec, shape, message",
    [
        ("sr0", (3, 64, 64), r"factor k must be in \[2, 64\], got 0"),
        ("sr1", (3, 64, 64), r"factor k must be in \[2, 64\], got 1"),
        ("sr1-bicubic", (3, 64, 64), r"factor k must be in \[2, 64\], got 1"),
        ("ct0", (1, 64, 64), r"number of views must be in \[1, 10000\], got 0"),
        ("colorize+sr0", (3, 64, 64), r"'sr0': factor k must be in"),
    ],
)
def test_spec_integer_parameters_out_of_range_name_the_valid_range(spec, shape, message):
    with pytest.raises(ValueError, match=message):
        from_spec(spec, shape)


def test_spec_integer_parameters_at_the_range_ends_build():
    assert from_spec("sr2", (1, 8, 8)).out_shape == (1, 4, 4)
    assert from_spec("ct1", (1, 8, 8)).out_shape[-2] == 1


# ------------------------------------------------------------------ abilities (issue 13)
@pytest.mark.parametrize("spec", ["sr4", "inpaint-box", "deblur-gauss", "colorize+sr4", "sr2+deblur-gauss"])
def test_damped_pinv_matches_dense(spec):
    """SVD operators (spectral form) and composites (the default CG) give A^T (A A^T + g I)^-1 r."""
    op = from_spec(spec, RGB)
    M = dense_matrix(op)
    r = torch.randn(2, *op.out_shape, dtype=F64, generator=torch.Generator().manual_seed(0))
    gamma = 0.3
    eye = torch.eye(M.shape[0], dtype=F64)
    ref = (M.T @ torch.linalg.solve(M @ M.T + gamma * eye, r.reshape(2, -1).T)).T.reshape(2, *op.in_shape)
    got = op.damped_pinv(r, gamma)
    assert float((got - ref).norm() / ref.norm()) <= 1e-8
    assert torch.equal(op.damped_pinv(r, 0.0), op.pinv(r))
    assert float(op.damped_pinv(r, float("inf")).abs().max()) == 0.0
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        op.damped_pinv(r, -1.0)


def test_spectral_view_initial_estimate_and_window_rule():
    sr4, chain, cs = from_spec("sr4", RGB), from_spec("colorize+sr4", RGB), from_spec("cs0.25", RGB)
    x = torch.rand(2, *RGB, dtype=F64, generator=torch.Generator().manual_seed(1))
    s, Vt, V = sr4.spectral_view(x)
    assert s.shape == (sr4.n,) and torch.allclose(V(Vt(x)), x, atol=1e-12)
    assert torch.equal(s, sr4.singulars_full(x)) and int((s > 0).sum()) == sr4.m
    assert chain.spectral_view(x) is None and not chain.has_svd
    y = sr4.A(x)
    assert torch.equal(sr4.initial_estimate(y), sr4.pinv(y))
    assert sr4.window_rule().align == 4 and sr4.window_rule().block_local
    rule = chain.window_rule()
    assert rule.align == 4 and rule.block_local and not rule.refusal
    assert "mixes the whole image" in cs.window_rule().refusal
    blur_last = from_spec("sr2+deblur-gauss", RGB).window_rule()
    assert blur_last.align == 2 and blur_last.support > 0 and blur_last.wrap is not None
    with pytest.raises(ValueError, match="mixes the whole image"):
        cs.restrict_window((0, 0, 8, 8))
