"""The web app, ``diffinv serve`` (``pip install -e ".[app]"``): restore images in a browser.

- :mod:`~diffinv.app.options`: tasks, the priors and methods that fit them, examples, limits (torch-free);
- :mod:`~diffinv.app.jobs`: one job at a time per device, a bounded queue, per-session folders;
- :mod:`~diffinv.app.inputs`: uploads checked and copied, previews, painted masks;
- :mod:`~diffinv.app.handlers`: the handlers as plain Python (tested without a browser);
- :mod:`~diffinv.app.ui`: the Gradio page; :mod:`~diffinv.app.server`: start, serve, clean up.

Only :mod:`~diffinv.app.ui` imports Gradio, and :mod:`~diffinv.app.server` imports it only once
``GRADIO_TEMP_DIR`` points into the app's temporary root (Gradio reads it at import).
"""

from __future__ import annotations

__all__ = ["serve"]


def serve(*args, **kwargs) -> int:
    """:func:`diffinv.app.server.serve` (imported on call: Gradio is imported only then)."""
    from .server import serve as _serve

    return _serve(*args, **kwargs)
