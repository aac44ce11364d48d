import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from diffinv.metrics import consistency, psnr, ssim
from diffinv.operators.dense import MatrixOperator


@pytest.mark.parametrize("channels", [1, 3])
def test_psnr_ssim_match_skimage(channels):
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(2, channels, 32, 40, generator=g, dtype=torch.float64)
    x = (ref + 0.1 * torch.randn(ref.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    for i in range(2):
        a, b = x[i].numpy(), ref[i].numpy()
        want_p = peak_signal_noise_ratio(b, a, data_range=1.0)
        want_s = structural_similarity(
            a,
            b,
            data_range=1.0,
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert psnr(x, ref)[i].item() == pytest.approx(want_p, rel=1e-10)
        assert ssim(x, ref)[i].item() == pytest.approx(want_s, abs=1e-8)


def test_ssim_identity_and_errors():
    x = torch.rand(1, 3, 16, 16)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, x[:, :1])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x[..., :8, :8], x[..., :8, :8])


def test_consistency():
    op = MatrixOperator(torch.randn(6, 16, dtype=torch.float64), (1, 4, 4))
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    y = op.A(x)
    assert torch.allclose(consistency(op, x, y), torch.zeros(3, dtype=torch.float64), atol=1e-14)
    c = consistency(op, x, 2 * y)
    assert np.allclose(c.numpy(), 0.5)
