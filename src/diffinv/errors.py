"""The one exception type for a user's mistake.

:class:`DiffinvError` is raised for anything the user can fix: an unknown name, a bad shape, a
NaN in the input, an impossible parameter, an unreadable file. Its message is one line naming the
problem. The command line prints it as ``diffinv CMD: error: MESSAGE`` and exits with status 2;
every other exception is a bug and is shown with its traceback.

It subclasses :class:`ValueError` so that code written against the earlier interface (``except
ValueError``) keeps working.

>>> from diffinv.errors import DiffinvError
>>> try:
...     raise DiffinvError("sigma_y must be a finite number >= 0, got -1.0")
... except ValueError as e:
...     print(e)
sigma_y must be a finite number >= 0, got -1.0
"""

from __future__ import annotations

__all__ = ["DiffinvError"]


class DiffinvError(ValueError):
    """A user error: bad input, an unknown name, an impossible parameter (one-line message)."""
