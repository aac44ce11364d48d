"""Mask generators (inpainting) and blur kernels: determinism, statistics, validity."""

from __future__ import annotations

import math

import pytest
import torch

from diffinv.operators import (
    anisotropic_kernel,
    box_mask,
    gaussian_kernel,
    motion_kernel,
    random_mask,
    stroke_mask,
    uniform_kernel,
)


def _binary(mask):
    return bool(((mask == 0) | (mask == 1)).all())


# ------------------------------------------------------------------------------------ masks
def test_box_mask():
    m = box_mask(16, 12)
    assert m.shape == (1, 16, 12) and m.dtype == torch.float64 and _binary(m)
    assert int((m == 0).sum()) == 8 * 6
    assert torch.equal(m[0, 4:12, 3:9], torch.zeros(8, 6, dtype=torch.float64))  # centred
    assert int((box_mask(10, 10, size=4) == 0).sum()) == 16
    assert int((box_mask(10, 10, size=(2, 6)) == 0).sum()) == 12
    with pytest.raises(ValueError, match="does not fit"):
        box_mask(8, 8, size=9)


def test_random_mask_determinism():
    a, b, c = random_mask(16, 16, 0.5, 1), random_mask(16, 16, 0.5, 1), random_mask(16, 16, 0.5, 2)
    assert a.shape == (1, 16, 16) and _binary(a)
    assert torch.equal(a, b) and not torch.equal(a, c)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(random_mask(16, 16, 0.5, g1), random_mask(16, 16, 0.5, g2))
    assert torch.equal(random_mask(8, 8, 0.0, 3), torch.ones(1, 8, 8, dtype=torch.float64))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_random_mask_drop_fraction(p):
    n = 64 * 64
    std = math.sqrt(p * (1 - p) / n)
    for seed in range(3):
        dropped = float((random_mask(64, 64, p, seed) == 0).double().mean())
        assert abs(dropped - p) <= 4.5 * std


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan"), "x"])
def test_random_mask_bad_p(p):
    with pytest.raises(ValueError, match="probability p"):
        random_mask(8, 8, p, 0)


def test_mask_generator_errors():
    with pytest.raises(ValueError, match="generator"):
        random_mask(8, 8, 0.5, "seed")
    with pytest.raises(ValueError, match="H must be an integer"):
        random_mask(0, 8, 0.5)


def test_stroke_mask():
    masks = [stroke_mask(64, 64, seed) for seed in range(6)]
    for m in masks:
        assert m.shape == (1, 64, 64) and _binary(m)
        hole = float((m == 0).double().mean())
        assert 0.15 <= hole <= 0.40
    assert torch.equal(masks[0], stroke_mask(64, 64, 0))
    assert len({tuple(m.flatten().tolist()) for m in masks}) == len(masks)
    small = stroke_mask(16, 24, torch.Generator().manual_seed(3))
    assert small.shape == (1, 16, 24) and 0.1 <= float((small == 0).double().mean()) <= 0.45
    with pytest.raises(ValueError, match="min_coverage"):
        stroke_mask(16, 16, 0, min_coverage=0.5, max_coverage=0.2)


# ------------------------------------------------------------------------------------ kernels
KERNELS = {
    "gaussian": lambda: gaussian_kernel(),
    "gaussian-small": lambda: gaussian_kernel(0.7, size=5),
    "uniform": lambda: uniform_kernel(),
    "aniso": lambda: anisotropic_kernel(),
    "aniso-rot": lambda: anisotropic_kernel(3.0, 0.5, angle=30.0),
    "motion": lambda: motion_kernel(9, 0.5, 0),
    "motion-straight": lambda: motion_kernel(7, 0.0, 1),
    "motion-wild": lambda: motion_kernel(15, 1.0, 2),
}


@pytest.mark.parametrize("name", list(KERNELS))
def test_kernel_valid(name):
    k = KERNELS[name]()
    assert k.dim() == 2 and k.dtype == torch.float64
    assert bool((k >= 0).all())
    assert abs(float(k.sum()) - 1) <= 1e-12


def test_kernel_shapes_and_symmetry():
    g = gaussian_kernel(1.5)
    assert g.shape == (11, 11)
    assert torch.allclose(g, g.T) and torch.allclose(g, g.flip(0))
    assert int(g.argmax()) == 5 * 11 + 5
    assert uniform_kernel(5).shape == (5, 5) and torch.allclose(
        uniform_kernel(5), torch.full((5, 5), 0.04, dtype=torch.float64)
    )
    a = anisotropic_kernel(4.0, 1.0)
    assert a.shape == (25, 25)
    r = torch.arange(25, dtype=torch.float64) - 12
    var_cols = float((a.sum(0) * r**2).sum())  # spread along x (columns)
    var_rows = float((a.sum(1) * r**2).sum())
    assert var_cols > 10 * var_rows
    assert torch.allclose(anisotropic_kernel(4.0, 1.0, angle=90.0), a.T, atol=1e-12)


def test_motion_kernel_determinism():
    a, b, c = motion_kernel(9, 0.5, 4), motion_kernel(9, 0.5, 4), motion_kernel(9, 0.5, 5)
    assert a.shape == (9, 9)
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(4)
    assert torch.equal(motion_kernel(9, 0.5, g), a)
    assert torch.equal(motion_kernel(1, 0.5, 0), torch.ones(1, 1, dtype=torch.float64))
    # The trajectory spans the kernel: its support touches opposite borders along some axis.
    nz = (a > 0).nonzero()
    extent = (nz.max(0).values - nz.min(0).values).max()
    assert int(extent) == 8


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: gaussian_kernel(0.0), "sigma must be a positive number"),
        (lambda: gaussian_kernel(-1.0), "sigma must be a positive number"),
        (lambda: gaussian_kernel(1.0, size=0), "size must be an integer >= 1"),
        (lambda: uniform_kernel(0), "size must be an integer >= 1"),
        (lambda: anisotropic_kernel(sigma_y=0.0), "sigma_y must be a positive number"),
        (lambda: anisotropic_kernel(angle="north"), "angle"),
        (lambda: motion_kernel(9, 1.5, 0), r"intensity must be in \[0, 1\]"),
        (lambda: motion_kernel(9, 0.5, "seed"), "generator"),
    ],
)
def test_kernel_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()
