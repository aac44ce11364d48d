"""What the web app offers: tasks, the priors and methods that fit a task, bundled examples, limits.

Torch-free (the tables of :mod:`diffinv.catalog` and the priors' ``config.json`` files), so that the
page's dropdowns update without touching a model. The rules mirror what
:func:`diffinv.restore.restore_files` refuses: CT reconstructs 1-channel images, colorize needs an
RGB prior, methods that need an SVD (``ddrm``) cannot take CT or composed operators (their
operators have none); classical methods need no prior. Anything else a particular image cannot
do (a size the SR factor does not divide, DDRM on a tiled deblur) comes back from the library as
a one-line message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import METHODS, default_prior, parse_task
from ..errors import DiffinvError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
IMAGES = ASSETS / "images"
PRIORS_DIR = ASSETS / "priors"

#: tasks in the dropdown (any other spec can be typed in); "inpaint-mask" = the uploaded / drawn mask
TASKS = [
    "sr4",
    "sr2",
    "sr8",
    "sr4-bicubic",
    "inpaint-box",
    "inpaint-random0.5",
    "inpaint-strokes",
    "inpaint-mask",
    "colorize",
    "deblur-gauss",
    "deblur-uniform",
    "deblur-motion",
    "denoise",
    "cs0.25",
    "colorize+sr4",
    "ct8",
    "ct18",
    "ct30",
    "ct60",
]
MASK_TASK = "inpaint-mask"

MODES = {
    "degrade": "degrade this clean image, then restore it",
    "measured": "this is my measurement",
}
WINDOWS = ["none", "soft-tissue", "lung", "bone", "brain"]

#: limits of one request (the command line has none)
MAX_UPLOAD_BYTES = 64 * 2**20  # a file as uploaded (a NIfTI volume, a DICOM slice, a photo)
MAX_INPUT_PIXELS = 16_000_000  # an image or slice as read: a 4000x4000 photo
MAX_RESTORE_PIXELS = 512 * 512  # the image restored (after resizing; x k for measured srK)
MAX_STEPS = 1000
MAX_SAMPLES = 8
MAX_PROJECT = 5000  # rounds of projection onto {A x = y} and [0, 1] (0.1-0.4 ms each at 64x64 CT)
MAX_SIGMA = 1.0


@dataclass(frozen=True)
class Example:
    """A bundled input and the settings it is shown with."""

    label: str
    file: str | None  # under assets/images; None: generated (the phantom)
    task: str
    prior: str
    method: str = "ddnm"
    window: str = "none"
    hu_offset: float | None = None
    resize: bool = False
    mode: str = "degrade"
    notes: dict = field(default_factory=dict)


EXAMPLES: dict[str, Example] = {
    e.label: e
    for e in (
        Example("face (photo, 64x64)", "face_189080.png", "sr4", "faces-64"),
        Example(
            "portrait (photo, 128x192, restored in windows)",
            "portrait_189080_128x192.png",
            "sr4",
            "natural-64",
        ),
        Example(
            "CT slice (HU + 1024, 16-bit PNG, 256x256)",
            "ct_chest_tcia_hu1024_256.png",
            "ct18",
            "ct-chest-64",
            window="soft-tissue",
            hu_offset=1024.0,
            resize=True,
        ),
        Example("CT slice (soft-tissue window, 64x64)", "ct_chest_tcia_64.png", "ct18", "ct-chest-64"),
        Example("phantom (Shepp-Logan, 64x64)", None, "ct30", "ct-ellipses-64"),
    )
}
NO_EXAMPLE = "(none: use the uploaded file)"


def shipped_priors() -> dict[str, dict]:
    """``{name: {"channels": int, "size": int}}`` of the shipped priors, from their config files."""
    out = {}
    if not PRIORS_DIR.is_dir():
        return out
    for folder in sorted(PRIORS_DIR.iterdir()):
        cfg_file = folder / "unet" / "config.json"
        if not cfg_file.is_file():
            continue
        try:
            cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        size = cfg.get("sample_size", 64)
        out[folder.name] = {
            "channels": int(cfg.get("in_channels", 3)),
            "size": int(size[0] if isinstance(size, list) else size),
        }
    return out


def fitting_priors(task: str | None, priors: dict[str, dict] | None = None) -> list[str]:
    """The shipped priors a task can use: 1-channel ones for CT, RGB ones for colorize, else all."""
    priors = shipped_priors() if priors is None else priors
    info = parse_task(task if task and task != MASK_TASK else None)
    want = info.channels
    return [name for name, p in priors.items() if want is None or p["channels"] == want]


def method_needs_prior(method: str) -> bool:
    return next((m.needs_prior for m in METHODS if m.name == method), True)


def fitting_methods(task: str | None) -> list[str]:
    """The methods offered for ``task``: every registered one, less those needing an SVD where the
    operator has none (CT, compositions)."""
    info = parse_task(task if task and task != MASK_TASK else None)
    no_svd = info.is_ct or len(info.parts) > 1
    return [m.name for m in METHODS if not (m.requires_svd and no_svd)]


def default_prior_for(task: str | None, priors: dict[str, dict] | None = None) -> str | None:
    """The library's default prior for ``task`` if it fits, else the first that does."""
    fit = fitting_priors(task, priors)
    preferred = default_prior(task if task and task != MASK_TASK else None)
    return preferred if preferred in fit else (fit[0] if fit else None)


def choose(current: str | None, choices: list[str], fallback: str | None = None) -> str | None:
    """``current`` when still offered, else ``fallback`` when offered, else the first choice."""
    if current in choices:
        return current
    if fallback in choices:
        return fallback
    return choices[0] if choices else None


def task_label(task: str | None, has_mask: bool) -> str | None:
    """The task to hand to ``restore_files``: None for a user mask (task ``inpaint-mask``).

    Raises ValueError when a mask meets a task that is not inpainting, or ``inpaint-mask`` has none.
    """
    task = (task or "").strip()
    if not task:
        raise DiffinvError("choose a task (e.g. sr4, inpaint-box, colorize, ct18)")
    if task == MASK_TASK:
        if not has_mask:
            raise DiffinvError("task inpaint-mask needs a mask: upload one or paint over the image")
        return None
    if has_mask:
        if task.startswith("inpaint"):
            return None
        raise DiffinvError(
            f"a mask means inpainting: choose task {MASK_TASK}, or clear the mask to run {task}"
        )
    return task
