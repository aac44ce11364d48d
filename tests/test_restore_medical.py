"""``diffinv restore`` on medical slices: DICOM / NIfTI / 16-bit PNG in, PNG + .npy in HU out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffinv.cli import main
from diffinv.data.ellipses import shepp_logan

pytest.importorskip("pydicom")
nibabel = pytest.importorskip("nibabel")

ASSETS = Path(__file__).resolve().parents[1] / "src" / "diffinv" / "assets" / "images"


def _phantom_hu(n: int = 64) -> np.ndarray:
    """Shepp-Logan in HU: [0, 1] spread over the soft-tissue window [-160, 240] HU."""
    return shepp_logan(n)[0, 0].numpy().astype(np.float64) * 400.0 - 160.0


def _run(capsys, *argv) -> tuple[int, str]:
    code = main(["restore", *map(str, argv), "--quiet"])
    return code, capsys.readouterr().err


def test_dicom_round_trip_through_the_window(tmp_path, capsys, write_dicom):
    hu = _phantom_hu()
    write_dicom(tmp_path / "slice.dcm", np.round(hu + 1024).astype(np.uint16), slope=1.0, intercept=-1024.0)
    code, err = _run(
        capsys,
        tmp_path / "slice.dcm",
        "--task",
        "denoise",
        "--method",
        "pinv",
        "--window",
        "soft-tissue",
        "--out",
        tmp_path / "o",
    )
    assert code == 0, err
    rec = json.loads((tmp_path / "o" / "slice_denoise_pinv.json").read_text())
    assert rec["window"] == {"name": "soft-tissue", "center": 40.0, "width": 400.0, "units": "HU"}
    assert rec["input_format"]["format"] == "dicom"
    back = np.load(rec["output_npy"])
    # identity operator + pseudo-inverse: the HU slice comes back through the window exactly
    np.testing.assert_allclose(back, np.round(hu + 1024) - 1024, atol=1e-3)


def test_sixteen_bit_png_with_offset_is_resized_and_recorded(tmp_path, capsys):
    code, err = _run(
        capsys,
        ASSETS / "ct_chest_tcia_hu1024_256.png",
        "--task",
        "ct18",
        "--method",
        "pinv",
        "--hu-offset",
        "1024",
        "--window",
        "40,400",
        "--resize",
        "64",
        "--out",
        tmp_path / "o",
    )
    assert code == 0, err
    rec = json.loads(next((tmp_path / "o").glob("*_ct18_pinv.json")).read_text())
    assert rec["resized_from"] == [256, 256] and rec["image_shape"] == [1, 64, 64]
    assert np.load(rec["output_npy"]).shape == (64, 64)


def test_nifti_slice(tmp_path, capsys):
    vol = np.stack([_phantom_hu(), _phantom_hu() + 50], axis=-1).astype(np.float32)
    nibabel.Nifti1Image(vol, np.eye(4)).to_filename(str(tmp_path / "v.nii.gz"))
    code, err = _run(
        capsys,
        tmp_path / "v.nii.gz",
        "--slice",
        "1",
        "--task",
        "denoise",
        "--method",
        "pinv",
        "--window",
        "soft-tissue",
        "--out",
        tmp_path / "o",
    )
    assert code == 0, err
    rec = json.loads(next((tmp_path / "o").glob("*_denoise_pinv.json")).read_text())
    assert rec["input_format"]["slice"] == 1
    inside = (vol[..., 1] > -160) & (vol[..., 1] < 240)
    np.testing.assert_allclose(np.load(rec["output_npy"])[inside], vol[..., 1][inside], atol=1e-2)


def _bad_inputs(tmp_path: Path, write_dicom) -> dict:
    write_dicom(tmp_path / "nopix.dcm", None)
    write_dicom(tmp_path / "rgb.dcm", np.zeros((8, 8, 3)), samples=3)
    write_dicom(tmp_path / "ok.dcm", np.full((64, 64), 1024, np.uint16))
    nibabel.Nifti1Image(np.zeros((8, 8, 3), np.float32), np.eye(4)).to_filename(str(tmp_path / "v.nii"))
    Image.fromarray(np.full((64, 64), 1024, np.uint16)).save(tmp_path / "hu.png")
    return {
        "no pixel data": [tmp_path / "nopix.dcm", "--window", "lung"],
        "colour image": [tmp_path / "rgb.dcm", "--window", "lung"],
        "unknown window 'abdomen'": [tmp_path / "ok.dcm", "--window", "abdomen"],
        "width must be > 0": [tmp_path / "ok.dcm", "--window", "40,0"],
        "slice 5 out of range": [tmp_path / "v.nii", "--slice", "5", "--window", "lung"],
        "holds Hounsfield units: choose a window": [tmp_path / "ok.dcm"],
        "--slice applies to NIfTI": [tmp_path / "hu.png", "--slice", "0"],
    }


@pytest.mark.parametrize(
    "case",
    [
        "no pixel data",
        "colour image",
        "unknown window 'abdomen'",
        "width must be > 0",
        "slice 5 out of range",
        "holds Hounsfield units: choose a window",
        "--slice applies to NIfTI",
    ],
)
def test_bad_medical_input_is_one_line_and_writes_nothing(tmp_path, capsys, write_dicom, case):
    argv = _bad_inputs(tmp_path, write_dicom)[case]
    out = tmp_path / "out"
    code, err = _run(capsys, *argv, "--task", "denoise", "--method", "pinv", "--out", out)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and case in err, err
    assert not out.exists()


def test_eval_over_dicom_slices_through_a_window(tmp_path, capsys, write_dicom):
    data = tmp_path / "dcm"
    data.mkdir()
    hu = np.kron(_phantom_hu(32), np.ones((2, 2)))  # 64x64
    for k in range(2):
        write_dicom(data / f"s{k}.dcm", np.round(hu + 1024 + 10 * k).astype(np.uint16))
    argv = ["eval", "--data", data, "--task", "denoise", "--methods", "pinv", "--window", "soft-tissue"]
    code = main([*map(str, argv), "--crop", "32", "--resize", "--out", str(tmp_path / "e"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    rows = (tmp_path / "e" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 slices
    cfg = json.loads((tmp_path / "e" / "config.json").read_text())
    assert cfg["args"]["window"] == "soft-tissue" and cfg["args"]["resize"] is True
    code = main([*map(str, argv), "--out", str(tmp_path / "bad"), "--quiet"])  # 64x64 crops, no prior
    assert code == 0
    argv[-1] = "abdomen"
    assert main([*map(str, argv), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "unknown window 'abdomen'" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_train_reads_dicom_slices_through_the_window(tmp_path, write_dicom):
    from diffinv.train import ImageFolderCrops

    data = tmp_path / "dcm"
    data.mkdir()
    hu = np.kron(_phantom_hu(32), np.ones((2, 2)))
    write_dicom(data / "a.dcm", np.round(hu + 1024).astype(np.uint16))
    crops = ImageFolderCrops(str(data), 64, 1, window="soft-tissue")
    assert len(crops.images) == 1  # the 32x32 half-resolution copy is below the crop size
    expected = np.clip((np.round(hu + 1024) - 1024 + 160) / 400, 0, 1)
    np.testing.assert_allclose(crops.images[0][..., 0].numpy() / 255.0, expected, atol=0.5 / 255 + 1e-9)
    with pytest.raises(ValueError, match="holds Hounsfield units"):
        ImageFolderCrops(str(data), 64, 1)


def test_nifti_volumes_count_as_their_slices_in_eval_and_train(tmp_path):
    """A folder with a 3-slice NIfTI volume (HU) and a PNG: ``eval`` sees 4 images (the volume's
    slices in order, each windowed exactly like ``load_slice``), ``train``'s stream holds them all."""
    import torch

    from diffinv.data.medical import load_slice, parse_window
    from diffinv.data.training import ImageFolderCrops
    from diffinv.eval_items import load_items

    hu = np.stack([_phantom_hu(32) + 40.0 * k for k in range(3)], axis=-1).astype(np.float32)
    nibabel.Nifti1Image(hu, np.eye(4)).to_filename(str(tmp_path / "vol.nii.gz"))
    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(tmp_path / "zz.png")
    window = "soft-tissue"
    items = load_items(str(tmp_path), None, 32, 1, 0, {"window": window, "resize": True})
    assert [it.name for it in items] == ["0000_vol_z000", "0001_vol_z001", "0002_vol_z002", "0003_zz"]
    w = parse_window(window)
    for k in range(3):
        expected = torch.from_numpy(np.clip(w.to_unit(hu[..., k].astype(np.float64)), 0, 1)).float()
        torch.testing.assert_close(items[k].x[0, 0], expected, rtol=0, atol=1e-6)
        x, info = load_slice(tmp_path / "vol.nii.gz", window, slice_index=k)
        torch.testing.assert_close(items[k].x, x, rtol=0, atol=1e-6)
    assert items[1].x.mean() > items[0].x.mean()  # slice 1 is 40 HU brighter
    assert len(load_items(str(tmp_path), 2, 32, 1, 0, {"window": window, "resize": True})) == 2
    stream = ImageFolderCrops(str(tmp_path), 32, 1, window=window)
    assert len(stream.images) == 4  # 3 slices + the PNG, each at full size only (half is 16 px)
