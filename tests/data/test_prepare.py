"""Training-data preparation: the CelebA identity split and the 64x64 crops / resized slices."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffinv.data.prepare import CELEBA_BOX, celeba_split, prepare_celeba, prepare_filtered, prepare_resized


def test_identity_split_is_disjoint_by_person(tmp_path):
    ids = tmp_path / "identity.txt"
    ids.write_text("a.jpg 10\nb.jpg 3\nc.jpg 10\nd.jpg 7\ne.jpg 20\n")
    split = celeba_split(ids)
    assert split == {"train": ["b.jpg", "d.jpg"], "dev": ["a.jpg", "c.jpg", "e.jpg"]}
    ids.write_text("a.jpg ten\n")
    with pytest.raises(ValueError, match="identity.txt:1: expected 'file identity'"):
        celeba_split(ids)


def test_celeba_crops_are_the_ddpm_box(tmp_path):
    src = tmp_path / "celeba"
    src.mkdir()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(109, 89, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(src / "000001.png")
    (tmp_path / "ids.txt").write_text("000001.png 5\n")
    assert prepare_celeba(src, tmp_path / "ids.txt", tmp_path / "out") == {"train": 1, "dev": 0}
    crop = np.asarray(Image.open(tmp_path / "out" / "train" / "000001.png"))
    left, top, right, bottom = CELEBA_BOX
    np.testing.assert_array_equal(crop, pixels[top:bottom, left:right])
    Image.fromarray(pixels[:50]).save(src / "000001.png")
    with pytest.raises(ValueError, match="expected an 89x109 CelebA image"):
        prepare_celeba(src, tmp_path / "ids.txt", tmp_path / "out2")


def test_resized_slices_average_blocks(tmp_path):
    src = tmp_path / "ct"
    src.mkdir()
    a = np.kron(np.arange(16, dtype=np.uint8).reshape(4, 4) * 16, np.ones((4, 4), np.uint8))
    Image.fromarray(a).save(src / "s.png")
    assert prepare_resized(src, tmp_path / "out", size=4) == 1
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "s.png")), a[::4, ::4])


def test_filtered_slices_keep_size_and_apply_the_filter(tmp_path):
    src = tmp_path / "ct"
    src.mkdir()
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(12, 10), dtype=np.uint8)
    Image.fromarray(a).save(src / "s.png")
    assert prepare_filtered(src, tmp_path / "out", lambda u: 1.0 - u) == 1
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "s.png")), 255 - a)
    with pytest.raises(ValueError, match=r"s.png: the filter returned shape \(6, 10\), expected \(12, 10\)"):
        prepare_filtered(src, tmp_path / "out2", lambda u: u[::2])
    assert not list((tmp_path / "out2").glob("*.png"))
    Image.fromarray(a[:8, :8]).save(src / "t.png")  # filtered after s.png: fails second
    with pytest.raises(ValueError, match=r"t.png: the filter returned shape \(4, 8\)"):
        prepare_filtered(src, tmp_path / "out3", lambda u: u if u.shape != (8, 8) else u[::2])
    assert not list((tmp_path / "out3").glob("*.png"))  # s.png is not left behind either
