"""Zero-shot solvers: ``solvers.get(name, prior, **params)`` and ``solvers.available()``.

Every module in this package registers its methods on import (see :mod:`.base`).
"""

import importlib
import pkgutil

from .base import Solver, SolveResult, available, get, get_class, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["SolveResult", "Solver", "available", "get", "get_class", "register"]
