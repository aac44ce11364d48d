"""Medical slices: DICOM / NIfTI / 16-bit / .npy readers and CT windows."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffinv.data.medical import WINDOW_PRESETS, Window, parse_window, read_slice

pydicom = pytest.importorskip("pydicom")
nibabel = pytest.importorskip("nibabel")


def test_dicom_slice_in_hounsfield_units(tmp_path, write_dicom):
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 3000, size=(16, 12)).astype(np.uint16)
    write_dicom(tmp_path / "a.dcm", stored, slope=2.0, intercept=-1024.0)
    hu, meta = read_slice(tmp_path / "a.dcm")
    np.testing.assert_array_equal(hu, stored * 2.0 - 1024.0)
    assert meta["units"] == "HU" and meta["rescale_slope"] == 2.0


def test_dicom_without_pixels_or_in_colour_is_refused(tmp_path, write_dicom):
    write_dicom(tmp_path / "empty.dcm", None)
    with pytest.raises(ValueError, match="has no pixel data"):
        read_slice(tmp_path / "empty.dcm")
    write_dicom(tmp_path / "rgb.dcm", np.zeros((4, 4, 3)), samples=3)
    with pytest.raises(ValueError, match="colour image"):
        read_slice(tmp_path / "rgb.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(ValueError, match="cannot read DICOM file"):
        read_slice(tmp_path / "junk.dcm")


def test_nifti_volume_slices_and_range(tmp_path):
    vol = np.arange(5 * 6 * 3, dtype=np.float32).reshape(5, 6, 3) - 1000
    nibabel.Nifti1Image(vol, np.eye(4)).to_filename(str(tmp_path / "v.nii.gz"))
    s1, meta = read_slice(tmp_path / "v.nii.gz", slice_index=1)
    np.testing.assert_array_equal(s1, vol[..., 1])
    assert meta["slice"] == 1
    with pytest.raises(ValueError, match=r"slice 3 out of range: .* has slices 0\.\.2"):
        read_slice(tmp_path / "v.nii.gz", slice_index=3)
    with pytest.raises(ValueError, match="choose one with --slice"):
        read_slice(tmp_path / "v.nii.gz")


def test_sixteen_bit_png_with_hu_offset(tmp_path):
    hu = np.array([[-1024, 0], [40, 3071]], dtype=np.int32)
    Image.fromarray((hu + 1024).astype(np.uint16)).save(tmp_path / "s.png")
    got, meta = read_slice(tmp_path / "s.png", hu_offset=1024)
    np.testing.assert_array_equal(got, hu)
    assert meta["units"] == "HU"
    plain, _ = read_slice(tmp_path / "s.png")  # no offset: a [0, 1] image
    np.testing.assert_allclose(plain, (hu + 1024) / 65535.0)
    Image.new("RGB", (4, 4)).save(tmp_path / "c.png")
    with pytest.raises(ValueError, match="single-channel gray"):
        read_slice(tmp_path / "c.png")


def test_npy_keeps_integer_hu(tmp_path):
    a = np.array([[-1000, 50], [300, 1200]], dtype=np.int16)
    np.save(tmp_path / "a.npy", a)
    got, _ = read_slice(tmp_path / "a.npy", hu_offset=0)
    np.testing.assert_array_equal(got, a)
    np.save(tmp_path / "nan.npy", np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="NaN or Inf"):
        read_slice(tmp_path / "nan.npy")


@pytest.mark.parametrize("name", sorted(WINDOW_PRESETS))
def test_window_round_trip_inside_and_clip_outside(name):
    w = parse_window(name)
    hu = np.linspace(w.low, w.low + w.width, 11)
    np.testing.assert_allclose(w.to_hu(w.to_unit(hu)), hu, atol=1e-9)
    np.testing.assert_allclose(w.to_unit(np.array([w.low - 500, w.low + w.width + 500])), [0.0, 1.0])


def test_window_parsing_and_bad_windows():
    assert parse_window("40,400") == Window(40.0, 400.0)
    assert parse_window("Lung").name == "lung"
    with pytest.raises(ValueError, match="unknown window 'abdomen'.*lung, soft-tissue, bone, brain"):
        parse_window("abdomen")
    with pytest.raises(ValueError, match="width must be > 0"):
        parse_window("40,0")
    with pytest.raises(ValueError, match="width must be > 0"):
        parse_window("40,-10")
