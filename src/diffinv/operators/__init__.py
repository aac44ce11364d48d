"""Linear degradation operators ``y = A x`` with exact adjoints, pseudo-inverses and (mostly) SVDs.

Build them from spec strings with :func:`from_spec` (see :func:`available_specs`), or directly.
"""

from .base import LinearOperator, SVDOperator
from .colorize import Colorize
from .compose import ComposedOperator
from .cs import BlockRandomCS, WalshHadamardCS, fwht, fwht2, random_orthogonal
from .ct import ParallelBeamCT
from .ct_fan import FanBeamCT
from .deblur import Blur, anisotropic_kernel, gaussian_kernel, motion_kernel, uniform_kernel
from .denoise import Denoise
from .dense import MatrixOperator
from .feasible import nearest_feasible, project_feasible
from .inpaint import Inpaint, box_mask, random_mask, stroke_mask
from .spec import available_specs, from_spec
from .superres import BicubicSuperResolution, SuperResolution, bicubic_matrix

__all__ = [
    "LinearOperator",
    "SVDOperator",
    "MatrixOperator",
    "ComposedOperator",
    "Denoise",
    "Inpaint",
    "Colorize",
    "SuperResolution",
    "BicubicSuperResolution",
    "Blur",
    "WalshHadamardCS",
    "BlockRandomCS",
    "ParallelBeamCT",
    "FanBeamCT",
    "box_mask",
    "random_mask",
    "stroke_mask",
    "gaussian_kernel",
    "uniform_kernel",
    "anisotropic_kernel",
    "motion_kernel",
    "bicubic_matrix",
    "fwht",
    "fwht2",
    "random_orthogonal",
    "from_spec",
    "nearest_feasible",
    "project_feasible",
    "available_specs",
]
