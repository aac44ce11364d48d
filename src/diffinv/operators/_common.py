"""Small helpers shared by the concrete operators (shape checks, seeding, orthonormal bases)."""

from __future__ import annotations

import numbers

import torch

from ..errors import DiffinvError

F64 = torch.float64


def check_image_shape(shape, what: str = "shape") -> tuple[int, int, int]:
    """Return ``shape`` as a 3-tuple ``(C, H, W)`` of positive ints, else raise ``ValueError``."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise DiffinvError(f"{what} must be a 3-tuple (C, H, W) of positive ints, got {shape!r}") from None
    ok = len(dims) == 3 and all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool) and int(d) > 0 for d in dims
    )
    if not ok:
        raise DiffinvError(f"{what} must be a 3-tuple (C, H, W) of positive ints, got {shape!r}")
    return tuple(int(d) for d in dims)  # type: ignore[return-value]


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """Return ``value`` as an int ``>= minimum`` (integral floats such as 4.0 are accepted)."""
    if isinstance(value, bool):
        raise DiffinvError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if isinstance(value, numbers.Integral):
        v = int(value)
    elif isinstance(value, numbers.Real) and float(value).is_integer():
        v = int(value)
    else:
        raise DiffinvError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if v < minimum:
        raise DiffinvError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return v


def as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """A ``torch.Generator`` from a generator (used as is), an int seed, or ``None`` (seed 0)."""
    if generator is None:
        return torch.Generator().manual_seed(0)
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(int(generator))
    raise DiffinvError(f"generator must be a torch.Generator or an int seed, got {type(generator).__name__}")


def rand(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """Uniform [0, 1) float64 numbers drawn on the generator's device, returned on the CPU."""
    return torch.rand(shape, generator=generator, dtype=F64, device=generator.device).cpu()


def randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """Standard normal float64 numbers drawn on the generator's device, returned on the CPU."""
    return torch.randn(shape, generator=generator, dtype=F64, device=generator.device).cpu()


def randperm(generator: torch.Generator, n: int) -> torch.Tensor:
    """A random permutation of ``range(n)`` (int64, CPU) drawn from ``generator``."""
    return torch.randperm(n, generator=generator, device=generator.device).cpu()


def orthonormal_completion(v: torch.Tensor) -> torch.Tensor:
    """A float64 orthogonal ``(d, d)`` matrix whose first row is ``v / |v|``.

    Computed by a Householder QR of ``[v | I]`` with the sign of the first column fixed, so the
    result is deterministic and exactly orthogonal up to rounding.
    """
    v = torch.as_tensor(v, dtype=F64).flatten()
    d = v.numel()
    norm = torch.linalg.vector_norm(v)
    if d == 0 or not torch.isfinite(norm) or norm == 0:
        raise DiffinvError("cannot complete a zero or non-finite vector to an orthonormal basis")
    M = torch.cat([(v / norm)[:, None], torch.eye(d, dtype=F64)], dim=1)
    Q, R = torch.linalg.qr(M, mode="reduced")  # (d, d)
    Q = Q.clone()
    if R[0, 0] < 0:
        Q[:, 0] = -Q[:, 0]
    Q[:, 0] = v / norm  # exact first vector; the others are orthogonal to it up to rounding
    return Q.T.contiguous()


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), dtype=perm.dtype)
    return inv
