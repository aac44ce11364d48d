"""Suite-wide test settings and shared fixtures."""

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Run the suite on one torch thread. Its tensors are tiny, and on a shared 2-core machine
    multi-threaded small ops (convolutions, sparse CT products) stalled 10-50x slower than one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def write_dicom():
    """``write_dicom(path, stored, slope, intercept, samples)``: a minimal CT DICOM file (pydicom)."""
    pytest.importorskip("pydicom")
    return _write_dicom


def _write_dicom(path, stored: np.ndarray | None, slope=1.0, intercept=-1024.0, samples=1):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    if stored is not None:
        ds.Rows, ds.Columns = stored.shape[:2]
        ds.SamplesPerPixel = samples
        if samples == 1:
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
            ds.PixelData = stored.astype("<u2").tobytes()
        else:
            ds.PhotometricInterpretation = "RGB"
            ds.PlanarConfiguration = 0
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
            ds.PixelData = stored.astype(np.uint8).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
