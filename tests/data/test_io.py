"""Tests for diffinv.data.io: loading images/arrays, atomic saving, errors."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from diffinv.data import load_image, save_image, save_npy_atomic

RNG = np.random.default_rng(0)


def _rgb8(h=5, w=7):
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _files(d):
    return sorted(p.name for p in d.iterdir())


# ----------------------------------------------------------------------------- round trips
def test_png_roundtrip_rgb_and_gray(tmp_path):
    x = torch.rand(3, 6, 9)
    p = save_image(x, tmp_path / "sub" / "dir" / "rgb.png")  # parent dirs are created
    assert p == tmp_path / "sub" / "dir" / "rgb.png"
    y = load_image(p)
    assert y.shape == (1, 3, 6, 9) and y.dtype == torch.float32
    assert (y[0] - x).abs().max() <= 0.5 / 255 + 1e-6
    # Re-saving a loaded 8-bit image is exact.
    save_image(y, tmp_path / "again.png")
    assert torch.equal(load_image(tmp_path / "again.png"), y)

    g = torch.rand(1, 1, 4, 5)
    save_image(g, tmp_path / "gray.png")
    assert Image.open(tmp_path / "gray.png").mode == "L"
    yg = load_image(tmp_path / "gray.png")
    assert yg.shape == (1, 1, 4, 5)
    assert (yg - g).abs().max() <= 0.5 / 255 + 1e-6
    # No temporary files are left behind.
    assert _files(tmp_path) == ["again.png", "gray.png", "sub"]


def test_save_clamps(tmp_path):
    x = torch.tensor([[[-1.0, 0.5, 2.0]]])
    save_image(x, tmp_path / "c.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "c.png")), [[0, 128, 255]])


def test_pil_modes(tmp_path):
    rgb = _rgb8()
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=100)
    assert load_image(tmp_path / "a.jpg").shape == (1, 3, 5, 7)
    Image.fromarray(rgb).save(tmp_path / "a.bmp")
    assert np.array_equal(
        load_image(tmp_path / "a.bmp")[0].permute(1, 2, 0).numpy() * 255, rgb.astype(np.float32)
    )

    # RGBA: alpha dropped.
    rgba = np.concatenate([rgb, RNG.integers(0, 256, size=(5, 7, 1), dtype=np.uint8)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    y = load_image(tmp_path / "rgba.png")
    assert y.shape == (1, 3, 5, 7)
    assert np.allclose(y[0].permute(1, 2, 0).numpy(), rgb / 255.0, atol=1e-7)

    # Palette image -> RGB with the palette colours.
    pal = Image.fromarray(rgb).quantize(colors=8)
    pal.save(tmp_path / "pal.png")
    assert Image.open(tmp_path / "pal.png").mode == "P"
    y = load_image(tmp_path / "pal.png")
    assert np.allclose(y[0].permute(1, 2, 0).numpy(), np.asarray(pal.convert("RGB")) / 255.0, atol=1e-7)

    # Grayscale with alpha, and bilevel.
    Image.fromarray(rgb[..., 0]).convert("LA").save(tmp_path / "la.png")
    assert np.allclose(load_image(tmp_path / "la.png")[0, 0].numpy(), rgb[..., 0] / 255.0, atol=1e-7)
    Image.fromarray(rgb[..., 0] > 127).save(tmp_path / "bw.png")
    assert set(load_image(tmp_path / "bw.png").unique().tolist()) <= {0.0, 1.0}


def test_16bit_tiff_and_png(tmp_path):
    a = RNG.integers(0, 65536, size=(6, 8), dtype=np.uint16)
    for name in ("a.tif", "a.tiff", "a.png"):
        Image.fromarray(a).save(tmp_path / name)
        y = load_image(tmp_path / name)
        assert y.shape == (1, 1, 6, 8)
        assert np.allclose(y[0, 0].numpy(), a / 65535.0, atol=1e-7), name
    # 32-bit float TIFF: values kept as they are.
    f = RNG.random((3, 4)).astype(np.float32) * 2 - 0.5
    Image.fromarray(f).save(tmp_path / "f.tif")
    assert np.array_equal(load_image(tmp_path / "f.tif")[0, 0].numpy(), f)


@pytest.mark.parametrize(
    "shape, perm",
    [
        ((5, 7), None),
        ((5, 7, 1), (2, 0, 1)),
        ((5, 7, 3), (2, 0, 1)),
        ((1, 5, 7), (0, 1, 2)),
        ((3, 5, 7), (0, 1, 2)),
    ],
)
def test_npy_layouts(tmp_path, shape, perm):
    a = RNG.random(shape)
    np.save(tmp_path / "a.npy", a)
    y = load_image(tmp_path / "a.npy")
    chw = a[None] if perm is None else a.transpose(perm)
    assert y.shape == (1, *chw.shape) and y.dtype == torch.float32
    assert np.allclose(y[0].numpy(), chw, atol=1e-7)


def test_npy_dtypes(tmp_path):
    np.save(tmp_path / "u8.npy", np.array([[0, 255, 51]], dtype=np.uint8))
    assert np.allclose(load_image(tmp_path / "u8.npy").flatten().numpy(), [0, 1, 0.2])
    np.save(tmp_path / "u16.npy", np.array([[0, 65535]], dtype=np.uint16))
    assert np.allclose(load_image(tmp_path / "u16.npy").flatten().numpy(), [0, 1])
    np.save(tmp_path / "b.npy", np.array([[True, False]]))
    assert load_image(tmp_path / "b.npy").flatten().tolist() == [1.0, 0.0]
    # Floats outside [0, 1] are kept (the caller decides whether to clip).
    np.save(tmp_path / "f.npy", np.array([[-0.5, 1.5]], dtype=np.float32))
    assert load_image(tmp_path / "f.npy").flatten().tolist() == [-0.5, 1.5]


def test_channel_conversion(tmp_path):
    rgb = _rgb8()
    Image.fromarray(rgb).save(tmp_path / "c.png")
    g = load_image(tmp_path / "c.png", channels=1)
    luma = (rgb.astype(np.float64) / 255) @ np.array([0.299, 0.587, 0.114])
    assert g.shape == (1, 1, 5, 7)
    assert np.allclose(g[0, 0].numpy(), luma, atol=1e-6)
    assert torch.equal(load_image(tmp_path / "c.png", channels=3), load_image(tmp_path / "c.png"))

    Image.fromarray(rgb[..., 1]).save(tmp_path / "g.png")
    g3 = load_image(tmp_path / "g.png", channels=3)
    assert g3.shape == (1, 3, 5, 7)
    assert torch.equal(g3[:, 0], g3[:, 1]) and torch.equal(g3[:, 0], g3[:, 2])
    with pytest.raises(ValueError, match="channels must be None, 1 or 3"):
        load_image(tmp_path / "g.png", channels=2)


def test_save_npy_atomic(tmp_path):
    a = RNG.random((3, 4, 5)).astype(np.float32)
    p = save_npy_atomic(a, tmp_path / "deep" / "a.npy")
    assert np.array_equal(np.load(p), a)
    save_npy_atomic(torch.from_numpy(a) * 2, p)  # overwrite, from a tensor
    assert np.array_equal(np.load(p), a * 2)
    assert _files(tmp_path / "deep") == ["a.npy"]
    with pytest.raises(ValueError, match="object arrays"):
        save_npy_atomic(np.array([None, 1], dtype=object), tmp_path / "o.npy")
    assert not (tmp_path / "o.npy").exists()


# ----------------------------------------------------------------------------- errors
def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="image file not found: .*missing.png"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="not a regular file"):
        load_image(tmp_path)

    (tmp_path / "corrupt.png").write_bytes(
        np.random.default_rng(1).integers(0, 256, 512, dtype=np.uint8).tobytes()
    )
    with pytest.raises(ValueError, match=r"cannot read image file .*corrupt\.png"):
        load_image(tmp_path / "corrupt.png")

    # A real PNG cut short.
    Image.fromarray(_rgb8(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read image file .*trunc\.png"):
        load_image(tmp_path / "trunc.png")

    (tmp_path / "text.jpg").write_text("this is not a jpeg\n")
    with pytest.raises(ValueError, match=r"cannot read image file .*text\.jpg"):
        load_image(tmp_path / "text.jpg")

    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match=r"unsupported file type '\.gif'"):
        load_image(tmp_path / "a.gif")
    (tmp_path / "noext").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unsupported file type '\(no extension\)'"):
        load_image(tmp_path / "noext")

    bad = np.ones((4, 4))
    bad[1, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"nan\.npy contains NaN or Inf"):
        load_image(tmp_path / "nan.npy")
    np.save(tmp_path / "inf.npy", np.full((2, 2), np.inf, dtype=np.float32))
    with pytest.raises(ValueError, match=r"inf\.npy contains NaN or Inf"):
        load_image(tmp_path / "inf.npy")

    for rank_shape in [(5,), (1, 3, 4, 4)]:
        np.save(tmp_path / "r.npy", np.zeros(rank_shape))
        with pytest.raises(ValueError, match=f"has rank {len(rank_shape)}, expected 2"):
            load_image(tmp_path / "r.npy")
    np.save(tmp_path / "c4.npy", np.zeros((4, 5, 4)))
    with pytest.raises(ValueError, match="no channel axis of size 1 or 3"):
        load_image(tmp_path / "c4.npy")
    np.save(tmp_path / "cplx.npy", np.zeros((4, 4), dtype=complex))
    with pytest.raises(ValueError, match="unsupported array dtype complex128"):
        load_image(tmp_path / "cplx.npy")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=r"cannot read array file .*junk\.npy"):
        load_image(tmp_path / "junk.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"cannot read array file .*obj\.npy"):
        load_image(tmp_path / "obj.npy")


def test_error_messages_are_one_line(tmp_path):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(ValueError) as e:
        load_image(tmp_path / "corrupt.png")
    assert "\n" not in str(e.value)


def test_save_errors_leave_no_file(tmp_path):
    target = tmp_path / "out" / "x.png"
    for bad, match in [
        (torch.rand(2, 3, 4, 4), r"\(C, H, W\) or \(1, C, H, W\)"),  # batch of 2
        (torch.rand(4, 4), r"\(C, H, W\) or \(1, C, H, W\)"),  # rank 2
        (torch.rand(2, 4, 4), "C in 1, 3"),  # 2 channels
        (torch.full((1, 2, 2), float("nan")), "NaN or Inf"),
        (np.zeros((1, 2, 2)), "expects a torch.Tensor"),
    ]:
        with pytest.raises(ValueError, match=match):
            save_image(bad, target)
        assert not target.exists()
    with pytest.raises(ValueError, match="use a .png path"):
        save_image(torch.rand(1, 2, 2), tmp_path / "x.jpg")
    assert not (tmp_path / "x.jpg").exists()

    # A failure during the write itself removes the temporary file and keeps an existing target intact.
    save_image(torch.zeros(1, 2, 2), target)
    before = target.read_bytes()

    class Boom(RuntimeError):
        pass

    import diffinv.data.io as io

    def failing_writer(f):
        f.write(b"partial")
        raise Boom("disk full")

    with pytest.raises(Boom):
        io._atomic_write(target, failing_writer)
    assert target.read_bytes() == before
    assert _files(target.parent) == ["x.png"]
    assert not any(name.endswith(".tmp") for name in os.listdir(target.parent))
